import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ERROR_CODES, EwError, type ErrorBody, type ErrorCode } from '../../contracts/errors.ts';
import { checkDeviceId, checkDeviceRequest, MAX_GRANTS } from '../../contracts/devices.ts';
import type { Fleet } from '../fleet.ts';
import type { Store } from '../store/store.ts';
import { ErrorBodySchema } from '../../contracts/error-body.ts';

/**
 * A site's device credentials, managed through the cloud: each call is a request to the site
 * over its link (the site keeps the registry; the cloud stores nothing). The new device's secret
 * passes through in the answer to `POST`, once, and is never logged or kept here.
 */
const ErrorSchema = ErrorBodySchema;
const errors = { 400: ErrorSchema, 401: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 504: ErrorSchema };
const Device = z.object({ id: z.string(), publish: z.array(z.string()), subscribe: z.array(z.string()), createdAt: z.number(), description: z.string().optional() });

/** The site's refusal, with its own code, as ours. */
function unwrap<T>(r: unknown): T {
  const e = (r as { error?: ErrorBody } | undefined)?.error;
  if (e) throw new EwError((e.code in ERROR_CODES ? e.code : 'INTERNAL') as ErrorCode, e.message, { path: e.path });
  return r as T;
}

export function registerSiteDeviceRoutes(app: FastifyInstance, d: { store: Store; fleet: Fleet }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const site = async (tenantId: string, id: string) => {
    const s = await d.store.getSite(tenantId, id);
    if (!s) throw new EwError('SITE_NOT_FOUND', `no site "${id}" in this tenant; list them with GET /api/v1/sites`, { path: 'id' });
    if (s.revokedAt !== null) throw new EwError('SITE_REVOKED', `site "${id}" was revoked`, { path: 'id' });
    return s;
  };
  const Params = z.object({ id: z.string().min(1).max(64) });

  r.get('/api/v1/sites/:id/devices', {
    schema: {
      tags: ['sites'], summary: 'The devices registered on a site\'s device broker, with their topic grants (asked of the site; no secrets), a page at a time in id order',
      params: Params, querystring: z.object({ after: z.string().max(64).optional(), limit: z.coerce.number().int().min(1).max(1000).optional() }),
      response: { 200: z.object({ items: z.array(Device), next: z.string().nullable() }), ...errors },
    },
  }, async (req) => {
    await site(req.tenantId, req.params.id);
    return unwrap<{ items: z.infer<typeof Device>[]; next: string | null }>(await d.fleet.rpc(req.params.id, 'devices.list', { ...req.query }));
  });

  r.post('/api/v1/sites/:id/devices', {
    schema: {
      tags: ['sites'], summary: 'Register a device on a site: its own MQTT credentials (username and client id = the device id) and the topics it may publish to and subscribe within; the secret is in this answer only',
      params: Params,
      body: z.object({ id: z.string(), publish: z.array(z.string()).max(MAX_GRANTS).optional(), subscribe: z.array(z.string()).max(MAX_GRANTS).optional(), description: z.string().max(200).optional() }),
      response: { 201: Device.extend({ secret: z.string(), username: z.string(), clientId: z.string() }), ...errors },
    },
  }, async (req, reply) => {
    checkDeviceRequest(req.body); // the same checks the site makes, answered without a round trip
    await site(req.tenantId, req.params.id);
    const out = unwrap<z.infer<typeof Device> & { secret: string; username: string; clientId: string }>(await d.fleet.rpc(req.params.id, 'devices.add', req.body));
    void reply.status(201);
    return out;
  });

  r.delete('/api/v1/sites/:id/devices/:device', {
    schema: { tags: ['sites'], summary: 'Revoke a device: its credentials stop working and its live connection is cut', params: Params.extend({ device: z.string() }), response: { 204: z.null(), ...errors } },
  }, async (req, reply) => {
    checkDeviceId(req.params.device);
    await site(req.tenantId, req.params.id);
    unwrap(await d.fleet.rpc(req.params.id, 'devices.revoke', { id: req.params.device }));
    void reply.status(204);
  });
}
