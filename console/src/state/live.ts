import type { SseEvent } from '../lib/sse.ts';
import type { StreamState } from '../lib/events-client.ts';
import type { Result, Rollout, Site } from '../types.ts';
import { Ring } from './ring.ts';

/**
 * The console's live state: sites and rollouts as last seen (from a list call, then from the
 * event stream), recent results and alerts, and short per-site histories for the charts. Pure
 * (no timers, no I/O; time comes in with each call) and bounded: every list is a ring or a map
 * keyed by something the fleet bounds. React reads it through `subscribe` / `version`.
 */
export interface SiteSample {
  t: number; // seconds (chart x)
  load: number;
  memUsedFraction: number;
  outboxPending: number;
  rules: Record<string, { in: number; out: number; errors: number }>;
  models: Record<string, { requests: number; errors: number; p95Ms: number | null }>;
}

export interface LiveLimits {
  results: number;
  alerts: number;
  samplesPerSite: number;
  /** Seconds of per-site result counts kept for the throughput charts. */
  rateSeconds: number;
}

export const DEFAULT_LIVE_LIMITS: LiveLimits = { results: 500, alerts: 200, samplesPerSite: 600, rateSeconds: 300 };

/** A result is an alert when its stream's name says so (`alerts`, `temperature-alert`, …). */
export function isAlert(r: Pick<Result, 'stream'>): boolean {
  return /alert|alarm/i.test(r.stream);
}

export function sampleOf(s: Site, t: number): SiteSample | undefined {
  const st = s.status;
  if (!st) return undefined;
  const sys = st.system;
  return {
    t,
    load: sys.loadAvg1,
    memUsedFraction: sys.memoryTotalBytes > 0 ? 1 - sys.memoryFreeBytes / sys.memoryTotalBytes : 0,
    outboxPending: st.outbox.pending,
    rules: Object.fromEntries((st.rules ?? []).map((r) => [`${r.app}/${r.rule}`, { in: r.in, out: r.out, errors: r.errors }])),
    models: Object.fromEntries(
      (st.models ?? [])
        .filter((m) => m.stats)
        .map((m) => [`${m.app}/${m.name}`, { requests: m.stats!.requests, errors: m.stats!.errors, p95Ms: m.stats!.p95Ms }]),
    ),
  };
}

export class LiveStore {
  readonly sites = new Map<string, Site>();
  readonly rollouts = new Map<string, Rollout>();
  readonly results: Ring<Result>;
  readonly alerts: Ring<Result>;
  private readonly samples = new Map<string, Ring<SiteSample>>();
  /** Per site: results per whole second, for throughput charts. */
  private readonly rates = new Map<string, Ring<{ t: number; n: number }>>();
  stream: StreamState = { state: 'connecting', attempt: 0 };
  /** Whether a full site list has arrived (before it, pages show "loading", not "no sites"). */
  sitesLoaded = false;
  /** Why the last list read failed (shown on the pages that need it; cleared by the next success). */
  listError?: { code: string; message: string };
  /** Results the server said it skipped (backlog over its bound) since sign-in. */
  skipped = 0;
  /** Alerts that arrived since the operator last looked at the alerts list. */
  unseenAlerts = 0;
  version = 0;
  private readonly listeners = new Set<() => void>();
  readonly limits: LiveLimits;

