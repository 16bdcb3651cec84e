#!/usr/bin/env node
// Launcher: runs the compiled CLI (dist/, built by `npm run build`, which `prepare` runs at
// install). Compiled, a command starts in about a tenth of a second; through the TypeScript
// loader it took about one (bench/cli.ts). Development runs the sources: `npm run edgeweave -- …`.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const url = new URL('../dist/cli/main.js', import.meta.url);
const main = fileURLToPath(url);
if (!existsSync(main)) {
  process.stderr.write(
    `error: ${main} is missing: this copy of edgeweave was not built. Run npm run build in ${fileURLToPath(new URL('..', import.meta.url))} (npm install runs it), or run the sources with npm run edgeweave -- <command>\n`,
  );
  process.exit(1);
}
const { run } = await import(url.href);
await run();
