import assert from 'node:assert/strict';
import { hashSecret } from '../../src/lib/secrets.ts';
import type { Site, Store } from '../../src/cloud/store/store.ts';

/** A new site's row as enrollment makes it (never heard from, no desired state yet). */
export function siteRecord(id: string, tenantId: string, now: number, over: Partial<Site> = {}): Site {
  return {
    id,
    tenantId,
    name: id,
    region: 'r',
    labels: {},
    secretHash: hashSecret(`s-${id}`),
    createdAt: now,
    revokedAt: null,
    online: false,
    lastSeenAt: null,
    status: null,
    desiredGeneration: 0,
    desiredHash: null,
    reportedGeneration: 0,
    ...over,
  };
}

/** Enrolls a site straight through the store (a join token made for it and used at `now`). */
export async function addSite(store: Store, tenantId: string, id: string, now: number): Promise<void> {
  await store.createJoinToken({
    id: `tok-${id}`,
    tenantId,
    hash: hashSecret(`t-${id}`),
    labels: {},
    region: 'r',
    description: '',
    createdAt: 1,
    expiresAt: now + 86_400_000,
    usedAt: null,
    siteId: null,
  });
  const r = await store.enrollSite(hashSecret(`t-${id}`), now, (t) => siteRecord(id, t.tenantId, now));
  assert.equal(r.ok, true);
}
