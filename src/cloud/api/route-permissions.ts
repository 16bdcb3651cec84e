import type { FastifyInstance, FastifyRequest } from 'fastify';
import { EwError } from '../../contracts/errors.ts';
import { permissionsOf, type Permission } from '../../contracts/permissions.ts';

/**
 * What each route of the cloud API needs, in one table: a permission (names from
 * contracts/permissions.ts, the same `GET /api/v1/me` lists), `any-key` (any valid API key: who
 * am I, cloud facts) or `public` (no credentials: health, enrollment with its own token).
 * One hook (below) enforces it for every request; test/route-permissions.test.ts walks every
 * route the server registers and the OpenAPI document lists and fails when one has no entry
 * here, then checks every role's allow/deny against this table.
 *
 * Keys are `METHOD /path/:param` as fastify registers them (HEAD answers as GET).
 */
export type RouteAccess = Permission | 'any-key' | 'public';

export const ROUTE_PERMISSIONS = {
  // health, facts, schemas
  'GET /healthz': 'public',
  'GET /openapi.json': 'public',
  'GET /api/v1/schemas/app-manifest.json': 'public',
  'GET /metrics': 'metrics:read',
  'GET /api/v1/info': 'any-key',
  'GET /api/v1/me': 'any-key',
  // API keys
  'GET /api/v1/keys': 'keys:read',
  'POST /api/v1/keys': 'keys:write',
  'DELETE /api/v1/keys/:id': 'keys:write',
  // join tokens and enrollment
  'POST /api/v1/tokens': 'tokens:write',
  'GET /api/v1/tokens': 'tokens:read',
  'DELETE /api/v1/tokens/:id': 'tokens:write',
  'POST /api/v1/enroll': 'public',
  // sites
  'GET /api/v1/sites': 'sites:read',
  'GET /api/v1/sites/:id': 'sites:read',
  'PUT /api/v1/sites/:id/labels': 'sites:write',
  'POST /api/v1/sites/:id/revoke': 'sites:write',
  'GET /api/v1/sites/:id/logs': 'sites:read',
  'GET /api/v1/sites/:id/dead-letters': 'sites:read',
  'GET /api/v1/sites/:id/writes': 'sites:read',
  'GET /api/v1/sites/:id/rules': 'sites:read',
  'GET /api/v1/sites/:id/egress': 'sites:read',
  'GET /api/v1/sites/:id/devices': 'sites:read',
  'POST /api/v1/sites/:id/devices': 'sites:write',
  'DELETE /api/v1/sites/:id/devices/:device': 'sites:write',
  // apps and their model files (a site downloads with its own credentials: see the hook)
  'POST /api/v1/apps': 'apps:write',
  'GET /api/v1/apps': 'apps:read',
  'GET /api/v1/apps/:name/versions/:version': 'apps:read',
  'GET /api/v1/artifacts/:sha256/status': 'apps:read',
  'PUT /api/v1/artifacts/:sha256': 'apps:write',
  'GET /api/v1/artifacts/:sha256': 'apps:read',
  // deployments and rollouts
  'POST /api/v1/deployments': 'deployments:write',
  'GET /api/v1/deployments': 'deployments:read',
  'GET /api/v1/deployments/:id': 'deployments:read',
  'DELETE /api/v1/deployments/:id': 'deployments:write',
  'GET /api/v1/rollouts': 'deployments:read',
  'GET /api/v1/rollouts/:id': 'deployments:read',
  'POST /api/v1/rollouts/:id/:action': 'rollouts:act',
  // results, alerts and the live event stream
  'GET /api/v1/results': 'results:read',
  'GET /api/v1/results/export': 'results:read',
  'GET /api/v1/events': 'results:read',
  'GET /api/v1/retention': 'results:read',
  'PUT /api/v1/retention/:stream': 'results:write',
  'DELETE /api/v1/retention/:stream': 'results:write',
  // the tenant's audit log; tenants (platform)
  'GET /api/v1/audit': 'audit:read',
  'GET /api/v1/tenants': 'tenants:read',
  'GET /api/v1/tenants/:id': 'tenants:read',
  'POST /api/v1/tenants': 'tenants:write',
  'PUT /api/v1/tenants/:id/quotas': 'tenants:write',
  'POST /api/v1/tenants/:id/suspend': 'tenants:write',
  'POST /api/v1/tenants/:id/resume': 'tenants:write',
  'DELETE /api/v1/tenants/:id': 'tenants:write',
  // inference: routing audit, Open Inference Protocol (/v2), OpenAI-compatible (/v1)
  'GET /api/v1/router/decisions': 'endpoints:read',
  'GET /api/v1/router/explain/:endpoint': 'endpoints:read',
  'GET /v2/health/live': 'public',
  'GET /v2/health/ready': 'public',
  'GET /v2': 'endpoints:read',
  'GET /v2/models': 'endpoints:read',
  'GET /v2/models/:name': 'endpoints:read',
  'GET /v2/models/:name/ready': 'endpoints:read',
  'POST /v2/models/:name/infer': 'endpoints:infer',
  'GET /v2/models/:name/versions/:version': 'endpoints:read',
  'GET /v2/models/:name/versions/:version/ready': 'endpoints:read',
  'POST /v2/models/:name/versions/:version/infer': 'endpoints:infer',
  'GET /v1/models': 'endpoints:read',
  'GET /v1/models/:id': 'endpoints:read',
  'POST /v1/chat/completions': 'endpoints:infer',
  'POST /v1/completions': 'endpoints:infer',
  'POST /v1/embeddings': 'endpoints:infer',
} as const satisfies Record<string, RouteAccess>;

