/**
 * How long the cloud keeps results (the uplink table), as a pure plan over the policies.
 *
 * A policy is set per tenant and stream (`stream` = `*`: the tenant's default for every stream it
 * names no policy for); the cloud-wide default (`--results-retention-days`) covers the rest; with
 * neither, results are kept. The maintenance shell (maintenance.ts) turns the plan into bounded
 * DELETEs and, on PostgreSQL, drops whole daily partitions older than the longest retention.
 */

export const DAY_MS = 86_400_000;
/** Longest retention a policy may ask for: 100 years, kept as whole days. */
export const MAX_RETENTION_DAYS = 36_500;
/** The stream name of a tenant's default policy. */
export const ANY_STREAM = '*';

export interface RetentionPolicy {
  tenantId: string;
  /** A stream name, or `*` for the tenant's default. */
  stream: string;
  days: number;
  updatedAt: number;
}

/** One DELETE the maintenance runs: a tenant's results older than `before` (site time, ms). */
export interface RetentionStep {
  tenantId: string;
  before: number;
  /** Only these streams; absent: every stream except `except`. */
  streams?: string[];
  except?: string[];
}

export interface RetentionPlan {
  steps: RetentionStep[];
  /**
   * Results of every tenant older than this may go at once (whole partitions dropped): set only
   * when every result has a finite retention, i.e. a cloud-wide default exists; then it is the
   * oldest cutoff of all.
   */
  dropBefore?: number;
}

/**
 * The plan at `now` for the given tenants. `defaultDays` is the cloud-wide default (undefined or
 * 0: keep). Cutoffs are whole UTC days back from `now`, so a result is kept at least `days` days.
 */
export function planRetention(
  tenantIds: readonly string[],
  policies: readonly RetentionPolicy[],
  defaultDays: number | undefined,
  now: number,
): RetentionPlan {
  const global = defaultDays && defaultDays > 0 ? defaultDays : undefined;
  const byTenant = new Map<string, RetentionPolicy[]>();
  for (const p of policies) {
    let l = byTenant.get(p.tenantId);
    if (!l) byTenant.set(p.tenantId, (l = []));
    l.push(p);
  }
  const cutoff = (days: number) => now - days * DAY_MS;
  const steps: RetentionStep[] = [];
  let longest = global;
  for (const tenantId of tenantIds) {
    const own = byTenant.get(tenantId) ?? [];
    const named = own.filter((p) => p.stream !== ANY_STREAM).sort((a, b) => (a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : 0));
    const tenantDefault = own.find((p) => p.stream === ANY_STREAM)?.days ?? global;
    // Streams with the same retention share one step (one DELETE), in a stable order.
    const byDays = new Map<number, string[]>();
    for (const p of named) {
      const l = byDays.get(p.days) ?? [];
      l.push(p.stream);
      byDays.set(p.days, l);
      if (longest !== undefined) longest = Math.max(longest, p.days);
    }
    for (const [days, streams] of [...byDays].sort((a, b) => a[0] - b[0])) steps.push({ tenantId, before: cutoff(days), streams });
    if (tenantDefault !== undefined) {
      steps.push({ tenantId, before: cutoff(tenantDefault), ...(named.length ? { except: named.map((p) => p.stream) } : {}) });
      if (longest !== undefined) longest = Math.max(longest, tenantDefault);
    }
  }
  return { steps, ...(global !== undefined && longest !== undefined ? { dropBefore: cutoff(longest) } : {}) };
}

/** The UTC day (ms at 00:00) that holds `t`. */
export function dayStart(t: number): number {
  return Math.floor(t / DAY_MS) * DAY_MS;
}

/** The daily partitions to hold ready at `now`: yesterday through three days ahead. */
export function partitionDaysAround(now: number): number[] {
  const today = dayStart(now);
  return [-1, 0, 1, 2, 3].map((d) => today + d * DAY_MS);
}

/** A partition's table name for the day starting at `day` (ms): uplink_p20261130. */
export function partitionName(day: number): string {
  return `uplink_p${new Date(day).toISOString().slice(0, 10).replaceAll('-', '')}`;
}
