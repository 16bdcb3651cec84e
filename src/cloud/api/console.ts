import { createHash } from 'node:crypto';
import { existsSync, lstatSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../../lib/logger.ts';

/**
 * Serves the built web console (console/dist) at `/`. Files are read once at start-up into a
 * table keyed by URL path, so a request can only ever get a file of the build: there is no path
 * to resolve and so no traversal (`/../`, `%2e%2e`, symlinks are never followed). Hashed assets
 * are cached for a year, index.html never; a path without an extension that is no file gets
 * index.html (client-side routes such as /sites/abc), and the API's own prefixes keep their
 * JSON 404. Every answer carries a strict Content-Security-Policy: the console loads nothing
 * from anywhere but this origin.
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

/** Prefixes that belong to APIs: never answered with the console's index.html. */
const API_PREFIXES = ['/api/', '/v1/', '/v2/', '/metrics', '/healthz', '/openapi.json'];
/** fastify's maxParamLength (its default, which the API keeps): over it a route answers 414. */
const MAX_PATH_PARAM = 100;

export interface Asset { body: Buffer; gzip?: Buffer; type: string; etag: string; cacheControl: string }

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
          body, type,
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
  void reply.headers(SECURITY_HEADERS).header('content-type', a.type).header('cache-control', a.cacheControl).header('etag', a.etag).header('vary', 'accept-encoding');
  const inm = req.headers['if-none-match'];
  if (status === 200 && inm && inm.split(',').some((t) => t.trim() === a.etag)) return reply.status(304).send();
  const gz = a.gzip && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
  if (gz) void reply.header('content-encoding', 'gzip');
  return reply.status(status).send(gz ? a.gzip : a.body);
}

/**
 * Registers the console's routes. `dir` missing or without index.html: `/` explains how to build
 * it instead (the API works either way).
 */
export function registerConsole(app: FastifyInstance, o: { dir: string; log: Logger }): void {
  let table: Map<string, Asset> | undefined;
  if (existsSync(join(o.dir, 'index.html'))) {
    table = loadAssets(o.dir);
    o.log.info({ dir: o.dir, files: table.size }, 'web console served at /');
  } else {
    o.log.warn({ dir: o.dir }, 'web console not built (npm run build:console); / explains how');
  }
  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    const path = req.url.split('?')[0]!.split('#')[0]!;
    if (API_PREFIXES.some((p) => path === p.replace(/\/$/, '') || path.startsWith(p))) {
      // A path parameter over the router's limit makes fastify fall through to this wildcard
      // instead of answering 414: answer as the API would have (docs/errors.md).
      if (path.split('/').some((seg) => seg.length > MAX_PATH_PARAM)) {
        return reply.status(414).send({ code: 'URI_TOO_LONG', message: `a path parameter is longer than ${MAX_PATH_PARAM} characters` });
      }
      return reply.callNotFound();
    }
    if (!table) {
      return reply.status(503).headers(SECURITY_HEADERS).header('content-type', 'text/plain; charset=utf-8').header('cache-control', 'no-store')
        .send('The Edgeweave web console is not built on this cloud. Run `npm run build:console` (it runs at npm install), then restart the cloud. The API is at /api/v1.\n');
    }
    const hit = table.get(path === '/' ? '/index.html' : path);
    if (hit) return send(req, reply, hit);
    // A client-side route (no extension): the app's shell; a missing file: a plain 404.
    const last = path.slice(path.lastIndexOf('/') + 1);
    if (last.includes('.')) return reply.callNotFound();
    return send(req, reply, table.get('/index.html')!);
  };
  for (const url of ['/', '/*']) app.get(url, { config: { public: true }, schema: { hide: true } }, handler);
}
