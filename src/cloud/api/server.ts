import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { hasZodFastifySchemaValidationErrors, jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import { Counter } from 'prom-client';
import { ERROR_CODES, EwError, type ErrorBody } from '../../contracts/errors.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Store } from '../store/store.ts';
import { hashSecret } from '../../lib/secrets.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook for every authenticated route. */
    tenantId: string;
    apiKeyId: string;
  }
  interface FastifyContextConfig {
    /** Routes that take no API key (health, OpenAPI, enrollment with its own token). */
    public?: boolean;
  }
}

/** Turns a JSON pointer from a validator (`/spec/models/0/name`) into `spec.models[0].name`. */
function pointerToPath(pointer: string, context?: string): string {
  const parts = pointer.split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  let out = context === 'body' || context === undefined ? '' : context;
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

export interface ApiServerOptions {
  store: Store;
  log: Logger;
  registry: Registry;
  bodyLimitBytes?: number;
}

/**
 * The fastify instance with what every route shares: zod validation and serialisation, the
 * OpenAPI document, API-key authentication (tenant-scoped), and one error shape
 * `{code, message, path?}` for every failure, including fastify's own.
 */
export async function createApiServer(o: ApiServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: o.log,
    bodyLimit: o.bodyLimitBytes ?? 10 * 1024 * 1024,
    genReqId: () => crypto.randomUUID(),
    disableRequestLogging: true,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorateRequest('tenantId', '');
  app.decorateRequest('apiKeyId', '');

  const httpErrors = new Counter({ name: 'ew_cloud_http_errors_total', help: 'API errors by code', labelNames: ['code'], registers: [o.registry] });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Edgeweave cloud API', version: '1', description: 'Control plane of an Edgeweave fleet. Errors are JSON {code, message, path?}; see docs/errors.md.' },
      components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'An API key (ewk_…) created on first start or by an admin.' } } },
      security: [{ apiKey: [] }],
    },
    transform: jsonSchemaTransform,
  });

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
        body = { code: 'PAYLOAD_TOO_LARGE', message: `the request body exceeds ${o.bodyLimitBytes ?? 10 * 1024 * 1024} bytes` };
      } else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
        body = { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'send the body as application/json' };
      } else {
        req.log.error({ err }, 'unhandled error');
        body = { code: 'INTERNAL', message: `internal error (request id ${req.id})` };
      }
    }
    httpErrors.inc({ code: body.code });
    const status = ERROR_CODES[body.code].status;
    void reply.status(status).send(body);
  });

  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } satisfies ErrorBody);
  });

  app.addHook('onRequest', async (req: FastifyRequest) => {
    if (req.routeOptions.config?.public) return;
    const header = req.headers.authorization;
    const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
    if (!m) throw new EwError('UNAUTHENTICATED', 'send an API key as "Authorization: Bearer ewk_…"');
    const key = await o.store.findApiKeyByHash(hashSecret(m[1]!));
    if (!key || key.revokedAt !== null) throw new EwError('UNAUTHENTICATED', 'the API key is not recognised or was revoked');
    req.tenantId = key.tenantId;
    req.apiKeyId = key.id;
  });

  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());
  return app as unknown as FastifyInstance;
}
