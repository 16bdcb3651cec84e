import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import type { Counter } from 'prom-client';
import { ERROR_CODES, EwError, type ErrorBody } from '../contracts/errors.ts';

/** Turns a JSON pointer from a validator (`/spec/models/0/name`) into `spec.models[0].name`. */
export function pointerToPath(pointer: string, context?: string): string {
  const parts = pointer
    .split('/')
    .filter(Boolean)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = context === 'body' || context === undefined ? '' : context;
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

/** HTTP time limits of the cloud API and the site's local API; defaults in the comments. */
export interface HttpTimeouts {
  /** All request headers must arrive within this. Default 10 s. */
  headersTimeoutMs: number;
  /** The whole request (headers and body) must arrive within this. Default 60 s. */
  requestTimeoutMs: number;
  /** A keep-alive connection with no request in progress is closed after this. Default 5 s. */
  keepAliveTimeoutMs: number;
  /**
   * A connection on which nothing moves either way is closed after this. Default 120 s: long
   * enough for a model that thinks before its first byte (an LLM's prompt on a small CPU).
   */
  idleTimeoutMs: number;
}

export const DEFAULT_HTTP_TIMEOUTS: HttpTimeouts = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 120_000,
};

const counters = new WeakMap<object, Counter<'code'>>();

function errorBytes(status: number, body: ErrorBody): string {
  const json = JSON.stringify(body);
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`;
}

/**
 * Fastify constructor options shared by the cloud and the site: time limits (fastify's own
 * defaults leave a request open for ever) and handlers that answer the errors fastify and
 * Node raise before a route runs (bad %-escape, over-long parameter, slow or oversized
 * headers) in the one error shape of docs/errors.md.
 */
export function hardenedServerOptions(t: Partial<HttpTimeouts> = {}): Record<string, unknown> {
  const to = { ...DEFAULT_HTTP_TIMEOUTS, ...t };
  const nodeHttp = {
    headersTimeout: to.headersTimeoutMs,
    requestTimeout: to.requestTimeoutMs,
    // How often Node checks the two limits above (its default, 30 s, would let them overrun).
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(Math.min(to.headersTimeoutMs, to.requestTimeoutMs) / 4))),
  };
  return {
    requestTimeout: to.requestTimeoutMs,
    keepAliveTimeout: to.keepAliveTimeoutMs,
    connectionTimeout: to.idleTimeoutMs,
    http: nodeHttp,
    /** Merged into `https` by the caller when serving TLS. */
    httpTimeouts: nodeHttp,
    frameworkErrors(error: { code?: string; message: string }, req: FastifyRequest, reply: FastifyReply) {
      const body: ErrorBody =
        error.code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? { code: 'URI_TOO_LONG', message: 'a path parameter is longer than 100 characters' }
          : error.code === 'FST_ERR_BAD_URL'
            ? {
                code: 'MALFORMED_REQUEST',
                message: 'the URL is not valid: a "%" must be followed by two hex digits (encode a literal "%" as %25)',
                path: 'url',
              }
            : { code: 'MALFORMED_REQUEST', message: `the request could not be routed: ${error.message}` };
      counters.get(reply.server)?.inc({ code: body.code });
      req.log.debug({ code: error.code }, 'framework error');
      void reply.status(ERROR_CODES[body.code].status).send(body);
    },
    clientErrorHandler(this: FastifyInstance, err: { code?: string }, socket: Socket) {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const body: ErrorBody =
        err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? {
              code: 'REQUEST_TIMEOUT',
              message: `the request did not arrive in time (headers within ${to.headersTimeoutMs / 1000} s, the whole request within ${to.requestTimeoutMs / 1000} s)`,
            }
          : err.code === 'HPE_HEADER_OVERFLOW'
            ? { code: 'HEADERS_TOO_LARGE', message: 'the request headers are too large' }
            : { code: 'MALFORMED_REQUEST', message: `the HTTP request could not be parsed (${err.code ?? 'client error'})` };
      counters.get(this)?.inc({ code: body.code });
      if (socket.writable) socket.write(errorBytes(ERROR_CODES[body.code].status, body));
      socket.destroy();
    },
  };
}

/** The first string holding a NUL in a parsed request part, as a field path. */
export function findNul(v: unknown, path = '', depth = 0): string | undefined {
  if (typeof v === 'string') return v.includes('\u0000') ? path || '(root)' : undefined;
  if (v === null || typeof v !== 'object' || depth > 64 || Buffer.isBuffer(v) || typeof (v as { pipe?: unknown }).pipe === 'function')
    return undefined;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const p = findNul(v[i], `${path}[${i}]`, depth + 1);
      if (p) return p;
    }
    return undefined;
  }
  for (const [k, x] of Object.entries(v)) {
    const key = path ? `${path}.${k}` : k;
    if (k.includes('\u0000')) return key;
    const p = findNul(x, key, depth + 1);
    if (p) return p;
  }
  return undefined;
}

/**
 * One error shape for every HTTP API of the project (cloud and edge): `{code, message, path?}`
 * with the status from ERROR_CODES, for our own errors, schema failures and fastify's own.
 */
export function installErrorHandling(
  app: FastifyInstance,
  counter: Counter<'code'>,
  bodyLimit: number,
  o: { refuseNul?: boolean } = {},
): void {
  counters.set(app, counter);
  // Cloud: a NUL is never meaningful in an identifier, a filter or a JSON field of the control
  // plane, and PostgreSQL cannot store one: refuse it in any input with the field's path, before
  // any route or store sees it. (The site's inference routes take arbitrary text and bytes.)
  if (o.refuseNul)
    app.addHook('preValidation', async (req) => {
      for (const [part, value] of [
        ['params', req.params],
        ['querystring', req.query],
        ['body', req.body],
      ] as const) {
        const at = findNul(value);
        if (at)
          throw new EwError('VALIDATION_FAILED', `${part === 'body' ? '' : `${part} `}${at}: must not contain the NUL character (U+0000)`, {
            path: part === 'body' ? at : `${part}.${at}`,
          });
      }
    });
  app.setErrorHandler((err: unknown, req, reply) => {
    let body: ErrorBody;
    if (err instanceof EwError) {
      body = err.toJSON();
    } else if (hasZodFastifySchemaValidationErrors(err)) {
      const first = err.validation[0]!;
      const path = pointerToPath(first.instancePath, err.validationContext);
      body = {
        code: 'VALIDATION_FAILED',
        message: `${path || err.validationContext || 'request'}: ${first.message}`,
        path: path || undefined,
      };
    } else {
      const e = err as { code?: string; statusCode?: number; message?: string };
      if (
        e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
        e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ||
        (e.statusCode === 400 && /JSON/.test(e.message ?? ''))
      ) {
        body = { code: 'INVALID_JSON', message: `the request body is not valid JSON: ${e.message}` };
      } else if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        body = { code: 'PAYLOAD_TOO_LARGE', message: `the request body exceeds ${bodyLimit} bytes` };
      } else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        body = { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'send the body as application/json' };
      } else if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
        // fastify's and Node's other client errors (a content length that does not match, an
        // aborted body, …): the documented code for the status, never a bare FST_ERR_… body.
        const byStatus: Record<number, ErrorBody['code']> = {
          404: 'NOT_FOUND',
          408: 'REQUEST_TIMEOUT',
          413: 'PAYLOAD_TOO_LARGE',
          414: 'URI_TOO_LONG',
          415: 'UNSUPPORTED_MEDIA_TYPE',
          416: 'RANGE_NOT_SATISFIABLE',
          429: 'RATE_LIMITED',
          431: 'HEADERS_TOO_LARGE',
        };
        body = { code: byStatus[e.statusCode] ?? 'MALFORMED_REQUEST', message: `the request was refused: ${e.message ?? 'client error'}` };
      } else {
        req.log.error({ err }, 'unhandled error');
        body = { code: 'INTERNAL', message: `internal error (request id ${req.id})` };
      }
    }
    counter.inc({ code: body.code });
    void reply.status(ERROR_CODES[body.code].status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    counter.inc({ code: 'NOT_FOUND' });
    void reply.status(404).send({ code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } satisfies ErrorBody);
  });
}

/** Reads `Authorization: Bearer <secret>`; throws UNAUTHENTICATED when absent. */
export function bearer(header: string | undefined, hint: string): string {
  const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  if (!m) throw new EwError('UNAUTHENTICATED', `send ${hint} as "Authorization: Bearer …"`);
  return m[1]!;
}
