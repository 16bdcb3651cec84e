import { RESERVED_STREAMS } from '../../../contracts/topics.ts';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { EwError } from '../../../contracts/errors.ts';
import { checkDeviceId, checkDeviceRequest, MAX_GRANTS } from '../../../contracts/devices.ts';
import { boundLogLines } from '../../../contracts/messages.ts';
import { validateLabels } from '../../../contracts/selector.ts';
import type { Clock } from '../../../lib/clock.ts';
import type { Fleet } from '../../fleet.ts';
import type { Site, Store } from '../../store/store.ts';
import {
  DeadLetters,
  DeviceCreated,
  DeviceList,
  EgressAudit,
  ErrorSchema,
  errors,
  Labels,
  SiteList,
  SiteLogs,
  SiteRules,
  SiteState,
  SiteView,
  siteView,
  WriteAudit,
} from '../schemas.ts';

export interface SiteRouteDeps {
  store: Pick<Store, 'getSite' | 'listSites' | 'setSiteLabels' | 'revokeSite' | 'queryUplink'>;
  fleet: Pick<Fleet, 'liveState' | 'reconcileSites' | 'revoked' | 'rpc'>;
  clock: Clock;
}

const SiteParams = z.object({ id: z.string().min(1).max(64) });

/** SITE_NOT_FOUND unless the tenant has this site. */
async function siteOr404(store: SiteRouteDeps['store'], tenantId: string, id: string): Promise<Site> {
  const s = await store.getSite(tenantId, id);
  if (!s) throw new EwError('SITE_NOT_FOUND', `no site "${id}" in this tenant; list them with GET /api/v1/sites`, { path: 'id' });
  return s;
}

/** Sites: list, relabel, revoke, and what is asked of a site over its link (logs, dead letters, writes, devices). */
export const siteRoutes: FastifyPluginAsyncZod<SiteRouteDeps> = async (app, { store, fleet, clock }) => {
  app.get(
    '/api/v1/sites',
    {
      schema: {
        tags: ['sites'],
        summary: 'List sites with live status',
        querystring: z.object({ state: SiteState.optional() }),
        response: { 200: SiteList },
      },
    },
    async (req) => {
      const all = (await store.listSites(req.tenantId)).map((s) => siteView(s, fleet.liveState(s.id)));
      const items = req.query.state ? all.filter((s) => s.state === req.query.state) : all;
      return { items, total: all.length, online: all.filter((s) => s.state === 'online').length };
    },
  );

  app.get(
    '/api/v1/sites/:id',
    { schema: { tags: ['sites'], summary: 'One site', params: SiteParams, response: { 200: SiteView, ...errors } } },
    async (req) => siteView(await siteOr404(store, req.tenantId, req.params.id), fleet.liveState(req.params.id)),
  );

  app.put(
    '/api/v1/sites/:id/labels',
    {
      schema: {
        tags: ['sites'],
        summary: "Replace a site's labels (its pools change, and so its desired state)",
        params: SiteParams,
        body: z.object({ labels: Labels }),
        response: { 200: SiteView, ...errors },
      },
    },
    async (req) => {
      validateLabels(req.body.labels, 'labels');
      const cur = await siteOr404(store, req.tenantId, req.params.id);
      if (cur.revokedAt !== null) throw new EwError('SITE_REVOKED', `site ${cur.id} is revoked; it can no longer be relabelled`);
      const s = await store.setSiteLabels(req.tenantId, req.params.id, req.body.labels);
      if (!s)
        throw new EwError('SITE_NOT_FOUND', `no site "${req.params.id}" in this tenant; list them with GET /api/v1/sites`, { path: 'id' });
      await fleet.reconcileSites([s.id]);
      return siteView(await siteOr404(store, req.tenantId, s.id), fleet.liveState(s.id));
    },
  );

  app.post(
    '/api/v1/sites/:id/revoke',
    {
      schema: {
        tags: ['sites'],
        summary: 'Revoke a site: its credentials stop working at once',
        params: SiteParams,
        response: { 200: SiteView, ...errors },
      },
    },
    async (req) => {
      await siteOr404(store, req.tenantId, req.params.id);
      const s = await store.revokeSite(req.tenantId, req.params.id, clock.now());
      if (!s)
        throw new EwError('SITE_NOT_FOUND', `no site "${req.params.id}" in this tenant; list them with GET /api/v1/sites`, { path: 'id' });
      await fleet.revoked(s.id);
      req.log.info({ siteId: s.id }, 'site revoked');
      return siteView(s, 'offline');
    },
  );

  app.get(
    '/api/v1/sites/:id/logs',
    {
      schema: {
        tags: ['sites'],
        summary: 'Recent log lines of a site, asked of the site over its link (it must be online)',
        params: SiteParams,
        querystring: z.object({ since: z.coerce.number().int().default(0), limit: z.coerce.number().int().min(1).max(2000).default(200) }),
        response: { 200: SiteLogs, ...errors },
      },
    },
    async (req) => {
      await siteOr404(store, req.tenantId, req.params.id);
      // Parsed by fleet.rpc (contracts/rpc.ts), and bounded here too, whatever the site sent: a
      // site is not trusted to size its own answer.
      return {
        lines: boundLogLines(await fleet.rpc(req.params.id, 'logs', { since: req.query.since, limit: req.query.limit }), req.query.limit),
      };
    },
  );

  app.get(
    '/api/v1/sites/:id/dead-letters',
    {
      schema: {
        tags: ['sites'],
        summary:
          'Records a site could not use (not JSON, wrong types, late, failed in a rule), newest first, asked of the site — reasons and sizes, never the raw content',
        params: SiteParams,
        querystring: z.object({
          app: z.string().optional(),
          stream: z.string().optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
        }),
        response: { 200: DeadLetters, ...errors },
      },
    },
    async (req) => {
      await siteOr404(store, req.tenantId, req.params.id);
      return fleet.rpc(req.params.id, 'dead-letters', { ...req.query });
    },
  );

  app.get(
    '/api/v1/sites/:id/writes',
    {
      schema: {
        tags: ['sites'],
        summary:
          "The site's write audit: every write its rules sent to machines (OPC UA, Modbus), refused, dry-run or failed, newest first, asked of the site",
        params: SiteParams,
        querystring: z.object({ app: z.string().optional(), limit: z.coerce.number().int().min(1).max(1000).default(100) }),
        response: { 200: WriteAudit, ...errors },
      },
    },
    async (req) => {
      await siteOr404(store, req.tenantId, req.params.id);
      return fleet.rpc(req.params.id, 'writes', { ...req.query });
    },
  );

  app.get(
    '/api/v1/sites/:id/rules',
    {
      schema: {
        tags: ['sites'],
        summary: 'The streaming rules a site runs, with their state and counters (from its last status)',
        params: SiteParams,
        response: { 200: SiteRules, ...errors },
      },
    },
    async (req) => {
      const s = await siteOr404(store, req.tenantId, req.params.id);
      return { siteId: s.id, reportedAt: s.lastSeenAt, items: s.status?.rules ?? [] };
    },
  );

  app.get(
    '/api/v1/sites/:id/egress',
    {
      schema: {
        tags: ['sites'],
        summary: "The site's egress audit: records and bytes that left it, per minute, rule, result stream and destination",
        params: SiteParams,
        querystring: z.object({ since: z.coerce.number().int().optional(), limit: z.coerce.number().int().min(1).max(5000).default(500) }),
        response: { 200: EgressAudit, ...errors },
      },
    },
    async (req) => {
      await siteOr404(store, req.tenantId, req.params.id);
      const rows = await store.queryUplink(req.tenantId, {
        siteId: req.params.id,
        stream: RESERVED_STREAMS.egressAudit,
        since: req.query.since,
        limit: req.query.limit,
      });
      return { items: rows.map((x) => x.data) };
    },
  );

  await app.register(deviceRoutes, { store, fleet });
};

