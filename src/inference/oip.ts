import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ModelHost } from './host.ts';
import { VERSION } from '../version.ts';

/**
 * The Open Inference Protocol v2 (KServe / Triton) on a site's local API. Served names are the
 * apps' endpoints; versions are app versions. Errors on every `/v2` route (ours, schema
 * failures, fastify's own, authentication, unknown routes) take the protocol's body
 * `{"error": "<message>"}`, which KServe and Triton clients read; our stable `code` (and `path`
 * where it applies) ride along as extra fields.
 */
const Tensor = z.object({
  name: z.string().min(1),
  datatype: z.string(),
  shape: z.array(z.number().int()),
  data: z.array(z.unknown()),
  parameters: z.record(z.string(), z.unknown()).optional(),
});

const InferBody = z.object({
  id: z.string().max(256).optional(),
  parameters: z.record(z.string(), z.unknown()).optional(),
  inputs: z.array(Tensor).min(1),
  outputs: z.array(z.object({ name: z.string(), parameters: z.record(z.string(), z.unknown()).optional() })).optional(),
});

const V2 = /^\/v2(?:[/?]|$)/;

/** Rewrites a `{code, message, path?}` error body into the OIP v2 shape, for `/v2` URLs only. */
export function oipErrorBody(url: string, status: number, payload: unknown): unknown {
  if (status < 400 || typeof payload !== 'string' || !V2.test(url)) return payload;
  let b: { code?: unknown; message?: unknown; path?: unknown; error?: unknown };
  try {
    b = JSON.parse(payload);
  } catch {
    return payload;
  }
  if (!b || typeof b !== 'object' || typeof b.message !== 'string' || typeof b.code !== 'string' || 'error' in b) return payload;
  return JSON.stringify({ error: b.message, code: b.code, ...(typeof b.path === 'string' ? { path: b.path } : {}) });
}

export function registerOip(app: FastifyInstance, models: ModelHost): void {
  // A hook, not a scoped error handler, so errors raised before routing (the key check, 404s,
  // a body that is not JSON) take the protocol's shape too.
  app.addHook('onSend', async (req, reply, payload) => oipErrorBody(req.url, reply.statusCode, payload));
  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get('/v2', async () => ({ name: 'edgeweave', version: VERSION, extensions: [] }));
  r.get('/v2/health/live', async () => ({ live: true }));
  r.get('/v2/health/ready', async (_req, reply) => {
    const all = models.endpointNames();
    const ready = all.every((n) => {
      try {
        return models.ready(n);
      } catch {
        return false;
      }
    });
    void reply.status(ready ? 200 : 503);
    return { ready };
  });
  r.get('/v2/models', async () => ({
    models: models.endpointNames().map((name) => {
      try {
        return { name, ready: models.ready(name) };
      } catch {
        return { name, ready: false };
      }
    }),
  }));
  const Params = z.object({ name: z.string(), version: z.string().optional() });
  for (const base of ['/v2/models/:name', '/v2/models/:name/versions/:version']) {
    r.get(base, { schema: { params: Params } }, async (req) => models.metadata(req.params.name, req.params.version));
    r.get(`${base}/ready`, { schema: { params: Params } }, async (req, reply) => {
      const ready = models.ready(req.params.name, req.params.version);
      void reply.status(ready ? 200 : 503);
      return { name: req.params.name, ready };
    });
    r.post(`${base}/infer`, { schema: { params: Params, body: InferBody } }, async (req) =>
      models.infer(req.params.name, req.params.version, req.body),
    );
  }
}
