import type { AppComponent } from '../contracts/app-component.ts';
import type { DesiredApp } from '../contracts/messages.ts';
import { checkRule, checkEgress, leavingSinks, type CheckedRule } from '../stream/app.ts';
import type { RuleRuntime } from '../stream/runtime.ts';
import { ModelRule } from '../stream/model-rule.ts';
import { parse } from '../stream/parser.ts';
import type { StreamDef } from '../stream/planner.ts';
import type { EgressGrant, RuleSpec } from '../contracts/manifest.ts';
import { isEwError } from '../contracts/errors.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import { decodeRecord, PUSH_PREFIX, streamReads, type DeadLetters, type StreamRouter } from './record-router.ts';
import { propertyFields } from './mqtt5.ts';
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
  /** The stream it reads and the models it calls (infer(), llm() as "llm:<endpoint>"). */
  stream?: { name: string; topic: string };
  /** Its stream's topic filter, compiled once. */
  filter?: TopicSet;
  models: string[];
  /** The most outbox rows one input record can lead to (uplink sinks × windows per record). */
  cost: number;
  /** Its uplink sinks, and its window's kind (a sliding window's cost grows with its state). */
  uplinks: number;
  windowKind?: string;
  /** Unloaded: anything its model calls still in flight produce is ignored (the journal replays it). */
  stopped?: boolean;
  /** The journal seq this rule's committed effects cover. */
  cursor: number;
  /** A windowed rule: its state is checkpointed with its cursor, its results carry deterministic ids. */
  windowed: boolean;
  epoch: string;
  ordinal: number;
  checkpointAt: number;
  forceCheckpoint?: boolean;
  /**
   * Catching up from the journal (absent: the rule takes records live). Live records are not
   * pushed meanwhile (they are journaled; it reads them in order), and its cursor stays at or
   * before `read`.
   */
  catchUp?: {
    /** The last journal seq pushed into the rule. */
    read: number;
    /** The journal's seq when it began: records up to it were counted in `behind`. */
    base: number;
    /** Journaled records it still has to read (conservative: counted against the outbox's room). */
    behind: number;
    /** Where it began, and the records it has pushed since (logged once it has caught up). */
    from: number;
    replayed: number;
  };
}

/**
 * Under acknowledge-after-durability a model rule takes at most this many records into its
 * queue (waiting for model values); past it, it reads the rest from the journal as the queue
 * drains (to half of it) instead of holding them in memory or refusing them.
 */
