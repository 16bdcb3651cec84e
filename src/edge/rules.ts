import type { AppComponent } from '../contracts/app-component.ts';
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
import { decodeRecord, type DeadLetters, type StreamRouter } from './record-router.ts';
import { TopicSet } from '../lib/topic-filter.ts';
import { isDurableSink, makeSink, type Sink, type SinkContext } from './sinks.ts';
import type { Journal } from './journal.ts';
import type { EdgeDb } from './db.ts';
import type { Outbox } from './outbox.ts';
import { isEwError as isCode } from '../contracts/errors.ts';
import type { RuleStatus } from '../contracts/messages.ts';
import { createHash, randomUUID } from 'node:crypto';
import { decodeCheckpoint, encodeCheckpoint } from '../stream/checkpoint.ts';
import { resultIds } from './sinks.ts';

/** What the site and the cloud show of a rule: defined once, in the wire contract. */
export type { RuleStatus };

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
  sinkDropped: number;
  blocked?: string;
  model?: ModelRule;
  /** The journal seq this rule's committed effects cover. */
  cursor: number;
  /** A windowed rule: its state is checkpointed with its cursor, its results carry deterministic ids. */
  windowed: boolean;
  epoch: string;
  ordinal: number;
  checkpointAt: number;
  forceCheckpoint?: boolean;
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * A window result's id: the same rule, epoch (a run of the rule with continuous state) and
 * emission number give the same id, so a result emitted again while replaying the journal after
 * a crash is stored once by the cloud.
 */
