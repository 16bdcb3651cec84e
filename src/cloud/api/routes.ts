import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { z } from 'zod';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import { EwError, isEwError } from '../../contracts/errors.ts';
import { AppManifest, parseManifest } from '../../contracts/manifest.ts';
import { matches, validateLabels } from '../../contracts/selector.ts';
import { checkApp } from '../../stream/app.ts';
import { manifestJsonSchema } from '../../contracts/manifest-schema.ts';
import { boundLogLines, SiteStatusBody } from '../../contracts/messages.ts';
import type { Clock } from '../../lib/clock.ts';
import { hashSecret, newId, newSecret } from '../../lib/secrets.ts';
import type { Site, Store, JoinToken, Deployment, App } from '../store/store.ts';
import type { Fleet } from '../fleet.ts';
import type { Hub } from '../hub/hub.ts';
import type { FileArtifactStore } from '../artifacts.ts';
import type { RolloutController } from '../rollout/controller.ts';
import { newRollout, type Strategy } from '../rollout/reconcile.ts';
import { conflictMessage, findEndpointConflict } from '../endpoints.ts';
import { registerSiteDeviceRoutes } from './devices.ts';
import { appKey } from '../desired.ts';

export interface RouteDeps {
  store: Store;
  rollouts: RolloutController;
  artifacts: FileArtifactStore;
  fleet: Fleet;
  hub: Hub;
  clock: Clock;
  registry: Registry;
  /** The cloud's public HTTP URL, for the install command printed with a token. */
  publicUrl: () => string;
  heartbeatIntervalS: number;
  version: string;
}

/** Most bytes of result data in one page of GET /api/v1/results (docs/operators.md). */
export const RESULTS_PAGE_BYTES = 8 * 1024 * 1024;

const Labels = z.record(z.string(), z.string()).describe('label key → value, Kubernetes label syntax');
const ErrorSchema = z.object({ code: z.string(), message: z.string(), path: z.string().optional() });
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

const SiteView = z.object({
  id: z.string(),
  name: z.string(),
  region: z.string(),
  labels: Labels,
  /** `unknown`: the cloud restarted and has not heard from the site since (it was online before). */
  state: z.enum(['online', 'offline', 'unknown', 'revoked']),
  lastSeenAt: z.number().nullable(),
  createdAt: z.number(),
  revokedAt: z.number().nullable(),
  desiredGeneration: z.number(),
  reportedGeneration: z.number(),
  inSync: z.boolean(),
  status: SiteStatusBody.nullable(),
});

export function siteView(s: Site, live: 'online' | 'offline' | 'unknown'): z.infer<typeof SiteView> {
  return {
    id: s.id, name: s.name, region: s.region, labels: s.labels,
    state: s.revokedAt !== null ? 'revoked' : live,
    lastSeenAt: s.lastSeenAt, createdAt: s.createdAt, revokedAt: s.revokedAt,
    desiredGeneration: s.desiredGeneration, reportedGeneration: s.reportedGeneration,
    inSync: s.desiredGeneration > 0 && s.reportedGeneration >= s.desiredGeneration,
    status: s.status,
  };
}

const TokenView = z.object({
  id: z.string(), labels: Labels, region: z.string(), description: z.string(),
  createdAt: z.number(), expiresAt: z.number(), usedAt: z.number().nullable(), siteId: z.string().nullable(),
});
const tokenView = (t: JoinToken): z.infer<typeof TokenView> => ({
  id: t.id, labels: t.labels, region: t.region, description: t.description, createdAt: t.createdAt, expiresAt: t.expiresAt, usedAt: t.usedAt, siteId: t.siteId,
});

const AppView = z.object({ name: z.string(), version: z.string(), digest: z.string(), createdAt: z.number(), manifest: AppManifest });
const appView = (a: App): z.infer<typeof AppView> => ({ name: a.name, version: a.version, digest: a.digest, createdAt: a.createdAt, manifest: a.manifest });

const StrategyBody = z.discriminatedUnion('type', [
  z.object({ type: z.literal('all') }),
  z.object({ type: z.literal('rolling'), maxUnavailable: z.number().int().min(1).default(1) }),
  z.object({
    type: z.literal('canary'),
    canary: z.number().positive().default(1).describe('sites, or a percentage with canaryPercent'),
    canaryPercent: z.boolean().default(false),
    bakeTimeS: z.number().int().min(0).max(86_400).default(300),
    gates: z.object({ maxErrorRate: z.number().min(0).max(1).optional(), maxP95Ms: z.number().positive().optional(), maxDrift: z.number().positive().optional() }).default({}),
    then: z.enum(['all', 'rolling']).default('all'),
    maxUnavailable: z.number().int().min(1).optional(),
  }),
]);
const RolloutView = z.object({
  id: z.string(), app: z.string(), version: z.string(), strategy: z.unknown(), options: z.unknown(),
  phase: z.enum(['progressing', 'baking', 'paused', 'succeeded', 'failed', 'rolled-back', 'aborted']), reason: z.string().optional(),
  startedAt: z.number(), updatedAt: z.number(), admitted: z.array(z.string()), canaries: z.array(z.string()),
  sites: z.record(z.string(), z.object({ phase: z.string(), since: z.number(), reason: z.string().optional() })),
  history: z.array(z.object({ at: z.number(), event: z.string() })),
  pausedFrom: z.string().optional(),
  bakeStartedAt: z.number().optional(),
  canaryPassed: z.boolean().optional(),
  baseline: z.object({ at: z.number(), outputMean: z.number().nullable(), sites: z.number() }).optional(),
});

