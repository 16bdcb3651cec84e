/**
 * The router's placement policy: a pure function of (request, fleet snapshot) → an ordered
 * choice of targets with the reasons for each, and the reason every other candidate was left
 * out. No I/O, no clock (the snapshot carries `now`), so it is tested without sockets and a
 * property test can throw random fleets at it.
 *
 * Order of concerns, from hard to soft:
 *   1. data residency — the request's regions, its data class's rule and the endpoint's regions
 *      are intersected; a target outside them is never chosen (hard; audited by the caller);
 *   2. serving — the site reports the model (app, name, version) ready, and is online;
 *   3. health — a site whose recent requests failed has its circuit open until a given time;
 *   4. load — queue depth and requests in flight (reported by the site and counted by the cloud);
 *   5. measured latency (EWMA of routed requests) and accelerators (a GPU halves the estimate
 *      for a model that asks for one).
 * The cloud-side runtime comes last, only where the endpoint allows a fallback and residency
 * allows the cloud's region.
 */

/** What a data class allows: regions, specific sites, and whether the cloud may see it. */
export interface ResidencyRule {
  regions?: readonly string[];
  sites?: readonly string[];
  cloud?: boolean;
}

/** An endpoint's residency policy (from its app's manifest). */
export interface ResidencyPolicy {
  /** Regions any request of this endpoint may be processed in (absent: any region). */
  regions?: readonly string[];
  /** Whether the cloud's region may see this endpoint's data at all (default true; a class may narrow it). */
  cloud?: boolean;
  /** Named data classes and what each allows. A request naming an undeclared class is refused. */
  classes?: Readonly<Record<string, ResidencyRule>>;
}

export interface RouteRequest {
  endpoint: string;
  /** The models that may answer (one per deployed version), as sites report them; a site serving any of them is a candidate. */
  models: readonly { app: string; name: string; version: string }[];
  /** Regions the caller allows (header `x-edgeweave-regions`); absent: any. */
  regions?: readonly string[];
  /** The data class of the request's payload (header `x-edgeweave-data-class`). */
  dataClass?: string;
  /** A site the caller would like (next to its data); honoured only if eligible. */
  preferSite?: string;
  /** The model asks for an accelerator (executionProvider cuda, GPU layers). */
  wantsAccelerator?: boolean;
  /** Sites already tried for this request (retries go elsewhere). */
  exclude?: readonly string[];
  /** The endpoint may fall back to the cloud-side runtime. */
  cloudFallback: boolean;
  residency: ResidencyPolicy;
}

export type ModelState = 'fetching' | 'loading' | 'ready' | 'failed';

export interface SiteSnapshot {
  id: string;
  region: string;
  online: boolean;
  /** Model states by `{app}/{name}@{version}`. */
  models: ReadonlyMap<string, ModelState>;
  /** Requests waiting in the model's queue at the site (reported) and in flight (reported or counted by the cloud). */
  queued: number;
  inFlight: number;
  /** Requests the site runs at once (cores); at least 1. */
  parallelism: number;
  /** EWMA of routed latency for this endpoint (ms); absent until measured. */
  latencyMs?: number;
  /** GPUs and other accelerators the site reports (`nvidia:0`, …). */
  accelerators: readonly string[];
  /** Open circuit: recent requests failed; not tried before this time (ms). */
  circuitOpenUntil?: number;
  /** Reported queue bound; at or past it the site is overloaded. */
  maxQueue?: number;
}

export interface CloudSnapshot {
  region: string;
  /** The cloud-side runtime can serve this model (format supported, artifact present). */
  canServe: boolean;
  latencyMs?: number;
}

export interface FleetSnapshot {
  now: number;
  sites: readonly SiteSnapshot[];
  cloud?: CloudSnapshot;
}

export type Target = { kind: 'site'; siteId: string; region: string } | { kind: 'cloud'; region: string };

export interface Choice {
  target: Target;
  /** Estimated latency (ms) the order is by; lower first. */
  estimateMs: number;
  reasons: string[];
}

