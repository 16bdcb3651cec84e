import { PendingInfer, type Plan, type Row } from './planner.ts';
import { RuleRuntime, type RuntimeOptions } from './runtime.ts';

/**
 * A rule whose SQL calls `infer()`: the synchronous RuleRuntime plus the asynchronous model calls
 * around it, in order.
 *  - Before: each record's row-level `infer()` arguments are evaluated on arrival, the model is
 *    asked for the values of the first `maxCalls` records waiting (so its batcher groups them,
 *    and one rule cannot overflow a model queue it shares with other callers; the rest wait here,
 *    bounded by `maxWaiting`), and a record enters the runtime in arrival order once its values
 *    are back. A record whose inference fails is counted as failed.
 *  - After: rows carrying `infer()` over window aggregates (PendingInfer) are completed before
 *    they reach `emit`, keeping emission order; at most `maxCalls` such calls are out at once.
 *  - With `transient`, a model that refuses for now (its queue full, restarting) delays records
 *    instead of failing them: the record at the head is asked again alone, with jittered backoff,
 *    and once the model answers, the records behind it that it refused are asked again. An outage
 *    longer than `retryForMs` (counted from the first refusal since the model last answered)
 *    fails the records it refuses from then on. A site's rule host sets it: its records are
 *    durable in the journal and must not be dead-lettered for a model being busy.
 * Used by a site's rule host and by `edgeweave sql --model`. Rules without infer() pay nothing.
 */
export type InferFn = (model: string, args: unknown[]) => Promise<unknown>;

type Entry = {
  rec: Row;
  meta?: Record<string, unknown>;
  /** Its infer() arguments (evaluated on arrival), or why they could not be. */
  args: unknown[][] | Error;
  /** Its model values: asked once it is among the first `maxCalls` records waiting. */
  values?: Promise<unknown[] | Error>;
  /** What `values` settled to, once it has. */
  settled?: unknown[] | Error;
};

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

export class ModelRule {
  readonly runtime: RuleRuntime;
  private queue: Entry[] = [];
  /** Entries at the head of `queue` whose model calls have been made. */
  private issued = 0;
  private draining?: Promise<void>;
  private emits: Promise<void> = Promise.resolve();
  /** Emissions still waiting for a model: later rows queue behind them to keep the order. */
  private waiting = 0;
  /** Rows of those emissions (not yet at the sinks). */
  private waitingRows = 0;
  private readonly maxWaiting: number;
  private readonly maxCalls: number;
  private readonly transient?: (e: Error) => boolean;
  private readonly retryForMs: number;
  private stopped = false;
  /** Pauses under way (retry backoff): each wakes at once when the rule stops. */
  private readonly pauses = new Set<() => void>();
  /** Window-result model calls out, and those waiting for a slot. */
  private windowCalls = 0;
  private windowWaiters: (() => void)[] = [];
  /** Waiters for the backlog to shrink (a paced reader feeding this rule). */
  private roomWaiters: { below: number; resolve: () => void }[] = [];
  /** The first refusal (a transient failure) since the model last answered a record. */
  private outageSince?: number;
  /** A record held at the head while its model refuses it for now (QUEUE_FULL, MODEL_NOT_READY). */
  retrying?: { code: string; message: string; since: number; attempts: number };
  private readonly onError?: (rec: Row, e: Error) => void;
  private readonly clock: RuntimeOptions['clock'];