export function resultId(app: string, rule: string, epoch: string, ordinal: number): string {
  const h = sha(`${app}\u0000${rule}\u0000${epoch}\u0000${ordinal}`);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
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
  /**
   * Acknowledge-after-durability: the intake journal the rules consume, the database their
   * effects commit to (one transaction with each rule's cursor), and the outbox (to count what a
   * full one refuses). Absent: results are committed by each sink alone (tools, benchmarks).
   */
  durable?: {
    journal: Journal; db: EdgeDb; outbox: Outbox; onCommitted?: () => void; retryMs?: number;
    /**
     * How often a windowed rule's state is checkpointed with its cursor (ms; default 1,000). A
     * crash replays at most this much of the journal; more often costs a state serialization
     * per checkpoint (bench:stream part c).
     */
    checkpointMs?: number;
  };
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
  /** The newest journal seq handed to the rules (every rule has seen everything up to it). */
  private seen = 0;
  private commitScheduled = false;
  private cancelRetry?: () => void;

  constructor(private readonly d: RuleHostDeps) {
    this.seen = d.durable?.journal.lastSeq ?? 0;
  }

  /** The intake delivered (through the router) every record up to `seq`. */
  delivered(seq: number): void {
    if (seq > this.seen) this.seen = seq;
    this.commitSoon();
  }

  private commitSoon(): void {
    if (!this.d.durable || this.commitScheduled) return;
    this.commitScheduled = true;
    setImmediate(() => this.commit());
  }

  /** Where a rule's committed effects end: past every record it has fully handled. */
  private safeSeq(r: Running): number {
    const f = r.model?.inFlight;
    if (f?.emitting) return r.cursor; // window rows wait for a model: not done yet
    const oldest = f?.oldest?.seq;
    return typeof oldest === 'number' ? Math.min(oldest - 1, this.seen) : this.seen;
  }

  /**
   * One transaction for every rule: its waiting uplink rows and its cursor (a savepoint per
   * rule, so one rule's full outbox does not hold back the others), then the journal is
   * trimmed. Results the outbox refuses (reject-new) are counted and lost, and the rule says so;
   * after a storage error (disk full) the rows wait and the commit is retried, the cursor not
   * moved, so a crash meanwhile replays them.
   */
  commit(): void {
    this.commitScheduled = false;
    const dur = this.d.durable;
    if (!dur) return;
    let retry = false;
    let wrote = 0;
    try {
      dur.db.transaction(() => {
        for (const [key, r] of this.rules) {
          if (r.state !== 'running') continue;
          const durables = r.sinks.filter(isDurableSink);
          const to = this.safeSeq(r);
          // A windowed rule moves its cursor only with a checkpoint of its state (every
          // checkpointMs, or when it stops); in between its results are committed alone, and a
          // crash replays from the last checkpoint (their ids repeat: the cloud keeps one each).
          const now = this.d.clock.now();
          const checkpoint = r.windowed && to !== r.cursor && !r.model?.inFlight.emitting && (r.forceCheckpoint || now - r.checkpointAt >= (dur.checkpointMs ?? 1000));
          try {
            dur.db.transaction(() => {
              for (const s of durables) wrote += s.commit();
              if (checkpoint) dur.journal.setCursor(key, to, encodeCheckpoint({ fingerprint: sha(r.fingerprint), epoch: r.epoch, ordinal: r.ordinal, runtime: r.runtime!.snapshot() }));
              else if (!r.windowed && to !== r.cursor) dur.journal.setCursor(key, to);
            })();
            if (checkpoint) { r.checkpointAt = now; r.forceCheckpoint = false; }
            if (checkpoint || !r.windowed) r.cursor = to;
            r.blocked = undefined;
          } catch (e) {
            if (isCode(e, 'OUTBOX_FULL')) {
              let lost = 0;
              for (const s of durables) lost += s.discard();
              r.sinkErrors += lost;
              r.sinkDropped += lost;
              dur.outbox.countRefused(lost);
              if (r.blocked === undefined) this.d.log.warn({ app: r.app, rule: r.spec.name, lost }, 'outbox full (reject-new): rule results refused and counted');
              r.blocked = `outbox full (reject-new): ${r.sinkDropped} results refused`;
              if (checkpoint) {
                dur.journal.setCursor(key, to, encodeCheckpoint({ fingerprint: sha(r.fingerprint), epoch: r.epoch, ordinal: r.ordinal, runtime: r.runtime!.snapshot() }));
                r.checkpointAt = now;
                r.forceCheckpoint = false;
              } else if (!r.windowed) dur.journal.setCursor(key, to);
              if (checkpoint || !r.windowed) r.cursor = to;
            } else if (isCode(e, 'VALIDATION_FAILED')) {
              // A result over the uplink size bound would be refused for ever: counted and dropped.
              let lost = 0;
              for (const s of durables) lost += s.discard();
              r.sinkErrors += lost;
              this.d.log.warn({ app: r.app, rule: r.spec.name, lost, err: (e as Error).message }, 'rule results refused by the outbox; dropped');
              if (!r.windowed) { dur.journal.setCursor(key, to); r.cursor = to; }
            } else {
              if (r.blocked === undefined) this.d.log.error({ app: r.app, rule: r.spec.name, err: (e as Error).message }, 'rule results cannot be committed; retrying');
              r.blocked = `results not committed: ${(e as Error).message}`;
              retry = true;
            }
          }
        }
        dur.journal.truncate();
      })();
    } catch (e) {
      this.d.log.error({ err: (e as Error).message }, 'rule commit failed; retrying');
      retry = true;
    }
    if (wrote > 0) dur.onCommitted?.();
    if (retry && !this.cancelRetry) {
      this.cancelRetry = this.d.clock.setTimer(dur.retryMs ?? 500, () => { this.cancelRetry = undefined; this.commit(); });
    }
  }

  statuses(): RuleStatus[] {
    return [...this.rules.values()].map((r) => {
      const s = r.runtime?.stats;
      const warnings = r.runtime?.warnings() ?? [];
      return {
        app: r.app, rule: r.spec.name, state: r.state, ...(r.error ? { error: r.error } : {}), ...(warnings.length ? { warnings: warnings.slice(0, 20) } : {}),
        in: s?.in ?? 0, out: s?.out ?? 0, filtered: s?.filtered ?? 0, late: s?.late ?? 0, errors: s?.errors ?? 0,
        dropped: (s?.errors ?? 0) + (r.spec.options.latePolicy === 'drop' ? (s?.late ?? 0) : 0), sinkErrors: r.sinkErrors, sinkDropped: r.sinkDropped, ...(r.blocked ? { blocked: r.blocked } : {}), lastOutputAt: s?.lastOutputAt ?? null,
      };
    });
  }

  /** Streams claimed for rules that have not started yet (their app's models are loading). */
  private readonly claims = new Map<string, () => void>();

  /**
   * Before a new app's models load: each of its rules claims its stream — the intake journals
   * the records (they are routed) and the rule's cursor holds them in the journal — so the rule
   * replays them once it starts, instead of their being unrouted or held in memory.
   */
  prepare(app: DesiredApp): void {
    const dur = this.d.durable;
    if (!dur) return;
    for (const [key, { spec }] of this.prepare_(app)) {
      if (this.rules.has(key) || this.claims.has(key)) continue;
      let from: string | undefined;
      try { from = parse(spec.sql).from.name; } catch { continue; }
      const s = app.manifest.spec.streams.find((x) => x.name === from);
      if (!s?.topic) continue; // no stream, or one an industrial source feeds (nothing journaled)
      if (!dur.journal.cursor(key)) dur.journal.setCursor(key, this.seen);
      this.claims.set(key, this.d.router.subscribe({ app: app.name, stream: { name: s.name, schema: s.schema, timestamp: s.timestamp, topic: s.topic, properties: s.properties }, deliver: () => {} }));
    }
  }

  private unclaim(key: string): void {
    this.claims.get(key)?.();
    this.claims.delete(key);
  }

  async start(app: DesiredApp): Promise<void> {
    this.load(app, new Set());
  }

  async update(_prev: DesiredApp, next: DesiredApp): Promise<void> {
    const keep = new Set<string>();
    const wanted = this.prepare_(next);
    for (const [key, r] of this.rules) {
      if (r.app !== next.name) continue;
      const w = wanted.get(key);
      if (w && w.fingerprint === r.fingerprint && r.state === 'running') keep.add(key);
      else this.unload(key);
    }
    this.load(next, keep);
  }

  async stop(app: DesiredApp): Promise<void> {
    for (const [key, r] of this.rules) if (r.app === app.name) this.unload(key, true);
    for (const key of [...this.claims.keys()]) if (key.startsWith(`${app.name}/`)) { this.unclaim(key); this.d.durable?.journal.dropCursor(key); }
  }

  private prepare_(app: DesiredApp): Map<string, { spec: RuleSpec; index: number; fingerprint: string }> {
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
    for (const [key, { spec, index, fingerprint }] of this.prepare_(app)) {
      if (keep.has(key)) continue;
      const r: Running = { app: app.name, spec, fingerprint, state: 'running', sinks: [], sinkErrors: 0, sinkDropped: 0, cursor: this.seen, windowed: false, epoch: randomUUID(), ordinal: 0, checkpointAt: this.d.clock.now() };
      this.rules.set(key, r);
      try {
        const checked = checkRule(spec, index, streams, allow, m.spec.models.map((x) => x.name));
        const fields = new Map<string, string[] | undefined>();
        for (const e of leavingSinks(spec, index)) fields.set(e.stream, checkEgress(checked.plan, e, allow, spec.name).fields);
        const ctx = { ...this.d.sinkContext(app.name, spec.name, (s) => fields.get(s)), writePolicy: m.spec.policy.writes, ...(this.d.durable ? { dirty: () => this.commitSoon() } : {}) };
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
            if (r.windowed && this.d.durable) for (const row of rows) resultIds.set(row, resultId(app.name, spec.name, r.epoch, r.ordinal++));
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
        r.model = rule;
        r.windowed = checked.plan.windowed;
        this.resume(key, r, rule, stream);
        r.unsubscribe = this.d.router.subscribe({ app: app.name, stream, deliver: (rec, meta) => rule.push(rec, meta) });
        this.unclaim(key);
        this.d.log.info({ app: app.name, rule: spec.name }, 'rule started');
      } catch (e) {
        r.state = 'failed';
        this.unclaim(key);
        // A rule that cannot run consumes nothing: its cursor must not hold the journal.
        this.d.durable?.journal.dropCursor(key);
        r.error = isEwError(e) ? `${e.code}: ${e.message}` : (e as Error).message;
        failures.push(`rule ${spec.name}: ${r.error}`);
        this.d.log.error({ app: app.name, rule: spec.name, err: r.error }, 'rule failed to start');
      }
    }
    if (failures.length) throw new Error(failures.join('; '));
  }

  /**
   * A rule (re)starting under acknowledge-after-durability: it replays the journaled records
   * after its cursor — acknowledged to devices but not yet in its committed results (a crash, a
   * restart, records that waited while its model loaded) — before it takes live records. A rule
   * new to this site starts at the journal's end.
   */
  private resume(key: string, r: Running, rule: ModelRule, stream: StreamDef & { topic: string }): void {
    const dur = this.d.durable;
    if (!dur) return;
    const cp = dur.journal.cursor(key);
    r.cursor = cp?.seq ?? this.seen;
    if (!cp) dur.journal.setCursor(key, r.cursor);
    let restored = false;
    if (r.windowed && cp?.state) {
      // The same rule as checkpointed: its windows come back as they were at the cursor.
      const saved = decodeCheckpoint(cp.state);
      if (saved.fingerprint === sha(r.fingerprint)) {
        rule.runtime.restore(saved.runtime);
        r.epoch = saved.epoch;
        r.ordinal = saved.ordinal;
        restored = true;
      }
    }
    if (r.windowed && !restored) {
      // A windowed rule starting afresh checkpoints its empty state and its epoch at once: a
      // crash before its first periodic checkpoint then replays from here under the same epoch,
      // so the windows it emits again carry the same result ids (the cloud keeps one each).
      dur.journal.setCursor(key, r.cursor, encodeCheckpoint({ fingerprint: sha(r.fingerprint), epoch: r.epoch, ordinal: r.ordinal, runtime: rule.runtime.snapshot() }));
    }
    let from = r.cursor;
    let replayed = 0;
    const reads = new TopicSet([stream.topic]);
    for (;;) {
      const recs = dur.journal.read(from, 1000);
      if (recs.length === 0) break;
      for (const rec of recs) {
        from = rec.seq;
        if (!reads.test(rec.topic)) continue;
        const d = decodeRecord(rec.payload, stream);
        if (!d.ok) continue; // dead-lettered when it first arrived
        rule.push(d.rec, { topic: rec.topic, seq: rec.seq });
        replayed++;
      }
    }
    if (from > this.seen) this.seen = from;
    if (replayed) this.d.log.info({ app: r.app, rule: r.spec.name, replayed, from: r.cursor }, 'rule replayed journaled records');
    this.commitSoon();
  }

  private unload(key: string, forget = false): void {
    const r = this.rules.get(key);
    if (!r) return;
    r.unsubscribe?.();
    // What the rule produced so far is committed with its cursor (and state) before it goes.
    if (!forget) { r.forceCheckpoint = true; this.commit(); }
    r.runtime?.stop();
    for (const s of r.sinks) s.close();
    if (forget) this.d.durable?.journal.dropCursor(key);
    this.rules.delete(key);
    this.d.log.info({ app: r.app, rule: r.spec.name }, 'rule stopped');
  }

  /** Stops everything (agent shutdown). */
  close(): void {
    for (const r of this.rules.values()) r.forceCheckpoint = true;
    this.commit();
    this.cancelRetry?.();
    for (const key of [...this.rules.keys()]) this.unload(key);
  }

  /** Rules that run here now, by key (for pruning stale journal cursors). */
  keys(): Set<string> {
    return new Set([...this.rules].filter(([, r]) => r.state === 'running').map(([k]) => k).concat([...this.claims.keys()]));
  }
}
