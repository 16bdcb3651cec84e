import type { FastifyInstance } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import type { Counter } from 'prom-client';
import { ERROR_CODES, EwError, type ErrorBody } from '../contracts/errors.ts';

/** Turns a JSON pointer from a validator (`/spec/models/0/name`) into `spec.models[0].name`. */
export function pointerToPath(pointer: string, context?: string): string {
  const parts = pointer.split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = context === 'body' || context === undefined ? '' : context;
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

/**
 * One error shape for every HTTP API of the project (cloud and edge): `{code, message, path?}`
 * with the status from ERROR_CODES, for our own errors, schema failures and fastify's own.
 */
export function installErrorHandling(app: FastifyInstance, counter: Counter<'code'>, bodyLimit: number): void {
  app.setErrorHandler((err: unknown, req, reply) => {
    let body: ErrorBody;
    if (err instanceof EwError) {
      body = err.toJSON();
    } else if (hasZodFastifySchemaValidationErrors(err)) {
      const first = err.validation[0]!;
      const path = pointerToPath(first.instancePath, err.validationContext);
      body = { code: 'VALIDATION_FAILED', message: `${path || err.validationContext || 'request'}: ${first.message}`, path: path || undefined };
    } else {
      const e = err as { code?: string; statusCode?: number; message?: string };
      if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || (e.statusCode === 400 && /JSON/.test(e.message ?? ''))) {
        body = { code: 'INVALID_JSON', message: `the request body is not valid JSON: ${e.message}` };
      } else if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
        body = { code: 'PAYLOAD_TOO_LARGE', message: `the request body exceeds ${bodyLimit} bytes` };
      } else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        body = { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'send the body as application/json' };
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
