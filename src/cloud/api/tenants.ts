import { z } from 'zod';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { EwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import { hashSecret, newId, newSecret } from '../../lib/secrets.ts';
import type { Store, Tenant, TenantData } from '../store/store.ts';
import type { FileArtifactStore } from '../artifacts.ts';
import { need } from './access.ts';
import { dayStart } from '../quotas.ts';
import { Quotas, TenantCreated, TenantList, TenantDeleted, TenantDetail, TenantView } from './schemas.ts';

export { Quotas };

export interface TenantRouteDeps {
  store: Store;
  clock: Clock;
  artifacts: FileArtifactStore;
  /** Cuts a deleted tenant's site off at once (its connection, its retained desired state). */
  siteRevoked: (siteId: string) => Promise<void>;
}

const ErrorSchema = z.object({ code: z.string(), message: z.string(), path: z.string().optional() });
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

const tenantView = (t: Tenant): z.infer<typeof TenantView> => ({
  id: t.id,
  name: t.name,
  state: t.state ?? 'active',
  createdAt: t.createdAt,
  suspendedAt: t.suspendedAt ?? null,
  quotas: t.quotas ?? {},
});

/**
 * Tenant management, for platform admins only (`tenants:read`, `tenants:write`): create a tenant
 * with its first admin key, list, suspend, resume, set quotas, and delete with everything it
 * holds (dry run first, then with its name repeated as confirmation).
 */
export async function tenantRoutes(app: FastifyInstance, d: TenantRouteDeps): Promise<void> {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const { store, clock } = d;
  const config = { platform: true };
  const Params = z.object({ id: z.string().min(1).max(128).describe('tenant id or name') });

  const resolve = async (idOrName: string): Promise<Tenant> => {
    const t = (await store.getTenant(idOrName)) ?? (await store.listTenants()).find((x) => x.name === idOrName);
    if (!t) throw new EwError('TENANT_NOT_FOUND', `no tenant "${idOrName}"; list them with GET /api/v1/tenants`, { path: 'id' });
    return t;
  };
  const notOwn = (req: FastifyRequest, t: Tenant, what: string) => {
    if (t.id === req.tenantId)
      throw new EwError(
        'VALIDATION_FAILED',
        `a platform admin cannot ${what} its own tenant ${t.name}; use a key of another platform admin tenant`,
        { path: 'id' },
      );
  };

  r.get(
    '/api/v1/tenants',
    { config, schema: { tags: ['tenants'], summary: 'Every tenant (platform admins)', response: { 200: TenantList, ...errors } } },
    async (req) => {
      need(req, 'tenants:read');
      return { items: (await store.listTenants()).map(tenantView) };
    },
  );

  r.get(
    '/api/v1/tenants/:id',
    {
      config,
      schema: {
        tags: ['tenants'],
        summary: 'One tenant with what it holds and its results today (platform admins)',
        params: Params,
        response: { 200: TenantDetail, ...errors },
      },
    },
    async (req) => {
      need(req, 'tenants:read');
      const t = await resolve(req.params.id);
      return { ...tenantView(t), usage: await store.tenantData(t.id, dayStart(clock.now())) };
    },
  );

  r.post(
    '/api/v1/tenants',
    {
      config,
      schema: {
        tags: ['tenants'],
        summary: 'Create a tenant and its first admin key (the key is shown once, stored hashed)',
        body: z.object({
          name: z
            .string()
            .min(1)
            .max(128)
            .regex(/^[a-z0-9][a-z0-9._-]*$/, 'lower-case letters, digits, ".", "_" and "-"'),
          quotas: Quotas.default({}),
        }),
        response: { 201: TenantCreated, ...errors },
      },
    },
    async (req, reply) => {
      need(req, 'tenants:write');
      const now = clock.now();
      const t: Tenant = {
        id: newId('ten'),
        name: req.body.name,
        createdAt: now,
        state: 'active',
        suspendedAt: null,
        quotas: req.body.quotas,
      };
      await store.createTenant(t);
      const key = newSecret('ewk');
      const keyId = newId('key');
      await store.createApiKey({
        id: keyId,
        tenantId: t.id,
        name: 'admin',
        hash: hashSecret(key),
        role: 'admin',
        createdAt: now,
        revokedAt: null,
      });
      req.log.info({ tenantId: t.id, name: t.name, by: req.apiKeyId }, 'tenant created');
      void reply.status(201);
      return { ...tenantView(t), adminKey: { id: keyId, key } };
    },
  );

  r.put(
    '/api/v1/tenants/:id/quotas',
    {
      config,
      schema: {
        tags: ['tenants'],
        summary: "Replace a tenant's quotas (absent: unlimited)",
        params: Params,
        body: Quotas,
        response: { 200: TenantView, ...errors },
      },
    },
    async (req) => {
      need(req, 'tenants:write');
      const t = await resolve(req.params.id);
      return tenantView((await store.setTenantQuotas(t.id, req.body))!);
    },
  );

  for (const action of ['suspend', 'resume'] as const) {
    r.post(
      `/api/v1/tenants/:id/${action}`,
      {
        config,
        schema: {
          tags: ['tenants'],
          params: Params,
          response: { 200: TenantView, ...errors },
          summary:
            action === 'suspend'
              ? 'Suspend a tenant: reads work, changes and enrollments are refused (TENANT_SUSPENDED), its rollouts are held'
              : 'Resume a suspended tenant: its rollouts continue where they were held',
        },
      },
      async (req) => {
        need(req, 'tenants:write');
        const t = await resolve(req.params.id);
        notOwn(req, t, action);
        const next = (await store.setTenantState(t.id, action === 'suspend' ? 'suspended' : 'active', clock.now()))!;
        req.log.info({ tenantId: t.id, by: req.apiKeyId }, `tenant ${action === 'suspend' ? 'suspended' : 'resumed'}`);
        return tenantView(next);
      },
    );
  }

  r.delete(
    '/api/v1/tenants/:id',
    {
      config,
      schema: {
        tags: ['tenants'],
        summary:
          'Delete a tenant and everything it holds: its sites and keys stop working at once. `dryRun=true` counts what would go; otherwise `confirm` must repeat its name',
        params: Params,
        querystring: z.object({ dryRun: z.enum(['true', 'false']).default('false'), confirm: z.string().max(128).optional() }),
        response: { 200: TenantDeleted, ...errors },
      },
    },
    async (req) => {
      need(req, 'tenants:write');
      const t = await resolve(req.params.id);
      notOwn(req, t, 'delete');
      const data: TenantData = await store.tenantData(t.id);
      if (req.query.dryRun === 'true') return { tenant: tenantView(t), dryRun: true, removed: data, artifactFilesRemoved: 0 };
      if (req.query.confirm !== t.name) {
        throw new EwError(
          'CONFIRMATION_REQUIRED',
          `deleting tenant ${t.name} removes ${data.sites} site(s), ${data.appVersions} app version(s), ${data.results} result(s) and its keys for good: repeat its name as confirm=${t.name} (see first with dryRun=true)`,
          { path: 'confirm' },
        );
      }
      const gone = await store.deleteTenant(t.id);
      if (!gone) throw new EwError('TENANT_NOT_FOUND', `no tenant "${req.params.id}"`, { path: 'id' });
      for (const s of gone.siteIds)
        await d.siteRevoked(s).catch((e: Error) => req.log.warn({ siteId: s, err: e.message }, "could not cut a deleted tenant's site"));
      let files = 0;
      for (const sha of gone.orphanArtifacts) if (d.artifacts.remove(sha)) files++;
      files += d.artifacts.removePartials(t.id);
      req.log.warn({ tenantId: t.id, name: t.name, by: req.apiKeyId, sites: gone.siteIds.length }, 'tenant deleted');
      return { tenant: tenantView(t), dryRun: false, removed: data, artifactFilesRemoved: files };
    },
  );
}
