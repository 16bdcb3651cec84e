#!/usr/bin/env node
// Compiles src/ into dist/ (tsconfig.build.json), which bin/edgeweave.js, `npm start` and the
// demo's children run: compiled, a command starts in a fraction of the time it takes through tsx
// (npm run bench:cli). Runs at install (`prepare`, which `npm ci` runs too) and in `npm run build`.
// Incremental: quick when little changed. An install without dev dependencies (no typescript)
// keeps an existing build and says so.
import { existsSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const main = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  console.warn(
    existsSync(main)
      ? 'edgeweave: typescript is not installed (production install?); running the build already in dist/'
      : 'edgeweave: typescript is not installed, so dist/ cannot be built and bin/edgeweave.js cannot run; install dev dependencies and run npm run build',
  );
  process.exit(0);
}
// tsc's incremental state says nothing of deleted outputs: without the entry point, start over.
if (!existsSync(main)) rmSync(fileURLToPath(new URL('../dist/.tsbuildinfo', import.meta.url)), { force: true });
const started = Date.now();
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('edgeweave: compiling src/ into dist/ failed (the errors are above)');
  process.exit(1);
}
console.log(`edgeweave: compiled src/ into dist/ in ${Date.now() - started} ms`);
