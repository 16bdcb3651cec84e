// Preloaded (--import) into a child under test: which modules does it load? ESM loads are
// reported as they happen by a loader hook (`LOADED <url>` on stderr); on SIGUSR2 the CommonJS
// modules required so far follow as `REQUIRED <path>` lines, then `REQUIRED-END`.
import { createRequire, register } from 'node:module';

register(
  `data:text/javascript,${encodeURIComponent('export async function load(url, context, next) { process.stderr.write(`LOADED ${url}\\n`); return next(url, context); }')}`,
);
const cache = createRequire(import.meta.url).cache;
process.on('SIGUSR2', () => {
  process.stderr.write(
    `${Object.keys(cache)
      .map((p) => `REQUIRED ${p}\n`)
      .join('')}REQUIRED-END\n`,
  );
});