/** The table's entry for a route, or undefined when it has none (the hook then refuses). */
export function routeAccess(method: string, url: string): RouteAccess | undefined {
  const key = `${method === 'HEAD' ? 'GET' : method} ${url}`;
  return Object.hasOwn(ROUTE_PERMISSIONS, key) ? ROUTE_PERMISSIONS[key as keyof typeof ROUTE_PERMISSIONS] : undefined;
}

/**
 * Whether `permissions` may call the route: undefined when allowed, else what is lacking.
 * A route without an entry is refused (fail closed), as is a public route called with a key
 * (the entry says public, so nothing to check) — that one is allowed.
 */
export function lacking(method: string, url: string, permissions: readonly Permission[]): string | undefined {
  const access = routeAccess(method, url);
  if (access === undefined) return `a declared permission (${method} ${url} has none in the route table, so it is refused)`;
  if (access === 'public' || access === 'any-key') return undefined;
  return permissions.includes(access) ? undefined : `the permission ${access}`;
}

/** Every route registered on an app, as the hook sees it (for the route-table test). */
export interface RegisteredRoute {
  method: string;
  url: string;
  public: boolean;
  staticAsset: boolean;
  siteAccess: boolean;
}
const registered = new WeakMap<FastifyInstance, RegisteredRoute[]>();
export function registeredRoutes(app: FastifyInstance): readonly RegisteredRoute[] {
  return registered.get(app) ?? [];
}

/**
 * The one check of the table, an `onRequest` hook after authentication (so a request is refused
 * before its body is read). The web console's static files carry `staticAsset` and are public by
 * construction; a site calling with its own credentials reaches only the routes marked
 * `siteAccess` (the auth hook saw to that) and holds no role.
 */
export function installRoutePermissions(app: FastifyInstance, keyPermissions: (req: FastifyRequest) => readonly Permission[]): void {
  const routes: RegisteredRoute[] = [];
  registered.set(app, routes);
  app.addHook('onRoute', (r) => {
    for (const m of [r.method].flat()) {
      routes.push({
        method: m,
        url: r.url,
        public: r.config?.public === true,
        staticAsset: r.config?.staticAsset === true,
        siteAccess: r.config?.siteAccess === true,
      });
    }
  });
  app.addHook('onRequest', async (req) => {
    const cfg = req.routeOptions.config;
    const url = req.routeOptions.url;
    // No route (a 404 follows) or a console file: nothing to check.
    if (url === undefined || cfg?.staticAsset) return;
    if (cfg?.public) {
      // Declared public on the route and in the table alike, or refused: a route cannot turn
      // public without the table saying so.
      if (routeAccess(req.method, url) === 'public') return;
      throw new EwError(
        'PERMISSION_DENIED',
        `${req.method} ${url} is marked public but the route table (src/cloud/api/route-permissions.ts) does not say so; refused`,
      );
    }
    if (req.siteId) return;
    const missing = lacking(req.method, url, keyPermissions(req));
    if (missing)
      throw new EwError('PERMISSION_DENIED', `this API key (role ${req.role ?? 'none'}) lacks ${missing} that ${req.method} ${url} needs`);
  });
}

/** The permissions of the calling API key, by its role. */
export const permissionsOfRequest = (req: FastifyRequest): readonly Permission[] => (req.role ? permissionsOf(req.role) : []);
