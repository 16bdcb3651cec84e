import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { EwError } from '../../../contracts/errors.ts';
import type { Clock } from '../../../lib/clock.ts';
import { hashSecret, newId, newSecret } from '../../../lib/secrets.ts';
import type { ApiKey, Store } from '../../store/store.ts';
import { TENANT_ROLES } from '../../../contracts/permissions.ts';
import { validateLabels } from '../../../contracts/selector.ts';
import { errors, KeyCreated, KeyList, type KeyView, Labels } from '../schemas.ts';

const keyView = (k: ApiKey): z.infer<typeof KeyView> => ({
  id: k.id,
  name: k.name,
  role: k.role,
  createdAt: k.createdAt,
  revokedAt: k.revokedAt,
  expiresAt: k.expiresAt ?? null,
  scope: k.scope ?? null,
});

/** API keys. Rotation: create a new key, move clients to it, revoke the old one. */
export const keyRoutes: FastifyPluginAsyncZod<{
  store: Pick<Store, 'listApiKeys' | 'createApiKey' | 'revokeApiKey'>;
  clock: Clock;
}> = async (app, { store, clock }) => {
  app.get(
    '/api/v1/keys',
    { schema: { tags: ['keys'], summary: 'API keys of the tenant (never their secrets)', response: { 200: KeyList } } },
    async (req) => ({ items: (await store.listApiKeys(req.tenantId)).map(keyView) }),
  );

  app.post(
    '/api/v1/keys',
    {
      schema: {
        tags: ['keys'],
        summary: 'Create an API key with a role, optionally limited to apps or site labels and expiring (shown once, stored hashed)',
        body: z.object({
          name: z.string().min(1).max(128),
          role: z.enum(TENANT_ROLES).default('admin').describe('viewer, operator, developer or admin (docs/operators.md "Roles")'),
          apps: z.array(z.string().min(1).max(64)).min(1).max(100).optional().describe('only these apps'),
          labels: Labels.optional().describe('only sites carrying these labels (and deployments whose selector pins them)'),
          expiresAt: z.number().int().positive().optional().describe('ms since epoch; the key is refused (401 KEY_EXPIRED) from then on'),
        }),
        response: { 201: KeyCreated, ...errors },
      },
    },
    async (req, reply) => {
      const b = req.body;
      if (b.labels) {
        if (Object.keys(b.labels).length === 0)
          throw new EwError('VALIDATION_FAILED', 'labels, when given, must name at least one label', { path: 'labels' });
        validateLabels(Object.fromEntries(Object.entries(b.labels).filter(([k]) => k !== 'region')), 'labels');
      }
      if (b.expiresAt !== undefined && b.expiresAt <= clock.now())
        throw new EwError('VALIDATION_FAILED', 'expiresAt is in the past; give a time to come (ms since epoch)', { path: 'expiresAt' });
      const key = newSecret('ewk');
      const scope = b.apps || b.labels ? { ...(b.apps ? { apps: b.apps } : {}), ...(b.labels ? { labels: b.labels } : {}) } : null;
      const k: ApiKey = {
        id: newId('key'),
        tenantId: req.tenantId,
        name: b.name,
        hash: hashSecret(key),
        role: b.role,
        createdAt: clock.now(),
        revokedAt: null,
        expiresAt: b.expiresAt ?? null,
        scope,
      };
      await store.createApiKey(k);
      req.log.info({ keyId: k.id, role: k.role, by: req.apiKeyId }, 'api key created');
      void reply.status(201);
      return { ...keyView(k), key };
    },
  );

  app.delete(
    '/api/v1/keys/:id',
    {
      schema: {
        tags: ['keys'],
        summary: 'Revoke an API key: it stops working at once',
        params: z.object({ id: z.string() }),
        response: { 204: z.null(), ...errors },
      },
    },
    async (req, reply) => {
      const r = await store.revokeApiKey(req.tenantId, req.params.id, clock.now());
      if (r === 'not-found') throw new EwError('KEY_NOT_FOUND', `no live API key "${req.params.id}" in this tenant`, { path: 'id' });
      if (r === 'last-admin')
        throw new EwError(
          'LAST_ADMIN_KEY',
          `"${req.params.id}" is the tenant's last live admin key: create another (POST /api/v1/keys) before revoking it`,
          { path: 'id' },
        );
      req.log.info({ keyId: req.params.id, by: req.apiKeyId }, 'api key revoked');
      void reply.status(204);
      return null;
    },
  );
};
