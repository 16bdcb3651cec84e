import type { FastifyInstance, FastifyRequest } from 'fastify';
import { EwError } from '../../contracts/errors.ts';
import { matches, type Labels, type Selector } from '../../contracts/selector.ts';
import type { KeyScope, Store } from '../store/store.ts';
import type { FileArtifactStore } from '../artifacts.ts';

/**
 * Two checks every route gets from one place, keyed by route pattern (so they follow the routes
 * wherever their handlers live):
 *
 * - a key limited to apps or site labels (its `scope`) reaches only those: calls naming an app,
 *   a site, a deployment or a selector outside it are refused with KEY_SCOPE_DENIED (403, naming
 *   the limit), lists are filtered, and a route this table does not know how to confine is
 *   refused to a limited key altogether (a new route is closed to it until it is listed here);
 * - the tenant's quotas on apps and artifact bytes (sites are counted by the store inside the
 *   enrollment's transaction; results per day by the fleet as they arrive).
 *
 * Lookups are by the caller's tenant only, so an id of another tenant is "not found" exactly as
 * an id that does not exist: nothing here answers differently for another tenant's ids.
 */
export function installTenancyGuards(app: FastifyInstance, o: { store: Store; artifacts: FileArtifactStore }): void {
  const { store } = o;

  const inLabels = (scope: KeyScope, site: { labels: Labels; region: string }) => !scope.labels || matches(scope.labels, site);
  /** A selector stays within the scope when it pins every label the scope pins, to the same value. */
  const selectorWithin = (scope: KeyScope, selector: Selector) =>
    !scope.labels || Object.entries(scope.labels).every(([k, v]) => selector[k] === v);
  const appWithin = (scope: KeyScope, app: string) => !scope.apps || scope.apps.includes(app);
  const describe = (s: KeyScope) =>
    [
      s.apps ? `apps ${s.apps.join(', ')}` : '',
      s.labels
        ? `sites labelled ${Object.entries(s.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(',')}`
        : '',
    ]
      .filter(Boolean)
      .join(' and ');
  const deny = (s: KeyScope, what: string, path?: string) =>
    new EwError('KEY_SCOPE_DENIED', `this API key is limited to ${describe(s)}; ${what}`, { path });

  async function site(req: FastifyRequest, s: KeyScope): Promise<void> {
    const id = (req.params as { id: string }).id;
    const st = await store.getSite(req.tenantId, id);
    // Absent (or another tenant's): the route answers SITE_NOT_FOUND as for any key.
    if (st && !inLabels(s, st)) throw deny(s, `site ${id} is outside them`, 'id');
  }
  async function deployment(req: FastifyRequest, s: KeyScope): Promise<void> {
    const id = (req.params as { id: string }).id;
    const dep = await store.getDeployment(req.tenantId, id);
    if (dep && !(appWithin(s, dep.appName) && selectorWithin(s, dep.selector)))
      throw deny(s, `deployment ${id} (${dep.appName}) is outside them`, 'id');
  }
  const body = (req: FastifyRequest) => (req.body ?? {}) as Record<string, unknown>;

  /** Per route: how a limited key is confined there. Not listed: refused to limited keys. */
  const confine: Record<string, (req: FastifyRequest, s: KeyScope) => Promise<void> | void> = {
    'GET /api/v1/me': () => {},
    'GET /api/v1/info': () => {},
    'GET /api/v1/sites': () => {}, // filtered
    'GET /api/v1/sites/:id': site,
    'POST /api/v1/sites/:id/revoke': site,
    'GET /api/v1/sites/:id/logs': site,
    'GET /api/v1/sites/:id/dead-letters': site,
    'GET /api/v1/sites/:id/writes': site,
    'GET /api/v1/sites/:id/rules': site,
    'GET /api/v1/sites/:id/egress': site,
    'GET /api/v1/sites/:id/devices': site,
    'POST /api/v1/sites/:id/devices': site,
    'DELETE /api/v1/sites/:id/devices/:device': site,
    'PUT /api/v1/sites/:id/labels': async (req, s) => {
      await site(req, s);
      const cur = await store.getSite(req.tenantId, (req.params as { id: string }).id);
      if (cur && !inLabels(s, { labels: body(req).labels as Labels, region: cur.region }))
        throw deny(s, 'the new labels would take the site outside them', 'labels');
    },
    'GET /api/v1/tokens': () => {}, // filtered
    'POST /api/v1/tokens': (req, s) => {
      const b = body(req);
      if (!inLabels(s, { labels: (b.labels ?? {}) as Labels, region: String(b.region ?? 'default') }))
        throw deny(s, 'a token must give its site those labels', 'labels');
    },
    'DELETE /api/v1/tokens/:id': async (req, s) => {
      const t = (await store.listJoinTokens(req.tenantId)).find((x) => x.id === (req.params as { id: string }).id);
      if (t && !inLabels(s, t)) throw deny(s, `token ${t.id} is for sites outside them`, 'id');
    },
    'POST /api/v1/apps': (req, s) => {
      const name = (body(req).manifest as { metadata?: { name?: unknown } } | undefined)?.metadata?.name;
      if (typeof name === 'string' && !appWithin(s, name)) throw deny(s, `it may not push app ${name}`, 'manifest.metadata.name');
    },
    'GET /api/v1/apps': () => {}, // filtered
    'GET /api/v1/apps/:name/versions/:version': (req, s) => {
      const name = (req.params as { name: string }).name;
      if (!appWithin(s, name)) throw deny(s, `app ${name} is outside them`, 'name');
    },
    'POST /api/v1/deployments': (req, s) => {
      const b = body(req);
      if (!appWithin(s, String(b.app))) throw deny(s, `it may not deploy app ${String(b.app)}`, 'app');
      if (!selectorWithin(s, (b.selector ?? {}) as Selector))
        throw deny(
          s,
          `the selector must pin ${Object.entries(s.labels!)
            .map(([k, v]) => `${k}=${v}`)
            .join(',')}`,
          'selector',
        );
    },
    'GET /api/v1/deployments': () => {}, // filtered
    'GET /api/v1/deployments/:id': deployment,
    'DELETE /api/v1/deployments/:id': deployment,
    'GET /api/v1/rollouts': () => {}, // filtered
    'GET /api/v1/rollouts/:id': deployment,
    'POST /api/v1/rollouts/:id/:action': deployment,
    // Model files belong to the tenant, not to an app: a developer limited to apps uploads them.
    'GET /api/v1/artifacts/:sha256/status': () => {},
    'PUT /api/v1/artifacts/:sha256': () => {},
    'GET /api/v1/artifacts/:sha256': () => {},
    'GET /api/v1/results': async (req, s) => {
      const q = req.query as { app?: string; site?: string };
      if (s.apps && (q.app === undefined || !appWithin(s, q.app))) throw deny(s, 'ask for one of its apps with app=', 'app');
      if (s.labels) {
        if (q.site === undefined) throw deny(s, 'ask for one of its sites with site=', 'site');
        const st = await store.getSite(req.tenantId, q.site);
        if (st && !inLabels(s, st)) throw deny(s, `site ${q.site} is outside them`, 'site');
      }
    },
  };

  app.addHook('preHandler', async (req) => {
    // Public routes and sites calling with their own credentials carry no key to confine.
    if (!req.tenantId || req.siteId) return;
    const route = `${req.method} ${req.routeOptions.url ?? ''}`;
    if (req.keyScope && (req.keyScope.apps || req.keyScope.labels)) {
      const fn = confine[route];
      if (!fn) throw deny(req.keyScope, `${route} is not open to a limited key (use a key without limits)`);
      await fn(req, req.keyScope);
    }
    if (route === 'POST /api/v1/apps' || route === 'PUT /api/v1/artifacts/:sha256') await quota(req, route);
  });

  async function quota(req: FastifyRequest, route: string): Promise<void> {
    const q = (await store.getTenant(req.tenantId))?.quotas ?? {};
    if (route === 'POST /api/v1/apps' && q.apps !== undefined) {
      const name = (body(req).manifest as { metadata?: { name?: unknown } } | undefined)?.metadata?.name;
      const names = new Set((await store.listApps(req.tenantId)).map((a) => a.name));
      if (typeof name === 'string' && !names.has(name) && names.size >= q.apps) {
        throw new EwError(
          'QUOTA_EXCEEDED',
          `the tenant has ${names.size} app(s), its quota of apps is ${q.apps}: push a new version of an existing app, or ask the platform admin to raise the quota`,
          { path: 'manifest.metadata.name' },
        );
      }
    }
    if (route === 'PUT /api/v1/artifacts/:sha256' && q.artifactBytes !== undefined) {
      const sha = (req.params as { sha256: string }).sha256;
      if (await store.ownsArtifact(req.tenantId, sha)) return;
      let held = 0;
      for (const x of await store.listArtifacts(req.tenantId)) held += o.artifacts.status(x).size;
      const range = /\/(\d+)$/.exec(String(req.headers['content-range'] ?? ''));
      const length = req.headers['content-length'];
      // A body of unknown size could pass the quota unseen: the size must be said up front.
      if (!range && length === undefined)
        throw new EwError(
          'VALIDATION_FAILED',
          'this tenant has an artifact-bytes quota: send Content-Length, or Content-Range: bytes start-end/total, so the upload can be checked against it',
          { path: 'Content-Length' },
        );
      const incoming = range ? Number(range[1]) : Number(length);
      if (held + incoming > q.artifactBytes) {
        throw new EwError(
          'QUOTA_EXCEEDED',
          `the tenant holds ${held} bytes of artifacts; this file of ${incoming} bytes would pass its quota of ${q.artifactBytes} bytes: delete the tenant's unused apps' files or ask the platform admin to raise the quota`,
          { path: 'sha256' },
        );
      }
    }
  }

  // Lists answered to a limited key hold only what it may reach.
  app.addHook('preSerialization', async (req: FastifyRequest, reply, payload: unknown) => {
    const s = req.keyScope;
    if (!s || !(s.apps || s.labels) || reply.statusCode >= 300 || req.method !== 'GET' || !payload || typeof payload !== 'object')
      return payload;
    const p = payload as { items?: unknown[] } & Record<string, unknown>;
    if (!Array.isArray(p.items)) return payload;
    switch (req.routeOptions.url) {
      case '/api/v1/sites': {
        const items = (p.items as { labels: Labels; region: string; state: string }[]).filter((x) => inLabels(s, x));
        return { ...p, items, total: items.length, online: items.filter((x) => x.state === 'online').length };
      }
      case '/api/v1/tokens':
        return { ...p, items: (p.items as { labels: Labels; region: string }[]).filter((x) => inLabels(s, x)) };
      case '/api/v1/apps':
        return { ...p, items: (p.items as { name: string }[]).filter((x) => appWithin(s, x.name)) };
      case '/api/v1/deployments':
        return {
          ...p,
          items: (p.items as { app: string; selector: Selector }[]).filter((x) => appWithin(s, x.app) && selectorWithin(s, x.selector)),
        };
      case '/api/v1/rollouts': {
        const ok = new Set(
          (await store.listDeployments(req.tenantId))
            .filter((x) => appWithin(s, x.appName) && selectorWithin(s, x.selector))
            .map((x) => x.id),
        );
        return { ...p, items: (p.items as { id: string }[]).filter((x) => ok.has(x.id)) };
      }
      default:
        return payload;
    }
  });
}
