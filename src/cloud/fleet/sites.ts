import type { Store, Site, SiteRef } from '../store/store.ts';

export interface SiteInfo {
  tenantId: string;
  revoked: boolean;
}

/**
 * Which tenant each site belongs to and whether it is revoked, read from the store once and kept:
 * every MQTT message is checked against it (a revoked or unknown site's messages are ignored), so
 * it must not cost a query per message. Holds one small entry per site the store holds.
 */
export class SiteDirectory {
  private readonly cache = new Map<string, SiteInfo>();

  constructor(private readonly store: Store) {}

  /**
   * Records what a freshly read site row says (start, desired-state publishing). A site held as
   * revoked stays so: revocation is for good, and a read that began before it may end after it.
   */
  note(s: Pick<Site, 'id' | 'tenantId' | 'revokedAt'>): void {
    this.cache.set(s.id, { tenantId: s.tenantId, revoked: s.revokedAt !== null || this.cache.get(s.id)?.revoked === true });
  }

  /** Drops what is held of a site the store no longer has (its tenant deleted): unknown from now on. */
  forget(siteId: string): void {
    this.cache.delete(siteId);
  }

  /** Held here as a live site (no query). */
  isLive(siteId: string): boolean {
    const e = this.cache.get(siteId);
    return e !== undefined && !e.revoked;
  }

  /** Live sites held here whose tenant is not in `tenants` (deleted tenants' sites, to check). */
  liveOutside(tenants: ReadonlySet<string>): string[] {
    const out: string[] = [];
    for (const [id, e] of this.cache) if (!e.revoked && !tenants.has(e.tenantId)) out.push(id);
    return out;
  }

  get size(): number {
    return this.cache.size;
  }

  markRevoked(siteId: string): void {
    this.cache.set(siteId, { tenantId: this.cache.get(siteId)?.tenantId ?? '', revoked: true });
  }

  /**
   * Replaces what is held with a fresh read of every site (fleet/revocations.ts, after a
   * reconnect); answers the ids held before that the store no longer has (deleted). A site held as
   * revoked stays revoked whatever the read says (revocation is for good, and the read may predate it).
   */
  reload(refs: readonly SiteRef[]): string[] {
    const before = new Map(this.cache);
    this.cache.clear();
    for (const r of refs) {
      this.note(r);
      if (before.get(r.id)?.revoked) this.markRevoked(r.id);
      before.delete(r.id);
    }
    return [...before.keys()];
  }

  /** Known here as revoked (no query). */
  isRevoked(siteId: string): boolean {
    return this.cache.get(siteId)?.revoked === true;
  }

  async get(siteId: string): Promise<SiteInfo | undefined> {
    const hit = this.cache.get(siteId);
    if (hit) return hit;
    const s = await this.store.getSiteById(siteId);
    if (!s) return undefined;
    this.note(s);
    return this.cache.get(siteId);
  }
}
