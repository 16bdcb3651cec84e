import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { EwError, isEwError, type ErrorCode } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Fleet } from '../fleet.ts';
import {
  place,
  modelKey,
  type Choice,
  type Decision,
  type FleetSnapshot,
  type Rejection,
  type SiteSnapshot,
  type Target,
} from './policy.ts';
import { type RouterCatalog, siteSnapshot, type EndpointInfo } from './catalog.ts';
import type { Site } from '../store/store.ts';
import type { Forwarder } from './forwarder.ts';
import type { CloudRuntime } from './cloud-runtime.ts';
import type { RouterAudit, AuditRecord } from './audit.ts';

/**
 * The router's shell around the pure policy: builds the fleet snapshot, asks the policy, runs
 * the first choice, and on a retryable failure asks again with that target excluded — all
 * within the request's deadline. Keeps the live facts the policy reads (requests in flight per
 * site, latency EWMA per site and endpoint, a circuit per site), the metrics, and writes one
 * audit record per request. Protocol-neutral: the OIP and OpenAI layers pass `run`.
 */
export interface RouteContext {
  tenantId: string;
  keyId: string;
  requestId: string;
  protocol: 'oip' | 'openai';
}

export interface RouteOptions {
  regions?: string[];
  dataClass?: string;
  preferSite?: string;
  /** Absolute deadline (clock ms). */
  deadline: number;
  signal?: AbortSignal;
}

export interface Attempt {
  target: Target;
  outcome: 'ok' | ErrorCode;
  ms: number;
  message?: string;
}

export interface RouteTrace {
  endpoint: string;
  constraint: Decision['constraint'];
  /** The first decision's full ordered choice and rejections (explain output). */
  choices: Choice[];
  rejected: Rejection[];
  attempts: Attempt[];
}

export interface Routed<T> {
  value: T;
  target: Target;
  trace: RouteTrace;
}

/** Failures another target may not have; anything else (bad input) goes straight back to the client. */
const RETRYABLE = new Set<string>([
  'INFER_DEADLINE_EXCEEDED',
  'SITE_UNREACHABLE',
  'SITE_ANSWER_INVALID',
  'QUEUE_FULL',
  'MODEL_NOT_READY',
  'MODEL_NOT_FOUND',
  'MODEL_LOAD_FAILED',
  'MODEL_TOO_LARGE',
  'ARTIFACT_NOT_FOUND',
  'LLM_RUNTIME_CRASHED',
  'INTERNAL',
]);

export interface RouterOptions {
  catalog: RouterCatalog;
  fleet: Fleet;
  forwarder: Forwarder;
  cloudRuntime?: CloudRuntime;
  audit: RouterAudit;
  clock: Clock;
  log: Logger;
  registry: Registry;
  /** The cloud's own region (for residency of the fallback). Default `cloud`. */
  region: string;
  /** Consecutive failures that open a site's circuit, and for how long. Defaults 3, 10 s. */
  circuitFailures?: number;
  circuitOpenMs?: number;
}

export const targetName = (t: Target): string => (t.kind === 'site' ? t.siteId : 'cloud');

export class InferenceRouter {
  private readonly inFlight = new Map<string, number>();
  private readonly latency = new Map<string, number>();
  private readonly health = new Map<string, { fails: number; openUntil?: number }>();
  private cloudLatency?: number;
  /** Per tenant: which sites report each model (any state), rebuilt at most once a second, so a request looks only at candidates. */
  private readonly index = new Map<string, { at: number; byKey: Map<string, Site[]> }>();
  readonly m;

