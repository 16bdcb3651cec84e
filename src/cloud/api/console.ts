import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../../lib/logger.ts';
import { CONSOLE_PAGES } from '../../contracts/console-routes.ts';

/**
 * Serves the built web console (console/dist) at `/`. Files are read once at start-up into a
 * table keyed by URL path, so a request can only ever get a file of the build: there is no path
 * to resolve and so no traversal (`/../`, `%2e%2e`, symlinks are never followed). Hashed assets
 * are cached for a year, index.html never; the console's pages (`/sites/abc`) get index.html;
 * every other path is the API's. Every answer carries a strict Content-Security-Policy: the
 * console loads nothing from anywhere but this origin.
 */

export const CONSOLE_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CONSOLE_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
};

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.webp': 'image/webp',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

export interface Asset {
  body: Buffer;
  gzip?: Buffer;
  type: string;
  etag: string;
  cacheControl: string;
}

/** Bounds on what is loaded: a console build is ~0.5 MB; anything far larger is a mistake. */
const MAX_FILES = 2000;
const MAX_BYTES = 64 * 1024 * 1024;

/** Reads a build folder into the table of servable files (regular files only, no symlinks). */
export function loadAssets(dir: string): Map<string, Asset> {
  const table = new Map<string, Asset>();
  let total = 0;
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile()) {
        if (table.size >= MAX_FILES) throw new Error(`console build ${dir} has more than ${MAX_FILES} files`);
        total += st.size;
        if (total > MAX_BYTES) throw new Error(`console build ${dir} is larger than ${MAX_BYTES} bytes`);
        const body = readFileSync(p);
        const url = `/${relative(dir, p).split(sep).join('/')}`;
        const type = TYPES[extname(p).toLowerCase()] ?? 'application/octet-stream';
        const compressible = /^(text\/|application\/json|image\/svg)/.test(type) && body.length > 1024;
        const gz = compressible ? gzipSync(body, { level: 9 }) : undefined;
        table.set(url, {
          body,
          type,
          gzip: gz && gz.length < body.length ? gz : undefined,
          etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 27)}"`,
          // Vite names built assets by content hash: they never change under the same name.
          cacheControl: url.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache',
        });
      }
    }
  };
  walk(dir);
  return table;
}

/** console/dist at the repository root (the same from src/ under tsx and from dist/ compiled). */
export function defaultConsoleDir(): string {
  return fileURLToPath(new URL('../../../console/dist/', import.meta.url));
}

function send(req: FastifyRequest, reply: FastifyReply, a: Asset, status = 200): FastifyReply {
  void reply
    .headers(SECURITY_HEADERS)
    .header('content-type', a.type)
    .header('cache-control', a.cacheControl)
    .header('etag', a.etag)
    .header('vary', 'accept-encoding');
  const inm = req.headers['if-none-match'];
  if (status === 200 && inm && inm.split(',').some((t) => t.trim() === a.etag)) return reply.status(304).send();
  const gz = a.gzip && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
  if (gz) void reply.header('content-encoding', 'gzip');
  return reply.status(status).send(gz ? a.gzip : a.body);
}

/**
 * Registers the console's routes: `/`, each page's paths (`/sites`, `/sites/…`, see
 * CONSOLE_PAGES) and the build's files, nothing more, so every other path keeps the API's own
 * answers (its JSON 404, URI_TOO_LONG, …). `dir` missing or without index.html: those paths
 * explain how to build the console instead (the API works either way).
 */
export function registerConsole(app: FastifyInstance, o: { dir: string; log: Logger }): void {
  let table: Map<string, Asset> | undefined;
  if (existsSync(join(o.dir, 'index.html'))) {
    table = loadAssets(o.dir);
    o.log.info({ dir: o.dir, files: table.size }, 'web console served at /');
  } else {
    o.log.warn({ dir: o.dir }, 'web console not built (npm run build:console); / explains how');
  }
  const config = { public: true, staticAsset: true };
  const notBuilt = async (_req: FastifyRequest, reply: FastifyReply) =>
    reply
      .status(503)
      .headers(SECURITY_HEADERS)
      .header('content-type', 'text/plain; charset=utf-8')
      .header('cache-control', 'no-store')
      .send(
        'The Edgeweave web console is not built on this cloud. Run `npm run build:console` (it runs at npm install), then restart the cloud. The API is at /api/v1.\n',
      );
  const pages = ['/', ...CONSOLE_PAGES.flatMap((p) => [`/${p}`, `/${p}/*`])];
  if (!table) {
    for (const url of pages) app.get(url, { config, schema: { hide: true } }, notBuilt);
    return;
  }
  const files = table;
  const index = files.get('/index.html')!;
  // Client-side routes: the app's shell; the browser's router picks the page.
  for (const url of pages) app.get(url, { config, schema: { hide: true } }, async (req, reply) => send(req, reply, index));
  // The build's files: looked up by their exact path in the table, never resolved on disk.
  const file = async (req: FastifyRequest, reply: FastifyReply) => {
    const hit = files.get(req.url.split('?')[0]!);
    return hit ? send(req, reply, hit) : reply.callNotFound();
  };
  app.get('/assets/*', { config, schema: { hide: true } }, file);
  // Top-level files (index.html, a favicon): one route each; names the router would read as
  // patterns (`:`, `*`) are not served.
  for (const url of files.keys())
    if (!url.startsWith('/assets/') && /^[A-Za-z0-9._/-]+$/.test(url)) app.get(url, { config, schema: { hide: true } }, file);
}