  constructor(limits: Partial<LiveLimits> = {}) {
    this.limits = { ...DEFAULT_LIVE_LIMITS, ...limits };
    this.results = new Ring(this.limits.results);
    this.alerts = new Ring(this.limits.alerts);
  }

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };
  getVersion = (): number => this.version;

  private changed(): void {
    this.version++;
    for (const l of this.listeners) l();
  }

  setStream(s: StreamState): void {
    this.stream = s;
    this.changed();
  }

  /** A full list from the API: replaces what is known (sites gone from it are dropped). */
  setSites(list: readonly Site[], nowMs: number): void {
    const ids = new Set(list.map((s) => s.id));
    for (const id of [...this.sites.keys()]) if (!ids.has(id)) this.dropSite(id);
    for (const s of list) this.upsertSite(s, nowMs);
    this.sitesLoaded = true;
    this.listError = undefined;
    this.changed();
  }

  setListError(e: { code: string; message: string }): void {
    this.listError = { code: e.code, message: e.message };
    this.changed();
  }

  setRollouts(list: readonly Rollout[]): void {
    const ids = new Set(list.map((r) => r.id));
    for (const id of [...this.rollouts.keys()]) if (!ids.has(id)) this.rollouts.delete(id);
    for (const r of list) this.upsertRollout(r);
    this.changed();
  }

  /**
   * Keeps the newer of two states of a rollout (by `updatedAt`): an operator's action answered
   * by the API is not undone by a stream frame or a list read that started before it.
   */
  upsertRollout(r: Rollout): void {
    const cur = this.rollouts.get(r.id);
    if (cur && cur.updatedAt > r.updatedAt) return;
    this.rollouts.set(r.id, r);
  }

  private dropSite(id: string): void {
    this.sites.delete(id);
    this.samples.delete(id);
    this.rates.delete(id);
  }

  private upsertSite(s: Site, nowMs: number): void {
    const prev = this.sites.get(s.id);
    this.sites.set(s.id, s);
    // One sample per heartbeat (a new lastSeenAt), timed by the site's report.
    if (s.status && s.lastSeenAt !== null && s.lastSeenAt !== prev?.lastSeenAt) {
      let ring = this.samples.get(s.id);
      if (!ring) this.samples.set(s.id, (ring = new Ring(this.limits.samplesPerSite)));
      const sample = sampleOf(s, (s.lastSeenAt ?? nowMs) / 1000);
      if (sample && sample.t > (ring.last()?.t ?? -Infinity)) ring.push(sample);
    }
  }

  private addResults(items: readonly Result[]): void {
    for (const r of items) {
      // Streams named with a leading "_" are the platform's own (the egress audit), not results.
      if (r.stream.startsWith('_')) continue;
      this.results.push(r);
      if (isAlert(r)) {
        this.alerts.push(r);
        this.unseenAlerts++;
      }
      if (!this.sites.has(r.siteId) && this.rates.size >= 10_000) continue;
      let ring = this.rates.get(r.siteId);
      if (!ring) this.rates.set(r.siteId, (ring = new Ring(this.limits.rateSeconds)));
      const sec = Math.floor(r.receivedAt / 1000);
      const last = ring.last();
      if (last && last.t === sec) last.n++;
      else if (!last || sec > last.t) ring.push({ t: sec, n: 1 });
      // An older second than the last bucket (a late catch-up) is counted in the last bucket.
      else last.n++;
    }
  }

  /** Applies one event of the live stream. Unknown events are ignored (newer clouds add some). */
  apply(ev: SseEvent, nowMs: number): void {
    let data: { items?: unknown[]; from?: number; to?: number };
    try {
      data = JSON.parse(ev.data) as typeof data;
    } catch {
      return;
    }
    switch (ev.event) {
      case 'results':
        this.addResults((data.items ?? []) as Result[]);
        break;
      case 'sites':
        for (const s of (data.items ?? []) as Site[]) this.upsertSite(s, nowMs);
        break;
      case 'rollouts':
        for (const r of (data.items ?? []) as Rollout[]) this.upsertRollout(r);
        break;
      case 'gap':
        this.skipped += Math.max(0, (data.to ?? 0) - (data.from ?? 0));
        break;
      default:
        return;
    }
    this.changed();
  }

  markAlertsSeen(): void {
    if (this.unseenAlerts === 0) return;
    this.unseenAlerts = 0;
    this.changed();
  }

  siteSamples(id: string): SiteSample[] {
    return this.samples.get(id)?.toArray() ?? [];
  }

  /**
   * Results per second of one site (or all, without `siteId`) over the last `seconds` up to
   * `nowMs`, zero-filled: the x values are whole seconds, the y values counts.
   */
  resultRate(nowMs: number, seconds = 60, siteId?: string): [number[], number[]] {
    const end = Math.floor(nowMs / 1000);
    const xs: number[] = [];
    const ys: number[] = [];
    const counts = new Map<number, number>();
    const rings = siteId ? [this.rates.get(siteId)].filter((r) => r !== undefined) : [...this.rates.values()];
    for (const ring of rings) for (const b of ring.toArray()) if (b.t > end - seconds) counts.set(b.t, (counts.get(b.t) ?? 0) + b.n);
    for (let t = end - seconds + 1; t <= end; t++) {
      xs.push(t);
      ys.push(counts.get(t) ?? 0);
    }
    return [xs, ys];
  }
}

/**
 * A counter series turned into a per-second rate between consecutive samples (the first sample
 * has no rate). A counter that went down (the agent restarted) counts from zero again.
 */
export function rateOf<S extends { t: number }>(samples: readonly S[], value: (s: S) => number | undefined): [number[], (number | null)[]] {
  const xs: number[] = [];
  const ys: (number | null)[] = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1]!;
    const b = samples[i]!;
    const va = value(a);
    const vb = value(b);
    const dt = b.t - a.t;
    xs.push(b.t);
    if (va === undefined || vb === undefined || dt <= 0) ys.push(null);
    else ys.push((vb >= va ? vb - va : vb) / dt);
  }
  return [xs, ys];
}

/** A field that holds a time (epoch ms or s), not a measurement: it would flatten every other series. */
function isTimeField(k: string, v: number): boolean {
  return /^(at|ts|time|timestamp|t)$|(At|Time|_at|_ts)$/.test(k) || v > 1e11;
}

/** The top-level numeric fields of a stream's results (up to 4, times left out), as chart series. */
export function numericSeries(rows: readonly Result[]): { keys: string[]; data: (number | null)[][] } {
  const keys: string[] = [];
  for (const r of rows) {
    if (r.data && typeof r.data === 'object') {
      for (const [k, v] of Object.entries(r.data))
        if (typeof v === 'number' && !keys.includes(k) && keys.length < 4 && !isTimeField(k, v)) keys.push(k);
    }
  }
  const pts = rows.filter((r) => r.data && typeof r.data === 'object');
  // uPlot needs increasing x: results of one second are spread by their order.
  const xs: number[] = [];
  for (const r of pts) xs.push(Math.max(r.at / 1000, (xs[xs.length - 1] ?? -Infinity) + 0.001));
  return {
    keys,
    data: [
      xs,
      ...keys.map((k) =>
        pts.map((r) => {
          const v = (r.data as Record<string, unknown>)[k];
          return typeof v === 'number' ? v : null;
        }),
      ),
    ],
  };
}
