import { hostname } from 'node:os';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Registry } from 'prom-client';
import { manifestJsonSchema } from '../../../contracts/manifest-schema.ts';
import type { Hub } from '../../hub/hub.ts';
import type { Store } from '../../store/store.ts';
import { Health, Info } from '../schemas.ts';

/** Liveness, metrics, cloud facts and the manifest's JSON Schema: what clients and probes read. */
export const healthRoutes: FastifyPluginAsyncZod<{
  version: string;
  registry: Pick<Registry, 'contentType' | 'metrics'>;
  hub: Pick<Hub, 'kind' | 'agentUrl'>;
  storeKind: Store['kind'];
}> = async (app, d) => {
  app.get(
    '/healthz',
    {
      config: { public: true },
      schema: { tags: ['health'], summary: 'Liveness of the cloud process (no auth)', security: [], response: { 200: Health } },
    },
    async () => ({ ok: true, version: d.version }),
  );

  app.get(
    '/api/v1/schemas/app-manifest.json',
    { config: { public: true }, schema: { tags: ['apps'], summary: "The app manifest's JSON Schema (no auth)", security: [] } },
    async () => manifestJsonSchema(),
  );

  app.get('/metrics', { schema: { tags: ['health'], summary: 'Prometheus metrics (text format)' } }, async (_req, reply) => {
    void reply.header('content-type', d.registry.contentType);
    return d.registry.metrics();
  });

  app.get('/api/v1/info', { schema: { tags: ['health'], summary: 'Cloud facts for clients', response: { 200: Info } } }, async () => ({
    version: d.version,
    hub: d.hub.kind,
    agentMqttUrl: d.hub.agentUrl,
    host: hostname(),
    store: d.storeKind,
  }));
};
