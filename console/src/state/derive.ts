import type { Phase, RouteDecision, Rollout, Site } from '../types.ts';

/**
 * Pure helpers behind the pages: label filters, grouping, rollout actions and progress, gate
 * readings, manifest diffs, and how times and sizes are written.
 */

export type LabelFilter = { ok: true; terms: { key: string; value?: string; not?: boolean }[] } | { ok: false; error: string };

/**
 * Parses a filter typed by an operator: `city=hangzhou, industry!=retail, gpu` (comma or
 * space separated; `key` alone means the label is present). Errors say which term is wrong.
 */
export function parseLabelFilter(text: string): LabelFilter {
  const terms: { key: string; value?: string; not?: boolean }[] = [];
  const parts = text
    .split(/[,\s]+/)
    .map((p) => p.trim())
    .filter(Boolean);
  for (const [i, p] of parts.entries()) {
    const m = /^([A-Za-z0-9][A-Za-z0-9._/-]*)(?:(!=|=)(.*))?$/.exec(p);
    if (!m) return { ok: false, error: `term ${i + 1} "${p}" is not key, key=value or key!=value` };
    if (m[2] !== undefined && m[3] === '') return { ok: false, error: `term ${i + 1} "${p}" has no value after ${m[2]}` };
    terms.push({ key: m[1]!, ...(m[2] ? { value: m[3], not: m[2] === '!=' } : {}) });
  }
  return { ok: true, terms };
}

export function siteMatches(site: Pick<Site, 'labels' | 'region'>, f: LabelFilter): boolean {
  if (!f.ok) return true;
  return f.terms.every((t) => {
    const v = t.key === 'region' && !(t.key in site.labels) ? site.region : site.labels[t.key];
    if (t.value === undefined) return v !== undefined;
    return t.not ? v !== t.value : v === t.value;
  });
}

const STATE_ORDER: Record<string, number> = { offline: 0, online: 1, revoked: 2 };

/** Sites by region (regions by name; in each, offline sites first — what needs a look — then by name), for the fleet grid. */
export function groupByRegion<T extends Pick<Site, 'region' | 'name'> & { state?: Site['state'] }>(
  sites: readonly T[],
): { region: string; sites: T[] }[] {
  const m = new Map<string, T[]>();
  for (const s of sites) {
    const list = m.get(s.region);
    if (list) list.push(s);
    else m.set(s.region, [s]);
  }
  const rank = (s: T) => STATE_ORDER[s.state ?? 'online'] ?? 1;
  return [...m.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([region, list]) => ({ region, sites: list.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name)) }));
}

export function fleetCounts(sites: readonly Pick<Site, 'state'>[]): { total: number; online: number; offline: number; revoked: number } {
  const c = { total: sites.length, online: 0, offline: 0, revoked: 0 };
  for (const s of sites) c[s.state]++;
  return c;
}

export type RolloutAction = 'pause' | 'resume' | 'abort' | 'undo';

/** What an operator may do to a rollout in its phase (the API refuses the rest with ROLLOUT_STATE). */
export function allowedActions(phase: Phase): RolloutAction[] {
  switch (phase) {
    case 'progressing':
    case 'baking':
      return ['pause', 'abort'];
    case 'paused':
      return ['resume', 'abort'];
    case 'succeeded':
    case 'failed':
      return ['undo'];
    default:
      return [];
  }
}

export function rolloutProgress(r: Pick<Rollout, 'sites'>): {
  total: number;
  updated: number;
  failed: number;
  deferred: number;
  pending: number;
} {
  const p = { total: 0, updated: 0, failed: 0, deferred: 0, pending: 0 };
  for (const s of Object.values(r.sites)) {
    p.total++;
    if (s.phase === 'updated') p.updated++;
    else if (s.phase === 'failed' || s.phase === 'reverted') p.failed++;
    else if (s.phase === 'deferred') p.deferred++;
    else p.pending++;
  }
  return p;
}

export interface GateReading {
  gate: 'maxErrorRate' | 'maxP95Ms' | 'maxDrift';
  limit: number;
  value: number | null;
  ok: boolean | null;
  note?: string;
}