  constructor(readonly o: RouterOptions) {
    const r = o.registry;
    const buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
    this.m = {
      requests: new Counter({
        name: 'ew_router_requests_total',
        help: 'Routed inference requests by endpoint, protocol and outcome',
        labelNames: ['endpoint', 'protocol', 'outcome', 'code'],
        registers: [r],
      }),
      duration: new Histogram({
        name: 'ew_router_request_duration_seconds',
        help: 'Routed request latency (all attempts) by endpoint and where it was answered',
        labelNames: ['endpoint', 'target'],
        buckets,
        registers: [r],
      }),
      attempts: new Counter({
        name: 'ew_router_attempts_total',
        help: 'Attempts at a target by endpoint, site and outcome (ok or an error code)',
        labelNames: ['endpoint', 'site', 'outcome'],
        registers: [r],
      }),
      errors: new Counter({
        name: 'ew_router_errors_total',
        help: 'Failed attempts by endpoint, site and error code',
        labelNames: ['endpoint', 'site', 'code'],
        registers: [r],
      }),
      decisions: new Counter({
        name: 'ew_router_decisions_total',
        help: 'Placement decisions by endpoint and first choice (site, cloud) or refusal code',
        labelNames: ['endpoint', 'choice'],
        registers: [r],
      }),
      rejections: new Counter({
        name: 'ew_router_rejections_total',
        help: 'Candidates left out of placement decisions, by endpoint and reason (residency, offline, not-ready, ...)',
        labelNames: ['endpoint', 'reason'],
        registers: [r],
      }),
      escalations: new Counter({
        name: 'ew_router_cascade_escalations_total',
        help: 'Cascade requests escalated to the larger model',
        labelNames: ['endpoint'],
        registers: [r],
      }),
      cascaded: new Counter({
        name: 'ew_router_cascade_requests_total',
        help: 'Requests to endpoints that declare a cascade',
        labelNames: ['endpoint'],
        registers: [r],
      }),
      cascadeAdded: new Histogram({
        name: 'ew_router_cascade_added_seconds',
        help: 'Latency an escalation added to a cascade request',
        labelNames: ['endpoint'],
        buckets,
        registers: [r],
      }),
    };
    const inFlight = this.inFlight;
    new Gauge({
      name: 'ew_router_in_flight',
      help: 'Routed requests waiting on a site or the cloud runtime',
      registers: [r],
      collect() {
        let n = 0;
        for (const v of inFlight.values()) n += v;
        this.set(n);
      },
    });
  }

  async endpoint(tenantId: string, name: string, version?: string): Promise<EndpointInfo> {
    const ep = (await this.o.catalog.endpointsOf(tenantId)).get(name);
    if (!ep)
      throw new EwError('MODEL_NOT_FOUND', `no deployment serves an endpoint "${name}"; GET /v2/models lists them`, { path: 'model' });
    if (version !== undefined && !ep.versions.some((v) => v.version === version)) {
      throw new EwError(
        'MODEL_NOT_FOUND',
        `endpoint ${name} has no deployed version ${version} (deployed: ${ep.versions.map((v) => v.version).join(', ')})`,
        { path: 'version' },
      );
    }
    return ep;
  }

  /** Builds the policy's view of the fleet for these models. */
  async snapshot(
    tenantId: string,
    endpoint: string,
    models: { app: string; name: string; version: string }[],
    cloudCanServe: boolean,
  ): Promise<FleetSnapshot> {
    const keys = new Set(models.map(modelKey));
    const now = this.o.clock.now();
    const sites: SiteSnapshot[] = [];
    let idx = this.index.get(tenantId);
    if (!idx || now - idx.at >= 1000) {
      const byKey = new Map<string, Site[]>();
      for (const s of await this.o.catalog.sitesOf(tenantId)) {
        for (const m of (this.o.fleet.statuses.get(s.id) ?? s.status)?.models ?? []) {
          const k = modelKey({ app: m.app, name: m.name, version: m.version });
          const list = byKey.get(k);
          if (list) list.push(s);
          else byKey.set(k, [s]);
        }
      }
      idx = { at: now, byKey };
      this.index.set(tenantId, idx);
    }
    const candidates = new Set<Site>();
    for (const k of keys) for (const s of idx.byKey.get(k) ?? []) candidates.add(s);
    for (const s of candidates) {
      const status = this.o.fleet.statuses.get(s.id) ?? s.status;
      const h = this.health.get(s.id);
      const snap = siteSnapshot(
        s,
        status,
        {
          online: this.o.fleet.isOnline(s.id),
          inFlight: this.inFlight.get(s.id) ?? 0,
          latencyMs: this.latency.get(`${s.id}|${endpoint}`),
          circuitOpenUntil: h?.openUntil,
        },
        keys,
      );
      if (snap) sites.push(snap);
    }
    return {
      now,
      sites,
      ...(this.o.cloudRuntime ? { cloud: { region: this.o.region, canServe: cloudCanServe, latencyMs: this.cloudLatency } } : {}),
    };
  }