// ---- a site's device credentials ----

const deviceErrors = {
  400: ErrorSchema,
  401: ErrorSchema,
  403: ErrorSchema,
  404: ErrorSchema,
  409: ErrorSchema,
  502: ErrorSchema,
  504: ErrorSchema,
};

/**
 * A site's device credentials, managed through the cloud: each call is a request to the site
 * over its link (the site keeps the registry; the cloud stores nothing). The new device's secret
 * passes through in the answer to `POST`, once, and is never logged or kept here.
 */
export const deviceRoutes: FastifyPluginAsyncZod<{ store: Pick<Store, 'getSite'>; fleet: Pick<Fleet, 'rpc'> }> = async (app, d) => {
  const liveSite = async (tenantId: string, id: string) => {
    const s = await d.store.getSite(tenantId, id);
    if (!s) throw new EwError('SITE_NOT_FOUND', `no site "${id}" in this tenant; list them with GET /api/v1/sites`, { path: 'id' });
    if (s.revokedAt !== null) throw new EwError('SITE_REVOKED', `site "${id}" was revoked`, { path: 'id' });
    return s;
  };

  app.get(
    '/api/v1/sites/:id/devices',
    {
      schema: {
        tags: ['sites'],
        summary:
          "The devices registered on a site's device broker, with their topic grants (asked of the site; no secrets), a page at a time in id order",
        params: SiteParams,
        querystring: z.object({ after: z.string().max(64).optional(), limit: z.coerce.number().int().min(1).max(1000).optional() }),
        response: { 200: DeviceList, ...deviceErrors },
      },
    },
    async (req) => {
      await liveSite(req.tenantId, req.params.id);
      // The site's refusal comes back with its own code (fleet/rpc-answer.ts).
      return d.fleet.rpc(req.params.id, 'devices.list', { ...req.query });
    },
  );

  app.post(
    '/api/v1/sites/:id/devices',
    {
      schema: {
        tags: ['sites'],
        summary:
          'Register a device on a site: its own MQTT credentials (username and client id = the device id) and the topics it may publish to and subscribe within; the secret is in this answer only',
        params: SiteParams,
        body: z.object({
          id: z.string(),
          publish: z.array(z.string()).max(MAX_GRANTS).optional(),
          subscribe: z.array(z.string()).max(MAX_GRANTS).optional(),
          description: z.string().max(200).optional(),
        }),
        response: { 201: DeviceCreated, ...deviceErrors },
      },
    },
    async (req, reply) => {
      checkDeviceRequest(req.body); // the same checks the site makes, answered without a round trip
      await liveSite(req.tenantId, req.params.id);
      const out = await d.fleet.rpc(req.params.id, 'devices.add', req.body);
      void reply.status(201);
      return out;
    },
  );

  app.delete(
    '/api/v1/sites/:id/devices/:device',
    {
      schema: {
        tags: ['sites'],
        summary: 'Revoke a device: its credentials stop working and its live connection is cut',
        params: SiteParams.extend({ device: z.string() }),
        response: { 204: z.null(), ...deviceErrors },
      },
    },
    async (req, reply) => {
      checkDeviceId(req.params.device);
      await liveSite(req.tenantId, req.params.id);
      await d.fleet.rpc(req.params.id, 'devices.revoke', { id: req.params.device });
      void reply.status(204);
    },
  );
};
