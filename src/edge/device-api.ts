import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { EwError } from '../contracts/errors.ts';
import type { Logger } from '../lib/logger.ts';
import type { DeviceRegistry } from './device-auth.ts';

/**
 * Device credentials over the site's local API (`/api/v1/devices`) and over the cloud link (the
 * `devices.*` requests the cloud forwards from `/api/v1/sites/{id}/devices`, answered in rpc.ts). A new device's
 * secret is in the answer to `add`, once; the site keeps only its digest.
 */
export interface DeviceAdmin {
  registry?: DeviceRegistry;
  /** Cuts a revoked device's live connection. */
  disconnect(id: string): void;
  log: Logger;
}

export function registryOf(a: DeviceAdmin): DeviceRegistry {
  if (!a.registry)
    throw new EwError(
      'CONFIG_INVALID',
      "this site reads its devices from an external broker (--device-broker): device credentials and ACLs are that broker's to manage",
      { path: 'devices' },
    );
  return a.registry;
}

export function addDevice(a: DeviceAdmin, body: Record<string, unknown>) {
  const d = registryOf(a).add(body);
  a.log.info({ device: d.id, publish: d.publish, subscribe: d.subscribe }, 'device added');
  return { ...d, username: d.id, clientId: d.id };
}

export function revokeDevice(a: DeviceAdmin, id: string): void {
  registryOf(a).revoke(id);
  a.disconnect(id);
  a.log.info({ device: id }, 'device revoked; its connection was cut');
}

export function registerDeviceRoutes(app: FastifyInstance, a: DeviceAdmin): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get(
    '/api/v1/devices',
    {
      schema: {
        querystring: z.object({ after: z.string().max(64).optional(), limit: z.coerce.number().int().min(1).max(1000).optional() }),
      },
    },
    async (req) => registryOf(a).list(req.query),
  );
  r.post(
    '/api/v1/devices',
    {
      schema: {
        body: z.object({
          id: z.string(),
          publish: z.array(z.string()).optional(),
          subscribe: z.array(z.string()).optional(),
          description: z.string().optional(),
        }),
      },
    },
    async (req, reply) => {
      const d = addDevice(a, req.body);
      void reply.status(201);
      return d;
    },
  );
  r.delete('/api/v1/devices/:id', { schema: { params: z.object({ id: z.string() }) } }, async (req, reply) => {
    revokeDevice(a, req.params.id);
    void reply.status(204);
  });
}