export const RULE_QUEUE_MAX = 1000;
const RULE_QUEUE_RESUME = RULE_QUEUE_MAX / 2;
/** Model refusals another attempt may cure: the record is held and asked again, not dead-lettered. */
const TRANSIENT = new Set(['QUEUE_FULL', 'MODEL_NOT_READY']);

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
  /**
   * Whether a model of `app` is ready, still loading (or waiting to be retried after a failed
   * load: `waiting`), or failed for good. A rule calling a `waiting` model does not start: its
   * input is held in the journal and it starts (replaying it) once modelsChanged() says so.
   * Absent, or undefined for a model: ready.
   */
  modelState?: (app: string, model: string) => 'ready' | 'waiting' | 'failed' | undefined;
  /** Builds the context a rule's sinks write through. */
  sinkContext(app: string, rule: string, allowedFields: (stream: string) => string[] | undefined): SinkContext;
  /**
   * Acknowledge-after-durability: the intake journal the rules consume, the database their
   * effects commit to (one transaction with each rule's cursor), and the outbox (to count what a
   * full one refuses). Absent: results are committed by each sink alone (tools, benchmarks).
   */
  durable?: {
    journal: Journal;
    db: EdgeDb;
    outbox: Outbox;
    onCommitted?: () => void;
    retryMs?: number;
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
    const upTo = r.catchUp?.read ?? this.seen; // catching up: only what it has read from the journal
    const oldest = f?.oldest?.seq;
    return typeof oldest === 'number' ? Math.min(oldest - 1, upTo) : upTo;
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
          const checkpoint =
            r.windowed &&
            to !== r.cursor &&
            !r.model?.inFlight.emitting &&
            (r.forceCheckpoint || now - r.checkpointAt >= (dur.checkpointMs ?? 1000));
          try {
            dur.db.transaction(() => {
              for (const s of durables) wrote += s.commit();
              if (checkpoint)
                dur.journal.setCursor(
                  key,
                  to,
                  encodeCheckpoint({ fingerprint: sha(r.fingerprint), epoch: r.epoch, ordinal: r.ordinal, runtime: r.runtime!.snapshot() }),
                );
              else if (!r.windowed && to !== r.cursor) dur.journal.setCursor(key, to);
            })();
            if (checkpoint) {
              r.checkpointAt = now;
              r.forceCheckpoint = false;
            }
            if (checkpoint || !r.windowed) r.cursor = to;
            r.blocked = undefined;
          } catch (e) {
            if (isCode(e, 'OUTBOX_FULL')) {
              let lost = 0;
              for (const s of durables) lost += s.discard();
              r.sinkErrors += lost;
              r.sinkDropped += lost;
              dur.outbox.countRefused(lost);
              if (r.blocked === undefined)
                this.d.log.warn({ app: r.app, rule: r.spec.name, lost }, 'outbox full (reject-new): rule results refused and counted');
              r.blocked = `outbox full (reject-new): ${r.sinkDropped} results refused`;
              if (checkpoint) {
                dur.journal.setCursor(
                  key,
                  to,
                  encodeCheckpoint({ fingerprint: sha(r.fingerprint), epoch: r.epoch, ordinal: r.ordinal, runtime: r.runtime!.snapshot() }),
                );
                r.checkpointAt = now;
                r.forceCheckpoint = false;
              } else if (!r.windowed) dur.journal.setCursor(key, to);
              if (checkpoint || !r.windowed) r.cursor = to;
            } else if (isCode(e, 'VALIDATION_FAILED')) {
              // A result over the uplink size bound would be refused for ever: counted and dropped.
              let lost = 0;
              for (const s of durables) lost += s.discard();
              r.sinkErrors += lost;
              this.d.log.warn(
                { app: r.app, rule: r.spec.name, lost, err: (e as Error).message },
                'rule results refused by the outbox; dropped',
              );
              if (!r.windowed) {
                dur.journal.setCursor(key, to);
                r.cursor = to;
              }
            } else {
              if (r.blocked === undefined)
                this.d.log.error(
                  { app: r.app, rule: r.spec.name, err: (e as Error).message },
                  'rule results cannot be committed; retrying',
                );
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
      this.cancelRetry = this.d.clock.setTimer(dur.retryMs ?? 500, () => {
        this.cancelRetry = undefined;
        this.commit();
      });
    }
  }

  statuses(): RuleStatus[] {
    const running = [...this.rules.values()].map((r): RuleStatus => {
      const s = r.runtime?.stats;
      const warnings = r.runtime?.warnings() ?? [];
      return {
        app: r.app,
        rule: r.spec.name,
        state: r.state,
        ...(r.error ? { error: r.error } : {}),
        ...(warnings.length ? { warnings: warnings.slice(0, 20) } : {}),
        in: s?.in ?? 0,
        out: s?.out ?? 0,
        filtered: s?.filtered ?? 0,
        late: s?.late ?? 0,
        errors: s?.errors ?? 0,
        dropped: (s?.errors ?? 0) + (r.spec.options.latePolicy === 'drop' ? (s?.late ?? 0) : 0),
        sinkErrors: r.sinkErrors,
        sinkDropped: r.sinkDropped,
        ...(r.blocked
          ? { blocked: r.blocked }
          : r.model?.retrying
            ? {
                blocked: `model busy (${r.model.retrying.code}): a record is held in order and asked again (attempt ${r.model.retrying.attempts}); its input waits in the journal`,
              }
            : {}),
        lastOutputAt: s?.lastOutputAt ?? null,
      };
    });
    // A rule waiting for its model is not failed: it runs as soon as the model is ready.
    const waiting = [...this.waiting.values()].map(
      (w): RuleStatus => ({
        app: w.app.name,
        rule: w.spec.name,
        state: 'running',
        in: 0,
        out: 0,
        filtered: 0,
        late: 0,
        errors: 0,
        dropped: 0,
        sinkErrors: 0,
        sinkDropped: 0,
        blocked: `waiting for model ${w.model} to load; its input is held in the site's journal (${this.claims.get(`${w.app.name}/${w.spec.name}`)?.records ?? 0} records)`,
        lastOutputAt: null,
      }),
    );
    return [...running, ...waiting];
  }

  /**
   * Streams claimed for rules that do not run yet (their app's models are loading, or being
   * reloaded by an update): the intake journals those streams' records (they are routed) and the
   * rule's cursor holds them in the journal, so it replays them once it starts instead of their
   * being unrouted, held in memory, or dead-lettered by a model that is not there.
   */
  private readonly claims = new Map<
    string,
    {
      off: () => void;
      app: string;
      stream: { name: string; topic: string };
      filter?: TopicSet;
      cost: number;
      records: number;
      base: number;
    }
  >();
  /** Rules that wait for a model of their app (see modelState). */
  private readonly waiting = new Map<string, { app: DesiredApp; spec: RuleSpec; model: string }>();

  /** Before a new app's models load: each of its rules claims its stream. */
  prepare(app: DesiredApp): void {
    if (!this.d.durable) return;
    const streams = streamDefs(app);
    const allow: readonly EgressGrant[] = app.manifest.spec.policy.egress?.allow ?? [];
    for (const [key, { spec, index }] of this.prepare_(app)) {
      if (this.rules.has(key) || this.claims.has(key)) continue;
      let plan: CheckedRule['plan'];
      try {
        plan = checkRule(
          spec,
          index,
          streams,
          allow,
          app.manifest.spec.models.map((x) => x.name),
        ).plan;
      } catch {
        continue;
      } // it fails when it loads: nothing to hold
      this.claim(key, app.name, streams.get(plan.stream.name)!, costOf(plan, spec.sinks.filter((x) => 'uplink' in x).length, 0));
    }
  }

  /**
   * Before an app is updated (its models are unloaded and loaded again): every running rule of
   * it that calls a model stops — what it made so far is committed with its cursor (and window
   * checkpoint) — and claims its stream, so records arriving while the models reload wait in the
   * journal and the rule (the same or its new version) replays them once they are ready, instead
   * of dead-lettering them against a model that is not there.
   */
  prepareUpdate(prev: DesiredApp, next: DesiredApp): void {
    if (!this.d.durable) return;
    for (const [key, r] of [...this.rules]) {
      if (r.app !== prev.name || r.state !== 'running' || r.models.length === 0 || !r.stream) continue;
      const held = r.runtime?.stats.stateCells ?? 0;
      this.unload(key);
      // Its window state comes back with it: the rows it can still emit stay reserved.
      this.claim(key, r.app, r.stream, r.cost, held * r.sinks.filter(isDurableSink).length);
      this.d.log.info({ app: r.app, rule: r.spec.name }, "rule paused while its app's models reload; its input is held in the journal");
    }
    this.prepare(next);
  }

  private claim(
    key: string,
    app: string,
    stream: StreamDef & { topic: string; properties?: Record<string, string> },
    cost: number,
    base = 0,
  ): void {
    const dur = this.d.durable;
    if (!dur || this.claims.has(key)) return;
    const cp = dur.journal.cursor(key);
    if (!cp) dur.journal.setCursor(key, this.seen);
    // Records already journaled after its cursor replay into it too (conservatively: all of them).
    const c = {
      off: () => {},
      app,
      stream: { name: stream.name, topic: stream.topic },
      filter: stream.topic ? new TopicSet([stream.topic]) : undefined,
      cost,
      records: cp ? Math.max(0, dur.journal.lastSeq - cp.seq) : 0,
      base,
    };
    c.off = this.d.router.subscribe({
      app,
      stream: { name: stream.name, schema: stream.schema, timestamp: stream.timestamp, topic: stream.topic, properties: stream.properties },
      deliver: () => {
        c.records++;
      },
    });
    this.claims.set(key, c);
  }

  private unclaim(key: string): void {
    this.claims.get(key)?.off();
    this.claims.delete(key);
  }

  /**
   * The most outbox rows records of this topic can lead to: every rule that reads it (running,
   * or holding it while its model loads) × its uplink sinks × the windows one record falls in.
   * The intake admits a record only when that fits in the outbox (reject-new).
   */
  cost(topic: string): number {
    let n = 0;
    for (const r of this.rules.values())
      if (r.state === 'running' && r.stream && streamReads(r.app, r.stream, topic, r.filter))
        n += r.cost + (r.windowKind === 'sliding' ? (r.runtime?.stats.stateCells ?? 0) * r.uplinks : 0);
    for (const c of this.claims.values()) if (streamReads(c.app, c.stream, topic, c.filter)) n += c.cost;
    return n;
  }

  /**
   * Outbox rows the rules still owe for records already acknowledged: rows waiting in their
   * uplink sinks, records waiting for a model, open windows (a row per cell of window state at
   * most), and the journaled input of rules that wait for a model. Counted against the outbox's
   * room, so reject-new never admits more than it can store.
   */
  reserved(): number {
    let n = 0;
    for (const r of this.rules.values()) {
      if (r.state !== 'running') continue;
      for (const s of r.sinks) if (isDurableSink(s)) n += s.waiting;
      const b = r.model?.backlog;
      const cells = r.runtime?.stats.stateCells ?? 0;
      // What one more record can lead to, as cost() counts it (a sliding window: a row per group it holds).
      const per = r.cost + (r.windowKind === 'sliding' ? cells * r.uplinks : 0);
      n += (b ? b.records * per + b.rows * r.uplinks : 0) + (r.windowed ? cells * r.uplinks : 0);
      n += (r.catchUp?.behind ?? 0) * per;
    }
    for (const c of this.claims.values()) n += c.records * c.cost + c.base;
    return n;
  }

  async start(app: DesiredApp): Promise<void> {
    this.load(app, new Set());
  }

  async update(_prev: DesiredApp, next: DesiredApp): Promise<void> {
    const keep = new Set<string>();
    const wanted = this.prepare_(next);
    for (const key of [...this.waiting.keys()]) if (this.waiting.get(key)!.app.name === next.name) this.waiting.delete(key);
    // A rule paused for the update (prepareUpdate) that the new version no longer has: its
    // claim and cursor go, or they would hold the journal for ever.
    for (const [key, c] of [...this.claims])
      if (c.app === next.name && !wanted.has(key)) {
        this.unclaim(key);
        this.d.durable?.journal.dropCursor(key);
      }
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
    for (const key of [...this.waiting.keys()]) if (key.startsWith(`${app.name}/`)) this.waiting.delete(key);
    for (const key of [...this.claims.keys()])
      if (key.startsWith(`${app.name}/`)) {
        this.unclaim(key);
        this.d.durable?.journal.dropCursor(key);
      }
  }

  /**
   * A model of `app` became ready (loaded on a retry): its rules that waited for it start now
   * and replay what the journal held for them.
   */
  modelsChanged(app: string): void {
    const mine = [...this.waiting].filter(([, w]) => w.app.name === app);
    if (mine.length === 0) return;
    const desired = mine[0]![1].app;
    const waitingKeys = new Set(mine.map(([k]) => k));
    const keep = new Set([...this.prepare_(desired).keys()].filter((k) => !waitingKeys.has(k)));
    try {
      this.load(desired, keep);
    } catch (e) {
      this.d.log.error({ app, err: (e as Error).message }, 'rules failed to start after their model loaded');
    }
  }

  private prepare_(app: DesiredApp): Map<string, { spec: RuleSpec; index: number; fingerprint: string }> {
    const m = app.manifest;
    const out = new Map<string, { spec: RuleSpec; index: number; fingerprint: string }>();
    // A rule restarts when it changes, when the stream it reads changes, or — if it sends
    // results off the site — when the egress policy changes; otherwise it keeps its windows.
    m.spec.rules.forEach((spec, index) => {
      let from: string | undefined;
      try {
        from = parse(spec.sql).from.name;
      } catch {
        /* reported when it loads */
      }
      const stream = m.spec.streams.find((s) => s.name === from) ?? null;
      const egress = leavingSinks(spec, index).length ? (m.spec.policy.egress ?? null) : null;
      const writes = spec.sinks.some((s) => 'opcua' in s || 'modbus' in s) ? (m.spec.policy.writes ?? null) : null;
      out.set(`${app.name}/${spec.name}`, { spec, index, fingerprint: JSON.stringify([spec, stream, egress, writes]) });
    });
    return out;
  }

  /**
   * A model refusal another attempt may cure: its queue is full, or it is not ready while it
   * loads, restarts or waits for a retry. A model that failed for good is not waited for.
   */
  private transient(app: DesiredApp, r: Running, e: Error): boolean {
    if (!isEwError(e) || !TRANSIENT.has(e.code)) return false;
    if (e.code !== 'MODEL_NOT_READY' || !this.d.modelState) return true;
    return !r.models.some((m) => {
      const name = modelOf(app, m);
      return name !== undefined && this.d.modelState!(app.name, name) === 'failed';
    });
  }

  /** The first model among `models` (llm() endpoints resolved to theirs) that is still loading, if any. */
  private modelPending(app: DesiredApp, models: readonly string[]): string | undefined {
    if (!this.d.durable || !this.d.modelState) return undefined;
    for (const m of models) {
      const name = modelOf(app, m);
      if (name && this.d.modelState(app.name, name) === 'waiting') return name;
    }
    return undefined;
  }

  private load(app: DesiredApp, keep: Set<string>): void {
    const m = app.manifest;
    // A stream fed by an industrial source has no topic: its records arrive pushed (pushTopic).
    const streams = streamDefs(app);
    const allow: readonly EgressGrant[] = m.spec.policy.egress?.allow ?? [];
    const failures: string[] = [];
    for (const [key, { spec, index, fingerprint }] of this.prepare_(app)) {
      if (keep.has(key)) continue;
      this.waiting.delete(key);
      const r: Running = {
        app: app.name,
        spec,
        fingerprint,
        state: 'running',
        sinks: [],
        sinkErrors: 0,
        sinkDropped: 0,
        models: [],
        cost: 0,
        uplinks: 0,
        cursor: this.seen,
        windowed: false,
        epoch: randomUUID(),
        ordinal: 0,
        checkpointAt: this.d.clock.now(),
      };
      this.rules.set(key, r);
      try {
        const checked = checkRule(
          spec,
          index,
          streams,
          allow,
          m.spec.models.map((x) => x.name),
        );
        const stream = streams.get(checked.plan.stream.name)!;
        const pending = this.modelPending(app, checked.plan.models);
        if (pending) {
          // Its model is loading (or will be retried): the rule starts once it is ready, and its
          // input waits in the journal meanwhile, not in memory and not in the dead letters.
          this.rules.delete(key);
          this.claim(key, app.name, stream, costOf(checked.plan, spec.sinks.filter((x) => 'uplink' in x).length, 0));
          this.waiting.set(key, { app, spec, model: pending });
          this.d.log.info({ app: app.name, rule: spec.name, model: pending }, 'rule waits for its model; its input is held in the journal');
          continue;
        }
        const fields = new Map<string, string[] | undefined>();
        for (const e of leavingSinks(spec, index)) fields.set(e.stream, checkEgress(checked.plan, e, allow, spec.name).fields);
        const ctx = {
          ...this.d.sinkContext(app.name, spec.name, (s) => fields.get(s)),
          writePolicy: m.spec.policy.writes,
          ...(this.d.durable ? { dirty: () => this.commitSoon() } : {}),
        };
        r.sinks = spec.sinks.map((s) => makeSink(s, ctx));
        r.stream = { name: stream.name, topic: stream.topic };
        r.filter = stream.topic ? new TopicSet([stream.topic]) : undefined;
        r.models = checked.plan.models;
        r.uplinks = r.sinks.filter(isDurableSink).length;
        r.cost = costOf(checked.plan, r.uplinks, 0);
        r.windowKind = checked.plan.window?.kind;
        const dead = (rec: Record<string, unknown>, why: string, detail?: string) => {
          if (!r.stopped) this.d.dead.add(app.name, stream.name, why, rec, detail);
        };
        const rule = new ModelRule(
          checked.plan,
          {
            clock: this.d.clock,
            lateness: spec.options.lateness,
            latePolicy: spec.options.latePolicy,
            maxFutureSkew: spec.options.maxFutureSkew,
            maxStateCells: spec.options.maxState,
            // Under acknowledge-after-durability the journal holds what waits: a model that is
            // busy or restarting delays a record (in order), it does not dead-letter it.
            ...(this.d.durable ? { transient: (e: Error) => this.transient(app, r, e), maxWaiting: RULE_QUEUE_MAX * 2 } : {}),
            // Over its state budget the rule stops itself; the site and its other rules keep running.
            onFatal: (e) => {
              if (r.stopped || r.state !== 'running') return;
              // What it made before is committed; from now on it consumes nothing, so its cursor
              // must not hold the journal (which would slow every device of the site).
              this.commit();
              r.state = 'failed';
              r.error = `${e.code}: ${e.message}`;
              r.unsubscribe?.();
              r.unsubscribe = undefined;
              r.model?.stop();
              this.d.durable?.journal.dropCursor(key);
              this.d.log.error({ app: app.name, rule: spec.name, err: r.error }, 'rule stopped: over its state budget');
            },
            emit: (rows) => {
              // A rule unloaded meanwhile (its model reloading): the journal replays what this was.
              if (r.stopped) return;
              if (r.windowed && this.d.durable)
                for (const row of rows) resultIds.set(row, resultId(app.name, spec.name, r.epoch, r.ordinal++));
              for (const sink of r.sinks) {
                try {
                  sink.write(rows);
                } catch (e) {
                  r.sinkErrors++;
                  this.d.log.warn(
                    { app: app.name, rule: spec.name, sink: sink.kind, err: (e as Error).message },
                    'sink failed; results for it dropped',
                  );
                }
              }
            },
            onLate: (rec) => dead(rec, `late for rule ${spec.name}`),
            // A rule's error message may quote the record's values: it stays in the local detail.
            onError: (rec, e) =>
              dead(
                rec,
                `rule ${spec.name} failed on this record (${isEwError(e) ? e.code : e.name}; ${Buffer.byteLength(JSON.stringify(rec) ?? '')} bytes)`,
                e.message,
              ),
            onEmitError: (e) => {
              if (r.stopped) return;
              r.sinkErrors++;
              // A model (infer(), llm()) failing over window results is the rule's error too.
              if (r.runtime) r.runtime.stats.errors++;
              this.d.log.warn({ app: app.name, rule: spec.name, err: e.message }, 'infer() on window results failed; results dropped');
            },
          },
          this.d.infer ? (model, args) => this.d.infer!(app.name, model, args, spec) : undefined,
        );
        r.runtime = rule.runtime;
        r.model = rule;
        r.windowed = checked.plan.windowed;
        this.resume(key, r, rule, stream);
        // (Unless its replay already put it over its state budget.)
        if (r.state === 'running')
          r.unsubscribe = this.d.router.subscribe({ app: app.name, stream, deliver: (rec, meta) => this.live(r, rule, stream, rec, meta) });
        this.unclaim(key);
        this.d.log.info({ app: app.name, rule: spec.name }, 'rule started');
      } catch (e) {
        r.state = 'failed';
        r.stopped = true;
        r.model?.stop();
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
  private resume(
    key: string,
    r: Running,
    rule: ModelRule,
    stream: StreamDef & { topic: string; properties?: Record<string, string> },
  ): void {
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
      dur.journal.setCursor(
        key,
        r.cursor,
        encodeCheckpoint({ fingerprint: sha(r.fingerprint), epoch: r.epoch, ordinal: r.ordinal, runtime: rule.runtime.snapshot() }),
      );
    }
    // The journaled records after its cursor are read in order, as the rule has room for them,
    // before it takes live records.
    this.catchUp(r, rule, stream, r.cursor, dur.journal.lastSeq - r.cursor, dur.journal.lastSeq);
  }

  /** A live record for a running rule: pushed, unless the rule reads the journal instead. */
  private live(
    r: Running,
    rule: ModelRule,
    stream: StreamDef & { topic: string },
    rec: Record<string, unknown>,
    meta: { topic: string; seq?: number },
  ): void {
    const seq = meta.seq;
    if (!this.d.durable || seq === undefined) {
      rule.push(rec, meta);
      return;
    }
    if (r.catchUp) {
      // It reads this one from the journal, in its turn.
      if (seq > r.catchUp.read) r.catchUp.behind++;
      return;
    }
    const b = rule.backlog;
    if (b.records + b.rows >= RULE_QUEUE_MAX) {
      // Its model is slower than its input: the journal holds the rest, read as the rule drains.
      this.catchUp(r, rule, stream, seq - 1, 1, seq - 1);
      return;
    }
    rule.push(rec, meta);
  }

  /**
   * The rule reads the journal after `from` (records acknowledged to devices and not yet in its
   * committed results: a crash, a restart, records that waited while its model loaded, or more
   * than its model could take) in order, a chunk at a time and only while its queue has room,
   * then takes live records again. `behind` is what it still has to read: every journaled record
   * up to `base` (conservatively, whatever its stream) and each live record of its stream after.
   */
  private catchUp(
    r: Running,
    rule: ModelRule,
    stream: StreamDef & { topic: string; properties?: Record<string, string> },
    from: number,
    behind: number,
    base: number,
  ): void {
    const dur = this.d.durable!;
    const c = { read: from, base, behind: Math.max(0, behind), from, replayed: 0 };
    r.catchUp = c;
    const reads = stream.topic ? new TopicSet([stream.topic]) : undefined;
    const step = (): void => {
      if (r.stopped || r.state !== 'running' || r.catchUp !== c) return;
      const b = rule.backlog;
      const room = RULE_QUEUE_MAX - b.records - b.rows;
      if (room <= 0) {
        void rule.untilBelow(RULE_QUEUE_RESUME).then(() => setImmediate(step));
        return;
      }
      let recs: ReturnType<typeof dur.journal.read>;
      try {
        recs = dur.journal.read(c.read, Math.min(room, 1000));
      } catch (e) {
        // Storage failing (a damaged page, I/O): the records stay journaled; read again shortly.
        this.d.log.error({ app: r.app, rule: r.spec.name, err: (e as Error).message }, 'reading the journal failed; retrying');
        this.d.clock.setTimer(dur.retryMs ?? 500, step);
        return;
      }
      if (recs.length === 0) {
        // Caught up: every journaled record is in; live records follow (the intake delivers each
        // in the same turn it journals it, so none falls between).
        // Its cursor may move to what it has read (seen counts what the intake delivered).
        if (c.read > this.seen) this.seen = c.read;
        r.catchUp = undefined;
        if (c.replayed)
          this.d.log.info({ app: r.app, rule: r.spec.name, replayed: c.replayed, from: c.from }, 'rule replayed journaled records');
        this.commitSoon();
        return;
      }
      for (const rec of recs) {
        c.read = rec.seq;
        const mine = streamReads(r.app, stream, rec.topic, reads);
        // Decoded as on first delivery, MQTT 5 properties included.
        const d = mine ? decodeRecord(rec.payload, stream, stream.properties && propertyFields(stream.properties, rec.props)) : undefined;
        // `behind` counted every record up to `base`, and after it each one delivered live (decoded).
        if (rec.seq <= c.base || d?.ok) c.behind = Math.max(0, c.behind - 1);
        if (!d?.ok) continue; // not its stream, or dead-lettered when it first arrived
        try {
          rule.push(d.rec, {
            topic: rec.topic.startsWith(PUSH_PREFIX) ? `http/${rec.topic.slice(PUSH_PREFIX.length)}` : rec.topic,
            seq: rec.seq,
          });
        } catch (e) {
          // As a live delivery that throws: logged, and the rule goes on with the next record.
          this.d.log.error(
            { app: r.app, rule: r.spec.name, err: (e as Error).message, seq: rec.seq },
            'a replayed record failed in the rule',
          );
        }
        c.replayed++;
      }
      this.commitSoon();
      // The next chunk in a later turn: the device broker and the other rules are served meanwhile.
      setImmediate(step);
    };
    step();
  }

  private unload(key: string, forget = false): void {
    const r = this.rules.get(key);
    if (!r) return;
    r.unsubscribe?.();
    // What the rule produced so far is committed with its cursor (and state) before it goes.
    if (!forget) {
      r.forceCheckpoint = true;
      this.commit();
    }
    // Model calls still in flight end in nothing: the journal holds their records.
    r.stopped = true;
    // Its model calls and their retries end with it (the runtime stops too).
    if (r.model) r.model.stop();
    else r.runtime?.stop();
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

  /**
   * Per rule: records taken in and not yet through it (waiting for model values), plus the
   * journaled records it has still to read (catching up, or held while its model loads).
   */
  backlogs(): { app: string; rule: string; records: number }[] {
    const out = [...this.rules.values()]
      .filter((r) => r.state === 'running')
      .map((r) => ({ app: r.app, rule: r.spec.name, records: (r.model?.backlog.records ?? 0) + (r.catchUp?.behind ?? 0) }));
    for (const [key, c] of this.claims) out.push({ app: c.app, rule: key.slice(c.app.length + 1), records: c.records });
    return out;
  }

  /** Rules that run here now, by key (for pruning stale journal cursors). */
  keys(): Set<string> {
    return new Set(
      [...this.rules]
        .filter(([, r]) => r.state === 'running')
        .map(([k]) => k)
        .concat([...this.claims.keys()]),
    );
  }
}

/** The model a rule's call names: infer()'s own, or the one behind llm()'s endpoint ("llm:<endpoint>"). */
function modelOf(app: DesiredApp, call: string): string | undefined {
  return call.startsWith('llm:') ? app.manifest.spec.endpoints.find((e) => e.name === call.slice(4))?.model : call;
}

/** A manifest's streams as the planner takes them (an industrial source's stream has no topic). */
function streamDefs(app: DesiredApp): Map<string, StreamDef & { topic: string; properties?: Record<string, string> }> {
  return new Map(
    app.manifest.spec.streams.map((s) => [
      s.name,
      { name: s.name, schema: s.schema, timestamp: s.timestamp, topic: s.topic ?? '', properties: s.properties },
    ]),
  );
}

/**
 * The most outbox rows one input record leads to: a row per uplink sink for each window the
 * record falls in (a hopping window: size / hop of them; a stateless rule: one). A sliding
 * window emits on every record, a row per group in it: `cells` (its state now) bounds that.
 */
export function costOf(plan: CheckedRule['plan'], uplinks: number, cells: number): number {
  if (uplinks === 0) return 0;
  const w = plan.window;
  let per = 1;
  if (w?.kind === 'hopping') per = Math.ceil(w.size / w.hop);
  else if (w?.kind === 'count' && w.interval) per = Math.ceil(w.count / w.interval);
  else if (w?.kind === 'sliding') per = 1 + cells;
  return per * uplinks;
}
