import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { EwError } from '../../../contracts/errors.ts';
import type { Clock } from '../../../lib/clock.ts';
import { hashSecret, newId, newSecret } from '../../../lib/secrets.ts';
import type { Store } from '../../store/store.ts';
import { errors, KeyCreated, KeyList } from '../schemas.ts';

/** API keys. Rotation: create a new key, move clients to it, revoke the old one. */
export const keyRoutes: FastifyPluginAsyncZod<{ store: Pick<Store, 'listApiKeys' | 'createApiKey' | 'revokeApiKey'>; clock: Clock }> = async (app, { store, clock }) => {
  app.get('/api/v1/keys', { schema: { tags: ['keys'], summary: 'API keys of the tenant (never their secrets)', response: { 200: KeyList } } },
    async (req) => ({ items: (await store.listApiKeys(req.tenantId)).map(({ hash: _h, tenantId: _t, ...k }) => k) }));

  app.post('/api/v1/keys', {
    schema: { tags: ['keys'], summary: 'Create an API key (shown once, stored hashed)', body: z.object({ name: z.string().min(1).max(128) }), response: { 201: KeyCreated, ...errors } },
  }, async (req, reply) => {
    const key = newSecret('ewk');
    const k = { id: newId('key'), tenantId: req.tenantId, name: req.body.name, hash: hashSecret(key), role: 'admin' as const, createdAt: clock.now(), revokedAt: null };
    await store.createApiKey(k);
    req.log.info({ keyId: k.id, by: req.apiKeyId }, 'api key created');
    void reply.status(201);
    return { id: k.id, name: k.name, role: k.role, createdAt: k.createdAt, revokedAt: null, key };
  });

  app.delete('/api/v1/keys/:id', {
    schema: { tags: ['keys'], summary: 'Revoke an API key: it stops working at once', params: z.object({ id: z.string() }), response: { 204: z.null(), ...errors } },
  }, async (req, reply) => {
    const r = await store.revokeApiKey(req.tenantId, req.params.id, clock.now());
    if (r === 'not-found') throw new EwError('KEY_NOT_FOUND', `no live API key "${req.params.id}" in this tenant`, { path: 'id' });
    if (r === 'last-admin') throw new EwError('LAST_ADMIN_KEY', `"${req.params.id}" is the tenant's last live admin key: create another (POST /api/v1/keys) before revoking it`, { path: 'id' });
    req.log.info({ keyId: req.params.id, by: req.apiKeyId }, 'api key revoked');
    void reply.status(204);
    return null;
  });
};
