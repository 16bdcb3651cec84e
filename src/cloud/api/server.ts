import { idempotencyPlugin } from './idempotency.ts';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import { Counter } from 'prom-client';
import { EwError } from '../../contracts/errors.ts';
import { bearer, hardenedServerOptions, installErrorHandling, type HttpTimeouts } from '../../lib/http.ts';
import { TokenBuckets } from '../../lib/rate-limit.ts';
import { systemClock, type Clock } from '../../lib/clock.ts';
import { installHttpMetrics } from '../../lib/metrics.ts';
import { oipErrorBody } from '../../inference/oip.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Store } from '../store/store.ts';
import { hashSecret } from '../../lib/secrets.ts';
import { installRoutePermissions, permissionsOfRequest } from './route-permissions.ts';
import type { Role } from '../../contracts/permissions.ts';
import type { KeyScope, TenantState } from '../store/store.ts';
import { installAudit } from './audit.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook for every authenticated route. */
    tenantId: string;
    apiKeyId: string;
    /** The key's role and limits (null: none), set with the tenant. */
    role?: Role;
    keyScope: KeyScope | null;
    tenantState?: TenantState;
    /** Set instead of the tenant when a site calls with its own credentials. */
    siteId?: string;
  }
  interface FastifyContextConfig {
    /** Routes that take no API key (health, OpenAPI, enrollment with its own token). */
    public?: boolean;
    /** Routes a site may call with its own credentials (HTTP Basic: site id and secret). */
    siteAccess?: boolean;
    /** Static files (the web console): public, and outside the anonymous request budget. */
    staticAsset?: boolean;
    /** Platform routes (tenant management): answered while the caller's tenant is suspended. */
    platform?: boolean;
  }
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/** A token bucket: `burst` requests at once, then `perSecond`. */
export interface RateSpec {
  burst: number;
  perSecond: number;
}

/** Rate limits of the cloud API; defaults in the comments (docs/operators.md). */
export interface RateLimits {
  /** Per API key (or per site, for the routes a site calls). Default 100, then 20/s. */
  key: RateSpec;
  /** Per client address, every request. Default 300, then 50/s. */
  address: RateSpec;
  /** Per client address, enrollments (public writes) and failed logins. Default 20, then 1/s. */
  anonymous: RateSpec;
  /** Most keys and addresses remembered (least recently seen forgotten first). Default 100,000. */
  maxTracked: number;
}

export const DEFAULT_RATE_LIMITS: RateLimits = {
  key: { burst: 100, perSecond: 20 },
  address: { burst: 300, perSecond: 50 },
  anonymous: { burst: 20, perSecond: 1 },
  maxTracked: 100_000,
};

/** Parses `key=100/20,address=300/50,anonymous=20/1,maxTracked=100000`, or `off`. */
export function parseRateLimits(spec: string): Partial<RateLimits> | false {
  if (spec.trim() === 'off') return false;
  const out: Partial<RateLimits> = {};
  for (const part of spec
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const m = /^(key|address|anonymous)=(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)$/.exec(part);
    const t = /^maxTracked=(\d+)$/.exec(part);
    if (m && Number(m[2]) > 0 && Number(m[3]) > 0)
      out[m[1] as 'key' | 'address' | 'anonymous'] = { burst: Number(m[2]), perSecond: Number(m[3]) };
    else if (t && Number(t[1]) > 0) out.maxTracked = Number(t[1]);
    else
      throw new EwError(
        'CONFIG_INVALID',
        `--rate-limit: "${part}" is not name=burst/perSecond (names: key, address, anonymous) or maxTracked=n; or pass "off"`,
        { path: 'rateLimit' },
      );
  }
  return out;
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
  /** HTTP time limits (lib/http.ts DEFAULT_HTTP_TIMEOUTS). */
  timeouts?: Partial<HttpTimeouts>;
  /** Rate limits, or false for none (a cloud behind a gateway that limits already). */
  rateLimits?: Partial<RateLimits> | false;
  clock?: Clock;
}

/**
 * The fastify instance with what every route shares: zod validation and serialisation, the
 * OpenAPI document, API-key authentication (tenant-scoped), and one error shape
 * `{code, message, path?}` for every failure, including fastify's own.
 */
