import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import { Counter } from 'prom-client';
import { EwError } from '../../contracts/errors.ts';
import { bearer, installErrorHandling } from '../../lib/http.ts';
import { installHttpMetrics } from '../../lib/metrics.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Store } from '../store/store.ts';
import { hashSecret } from '../../lib/secrets.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook for every authenticated route. */
    tenantId: string;
    apiKeyId: string;
    /** Set instead of the tenant when a site calls with its own credentials. */
    siteId?: string;
  }
  interface FastifyContextConfig {
    /** Routes that take no API key (health, OpenAPI, enrollment with its own token). */
    public?: boolean;
    /** Routes a site may call with its own credentials (HTTP Basic: site id and secret). */
    siteAccess?: boolean;
  }
}

export interface ApiServerOptions {
  store: Store;
  log: Logger;
  registry: Registry;
  bodyLimitBytes?: number;
  /** Serve HTTPS with this certificate and key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
  /** Checks a site's credentials for the routes sites may call. */
  verifySite?: (siteId: string, secret: string) => Promise<boolean>;
}

/**
 * The fastify instance with what every route shares: zod validation and serialisation, the
 * OpenAPI document, API-key authentication (tenant-scoped), and one error shape
 * `{code, message, path?}` for every failure, including fastify's own.
 */
export async function createApiServer(o: ApiServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    ...(o.tls ? { https: { cert: o.tls.cert, key: o.tls.key } } : {}),
    loggerInstance: o.log as FastifyBaseLogger,
    bodyLimit: o.bodyLimitBytes ?? 10 * 1024 * 1024,
    genReqId: () => crypto.randomUUID(),
    logController: new LogController({ disableRequestLogging: true }),
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorateRequest('tenantId', '');
  app.decorateRequest('apiKeyId', '');
  app.decorateRequest('siteId', undefined);

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

  installErrorHandling(app, httpErrors, o.bodyLimitBytes ?? 10 * 1024 * 1024);
  installHttpMetrics(app, o.registry, 'ew_cloud');

  // Uploads of model files arrive as raw bytes: the route gets the stream, not a buffer.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  app.addHook('onRequest', async (req: FastifyRequest) => {
    if (req.routeOptions.config?.public) return;
    const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (basic && req.routeOptions.config?.siteAccess && o.verifySite) {
      const [siteId, secret] = Buffer.from(basic[1]!, 'base64').toString('utf8').split(':');
      if (siteId && secret && (await o.verifySite(siteId, secret))) {
        req.siteId = siteId;
        return;
      }
      throw new EwError('UNAUTHENTICATED', 'the site credentials are not recognised (revoked?)');
    }
    const key = await o.store.findApiKeyByHash(hashSecret(bearer(req.headers.authorization, 'an API key (ewk_…)')));
    if (!key || key.revokedAt !== null) throw new EwError('UNAUTHENTICATED', 'the API key is not recognised or was revoked');
    req.tenantId = key.tenantId;
    req.apiKeyId = key.id;
  });

  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());
  return app;
}
