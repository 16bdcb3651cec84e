import type { Clock } from '../lib/clock.ts';
import type { Store } from './store/store.ts';

/** Start of the UTC day `now` falls in: the results-per-day quota counts from there. */
export const dayStart = (now: number): number => now - (now % 86_400_000);

/** The most of a quota one replica reserves at a time (a store round trip per block, not per result). */
const MAX_BLOCK = 1000;

interface Entry {
  day: number;
  limit: number | undefined;
  /** Reserved from the shared counter and not yet used by this replica. */
  allowance: number;
  /** When the quota was last read. */
  readAt: number;
  /** The day's quota was used up when last asked: refused without asking again until the next read. */
  exhausted: boolean;
}

/**
 * The results-per-day quota, checked for each result as it arrives. The count is one counter per
 * tenant and UTC day in the store, shared by every replica (`Store.reserveResults`); a replica
 * reserves a block of it (a hundredth of the quota, 1 to 1,000 results) and admits from that
 * without asking again, so the replicas together never admit more than the quota. What a replica
 * reserved and did not use when it stops or the day ends is not given back: at most a block per
 * replica goes unused. The quota itself is re-read at most every `refreshMs`, so a change by the
 * platform admin applies within seconds; a tenant at its quota is refused without a query until
 * then. A restart does not reset the count (it is in the store). Bounded: one entry per tenant
 * that sent results today.
 */
export class ResultQuota {
  private readonly entries = new Map<string, Entry>();
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly refreshMs = 5000,
  ) {}

  readonly admit = async (tenantId: string): Promise<boolean> => {
    const now = this.clock.now();
    const day = dayStart(now);
    let e = this.entries.get(tenantId);
    if (!e || e.day !== day) {
      e = { day, limit: await this.readLimit(tenantId), allowance: 0, readAt: now, exhausted: false };
      if (this.entries.size > 100_000) this.entries.clear();
      this.entries.set(tenantId, e);
    } else if (now - e.readAt > this.refreshMs) {
      e.limit = await this.readLimit(tenantId);
      e.readAt = now;
      e.exhausted = false;
    }
    if (e.limit === undefined) return true;
    if (e.allowance > 0) {
      e.allowance--;
      return true;
    }
    if (e.exhausted) return false;
    const block = Math.min(MAX_BLOCK, Math.max(1, Math.floor(e.limit / 100)));
    const granted = await this.store.reserveResults(tenantId, day, block, e.limit);
    if (granted === 0) {
      e.exhausted = true;
      return false;
    }
    e.allowance += granted - 1;
    return true;
  };

  private async readLimit(tenantId: string): Promise<number | undefined> {
    return (await this.store.getTenant(tenantId))?.quotas?.resultsPerDay;
  }
}