export async function createApiServer(o: ApiServerOptions): Promise<FastifyInstance> {
  const { httpTimeouts, ...hardened } = hardenedServerOptions(o.timeouts);
  const app = Fastify({
    ...hardened,
    ...(o.tls ? { https: { cert: o.tls.cert, key: o.tls.key, ...(httpTimeouts as object) } } : {}),
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
  app.decorateRequest('role', undefined);
  app.decorateRequest('keyScope', null);
  app.decorateRequest('tenantState', undefined);

  const httpErrors = new Counter({
    name: 'ew_cloud_http_errors_total',
    help: 'API errors by code',
    labelNames: ['code'],
    registers: [o.registry],
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Edgeweave cloud API',
        version: '1',
        description: 'Control plane of an Edgeweave fleet. Errors are JSON {code, message, path?}; see docs/errors.md.',
      },
      components: {
        securitySchemes: {
          apiKey: { type: 'http', scheme: 'bearer', description: 'An API key (ewk_…) created on first start or by an admin.' },
        },
      },
      security: [{ apiKey: [] }],
    },
    transform: jsonSchemaTransform,
  });

  installErrorHandling(app, httpErrors, o.bodyLimitBytes ?? 10 * 1024 * 1024, { refuseNul: true });
  // Every change made through the API, and every refused attempt, into the audit log.
  installAudit(app, o.store, o.clock ?? systemClock, o.log);
  installHttpMetrics(app, o.registry, 'ew_cloud');
  // The Open Inference Protocol's error body on every /v2 answer, those outside the inference
  // routes' own handler too (an unknown /v2 route).
  app.addHook('onSend', async (req, reply, payload) => oipErrorBody(req.url, reply.statusCode, payload));

  // Uploads of model files arrive as raw bytes: the route gets the stream, not a buffer.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  // Rate limits: token buckets per address (every request), per address for requests without
  // valid credentials (enrollment, failed logins: checked before the store is asked), and per
  // key or site once authenticated. Health probes are not limited.
  const limits = o.rateLimits === false ? undefined : { ...DEFAULT_RATE_LIMITS, ...o.rateLimits };
  const clock = o.clock ?? systemClock;
  const bucket = (r: RateSpec) => new TokenBuckets({ capacity: r.burst, refillPerSecond: r.perSecond, maxKeys: limits!.maxTracked, clock });
  const buckets = limits && { key: bucket(limits.key), address: bucket(limits.address), anonymous: bucket(limits.anonymous) };
  const limited = (reply: FastifyReply, retryAfterMs: number, what: string): EwError => {
    void reply.header('retry-after', String(Math.max(1, Math.ceil(retryAfterMs / 1000))));
    return new EwError('RATE_LIMITED', `too many requests ${what}; retry after ${Math.max(1, Math.ceil(retryAfterMs / 1000))} s`);
  };

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (req.url === '/healthz') return;
    const address = req.ip;
    const isPublic = req.routeOptions.config?.public === true;
    if (buckets) {
      const a = buckets.address.take(address);
      if (!a.ok) throw limited(reply, a.retryAfterMs, 'from this address');
      // The web console's files: no credentials to guess there, so only the address budget applies.
      if (req.routeOptions.config?.staticAsset) return;
      // Public writes (enrollment, which checks a join token) spend the address's anonymous
      // budget, as do failed logins below; once it is spent they are refused before any token
      // is checked. Public reads (the OpenAPI document, the console's files) do not.
      if (isPublic && req.method !== 'GET' && req.method !== 'HEAD') {
        const t = buckets.anonymous.take(address);
        if (!t.ok) throw limited(reply, t.retryAfterMs, 'without valid credentials from this address');
      }
    }
    if (isPublic) return;
    try {
      await authenticate(req);
    } catch (e) {
      buckets?.anonymous.take(address);
      throw e;
    }
    if (buckets) {
      const k = buckets.key.take(req.siteId ? `site:${req.siteId}` : req.apiKeyId);
      if (!k.ok) throw limited(reply, k.retryAfterMs, req.siteId ? 'from this site' : 'with this API key');
    }
    // A suspended tenant keeps reading (its operators see why things stopped) but changes
    // nothing until a platform admin resumes it.
    if (req.tenantState === 'suspended' && !SAFE_METHODS.has(req.method) && !req.routeOptions.config?.platform) {
      throw new EwError(
        'TENANT_SUSPENDED',
        `tenant ${req.tenantId} is suspended: reads work, changes are refused and its rollouts are held until a platform admin resumes it (edgeweave tenants resume)`,
      );
    }
  });

  // After authentication: every route's permission, from one table (route-permissions.ts).
  installRoutePermissions(app, permissionsOfRequest);

  async function authenticate(req: FastifyRequest): Promise<void> {
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
    if (key.expiresAt != null && key.expiresAt <= clock.now()) {
      throw new EwError(
        'KEY_EXPIRED',
        `API key ${key.id} expired at ${new Date(key.expiresAt).toISOString()}; ask an admin of the tenant for a new one (edgeweave keys create)`,
      );
    }
    req.tenantId = key.tenantId;
    req.apiKeyId = key.id;
    req.role = key.role;
    req.keyScope = key.scope ?? null;
    req.tenantState = key.tenantState;
  }

  // Retried mutating calls (Idempotency-Key) answer once, whichever replica they reach.
  await app.register(idempotencyPlugin, { store: o.store, clock });

  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());
  return app;
}