  /**
   * Places and runs a request, retrying at the next eligible target within the deadline.
   * `models` are the models that may answer (the endpoint's, or a cascade's larger one).
   */
  async route<T>(
    ctx: RouteContext,
    ep: EndpointInfo,
    opts: RouteOptions,
    models: { app: string; name: string; version: string }[],
    manifestFor: (version: string) => EndpointInfo['versions'][number]['manifest'],
    run: (target: Target, timeoutMs: number) => Promise<T>,
    fallbackAllowed = ep.fallback,
  ): Promise<Routed<T>> {
    const cloudCanServe =
      !!this.o.cloudRuntime &&
      fallbackAllowed &&
      this.o.cloudRuntime.canServe(ctx.tenantId, manifestFor(models[0]!.version), models[0]!.name);
    const tried: string[] = [];
    const attempts: Attempt[] = [];
    let trace: RouteTrace | undefined;
    let lastError: EwError | undefined;
    const t0 = this.o.clock.now();
    for (;;) {
      const snap = await this.snapshot(ctx.tenantId, ep.name, models, cloudCanServe);
      const d = place(
        {
          endpoint: ep.name,
          models,
          regions: opts.regions,
          dataClass: opts.dataClass,
          preferSite: opts.preferSite,
          wantsAccelerator: ep.wantsAccelerator,
          exclude: tried,
          cloudFallback: fallbackAllowed,
          residency: ep.residency,
        },
        snap,
      );
      if (!trace) {
        trace = { endpoint: ep.name, constraint: d.constraint, choices: d.ok ? d.choices : [], rejected: d.rejected, attempts };
        this.m.decisions.inc({ endpoint: ep.name, choice: d.ok ? d.choices[0]!.target.kind : d.code });
        for (const r of d.rejected) this.m.rejections.inc({ endpoint: ep.name, reason: r.reason });
      }
      if (!d.ok) {
        // Nothing (more) to try: the last attempt's error when there was one, else the policy's refusal.
        const err = lastError ?? new EwError(d.code, d.message);
        this.finish(ctx, ep, opts, trace, err, t0);
        throw Object.assign(err, { trace });
      }
      const choice = d.choices[0]!;
      const remaining = opts.deadline - this.o.clock.now();
      if (remaining <= 0) {
        const err = new EwError(
          'INFER_DEADLINE_EXCEEDED',
          `no target answered endpoint ${ep.name} within the deadline (${attempts.map((a) => `${targetName(a.target)}: ${a.outcome}`).join(', ') || 'nothing tried'})`,
        );
        this.finish(ctx, ep, opts, trace, err, t0);
        throw Object.assign(err, { trace });
      }
      // Leave time for the next choice when there is one: half of what remains.
      const timeoutMs = Math.max(1, Math.floor(d.choices.length > 1 ? remaining / 2 : remaining));
      const name = targetName(choice.target);
      const a0 = this.o.clock.now();
      this.inFlight.set(name, (this.inFlight.get(name) ?? 0) + 1);
      try {
        const value = await run(choice.target, timeoutMs);
        const ms = this.o.clock.now() - a0;
        attempts.push({ target: choice.target, outcome: 'ok', ms });
        this.succeeded(choice.target, ep.name, ms);
        this.finish(ctx, ep, opts, trace, undefined, t0, choice.target);
        return { value, target: choice.target, trace };
      } catch (e) {
        const ms = this.o.clock.now() - a0;
        const err = isEwError(e) ? e : new EwError('INTERNAL', (e as Error).message);
        attempts.push({ target: choice.target, outcome: err.code, ms, message: err.message });
        this.m.errors.inc({ endpoint: ep.name, site: name, code: err.code });
        this.m.attempts.inc({ endpoint: ep.name, site: name, outcome: err.code });
        if (err.code === 'CLIENT_CLOSED' || !RETRYABLE.has(err.code) || opts.signal?.aborted) {
          this.finish(ctx, ep, opts, trace, err, t0);
          throw Object.assign(err, { trace });
        }
        this.failed(choice.target);
        this.o.log.info(
          { requestId: ctx.requestId, endpoint: ep.name, target: name, code: err.code },
          'routed attempt failed; trying the next target',
        );
        tried.push(name);
        lastError = err;
      } finally {
        const n = (this.inFlight.get(name) ?? 1) - 1;
        if (n <= 0) this.inFlight.delete(name);
        else this.inFlight.set(name, n);
      }
    }
  }