export type RejectReason =
  | 'residency'
  | 'not-serving'
  | 'not-ready'
  | 'offline'
  | 'circuit-open'
  | 'overloaded'
  | 'already-tried'
  | 'fallback-disabled'
  | 'cloud-cannot-serve';

export interface Rejection {
  target: Target;
  reason: RejectReason;
  detail: string;
}

/** The residency constraint in force, and where each part came from (for errors and the audit). */
export interface Constraint {
  /** Allowed regions, or null for any. */
  regions: string[] | null;
  /** Allowed sites, or null for any. */
  sites: string[] | null;
  cloud: boolean;
  sources: string[];
}

export type Decision =
  | { ok: true; choices: Choice[]; rejected: Rejection[]; constraint: Constraint }
  | { ok: false; code: 'RESIDENCY_UNSATISFIABLE' | 'NO_SITE_AVAILABLE'; message: string; rejected: Rejection[]; constraint: Constraint };

/** Latency assumed for a target never measured: low enough that new sites get traffic. */
export const DEFAULT_LATENCY_MS = 20;

export function modelKey(m: { app: string; name: string; version: string }): string {
  return `${m.app}/${m.name}@${m.version}`;
}

function intersect(a: string[] | null, b: readonly string[] | undefined): string[] | null {
  if (!b) return a;
  if (a === null) return [...new Set(b)].sort();
  const s = new Set(b);
  return a.filter((x) => s.has(x));
}

/**
 * The residency constraint of a request: the intersection of the endpoint's regions, the data
 * class's rule and the request's own regions. Throws nothing: an undeclared data class yields an
 * empty constraint (nothing allowed), which `place` reports as unsatisfiable — fail closed.
 */
export function residencyConstraint(
  req: Pick<RouteRequest, 'regions' | 'dataClass' | 'residency'>,
): Constraint & { unknownClass?: string } {
  const p = req.residency;
  const sources: string[] = [];
  let regions: string[] | null = null;
  let sites: string[] | null = null;
  let cloud = p.cloud !== false;
  if (p.regions) {
    regions = intersect(regions, p.regions);
    sources.push(`the endpoint allows regions [${p.regions.join(', ')}]`);
  }
  if (p.cloud === false) sources.push('the endpoint keeps its data off the cloud');
  if (req.dataClass !== undefined) {
    const rule = p.classes?.[req.dataClass];
    if (!rule) {
      return {
        regions: [],
        sites: [],
        cloud: false,
        sources: [
          ...sources,
          `data class "${req.dataClass}" is not declared by the endpoint (declared: ${Object.keys(p.classes ?? {}).join(', ') || 'none'})`,
        ],
        unknownClass: req.dataClass,
      };
    }
    if (rule.regions) {
      regions = intersect(regions, rule.regions);
      sources.push(`data class "${req.dataClass}" allows regions [${rule.regions.join(', ')}]`);
    }
    if (rule.sites) {
      sites = [...new Set(rule.sites)].sort();
      sources.push(`data class "${req.dataClass}" allows sites [${rule.sites.join(', ')}]`);
    }
    if (rule.cloud === false) {
      cloud = false;
      sources.push(`data class "${req.dataClass}" may not leave for the cloud`);
    }
  }
  if (req.regions) {
    regions = intersect(regions, req.regions);
    sources.push(`the request allows regions [${req.regions.join(', ')}]`);
  }
  return { regions, sites, cloud, sources };
}

function regionAllowed(c: Constraint, region: string): boolean {
  return c.regions === null || c.regions.includes(region);
}

/** Is this target allowed by residency? The one predicate every choice passes. */
export function residencyAllows(c: Constraint, t: Target): boolean {
  if (t.kind === 'cloud') return c.cloud && regionAllowed(c, t.region);
  return regionAllowed(c, t.region) && (c.sites === null || c.sites.includes(t.siteId));
}

