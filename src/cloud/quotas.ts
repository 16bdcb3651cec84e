import type { Clock } from '../lib/clock.ts';
import type { Store } from './store/store.ts';

/** Start of the UTC day `now` falls in: the results-per-day quota counts from there. */
export const dayStart = (now: number): number => now - (now % 86_400_000);

/**
 * The results-per-day quota, checked for each result as it arrives. Counts are kept here per
 * tenant and UTC day, seeded from the store the first time a tenant is seen that day (so a
 * restart does not reset them); the quota itself is re-read at most every `refreshMs`, so a
 * change by the platform admin applies within seconds. Several replicas each count what they
 * receive on top of the stored count: the bound may be passed by what is in flight among them.
 * Bounded: one entry per tenant that sent results today.
 */
export class ResultQuota {
  private readonly counts = new Map<string, { day: number; n: number; limit: number | undefined; readAt: number }>();
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly refreshMs = 5000,
  ) {}

  readonly admit = async (tenantId: string): Promise<boolean> => {
    const now = this.clock.now();
    const day = dayStart(now);
    let c = this.counts.get(tenantId);
    if (!c || c.day !== day) {
      const t = await this.store.getTenant(tenantId);
      const limit = t?.quotas?.resultsPerDay;
      c = { day, n: limit === undefined ? 0 : (await this.store.tenantData(tenantId, day)).results, limit, readAt: now };
      if (this.counts.size > 100_000) this.counts.clear();
      this.counts.set(tenantId, c);
    } else if (now - c.readAt > this.refreshMs) {
      const limit = (await this.store.getTenant(tenantId))?.quotas?.resultsPerDay;
      if (limit !== undefined && c.limit === undefined) c.n = (await this.store.tenantData(tenantId, day)).results;
      c.limit = limit;
      c.readAt = now;
    }
    if (c.limit !== undefined && c.n >= c.limit) return false;
    c.n++;
    return true;
  };
}
