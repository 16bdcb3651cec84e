#!/usr/bin/env node
// Thin launcher: runs the TypeScript CLI through tsx so `npx edgeweave` works without a build step.
import { register } from 'tsx/esm/api';
register();
const { run } = await import('../src/cli/main.ts');
await run();