/** Sites returned per decision, best first: retries within one deadline never need more. */
export const MAX_CHOICES = 16;

/** The placement decision. Pure: same inputs, same output. */
export function place(req: RouteRequest, fleet: FleetSnapshot): Decision {
  const constraint = residencyConstraint(req);
  const { unknownClass, ...c } = constraint;
  const keys = req.models.map(modelKey);
  const stateOf = (s: SiteSnapshot): ModelState | undefined => {
    let st: ModelState | undefined;
    for (const k of keys) {
      const x = s.models.get(k);
      if (x === 'ready') return x;
      st ??= x;
    }
    return st;
  };
  const modelName = req.models.map((m) => `${m.name}@${m.version}`).join(' or ');
  const exclude = new Set(req.exclude ?? []);
  const rejected: Rejection[] = [];
  const choices: Choice[] = [];
  const serving: SiteSnapshot[] = [];
  let residencyOk = 0;

  // Candidates carry numbers only; reasons are written for the choices returned (at most
  // MAX_CHOICES: no deadline leaves time for more retries), which keeps a 10,000-site fleet cheap.
  type Cand = { s: SiteSnapshot; estimateMs: number; gpu: boolean };
  const better = (x: Cand, y: Cand) => x.estimateMs < y.estimateMs || (x.estimateMs === y.estimateMs && x.s.id < y.s.id);
  // The best MAX_CHOICES kept in order as we go (insertion into a short array): no sort of the whole fleet.
  const cands: Cand[] = [];
  let preferred: Cand | undefined;
  const regionDetail = new Map<string, string>();
  // Declared once, not per site: a closure made in the loop costs more than the check itself.
  const reject = (s: SiteSnapshot, reason: RejectReason, detail: string) => {
    rejected.push({ target: { kind: 'site', siteId: s.id, region: s.region }, reason, detail });
  };
  for (const s of fleet.sites) {
    const state = stateOf(s);
    if (state === undefined) continue; // not deployed there: not a candidate at all
    serving.push(s);
    const allowedRegion = regionAllowed(c, s.region);
    if (!allowedRegion || (c.sites !== null && !c.sites.includes(s.id))) {
      let detail = allowedRegion ? `site ${s.id} is not among the allowed sites` : regionDetail.get(s.region);
      if (detail === undefined) {
        detail = `region ${s.region} is not allowed`;
        regionDetail.set(s.region, detail);
      }
      rejected.push({ target: { kind: 'site', siteId: s.id, region: s.region }, reason: 'residency', detail });
      continue;
    }
    residencyOk++;
    if (exclude.has(s.id)) {
      reject(s, 'already-tried', 'tried earlier for this request');
      continue;
    }
    if (!s.online) {
      reject(s, 'offline', 'no heartbeat within the liveness window');
      continue;
    }
    if (state !== 'ready') {
      reject(s, 'not-ready', `model ${modelName} is ${state}`);
      continue;
    }
    if (s.circuitOpenUntil !== undefined && s.circuitOpenUntil > fleet.now) {
      reject(s, 'circuit-open', `recent requests failed; retried after ${Math.ceil((s.circuitOpenUntil - fleet.now) / 1000)} s`);
      continue;
    }
    if (s.maxQueue !== undefined && s.queued >= s.maxQueue) {
      reject(s, 'overloaded', `queue ${s.queued}/${s.maxQueue} full`);
      continue;
    }
    const gpu = req.wantsAccelerator === true && s.accelerators.some((x) => !x.startsWith('cpu'));
    const estimateMs = ((s.latencyMs ?? DEFAULT_LATENCY_MS) * (1 + (s.queued + s.inFlight) / Math.max(1, s.parallelism))) / (gpu ? 2 : 1);
    const cand = { s, estimateMs, gpu };
    if (s.id === req.preferSite) {
      preferred = cand;
      continue;
    }
    if (cands.length === MAX_CHOICES && !better(cand, cands[MAX_CHOICES - 1]!)) continue;
    let i = cands.length;
    while (i > 0 && better(cand, cands[i - 1]!)) i--;
    cands.splice(i, 0, cand);
    if (cands.length > MAX_CHOICES) cands.pop();
  }
  if (preferred) {
    cands.unshift(preferred);
    if (cands.length > MAX_CHOICES) cands.pop();
  }
  for (const { s, estimateMs, gpu } of cands) {
    const reasons = [
      c.regions === null && c.sites === null ? 'residency: any region' : `residency: region ${s.region} allowed`,
      'online, model ready',
      `load: ${s.inFlight} in flight, ${s.queued} queued, ${Math.max(1, s.parallelism)} parallel`,
      s.latencyMs === undefined
        ? `latency: not measured yet (assumed ${DEFAULT_LATENCY_MS} ms)`
        : `latency: ${s.latencyMs.toFixed(1)} ms measured`,
    ];
    if (gpu) reasons.push(`accelerator: ${s.accelerators.filter((x) => !x.startsWith('cpu')).join(', ')}`);
    if (s.id === req.preferSite) reasons.push('preferred by the request');
    choices.push({ target: { kind: 'site', siteId: s.id, region: s.region }, estimateMs, reasons });
  }

  let cloudResidency = false;
  if (fleet.cloud) {
    const target: Target = { kind: 'cloud', region: fleet.cloud.region };
    if (!residencyAllows(c, target)) {
      cloudResidency = true;
      rejected.push({
        target,
        reason: 'residency',
        detail: !c.cloud ? 'the data may not leave for the cloud' : `the cloud's region ${fleet.cloud.region} is not allowed`,
      });
    } else if (!req.cloudFallback)
      rejected.push({ target, reason: 'fallback-disabled', detail: 'the endpoint declares no cloud fallback' });
    else if (!fleet.cloud.canServe && ++residencyOk)
      rejected.push({ target, reason: 'cloud-cannot-serve', detail: 'the cloud-side runtime cannot serve this model' });
    else if (exclude.has('cloud') && ++residencyOk)
      rejected.push({ target, reason: 'already-tried', detail: 'tried earlier for this request' });
    else {
      residencyOk++;
      choices.push({
        target,
        estimateMs: fleet.cloud.latencyMs ?? DEFAULT_LATENCY_MS,
        reasons: [`residency: the cloud's region ${fleet.cloud.region} allowed`, 'fallback: cloud-side runtime, after every eligible site'],
      });
    }
  }

  if (choices.length > 0) return { ok: true, choices, rejected, constraint: c };
  const allowed = c.regions === null ? 'any region' : `regions [${c.regions.join(', ')}]`;
  if (
    unknownClass !== undefined ||
    (c.regions !== null && c.regions.length === 0) ||
    (residencyOk === 0 && (serving.length > 0 || (cloudResidency && req.cloudFallback))) ||
    (c.sites !== null && c.sites.length === 0)
  ) {
    const where = [...new Set(serving.map((s) => s.region))].sort();
    return {
      ok: false,
      code: 'RESIDENCY_UNSATISFIABLE',
      rejected,
      constraint: c,
      message:
        `no target for endpoint ${req.endpoint} satisfies data residency: ${c.sources.join('; ')}${c.regions !== null && c.regions.length === 0 && unknownClass === undefined ? ' — these leave no region' : ''}; ` +
        `sites serving it are in ${where.length ? `[${where.join(', ')}]` : 'no region'}${fleet.cloud ? `, the cloud in ${fleet.cloud.region}` : ''} (allowed: ${allowed})`,
    };
  }
  const why = rejected.length
    ? rejected.map((r) => `${r.target.kind === 'site' ? r.target.siteId : 'cloud'}: ${r.reason}`).join(', ')
    : 'no site serves it';
  return {
    ok: false,
    code: 'NO_SITE_AVAILABLE',
    rejected,
    constraint: c,
    message: `no site can serve endpoint ${req.endpoint} now (${why})`,
  };
}
