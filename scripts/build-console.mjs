#!/usr/bin/env node
// Builds the web console (console/) into console/dist, which the cloud serves at `/`.
// Runs at install (`prepare`, which `npm ci` runs too), in `npm start` and in `npm run build`.
// An install without dev dependencies (no vite) keeps an existing build and says so.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const config = fileURLToPath(new URL('../console/vite.config.ts', import.meta.url));
const dist = fileURLToPath(new URL('../console/dist/index.html', import.meta.url));

let vite;
try {
  vite = await import('vite');
} catch {
  console.warn(
    existsSync(dist)
      ? 'edgeweave: vite is not installed (production install?); serving the console build already in console/dist'
      : 'edgeweave: vite is not installed, so the web console cannot be built; the cloud serves the API only (install dev dependencies and run npm run build:console)',
  );
  process.exit(0);
}
const started = Date.now();
try {
  await vite.build({
    configFile: config,
    root: fileURLToPath(new URL('../console', import.meta.url)),
    logLevel: 'warn',
    mode: 'production',
  });
} catch (e) {
  console.error(`edgeweave: building the web console failed: ${e.message}`);
  process.exit(1);
}
console.log(
  `edgeweave: web console built into ${fileURLToPath(new URL('../console/dist', import.meta.url)).replace(root, '')} in ${Date.now() - started} ms`,
);