  private succeeded(t: Target, endpoint: string, ms: number): void {
    this.m.attempts.inc({ endpoint, site: targetName(t), outcome: 'ok' });
    if (t.kind === 'cloud') {
      this.cloudLatency = this.cloudLatency === undefined ? ms : 0.8 * this.cloudLatency + 0.2 * ms;
      return;
    }
    const k = `${t.siteId}|${endpoint}`;
    const cur = this.latency.get(k);
    this.latency.set(k, cur === undefined ? ms : 0.8 * cur + 0.2 * ms);
    this.health.delete(t.siteId);
    if (this.latency.size > 200_000) this.latency.delete(this.latency.keys().next().value as string);
  }

  private failed(t: Target): void {
    if (t.kind !== 'site') return;
    const h = this.health.get(t.siteId) ?? { fails: 0 };
    h.fails++;
    if (h.fails >= (this.o.circuitFailures ?? 3)) h.openUntil = this.o.clock.now() + (this.o.circuitOpenMs ?? 10_000);
    this.health.set(t.siteId, h);
    if (this.health.size > 200_000) this.health.delete(this.health.keys().next().value as string);
  }

  /** Metrics and the audit record of a finished request (one per request, cascade stages included by the caller). */
  private finish(
    ctx: RouteContext,
    ep: EndpointInfo,
    opts: RouteOptions,
    trace: RouteTrace,
    err: EwError | undefined,
    t0: number,
    target?: Target,
  ): void {
    const s = (this.o.clock.now() - t0) / 1000;
    this.m.requests.inc({ endpoint: ep.name, protocol: ctx.protocol, outcome: err ? 'error' : 'ok', code: err?.code ?? '' });
    if (target) this.m.duration.observe({ endpoint: ep.name, target: target.kind }, s);
    const rec: AuditRecord = {
      at: this.o.clock.now(),
      requestId: ctx.requestId,
      tenantId: ctx.tenantId,
      keyId: ctx.keyId,
      endpoint: ep.name,
      protocol: ctx.protocol,
      constraint: trace.constraint,
      ...(opts.dataClass !== undefined ? { dataClass: opts.dataClass } : {}),
      attempts: trace.attempts.map((a) => ({ target: targetName(a.target), region: a.target.region, outcome: a.outcome, ms: a.ms })),
      // Bounded on big fleets: the first 50 left out by name, all of them counted by reason.
      rejected: trace.rejected.slice(0, 50).map((r) => ({ target: targetName(r.target), reason: r.reason })),
      rejectedCounts: trace.rejected.reduce<Record<string, number>>((acc, r) => {
        acc[r.reason] = (acc[r.reason] ?? 0) + 1;
        return acc;
      }, {}),
      outcome: err ? 'error' : 'ok',
      ...(err ? { code: err.code } : {}),
      ...(target ? { answeredBy: targetName(target) } : {}),
    };
    this.o.audit.record(rec);
  }

  /** A summary for the `x-edgeweave-route` header and the explain output. */
  static explain(trace: RouteTrace): Record<string, unknown> {
    return {
      endpoint: trace.endpoint,
      residency: trace.constraint,
      choices: trace.choices.map((c) => ({
        target: targetName(c.target),
        region: c.target.region,
        estimateMs: Math.round(c.estimateMs * 10) / 10,
        reasons: c.reasons,
      })),
      rejected: trace.rejected.map((r) => ({ target: targetName(r.target), region: r.target.region, reason: r.reason, detail: r.detail })),
      attempts: trace.attempts.map((a) => ({
        target: targetName(a.target),
        region: a.target.region,
        outcome: a.outcome,
        ms: a.ms,
        ...(a.message ? { message: a.message } : {}),
      })),
    };
  }
}
