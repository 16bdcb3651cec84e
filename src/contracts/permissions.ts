/**
 * What an API key may do, named per resource and verb. `GET /api/v1/me` returns the list a key
 * holds; the web console offers only what is in it (a button a key may not use is not shown).
 *
 * Today every key is an admin and holds them all. Roles (issue #14) will map each role to a
 * subset of this list, and the API will check the same names, so the console needs no change.
 * Imported by the cloud and by the console (console/src), so it must stay free of Node imports.
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

/** The roles a key may have. Only `admin` exists today (issue #14 adds more). */
export const ROLES = ['admin'] as const;

/** The permissions of a role. Only `admin` exists today. */
export function permissionsOf(role: string): Permission[] {
  return role === 'admin' ? [...PERMISSIONS] : [];
}