  constructor(
    private readonly plan: Plan,
    opts: RuntimeOptions & {
      maxWaiting?: number;
      /** Model calls out at once (default 256), for records and for window results each. */
      maxCalls?: number;
      /** Model failures another attempt may cure (see above). Absent: every failure counts. */
      transient?: (e: Error) => boolean;
      /** How long an outage of transient refusals is waited out (default 60 s). */
      retryForMs?: number;
      onEmitError?: (e: Error) => void;
    },
    private readonly infer: InferFn | undefined,
  ) {
    this.maxWaiting = opts.maxWaiting ?? 10_000;
    this.maxCalls = Math.max(1, opts.maxCalls ?? 256);
    this.transient = opts.transient;
    this.retryForMs = opts.retryForMs ?? 60_000;
    this.clock = opts.clock;
    this.onError = opts.onError;
    const emit = opts.emit;
    this.runtime = new RuleRuntime(plan, {
      ...opts,
      emit: (rows) => {
        if (!rows.some((row) => Object.values(row).some((v) => v instanceof PendingInfer))) {
          // Nothing to wait for ahead of it: straight to the sinks, in this turn.
          if (this.waiting === 0) emit(rows);
          else this.emits = this.emits.then(() => emit(rows));
          return;
        }
        const resolved = Promise.all(
          rows.map(async (row) => {
            const out: Row = {};
            for (const [k, v] of Object.entries(row)) out[k] = v instanceof PendingInfer ? await this.callWindow(v.model, v.args) : v;
            return out;
          }),
        );
        // Its failure is handled where the chain reaches it (onEmitError); until then it is not unhandled.
        resolved.catch(() => {});
        this.waiting++;
        this.waitingRows += rows.length;
        this.emits = this.emits
          .then(() => resolved)
          .then(emit, (e: Error) => opts.onEmitError?.(e))
          .finally(() => {
            this.waiting--;
            this.waitingRows -= rows.length;
            this.wakeRoom();
          });
      },
    });
  }

  private call(model: string, args: unknown[]): Promise<unknown> {
    if (!this.infer) return Promise.reject(new Error("no models here: infer() needs a site's models (or edgeweave sql --model)"));
    return this.infer(model, args);
  }

  private isTransient(v: unknown): v is Error {
    return v instanceof Error && !!this.transient?.(v);
  }

  private outageOver(): boolean {
    return this.outageSince !== undefined && this.clock.now() - this.outageSince >= this.retryForMs;
  }