const DeploymentView = z.object({ id: z.string(), app: z.string(), version: z.string(), selector: Labels, createdAt: z.number() });
const deploymentView = (d: Deployment): z.infer<typeof DeploymentView> => ({ id: d.id, app: d.appName, version: d.appVersion, selector: d.selector, createdAt: d.createdAt });

/** Canonical JSON (sorted keys) so that a manifest's digest does not depend on key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

export function registerRoutes(app: FastifyInstance, d: RouteDeps): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const { store, fleet, clock } = d;
  const deployChains = new Map<string, Promise<unknown>>();
  const deploySerial = <T>(tenantId: string, fn: () => Promise<T>): Promise<T> => {
    const run = (deployChains.get(tenantId) ?? Promise.resolve()).then(fn);
    const tail = run.catch(() => {});
    deployChains.set(tenantId, tail);
    void tail.then(() => { if (deployChains.get(tenantId) === tail) deployChains.delete(tenantId); });
    return run;
  };

  r.get('/healthz', { config: { public: true }, schema: { tags: ['health'], summary: 'Liveness of the cloud process (no auth)', security: [], response: { 200: z.object({ ok: z.boolean(), version: z.string() }) } } },
    async () => ({ ok: true, version: d.version }));

  r.get('/api/v1/schemas/app-manifest.json', { config: { public: true }, schema: { tags: ['apps'], summary: 'The app manifest\'s JSON Schema (no auth)', security: [] } },
    async () => manifestJsonSchema());

  r.get('/metrics', { schema: { tags: ['health'], summary: 'Prometheus metrics (text format)' } }, async (_req, reply) => {
    void reply.header('content-type', d.registry.contentType);
    return d.registry.metrics();
  });

  // ---- API keys (rotation: create a new key, move clients to it, revoke the old one) ----
  const KeyView = z.object({ id: z.string(), name: z.string(), role: z.string(), createdAt: z.number(), revokedAt: z.number().nullable() });
  r.get('/api/v1/keys', { schema: { tags: ['keys'], summary: 'API keys of the tenant (never their secrets)', response: { 200: z.object({ items: z.array(KeyView) }) } } },
    async (req) => ({ items: (await store.listApiKeys(req.tenantId)).map(({ hash: _h, tenantId: _t, ...k }) => k) }));
  r.post('/api/v1/keys', {
    schema: { tags: ['keys'], summary: 'Create an API key (shown once, stored hashed)', body: z.object({ name: z.string().min(1).max(128) }), response: { 201: KeyView.extend({ key: z.string() }), ...errors } },
  }, async (req, reply) => {
    const key = newSecret('ewk');
    const k = { id: newId('key'), tenantId: req.tenantId, name: req.body.name, hash: hashSecret(key), role: 'admin' as const, createdAt: clock.now(), revokedAt: null };
    await store.createApiKey(k);
    req.log.info({ keyId: k.id, by: req.apiKeyId }, 'api key created');
    void reply.status(201);
    return { id: k.id, name: k.name, role: k.role, createdAt: k.createdAt, revokedAt: null, key };
  });
  r.delete('/api/v1/keys/:id', {
    schema: { tags: ['keys'], summary: 'Revoke an API key: it stops working at once', params: z.object({ id: z.string() }), response: { 204: z.null(), ...errors } },
  }, async (req, reply) => {
    const r = await store.revokeApiKey(req.tenantId, req.params.id, clock.now());
    if (r === 'not-found') throw new EwError('KEY_NOT_FOUND', `no live API key "${req.params.id}" in this tenant`, { path: 'id' });
    if (r === 'last-admin') throw new EwError('LAST_ADMIN_KEY', `"${req.params.id}" is the tenant's last live admin key: create another (POST /api/v1/keys) before revoking it`, { path: 'id' });
    req.log.info({ keyId: req.params.id, by: req.apiKeyId }, 'api key revoked');
    void reply.status(204);
    return null;
  });

  // ---- join tokens and enrollment ----
  r.post('/api/v1/tokens', {
    schema: {
      tags: ['enrollment'], summary: 'Create a one-time join token for a new site',
      body: z.object({
        labels: Labels.default({}),
        region: z.string().min(1).max(128).default('default'),
        ttlSeconds: z.number().int().min(60).max(30 * 24 * 3600).default(24 * 3600),
        description: z.string().max(500).default(''),
      }),
      response: { 201: TokenView.extend({ token: z.string(), installCommand: z.string() }), ...errors },
    },
  }, async (req, reply) => {
    validateLabels(req.body.labels, 'labels');
    const secret = newSecret('ewj');
    const now = clock.now();
    const t: JoinToken = {
      id: newId('tok'), tenantId: req.tenantId, hash: hashSecret(secret), labels: req.body.labels, region: req.body.region,
      description: req.body.description, createdAt: now, expiresAt: now + req.body.ttlSeconds * 1000, usedAt: null, siteId: null,
    };
    await store.createJoinToken(t);
    void reply.status(201);
    return { ...tokenView(t), token: secret, installCommand: `EW_JOIN_TOKEN=${secret} npx edgeweave edge --cloud ${d.publicUrl()} --data-dir /var/lib/edgeweave` };
  });

  r.get('/api/v1/tokens', { schema: { tags: ['enrollment'], summary: 'List join tokens (never their secrets)', response: { 200: z.object({ items: z.array(TokenView) }) } } },
    async (req) => ({ items: (await store.listJoinTokens(req.tenantId)).map(tokenView) }));

  r.delete('/api/v1/tokens/:id', {
    schema: { tags: ['enrollment'], summary: 'Delete an unused join token so it can no longer enroll a site', params: z.object({ id: z.string() }), response: { 204: z.null(), ...errors } },
  }, async (req, reply) => {
    if (!(await store.deleteJoinToken(req.tenantId, req.params.id))) {
      throw new EwError('TOKEN_NOT_FOUND', `no unused join token "${req.params.id}" in this tenant (a used token stays as the record of its site's enrollment)`, { path: 'id' });
    }
    void reply.status(204);
    return null;
  });

  r.post('/api/v1/enroll', {
    config: { public: true },
    schema: {
      tags: ['enrollment'], summary: 'Exchange a join token for site credentials (called by the agent)', security: [],
      body: z.object({ token: z.string().min(1).max(200), name: z.string().min(1).max(128).optional() }),
      response: {
        201: z.object({
          siteId: z.string(), tenantId: z.string(), region: z.string(), labels: Labels, heartbeatIntervalS: z.number(),
          mqtt: z.object({ url: z.string(), username: z.string(), password: z.string(), clientId: z.string(), protocolVersion: z.union([z.literal(4), z.literal(5)]) }),
        }),
        ...errors,
      },
    },
  }, async (req, reply) => {
    const secret = newSecret('ews');
    const result = await store.enrollSite(hashSecret(req.body.token), clock.now(), (t) => {
      const id = newId('site');
      return {
        id, tenantId: t.tenantId, name: req.body.name ?? id, region: t.region, labels: t.labels, secretHash: hashSecret(secret),
        createdAt: clock.now(), revokedAt: null, online: false, lastSeenAt: null, status: null, desiredGeneration: 0, desiredHash: null, reportedGeneration: 0,
      };
    });
    if (!result.ok) {
      const reason = result.reason;
      if (reason === 'used') throw new EwError('TOKEN_USED', 'this join token was already used; ask the operator for a new one (edgeweave tokens create)');
      if (reason === 'expired') throw new EwError('TOKEN_EXPIRED', 'this join token has expired; ask the operator for a new one (edgeweave tokens create)');
      throw new EwError('TOKEN_INVALID', 'this join token is not known to the cloud; check that it was copied whole');
    }
    const site = result.site!;
    req.log.info({ siteId: site.id, region: site.region }, 'site enrolled');
    await fleet.reconcileSites([site.id]);
    void reply.status(201);
    return {
      siteId: site.id, tenantId: site.tenantId, region: site.region, labels: site.labels, heartbeatIntervalS: d.heartbeatIntervalS,
      mqtt: { url: d.hub.agentUrl, username: site.id, password: secret, clientId: site.id, protocolVersion: d.hub.agentProtocolVersion },
    };
  });

  // ---- sites ----
  registerSiteDeviceRoutes(app, d);
  const SiteParams = z.object({ id: z.string().min(1).max(64) });
  const getSiteOr404 = async (tenantId: string, id: string): Promise<Site> => {
    const s = await store.getSite(tenantId, id);
    if (!s) throw new EwError('SITE_NOT_FOUND', `no site "${id}" in this tenant; list them with GET /api/v1/sites`, { path: 'id' });
    return s;
  };

  r.get('/api/v1/sites', {
    schema: {
      tags: ['sites'], summary: 'List sites with live status',
      querystring: z.object({ state: z.enum(['online', 'offline', 'unknown', 'revoked']).optional() }),
      response: { 200: z.object({ items: z.array(SiteView), total: z.number(), online: z.number() }) },
    },
  }, async (req) => {
    const all = (await store.listSites(req.tenantId)).map((s) => siteView(s, fleet.liveState(s.id)));
    const items = req.query.state ? all.filter((s) => s.state === req.query.state) : all;
    return { items, total: all.length, online: all.filter((s) => s.state === 'online').length };
  });

  r.get('/api/v1/sites/:id', { schema: { tags: ['sites'], summary: 'One site', params: SiteParams, response: { 200: SiteView, ...errors } } },
    async (req) => siteView(await getSiteOr404(req.tenantId, req.params.id), fleet.liveState(req.params.id)));

  r.put('/api/v1/sites/:id/labels', {
    schema: { tags: ['sites'], summary: 'Replace a site\'s labels (its pools change, and so its desired state)', params: SiteParams, body: z.object({ labels: Labels }), response: { 200: SiteView, ...errors } },
  }, async (req) => {
    validateLabels(req.body.labels, 'labels');
    const cur = await getSiteOr404(req.tenantId, req.params.id);
    if (cur.revokedAt !== null) throw new EwError('SITE_REVOKED', `site ${cur.id} is revoked; it can no longer be relabelled`);
    const s = (await store.setSiteLabels(req.tenantId, req.params.id, req.body.labels))!;
    await fleet.reconcileSites([s.id]);
    return siteView((await store.getSite(req.tenantId, s.id))!, fleet.liveState(s.id));
  });

  r.post('/api/v1/sites/:id/revoke', { schema: { tags: ['sites'], summary: 'Revoke a site: its credentials stop working at once', params: SiteParams, response: { 200: SiteView, ...errors } } },
    async (req) => {
      await getSiteOr404(req.tenantId, req.params.id);
      const s = (await store.revokeSite(req.tenantId, req.params.id, clock.now()))!;
      await fleet.revoked(s.id);
      req.log.info({ siteId: s.id }, 'site revoked');
      return siteView(s, 'offline');
    });

  r.get('/api/v1/sites/:id/logs', {
    schema: {
      tags: ['sites'], summary: 'Recent log lines of a site, asked of the site over its link (it must be online)',
      params: SiteParams, querystring: z.object({ since: z.coerce.number().int().default(0), limit: z.coerce.number().int().min(1).max(2000).default(200) }),
      response: { 200: z.object({ lines: z.array(z.object({ time: z.number(), line: z.string() })) }), ...errors },
    },
  }, async (req) => {
    await getSiteOr404(req.tenantId, req.params.id);
    // Bounded here too, whatever the site sent: a site is not trusted to size its own answer.
    try {
      return { lines: boundLogLines(await fleet.rpc(req.params.id, 'logs', { since: req.query.since, limit: req.query.limit }), req.query.limit) };
    } catch (e) {
      if (isEwError(e, 'MQTT_PAYLOAD_INVALID')) throw new EwError('SITE_UNREACHABLE', `site ${req.params.id} gave no usable answer: ${e.message}`);
      throw e;
    }
  });

  r.get('/api/v1/sites/:id/dead-letters', {
    schema: {
      tags: ['sites'], summary: 'Records a site could not use (not JSON, wrong types, late, failed in a rule), newest first, asked of the site — reasons and sizes, never the raw content',
      params: SiteParams, querystring: z.object({ app: z.string().optional(), stream: z.string().optional(), limit: z.coerce.number().int().min(1).max(1000).default(100) }),
      response: { 200: z.object({ total: z.number(), items: z.array(z.object({ id: z.number(), at: z.number(), app: z.string(), stream: z.string(), reason: z.string(), payloadBytes: z.number() })) }), ...errors },
    },
  }, async (req) => {
    await getSiteOr404(req.tenantId, req.params.id);
    return (await fleet.rpc(req.params.id, 'dead-letters', { ...req.query })) as { total: number; items: { id: number; at: number; app: string; stream: string; reason: string; payloadBytes: number }[] };
  });

  r.get('/api/v1/sites/:id/writes', {
    schema: {
      tags: ['sites'], summary: 'The site\'s write audit: every write its rules sent to machines (OPC UA, Modbus), refused, dry-run or failed, newest first, asked of the site',
      params: SiteParams, querystring: z.object({ app: z.string().optional(), limit: z.coerce.number().int().min(1).max(1000).default(100) }),
      response: { 200: z.object({ items: z.array(z.object({ id: z.number(), at: z.number(), app: z.string(), rule: z.string(), target: z.string(), value: z.string(), result: z.string(), detail: z.string().nullable() })) }), ...errors },
    },
  }, async (req) => {
    await getSiteOr404(req.tenantId, req.params.id);
    return (await fleet.rpc(req.params.id, 'writes', { ...req.query })) as { items: { id: number; at: number; app: string; rule: string; target: string; value: string; result: string; detail: string | null }[] };
  });

  r.get('/api/v1/sites/:id/rules', {
    schema: { tags: ['sites'], summary: 'The streaming rules a site runs, with their state and counters (from its last status)', params: SiteParams, response: { 200: z.object({ siteId: z.string(), reportedAt: z.number().nullable(), items: z.array(z.record(z.string(), z.unknown())) }), ...errors } },
  }, async (req) => {
    const s = await getSiteOr404(req.tenantId, req.params.id);
    return { siteId: s.id, reportedAt: s.lastSeenAt, items: (s.status?.rules ?? []) as Record<string, unknown>[] };
  });

  r.get('/api/v1/sites/:id/egress', {
    schema: {
      tags: ['sites'], summary: 'The site\'s egress audit: records and bytes that left it, per minute, rule, result stream and destination',
      params: SiteParams, querystring: z.object({ since: z.coerce.number().int().optional(), limit: z.coerce.number().int().min(1).max(5000).default(500) }),
      response: { 200: z.object({ items: z.array(z.unknown()) }), ...errors },
    },
  }, async (req) => {
    await getSiteOr404(req.tenantId, req.params.id);
    const rows = await store.queryUplink(req.tenantId, { siteId: req.params.id, stream: '_egress-audit', since: req.query.since, limit: req.query.limit });
    return { items: rows.map((x) => x.data) };
  });

  // ---- apps ----
  r.post('/api/v1/apps', {
    schema: {
      tags: ['apps'], summary: 'Push an app version (immutable once pushed)',
      body: z.object({ manifest: z.unknown() }),
      response: { 201: AppView, ...errors },
    },
  }, async (req, reply) => {
    let manifest: AppManifest;
    try {
      manifest = parseManifest(req.body.manifest);
      // Streams, rules and egress are checked as a whole before the version exists.
      checkApp(manifest);
      for (const [i, m] of manifest.spec.models.entries()) {
        // Only files this tenant uploaded: knowing another tenant's sha256 grants nothing.
        if (m.sha256 && !(d.artifacts.exists(m.sha256) && (await store.ownsArtifact(req.tenantId, m.sha256)))) {
          throw new EwError('ARTIFACT_NOT_FOUND', `model ${m.name}'s file ${m.sha256} was not uploaded by this tenant; upload it first (PUT /api/v1/artifacts/${m.sha256})`, { path: `spec.models[${i}].sha256` });
        }
      }
    } catch (e) {
      if (e instanceof EwError && e.path !== undefined) throw new EwError(e.code, e.message, { path: `manifest.${e.path}` });
      throw e;
    }
    const a: App = {
      tenantId: req.tenantId, name: manifest.metadata.name, version: manifest.metadata.version, manifest,
      digest: createHash('sha256').update(canonical(manifest)).digest('hex'), createdAt: clock.now(),
    };
    if ((await store.createApp(a)) === 'exists') {
      const cur = await store.getApp(req.tenantId, a.name, a.version);
      throw new EwError('APP_VERSION_EXISTS', `${a.name}@${a.version} already exists${cur?.digest === a.digest ? ' (identical)' : ' with different content'}; versions are immutable, so bump metadata.version`, { path: 'manifest.metadata.version' });
    }
    void reply.status(201);
    return appView(a);
  });

  r.get('/api/v1/apps', { schema: { tags: ['apps'], summary: 'List app versions', response: { 200: z.object({ items: z.array(AppView.omit({ manifest: true })) }) } } },
    async (req) => ({ items: (await store.listApps(req.tenantId)).map(({ manifest: _m, ...rest }) => ({ name: rest.name, version: rest.version, digest: rest.digest, createdAt: rest.createdAt })) }));

  r.get('/api/v1/apps/:name/versions/:version', {
    schema: { tags: ['apps'], summary: 'One app version with its manifest', params: z.object({ name: z.string(), version: z.string() }), response: { 200: AppView, ...errors } },
  }, async (req) => {
    const a = await store.getApp(req.tenantId, req.params.name, req.params.version);
    if (!a) throw new EwError('APP_NOT_FOUND', `no app ${req.params.name}@${req.params.version}; push it first`);
    return appView(a);
  });

  // ---- deployments ----
  r.post('/api/v1/deployments', {
    schema: {
      tags: ['deployments'], summary: 'Deploy app@version to the pool of sites a selector picks, with a rollout strategy',
      body: z.object({
        app: z.string().min(1), version: z.string().min(1), selector: Labels,
        strategy: StrategyBody.default({ type: 'all' }),
        stepTimeoutS: z.number().int().min(5).max(86_400).default(300),
        onFailure: z.enum(['rollback', 'halt']).default('rollback'),
      }),
      response: { 200: DeploymentView.extend({ sites: z.array(z.string()), rollout: RolloutView }), 201: DeploymentView.extend({ sites: z.array(z.string()), rollout: RolloutView }), ...errors },
    },
  }, async (req, reply) => {
    validateLabels(Object.fromEntries(Object.entries(req.body.selector).filter(([k]) => k !== 'region')), 'selector');
    const a = await store.getApp(req.tenantId, req.body.app, req.body.version);
    if (!a) throw new EwError('APP_NOT_FOUND', `no app ${req.body.app}@${req.body.version}; push it first (POST /api/v1/apps)`, { path: 'version' });
    await refuseEndpointConflict(store, req.tenantId, a, req.body.selector);
    const b = req.body.strategy;
    const strategy: Strategy = b.type === 'all' ? { type: 'all' }
      : b.type === 'rolling' ? { type: 'rolling', maxUnavailable: b.maxUnavailable }
        : { type: 'canary', canary: b.canary, canaryPercent: b.canaryPercent, bakeTimeS: b.bakeTimeS, gates: b.gates, then: b.then, maxUnavailable: b.maxUnavailable };
    const options = { stepTimeoutS: req.body.stepTimeoutS, onFailure: req.body.onFailure };
    // One submission at a time per tenant in this process, so that two identical ones racing
    // each other resolve to one deployment.
    return deploySerial(req.tenantId, async () => {
      // Idempotent: the same submission again (same version, selector, strategy and options as
      // the app's newest deployment, whose rollout was not undone) answers that deployment with
      // 200 instead of starting a second rollout. Anything newer in between makes it new again.
      const latest = (await store.listDeployments(req.tenantId)).filter((x) => x.appName === a.name).at(-1);
      if (latest && latest.appVersion === a.version && canonical(latest.selector) === canonical(req.body.selector)) {
        const ro = await store.getRollout(req.tenantId, latest.id);
        if (ro && ro.state.phase !== 'rolled-back' && ro.state.phase !== 'aborted'
          && canonical(ro.state.strategy) === canonical(strategy) && canonical(ro.state.options) === canonical(options)) {
          const sites = (await store.listSites(req.tenantId)).filter((s) => s.revokedAt === null);
          void reply.status(200);
          return { ...deploymentView(latest), sites: sites.filter((s) => matches(latest.selector, s)).map((s) => s.id), rollout: ro.state };
        }
      }
      const dep: Deployment = { id: newId('dep'), tenantId: req.tenantId, appName: a.name, appVersion: a.version, selector: req.body.selector, createdAt: clock.now() };
      const rollout = newRollout(dep.id, a.name, a.version, strategy, options, clock.now());
      // The rollout exists before the deployment does, so no reconcile ever sees one without the other.
      await store.saveRollout({ id: dep.id, tenantId: req.tenantId, state: rollout });
      await store.createDeployment(dep);
      await d.rollouts.step();
      await fleet.reconcileTenant(req.tenantId);
      const sites = (await store.listSites(req.tenantId)).filter((s) => s.revokedAt === null);
      void reply.status(201);
      return { ...deploymentView(dep), sites: sites.filter((s) => matches(dep.selector, s)).map((s) => s.id), rollout: (await store.getRollout(req.tenantId, dep.id))!.state };
    });
  });

  r.get('/api/v1/deployments', { schema: { tags: ['deployments'], summary: 'List deployments', response: { 200: z.object({ items: z.array(DeploymentView) }) } } },
    async (req) => ({ items: (await store.listDeployments(req.tenantId)).map(deploymentView) }));

  r.get('/api/v1/deployments/:id', { schema: { tags: ['deployments'], summary: 'One deployment', params: z.object({ id: z.string() }), response: { 200: DeploymentView, ...errors } } },
    async (req) => {
      const dep = await store.getDeployment(req.tenantId, req.params.id);
      if (!dep) throw new EwError('DEPLOYMENT_NOT_FOUND', `no deployment "${req.params.id}"`, { path: 'id' });
      return deploymentView(dep);
    });

  r.delete('/api/v1/deployments/:id', { schema: { tags: ['deployments'], summary: 'Remove a deployment: its app leaves the sites it was on', params: z.object({ id: z.string() }), response: { 204: z.null(), ...errors } } },
    async (req, reply) => {
      if (!(await store.deleteDeployment(req.tenantId, req.params.id))) throw new EwError('DEPLOYMENT_NOT_FOUND', `no deployment "${req.params.id}"`, { path: 'id' });
      await fleet.reconcileTenant(req.tenantId);
      void reply.status(204);
      return null;
    });

  // ---- rollouts ----
  r.get('/api/v1/rollouts', { schema: { tags: ['deployments'], summary: 'Rollouts, newest last', response: { 200: z.object({ items: z.array(RolloutView) }) } } },
    async (req) => ({ items: (await store.listRollouts(req.tenantId)).map((x) => x.state) }));
  r.get('/api/v1/rollouts/:id', { schema: { tags: ['deployments'], summary: 'One rollout with its per-site state and history', params: z.object({ id: z.string() }), response: { 200: RolloutView, ...errors } } },
    async (req) => {
      const row = await store.getRollout(req.tenantId, req.params.id);
      if (!row) throw new EwError('DEPLOYMENT_NOT_FOUND', `no rollout for deployment "${req.params.id}"`, { path: 'id' });
      return row.state;
    });
  r.post('/api/v1/rollouts/:id/:action', {
    schema: { tags: ['deployments'], summary: 'pause, resume, abort (back to the previous version) or undo (after it ended)', params: z.object({ id: z.string(), action: z.enum(['pause', 'resume', 'abort', 'undo']) }), response: { 200: RolloutView, ...errors } },
  }, async (req) => d.rollouts.act(req.tenantId, req.params.id, req.params.action));

  // ---- artifacts (model files, by sha256) ----
  const Sha = z.object({ sha256: z.string().regex(/^[a-f0-9]{64}$/, 'a lower-case hex sha256') });
  const ArtifactStatus = z.object({ sha256: z.string(), complete: z.boolean(), size: z.number(), received: z.number() });

  r.get('/api/v1/artifacts/:sha256/status', { schema: { tags: ['artifacts'], summary: 'How much of an artifact this tenant has uploaded (to resume an upload)', params: Sha, response: { 200: ArtifactStatus, ...errors } } },
    async (req) => d.artifacts.status(req.params.sha256, req.tenantId, await store.ownsArtifact(req.tenantId, req.params.sha256)));

  r.put('/api/v1/artifacts/:sha256', {
    bodyLimit: Number.MAX_SAFE_INTEGER, // the store enforces its own limit while streaming
    schema: {
      tags: ['artifacts'], summary: 'Upload a model file (streamed; resumable with Content-Range: bytes start-end/total)',
      params: Sha, headers: z.object({ 'content-range': z.string().optional() }).passthrough(),
      response: { 200: ArtifactStatus, 201: ArtifactStatus, ...errors },
    },
  }, async (req, reply) => {
    const sha = req.params.sha256;
    if (await store.ownsArtifact(req.tenantId, sha)) {
      (req.body as import('node:stream').Readable).resume();
      return d.artifacts.status(sha, req.tenantId, true);
    }
    const range = req.headers['content-range'];
    let start = 0;
    let total: number | undefined;
    if (range !== undefined) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(range));
      if (!m) throw new EwError('VALIDATION_FAILED', 'Content-Range must be "bytes start-end/total"', { path: 'Content-Range' });
      start = Number(m[1]);
      total = Number(m[3]);
    }
    // Each tenant uploads into its own partial file and owns the artifact once its bytes hashed
    // right, even when another tenant had uploaded the same file before.
    const st = await d.artifacts.write(sha, start, req.body as import('node:stream').Readable, total, req.tenantId);
    if (st.complete) await store.addArtifactOwner(req.tenantId, sha, clock.now());
    void reply.status(st.complete ? 201 : 200);
    return st;
  });

  /** The model files of every app deployed to a site (whatever its rollout says: it may prefetch). */
  async function siteArtifacts(siteId: string): Promise<Set<string>> {
    const site = await store.getSiteById(siteId);
    const out = new Set<string>();
    if (!site || site.revokedAt !== null) return out;
    const seen = new Set<string>();
    for (const dep of await store.listDeployments(site.tenantId)) {
      const k = `${dep.appName}@${dep.appVersion}`;
      if (seen.has(k) || !matches(dep.selector, site)) continue;
      seen.add(k);
      const a = await store.getApp(site.tenantId, dep.appName, dep.appVersion);
      for (const m of a?.manifest.spec.models ?? []) if (m.sha256) out.add(m.sha256);
    }
    return out;
  }

  r.get('/api/v1/artifacts/:sha256', {
    config: { siteAccess: true },
    schema: { tags: ['artifacts'], summary: 'Download an artifact (admin key of a tenant that uploaded it, or the credentials of a site it is deployed to; Range supported)', params: Sha },
  }, async (req, reply) => {
    const sha = req.params.sha256;
    if (req.siteId) {
      if (!(await siteArtifacts(req.siteId)).has(sha)) throw new EwError('ARTIFACT_NOT_ALLOWED', `no deployment targeting site ${req.siteId} references artifact ${sha}`, { path: 'sha256' });
    } else if (!(await store.ownsArtifact(req.tenantId, sha))) {
      throw new EwError('ARTIFACT_NOT_FOUND', `this tenant has no artifact ${sha}`, { path: 'sha256' });
    }
    const st = d.artifacts.status(sha);
    if (!st.complete) throw new EwError('ARTIFACT_NOT_FOUND', `no complete artifact ${sha}`, { path: 'sha256' });
    const body = () => reply.header('accept-ranges', 'bytes').header('content-type', 'application/octet-stream').header('x-content-sha256', sha);
    const rangeHeader = req.headers.range;
    if (rangeHeader !== undefined) {
      // One range, bytes=start-[end] or bytes=-suffix (RFC 9110 §14.1.2); anything else, or a
      // range that starts past the end or after its own end, is 416 with the size.
      const m = /^bytes=(\d*)-(\d*)$/.exec(rangeHeader.trim());
      let start = NaN;
      let end = NaN;
      if (m && m[1] !== '') {
        start = Number(m[1]);
        end = m[2] ? Math.min(Number(m[2]), st.size - 1) : st.size - 1;
        if (m[2] && Number(m[2]) < start) start = NaN;
      } else if (m && m[2] !== '' && Number(m[2]) > 0) {
        start = Math.max(0, st.size - Number(m[2]));
        end = st.size - 1;
      }
      if (!Number.isSafeInteger(start) || start >= st.size || end < start) {
        void reply.header('content-range', `bytes */${st.size}`);
        throw new EwError('RANGE_NOT_SATISFIABLE', `Range "${rangeHeader.slice(0, 100)}" cannot be served: the artifact has ${st.size} bytes; ask for bytes=start-end with start <= end < ${st.size}`, { path: 'Range' });
      }
      const { stream } = d.artifacts.open(sha, { start, end });
      void body().status(206).header('content-range', `bytes ${start}-${end}/${st.size}`).header('content-length', end - start + 1);
      return reply.send(stream);
    }
    const { stream, size } = d.artifacts.open(sha);
    void body().header('content-length', size);
    return reply.send(stream);
  });

  // ---- results (uplink) ----
  r.get('/api/v1/results', {
    schema: {
      tags: ['results'], summary: 'Results sent up by sites, oldest first; page with `after`',
      querystring: z.object({
        site: z.string().optional(),
        stream: z.string().optional(),
        app: z.string().optional(),
        rule: z.string().optional(),
        since: z.coerce.number().int().optional().describe('site time, ms since epoch, inclusive'),
        until: z.coerce.number().int().optional().describe('site time, ms since epoch, exclusive'),
        after: z.coerce.number().int().optional().describe('the `next` cursor of the previous page'),
        limit: z.coerce.number().int().min(1).max(5000).default(100),
      }),
      response: {
        200: z.object({
          items: z.array(z.object({ seq: z.number(), siteId: z.string(), id: z.string(), stream: z.string(), app: z.string().optional(), rule: z.string().optional(), at: z.number(), receivedAt: z.number(), data: z.unknown() })),
          next: z.number().nullable(),
        }),
        ...errors,
      },
    },
  }, async (req) => {
    const q = req.query;
    const rows = await store.queryUplink(req.tenantId, { siteId: q.site, stream: q.stream, app: q.app, rule: q.rule, since: q.since, until: q.until, afterSeq: q.after, limit: q.limit });
    // A page is also bounded in bytes (RESULTS_PAGE_BYTES): past it, the page ends early and
    // `next` continues from there, so 5,000 results of 256 KiB never make a 1 GiB answer.
    let bytes = 0;
    let n = 0;
    while (n < rows.length && (n === 0 || bytes + Buffer.byteLength(JSON.stringify(rows[n]!.data ?? null)) <= RESULTS_PAGE_BYTES)) {
      bytes += Buffer.byteLength(JSON.stringify(rows[n]!.data ?? null));
      n++;
    }
    const page = rows.slice(0, n);
    return {
      items: page.map((x) => ({ seq: x.seq, siteId: x.siteId, id: x.msgId, stream: x.stream, app: x.app, rule: x.rule, at: x.at, receivedAt: x.receivedAt, data: x.data })),
      next: rows.length === q.limit || n < rows.length ? page[page.length - 1]!.seq : null,
    };
  });

  r.get('/api/v1/info', { schema: { tags: ['health'], summary: 'Cloud facts for clients', response: { 200: z.object({ version: z.string(), hub: z.string(), agentMqttUrl: z.string(), host: z.string(), store: z.string() }) } } },
    async () => ({ version: d.version, hub: d.hub.kind, agentMqttUrl: d.hub.agentUrl, host: hostname(), store: store.kind }));
}

/** ENDPOINT_CONFLICT when deploying `a` to `selector` would put two apps with one endpoint name on a site. */
async function refuseEndpointConflict(store: Store, tenantId: string, a: App, selector: Deployment['selector']): Promise<void> {
  if (a.manifest.spec.endpoints.length === 0) return;
  const deployments = await store.listDeployments(tenantId);
  const apps = new Map<string, App>();
  for (const d of deployments) {
    const k = appKey(d.appName, d.appVersion);
    if (!apps.has(k)) { const x = await store.getApp(tenantId, d.appName, d.appVersion); if (x) apps.set(k, x); }
  }
  const rollouts = new Map((await store.listRollouts(tenantId, { ids: deployments.map((d) => d.id) })).map((r) => [r.id, r.state]));
  const c = findEndpointConflict(a, selector, await store.listSites(tenantId), deployments, apps, rollouts);
  if (c) throw new EwError('ENDPOINT_CONFLICT', conflictMessage(c), { path: 'app' });
}
