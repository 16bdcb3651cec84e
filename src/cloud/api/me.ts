import { z } from 'zod';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { EwError } from '../../contracts/errors.ts';
import { PERMISSIONS, permissionsOf } from '../../contracts/permissions.ts';
import type { Store } from '../store/store.ts';

/**
 * `GET /api/v1/me`: who the calling API key is and what it may do. The console signs in by
 * calling it (a bad key gets the usual 401) and hides what the permissions leave out.
 */
export function registerMe(app: FastifyInstance, store: Store): void {
  app.withTypeProvider<ZodTypeProvider>().get(
    '/api/v1/me',
    {
      schema: {
        tags: ['keys'],
        summary: 'The calling API key: its id, name, role and permissions',
        response: {
          200: z.object({
            keyId: z.string(),
            keyName: z.string(),
            role: z.string(),
            tenantId: z.string(),
            permissions: z.array(z.enum(PERMISSIONS)),
            expiresAt: z.number().nullable(),
            scope: z.object({ apps: z.array(z.string()).optional(), labels: z.record(z.string(), z.string()).optional() }).nullable(),
            tenantState: z.enum(['active', 'suspended']),
          }),
        },
      },
    },
    async (req) => {
      const key = (await store.listApiKeys(req.tenantId)).find((k) => k.id === req.apiKeyId);
      // The auth hook just found it live; gone now means revoked in between.
      if (!key || key.revokedAt !== null) throw new EwError('UNAUTHENTICATED', 'the API key is not recognised or was revoked');
      return {
        keyId: key.id,
        keyName: key.name,
        role: key.role,
        tenantId: key.tenantId,
        permissions: permissionsOf(key.role),
        expiresAt: key.expiresAt ?? null,
        scope: key.scope ?? null,
        tenantState: req.tenantState ?? 'active',
      };
    },
  );
}