  push(rec: Row, meta?: Record<string, unknown>): void {
    if (this.plan.infers.length === 0) {
      this.runtime.push(rec, meta);
      return;
    }
    if (this.queue.length >= this.maxWaiting) {
      this.fail(rec, new Error(`inference backlog full (${this.maxWaiting} records waiting)`));
      return;
    }
    // Arguments on arrival (as now() sees it); a record whose arguments fail fails in its turn.
    const env = { now: () => Date.now(), meta };
    let args: unknown[][] | Error;
    try {
      args = this.plan.infers.map((c) => c.args.map((f) => f(rec, env)));
    } catch (e) {
      args = asError(e);
    }
    this.queue.push({ rec, meta, args });
    this.issue();
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
    });
  }

  /** Asks the model for the values of the records next in line, up to `maxCalls` out at once. */
  private issue(): void {
    for (; this.issued < this.queue.length && this.issued < this.maxCalls; this.issued++) this.ask(this.queue[this.issued]!);
  }

  private ask(e: Entry): void {
    e.settled = undefined;
    const args = e.args;
    const values: Promise<unknown[] | Error> =
      args instanceof Error
        ? Promise.resolve(args)
        : Promise.all(this.plan.infers.map((c, i) => this.call(c.model, args[i]!))).catch(asError);
    e.values = values;
    void values.then((v) => {
      if (e.values === values) e.settled = v;
    });
  }

  private fail(rec: Row, e: Error): void {
    this.runtime.stats.in++;
    this.runtime.stats.errors++;
    this.onError?.(rec, e);
  }

  /**
   * The meta of the oldest record not yet in the runtime (waiting for its model values), and
   * whether window rows wait for a model: what a durable consumer may call done.
   */
  get inFlight(): { oldest?: Record<string, unknown>; emitting: boolean } {
    return { oldest: this.queue[0]?.meta, emitting: this.waiting > 0 };
  }

  /**
   * Records waiting for their model values and window rows waiting for a model: what this rule
   * has taken in and not yet handed to its sinks (a site reserves outbox room for their results).
   */
  get backlog(): { records: number; rows: number } {
    return { records: this.queue.length, rows: this.waitingRows };
  }

  /** Resolves once fewer than `below` records and window rows wait here (at once if so, or once the rule stops). */
  untilBelow(below: number): Promise<void> {
    if (this.queue.length + this.waitingRows < below || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push({ below, resolve }));
  }

  private wakeRoom(): void {
    if (this.roomWaiters.length === 0) return;
    const n = this.queue.length + this.waitingRows;
    const ready = this.roomWaiters.filter((w) => this.stopped || n < w.below);
    if (ready.length === 0) return;
    this.roomWaiters = this.roomWaiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  /** Waits about `ms` (jittered: rules refused together do not come back together) on the rule's clock; cut short when it stops. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        cancel();
        this.pauses.delete(wake);
        resolve();
      };
      const cancel = this.clock.setTimer(ms / 2 + Math.random() * (ms / 2), wake);
      this.pauses.add(wake);
    });
  }

  private static backoff(attempt: number): number {
    return Math.min(1000, 10 * 2 ** Math.min(attempt, 10));
  }

  /** A model call over window results: within the rule's call window, asked again while the model is busy. */
  private async callWindow(model: string, args: unknown[]): Promise<unknown> {
    if (this.windowCalls >= this.maxCalls) await new Promise<void>((resolve) => this.windowWaiters.push(resolve));
    else this.windowCalls++;
    try {
      const since = this.clock.now();
      for (let attempt = 1; ; attempt++) {
        if (this.stopped) throw new Error('the rule stopped');
        try {
          return await this.call(model, args);
        } catch (e) {
          const err = asError(e);
          if (!this.isTransient(err) || this.stopped || this.clock.now() - since >= this.retryForMs) throw err;
          await this.pause(ModelRule.backoff(attempt));
        }
      }
    } finally {
      // The slot passes to the next waiting call (the count stays), or is given back.
      const next = this.windowWaiters.shift();
      if (next) next();
      else this.windowCalls--;
    }
  }

  private async drain(): Promise<void> {
    while (this.queue.length && !this.stopped) {
      const head = this.queue[0]!;
      let v = await head.values!;
      if (this.isTransient(v) && this.outageOver()) {
        // Past the outage's budget: a refusal from before counts only if the model refuses again now.
        this.ask(head);
        v = await head.values!;
      } else if (this.isTransient(v)) {
        // Held at the head, in order: the model is asked again for it alone, with backoff.
        this.outageSince ??= this.clock.now();
        let attempts = 0;
        while (this.isTransient(v) && !this.stopped && !this.outageOver()) {
          this.retrying = {
            code: (v as { code?: string }).code ?? v.name,
            message: v.message,
            since: this.outageSince,
            attempts: ++attempts,
          };
          await this.pause(ModelRule.backoff(attempts));
          if (this.stopped) break;
          this.ask(head);
          v = await head.values!;
        }
        this.retrying = undefined;
        // It answers again: the records behind that it refused meanwhile are asked again too.
        if (!(v instanceof Error))
          for (let i = 1; i < this.issued; i++) {
            const e = this.queue[i]!;
            if (this.isTransient(e.settled)) this.ask(e);
          }
      }
      if (this.stopped) break;
      if (!(v instanceof Error)) this.outageSince = undefined;
      this.queue.shift();
      this.issued--;
      this.issue();
      this.wakeRoom();
      if (v instanceof Error) this.fail(head.rec, v);
      else {
        this.plan.inferValues.set(head.rec, v);
        try {
          this.runtime.push(head.rec, head.meta);
        } catch (e) {
          this.fail(head.rec, asError(e));
        }
      }
    }
  }

  /** Waits until every record in flight entered the rule and every emitted row was written. */
  async settle(): Promise<void> {
    while (this.draining) await this.draining;
    await this.emits;
  }

  /** End of input: settle, close every window, and wait for their rows. */
  async finish(): Promise<void> {
    await this.settle();
    this.runtime.flush();
    await this.emits;
  }

  /** The rule is unloaded: no more model calls, retries end, a paced reader is released. */
  stop(): void {
    this.stopped = true;
    for (const wake of [...this.pauses]) wake();
    for (const w of this.windowWaiters.splice(0)) w();
    this.wakeRoom();
    this.runtime.stop();
  }
}