/**
 * A canary's gates with what its canary sites report now (their models' counters for this app,
 * from the last heartbeat), computed as the controller does (src/cloud/rollout/reconcile.ts failedGate):
 * error rate (errors / requests), the worst p95, and drift — the relative change of the canaries'
 * mean model output against the sites still on the previous version, or against the figures the
 * controller recorded before the canaries updated.
 */
export function gateReadings(r: Rollout, sites: ReadonlyMap<string, Site>): GateReading[] {
  if (r.strategy.type !== 'canary') return [];
  const g = r.strategy.gates;
  const appModels = (id: string) => (sites.get(id)?.status?.models ?? []).filter((m) => m.app === r.app && m.stats);
  /** A site's mean output over this app's models (what the controller observes per site). */
  const siteMean = (id: string): number | undefined => {
    const v = appModels(id)
      .map((m) => m.stats!.outputMean)
      .filter((x): x is number => typeof x === 'number');
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
  };
  const mean = (xs: (number | undefined)[]): number | undefined => {
    const v = xs.filter((x): x is number => typeof x === 'number');
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : undefined;
  };
  let requests = 0;
  let errors = 0;
  let p95: number | null = null;
  for (const id of r.canaries) {
    for (const m of appModels(id)) {
      requests += m.stats!.requests;
      errors += m.stats!.errors;
      if (m.stats!.p95Ms !== null) p95 = Math.max(p95 ?? 0, m.stats!.p95Ms);
    }
  }
  const out: GateReading[] = [];
  if (g.maxErrorRate !== undefined) {
    const v = requests > 0 ? errors / requests : null;
    out.push({
      gate: 'maxErrorRate',
      limit: g.maxErrorRate,
      value: v,
      ok: v === null ? null : v <= g.maxErrorRate,
      ...(v === null ? { note: 'no model requests yet' } : {}),
    });
  }
  if (g.maxP95Ms !== undefined)
    out.push({
      gate: 'maxP95Ms',
      limit: g.maxP95Ms,
      value: p95,
      ok: p95 === null ? null : p95 <= g.maxP95Ms,
      ...(p95 === null ? { note: 'no latency yet' } : {}),
    });
  if (g.maxDrift !== undefined) {
    const admitted = new Set(r.admitted);
    const previous = Object.keys(r.sites).filter(
      (id) =>
        !admitted.has(id) &&
        sites.get(id)?.state === 'online' &&
        sites.get(id)?.status?.apps.find((a) => a.name === r.app)?.version !== r.version,
    );
    const c = mean(r.canaries.map(siteMean));
    const b = mean(previous.map(siteMean)) ?? (typeof r.baseline?.outputMean === 'number' ? r.baseline.outputMean : undefined);
    const v = c !== undefined && b !== undefined ? Math.abs(c - b) / Math.max(Math.abs(b), 1e-9) : null;
    out.push({
      gate: 'maxDrift',
      limit: g.maxDrift,
      value: v,
      ok: v === null ? null : v <= g.maxDrift,
      ...(v === null ? { note: c === undefined ? 'no model output on the canaries yet' : 'no figures of the previous version' } : {}),
    });
  }
  return out;
}

/** JSON with sorted keys, two-space indented: two manifests diff by content, not key order. */
export function canonicalJson(v: unknown): string {
  const sort = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(sort);
    if (x && typeof x === 'object')
      return Object.fromEntries(
        Object.keys(x)
          .sort()
          .map((k) => [k, sort((x as Record<string, unknown>)[k])]),
      );
    return x;
  };
  return JSON.stringify(sort(v), null, 2);
}

export type DiffLine = { op: ' ' | '+' | '-'; text: string };

/**
 * A line diff (longest common subsequence). Bounded: past `maxLines` lines on a side it shows
 * the whole old text removed and the new one added instead of spending quadratic memory.
 */
