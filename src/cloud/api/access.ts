import type { FastifyRequest } from 'fastify';
import { EwError } from '../../contracts/errors.ts';
import { permissionsOf, type Permission } from '../../contracts/permissions.ts';

/**
 * The permission check of a route that does its own (the tenant and audit routes); the names are
 * those of `permissionsOf`, so the answer matches what `GET /api/v1/me` lists. A site calling
 * with its own credentials holds no permission.
 */
export function need(req: FastifyRequest, permission: Permission): void {
  if (req.siteId || !req.role || !permissionsOf(req.role).includes(permission)) {
    throw new EwError('PERMISSION_DENIED', `this API key (role ${req.role ?? 'none'}) lacks the permission ${permission}`);
  }
}
