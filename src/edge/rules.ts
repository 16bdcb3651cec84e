import type { AppComponent } from './apps.ts';
import type { DesiredApp } from '../contracts/messages.ts';
import { checkRule, checkEgress, leavingSinks } from '../stream/app.ts';
import type { RuleRuntime } from '../stream/runtime.ts';
import { ModelRule } from '../stream/model-rule.ts';
import { parse } from '../stream/parser.ts';
import type { StreamDef } from '../stream/planner.ts';
import type { EgressGrant, RuleSpec } from '../contracts/manifest.ts';
import { isEwError } from '../contracts/errors.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import type { DeadLetters, StreamRouter } from './streams.ts';
import { makeSink, type Sink, type SinkContext } from './sinks.ts';

/** What the site and the cloud show of a rule. */
export interface RuleStatus {
  app: string;
  rule: string;
  state: 'running' | 'failed';
  error?: string;
  in: number;
  out: number;
  filtered: number;
  late: number;
  errors: number;
  /** Records that reached the rule and were lost to it: failed, or late under `drop`. */
  dropped: number;
  sinkErrors: number;
  lastOutputAt: number | null;
  /** Referenced fields no record carried (schemaless streams), and similar hints. */
  warnings?: string[];
}

interface Running {
  app: string;
  spec: RuleSpec;
  fingerprint: string;
  state: 'running' | 'failed';
  error?: string;
  runtime?: RuleRuntime;
  sinks: Sink[];
  unsubscribe?: () => void;
  sinkErrors: number;
}

export interface RuleHostDeps {
  router: StreamRouter;
  dead: DeadLetters;
  clock: Clock;
  log: Logger;
  /** Runs `infer(model, …)` for a rule of `app` (the site's model host); absent: rules with infer() fail. */
  infer?: (app: string, model: string, args: unknown[], rule?: RuleSpec) => Promise<unknown>;
  /** Builds the context a rule's sinks write through. */
  sinkContext(app: string, rule: string, allowedFields: (stream: string) => string[] | undefined): SinkContext;
}

/**
 * Runs the rules of the apps a site has been given: each rule reads its stream from the device
 * broker, runs in its own RuleRuntime, and writes to its sinks. A rule is checked again here
 * (SQL and egress, as the cloud did at push): one that fails is reported as failed with its error
 * and the others run. A new app version restarts only the rules that changed.
 */
export class RuleHost implements AppComponent {
  readonly name = 'rules';
  private readonly rules = new Map<string, Running>();

  constructor(private readonly d: RuleHostDeps) {}

  statuses(): RuleStatus[] {
    return [...this.rules.values()].map((r) => {
      const s = r.runtime?.stats;
      const warnings = r.runtime?.warnings() ?? [];
      return {
        app: r.app, rule: r.spec.name, state: r.state, ...(r.error ? { error: r.error } : {}), ...(warnings.length ? { warnings: warnings.slice(0, 20) } : {}),
        in: s?.in ?? 0, out: s?.out ?? 0, filtered: s?.filtered ?? 0, late: s?.late ?? 0, errors: s?.errors ?? 0,
        dropped: (s?.errors ?? 0) + (r.spec.options.latePolicy === 'drop' ? (s?.late ?? 0) : 0), sinkErrors: r.sinkErrors, lastOutputAt: s?.lastOutputAt ?? null,
      };
    });
  }

  async start(app: DesiredApp): Promise<void> {
    this.load(app, new Set());
  }

  async update(_prev: DesiredApp, next: DesiredApp): Promise<void> {
    const keep = new Set<string>();
    const wanted = this.prepare(next);
    for (const [key, r] of this.rules) {
      if (r.app !== next.name) continue;
      const w = wanted.get(key);
      if (w && w.fingerprint === r.fingerprint && r.state === 'running') keep.add(key);
      else this.unload(key);
    }
    this.load(next, keep);
  }

  async stop(app: DesiredApp): Promise<void> {
    for (const [key, r] of this.rules) if (r.app === app.name) this.unload(key);
  }

  private prepare(app: DesiredApp): Map<string, { spec: RuleSpec; index: number; fingerprint: string }> {
    const m = app.manifest;
    const out = new Map<string, { spec: RuleSpec; index: number; fingerprint: string }>();
    // A rule restarts when it changes, when the stream it reads changes, or — if it sends
    // results off the site — when the egress policy changes; otherwise it keeps its windows.
    m.spec.rules.forEach((spec, index) => {
      let from: string | undefined;
      try { from = parse(spec.sql).from.name; } catch { /* reported when it loads */ }
      const stream = m.spec.streams.find((s) => s.name === from) ?? null;
      const egress = leavingSinks(spec, index).length ? (m.spec.policy.egress ?? null) : null;
      const writes = spec.sinks.some((s) => 'opcua' in s || 'modbus' in s) ? (m.spec.policy.writes ?? null) : null;
      out.set(`${app.name}/${spec.name}`, { spec, index, fingerprint: JSON.stringify([spec, stream, egress, writes]) });
    });
    return out;
  }

