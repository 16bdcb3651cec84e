import { EwError } from '../../contracts/errors.ts';
import { validateLabels } from '../../contracts/selector.ts';
import type { Clock } from '../../lib/clock.ts';
import { hashSecret, newId, newSecret } from '../../lib/secrets.ts';
import type { Fleet } from '../fleet.ts';
import type { JoinToken, Site, Store } from '../store/store.ts';

export interface TokenRequest {
  labels: Record<string, string>;
  region: string;
  ttlSeconds: number;
  description: string;
}

/** A one-time join token: its secret is returned here once and stored only hashed. */
export async function createJoinToken(
  d: { store: Pick<Store, 'createJoinToken'>; clock: Clock },
  tenantId: string,
  req: TokenRequest,
): Promise<{ token: JoinToken; secret: string }> {
  validateLabels(req.labels, 'labels');
  const secret = newSecret('ewj');
  const now = d.clock.now();
  const token: JoinToken = {
    id: newId('tok'),
    tenantId,
    hash: hashSecret(secret),
    labels: req.labels,
    region: req.region,
    description: req.description,
    createdAt: now,
    expiresAt: now + req.ttlSeconds * 1000,
    usedAt: null,
    siteId: null,
  };
  await d.store.createJoinToken(token);
  return { token, secret };
}

export interface EnrollDeps {
  store: Pick<Store, 'enrollSite'>;
  fleet: Pick<Fleet, 'reconcileSites'>;
  clock: Clock;
}

/**
 * Enrollment: a join token (used once, before it expires) becomes a site with its own secret,
 * and the site's desired state is computed at once so it finds its apps on first connect.
 * The secret is returned here once and stored only hashed.
 */
export async function enrollSite(d: EnrollDeps, token: string, name: string | undefined): Promise<{ site: Site; secret: string }> {
  const secret = newSecret('ews');
  const result = await d.store.enrollSite(hashSecret(token), d.clock.now(), (t) => {
    const id = newId('site');
    return {
      id,
      tenantId: t.tenantId,
      name: name ?? id,
      region: t.region,
      labels: t.labels,
      secretHash: hashSecret(secret),
      createdAt: d.clock.now(),
      revokedAt: null,
      online: false,
      lastSeenAt: null,
      status: null,
      desiredGeneration: 0,
      desiredHash: null,
      reportedGeneration: 0,
    };
  });
  if (!result.ok || !result.site) {
    const reason = result.ok ? undefined : result.reason;
    if (reason === 'suspended')
      throw new EwError(
        'TENANT_SUSPENDED',
        'the tenant of this join token is suspended; enrollments resume when a platform admin resumes it',
      );
    if (reason === 'quota')
      throw new EwError(
        'QUOTA_EXCEEDED',
        'the tenant of this join token is at its quota of sites; revoke a site or ask the platform admin to raise the quota, then enroll again with the same token',
      );
    if (reason === 'used')
      throw new EwError('TOKEN_USED', 'this join token was already used; ask the operator for a new one (edgeweave tokens create)');
    if (reason === 'expired')
      throw new EwError('TOKEN_EXPIRED', 'this join token has expired; ask the operator for a new one (edgeweave tokens create)');
    throw new EwError('TOKEN_INVALID', 'this join token is not known to the cloud; check that it was copied whole');
  }
  await d.fleet.reconcileSites([result.site.id]);
  return { site: result.site, secret };
}