export function lineDiff(a: string, b: string, maxLines = 3000): DiffLine[] {
  const x = a.split('\n');
  const y = b.split('\n');
  if (x.length > maxLines || y.length > maxLines)
    return [...x.map((text) => ({ op: '-' as const, text })), ...y.map((text) => ({ op: '+' as const, text }))];
  const n = x.length;
  const m = y.length;
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--) lcs[i]![j] = x[i] === y[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) {
      out.push({ op: ' ', text: x[i]! });
      i++;
      j++;
    } else if (lcs[i + 1]![j]! >= lcs[i]![j + 1]!) out.push({ op: '-', text: x[i++]! });
    else out.push({ op: '+', text: y[j++]! });
  }
  while (i < n) out.push({ op: '-', text: x[i++]! });
  while (j < m) out.push({ op: '+', text: y[j++]! });
  return out;
}

/** "12 s ago", "3 min ago", "2 h ago", "5 d ago"; "never" for null. */
export function ago(ms: number | null, nowMs: number): string {
  if (ms === null) return 'never';
  const s = Math.max(0, Math.round((nowMs - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

export function bytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${u[i]}`;
}

/** Whether the key's permissions allow something (the console hides what they do not). */
export function can(permissions: readonly string[] | undefined, p: string): boolean {
  return !!permissions && permissions.includes(p);
}

export interface EndpointStats {
  endpoint: string;
  requests: number;
  errors: number;
  /** Requests per minute over the window. */
  perMinute: number;
  /** Routing time of answered requests (all attempts), median and 95th percentile, ms. */
  p50Ms: number | null;
  p95Ms: number | null;
  /** Share of cascaded requests that escalated (null: the endpoint is no cascade). */
  cascadeRate: number | null;
  /** Where answered requests went: target (a site id, or `cloud`) → count, most first. */
  answeredBy: [string, number][];
  /** Errors by code, most first. */
  errorCodes: [string, number][];
}

function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

/** Latency, throughput, cascade rate and where requests went, per endpoint, from the routing audit's records in the window. */
export function endpointStats(records: readonly RouteDecision[], nowMs: number, windowMs: number): EndpointStats[] {
  const by = new Map<string, RouteDecision[]>();
  for (const r of records) if (r.at > nowMs - windowMs && r.at <= nowMs) by.set(r.endpoint, [...(by.get(r.endpoint) ?? []), r]);
  const count = (xs: (string | undefined)[]) => {
    const m = new Map<string, number>();
    for (const x of xs) if (x !== undefined) m.set(x, (m.get(x) ?? 0) + 1);
    return [...m.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  };
  return [...by.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([endpoint, rs]) => {
      const ok = rs.filter((r) => r.outcome === 'ok');
      const ms = ok.map((r) => r.attempts.reduce((a, x) => a + x.ms, 0)).sort((a, b) => a - b);
      const cascaded = rs.filter((r) => r.cascade);
      return {
        endpoint,
        requests: rs.length,
        errors: rs.length - ok.length,
        perMinute: rs.length / (windowMs / 60_000),
        p50Ms: quantile(ms, 0.5),
        p95Ms: quantile(ms, 0.95),
        cascadeRate: cascaded.length ? cascaded.filter((r) => r.cascade!.escalated).length / cascaded.length : null,
        answeredBy: count(ok.map((r) => r.answeredBy)),
        errorCodes: count(rs.filter((r) => r.outcome === 'error').map((r) => r.code ?? 'unknown')),
      };
    });
}

/** Routed requests per `bucketS` seconds over the window, per endpoint (chart series, zero-filled). */
export function requestSeries(
  records: readonly RouteDecision[],
  endpoints: readonly string[],
  nowMs: number,
  windowMs: number,
  bucketS = 10,
): (number | null)[][] {
  const end = Math.floor(nowMs / 1000 / bucketS);
  const n = Math.max(1, Math.floor(windowMs / 1000 / bucketS));
  const xs = Array.from({ length: n }, (_, i) => (end - n + 1 + i) * bucketS);
  const ys = endpoints.map(() => new Array<number>(n).fill(0));
  for (const r of records) {
    const i = Math.floor(r.at / 1000 / bucketS) - (end - n + 1);
    const e = endpoints.indexOf(r.endpoint);
    if (i >= 0 && i < n && e >= 0) ys[e]![i]! += 1 / bucketS;
  }
  return [xs, ...ys];
}