  private load(app: DesiredApp, keep: Set<string>): void {
    const m = app.manifest;
    // A stream fed by an industrial source has no topic: its records arrive through router.push.
    const streams = new Map<string, StreamDef & { topic: string; properties?: Record<string, string> }>(m.spec.streams.map((s) => [s.name, { name: s.name, schema: s.schema, timestamp: s.timestamp, topic: s.topic ?? '', properties: s.properties }]));
    const allow: readonly EgressGrant[] = m.spec.policy.egress?.allow ?? [];
    const failures: string[] = [];
    for (const [key, { spec, index, fingerprint }] of this.prepare(app)) {
      if (keep.has(key)) continue;
      const r: Running = { app: app.name, spec, fingerprint, state: 'running', sinks: [], sinkErrors: 0 };
      this.rules.set(key, r);
      try {
        const checked = checkRule(spec, index, streams, allow, m.spec.models.map((x) => x.name));
        const fields = new Map<string, string[] | undefined>();
        for (const e of leavingSinks(spec, index)) fields.set(e.stream, checkEgress(checked.plan, e, allow, spec.name).fields);
        const ctx = { ...this.d.sinkContext(app.name, spec.name, (s) => fields.get(s)), writePolicy: m.spec.policy.writes };
        r.sinks = spec.sinks.map((s) => makeSink(s, ctx));
        const stream = streams.get(checked.plan.stream.name)!;
        const dead = (rec: Record<string, unknown>, why: string, detail?: string) => this.d.dead.add(app.name, stream.name, why, rec, detail);
        const rule = new ModelRule(checked.plan, {
          clock: this.d.clock, lateness: spec.options.lateness, latePolicy: spec.options.latePolicy,
          maxFutureSkew: spec.options.maxFutureSkew, maxStateCells: spec.options.maxState,
          // Over its state budget the rule stops itself; the site and its other rules keep running.
          onFatal: (e) => {
            r.state = 'failed';
            r.error = `${e.code}: ${e.message}`;
            r.unsubscribe?.();
            r.unsubscribe = undefined;
            this.d.log.error({ app: app.name, rule: spec.name, err: r.error }, 'rule stopped: over its state budget');
          },
          emit: (rows) => {
            for (const sink of r.sinks) {
              try {
                sink.write(rows);
              } catch (e) {
                r.sinkErrors++;
                this.d.log.warn({ app: app.name, rule: spec.name, sink: sink.kind, err: (e as Error).message }, 'sink failed; results for it dropped');
              }
            }
          },
          onLate: (rec) => dead(rec, `late for rule ${spec.name}`),
          // A rule's error message may quote the record's values: it stays in the local detail.
          onError: (rec, e) => dead(rec, `rule ${spec.name} failed on this record (${isEwError(e) ? e.code : e.name}; ${Buffer.byteLength(JSON.stringify(rec) ?? '')} bytes)`, e.message),
          onEmitError: (e) => {
            r.sinkErrors++;
            // A model (infer(), llm()) failing over window results is the rule's error too.
            if (r.runtime) r.runtime.stats.errors++;
            this.d.log.warn({ app: app.name, rule: spec.name, err: e.message }, 'infer() on window results failed; results dropped');
          },
        }, this.d.infer ? (model, args) => this.d.infer!(app.name, model, args, spec) : undefined);
        r.runtime = rule.runtime;
        r.unsubscribe = this.d.router.subscribe({ app: app.name, stream, deliver: (rec, meta) => rule.push(rec, meta) });
        this.d.log.info({ app: app.name, rule: spec.name }, 'rule started');
      } catch (e) {
        r.state = 'failed';
        r.error = isEwError(e) ? `${e.code}: ${e.message}` : (e as Error).message;
        failures.push(`rule ${spec.name}: ${r.error}`);
        this.d.log.error({ app: app.name, rule: spec.name, err: r.error }, 'rule failed to start');
      }
    }
    if (failures.length) throw new Error(failures.join('; '));
  }

  private unload(key: string): void {
    const r = this.rules.get(key);
    if (!r) return;
    r.unsubscribe?.();
    r.runtime?.stop();
    for (const s of r.sinks) s.close();
    this.rules.delete(key);
    this.d.log.info({ app: r.app, rule: r.spec.name }, 'rule stopped');
  }

  /** Stops everything (agent shutdown). */
  close(): void {
    for (const key of [...this.rules.keys()]) this.unload(key);
  }
}
