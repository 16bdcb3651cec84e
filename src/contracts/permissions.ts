/**
 * What an API key may do, named per resource and verb. `GET /api/v1/me` returns the list a key
 * holds; the web console offers only what is in it (a button a key may not use is not shown).
 *
 * A key has one role; `permissionsOf(role)` is the one place a role's permissions are written
 * down, and the API checks the same names (docs/operators.md "Roles"). Imported by the cloud
 * and by the console (console/src), so it must stay free of Node imports.
 */
export const PERMISSIONS = [
  'sites:read',
  'sites:write', // relabel, revoke
  'tokens:read',
  'tokens:write', // create, delete join tokens
  'apps:read',
  'apps:write', // push versions, upload artifacts
  'deployments:read',
  'deployments:write', // deploy, remove a deployment
  'rollouts:act', // pause, resume, abort, undo
  'results:read', // results, alerts, the live event stream
  'keys:read',
  'keys:write', // create, revoke API keys
  'metrics:read',
  'audit:read', // the tenant's audit log
  'tenants:read', // platform: every tenant, its usage and quotas
  'tenants:write', // platform: create, suspend, resume, delete tenants, set quotas
  'results:write', // retention of result streams
  'endpoints:read', // the inference endpoints, the router's decisions and explanations
  'endpoints:infer', // call an inference endpoint (/v2 Open Inference Protocol, /v1 OpenAI-compatible)
] as const;

export type Permission = (typeof PERMISSIONS)[number];

/**
 * The roles a key may have. `platform-admin` is the cloud operator's: an admin of its own tenant
 * that also manages tenants (the first key of a new cloud); tenants' keys never get it.
 */
export const ROLES = ['viewer', 'operator', 'developer', 'admin', 'platform-admin'] as const;
export type Role = (typeof ROLES)[number];
/** The roles a tenant's admin may give a key (platform-admin is given only by the cloud itself). */
export const TENANT_ROLES = ['viewer', 'operator', 'developer', 'admin'] as const;

const READ: Permission[] = ['sites:read', 'tokens:read', 'apps:read', 'deployments:read', 'results:read', 'metrics:read', 'endpoints:read'];
const TENANT_ALL: Permission[] = PERMISSIONS.filter((p) => !p.startsWith('tenants:'));

const BY_ROLE: Record<Role, readonly Permission[]> = {
  // Reads everything of its tenant but keys and the audit log; changes nothing.
  viewer: READ,
  // Runs the fleet: sites, join tokens, rollout actions, how long results are kept; calls the
  // fleet's inference endpoints.
  operator: [...READ, 'sites:write', 'tokens:write', 'rollouts:act', 'results:write', 'endpoints:infer'],
  // Builds and ships apps: pushes versions, uploads artifacts, deploys (to the pools its key's
  // label limit allows), steers its rollouts, calls inference endpoints to try them.
  developer: [...READ, 'apps:write', 'deployments:write', 'rollouts:act', 'endpoints:infer'],
  // Everything in its tenant, keys and the audit log included.
  admin: TENANT_ALL,
  'platform-admin': [...PERMISSIONS],
};

/** The permissions of a role; none for a role this version does not know. */
export function permissionsOf(role: string): Permission[] {
  return (ROLES as readonly string[]).includes(role) ? [...BY_ROLE[role as Role]] : [];
}

/** Roles that count as a tenant's administrators (its last one cannot be revoked). */
export function isAdminRole(role: string): boolean {
  return role === 'admin' || role === 'platform-admin';
}
