import { PendingInfer, type Plan, type Row } from './planner.ts';
import { RuleRuntime, type RuntimeOptions } from './runtime.ts';

/**
 * A rule whose SQL calls `infer()`: the synchronous RuleRuntime plus the asynchronous model calls
 * around it, in order.
 *  - Before: each record's row-level `infer()` values are asked of the model (all records in
 *    flight at once, so the model's batcher groups them) and the record enters the runtime in
 *    arrival order once its values are back. A record whose inference fails is counted as failed.
 *  - After: rows carrying `infer()` over window aggregates (PendingInfer) are completed before
 *    they reach `emit`, keeping emission order.
 *  - At most `maxCalls` records have model calls out at once; the others wait here (bounded by
 *    `maxWaiting`), so one rule cannot overflow a model's queue shared with the other callers.
 *  - With `transient`, a model that refuses for now (its queue full, restarting) delays a record
 *    (it stays at the head, asked again with backoff) instead of failing it; a site's rule host
 *    sets it, since the record is durable in its journal and must not be dead-lettered.
 * Used by a site's rule host and by `edgeweave sql --model`. Rules without infer() pay nothing.
 */
export type InferFn = (model: string, args: unknown[]) => Promise<unknown>;

type Entry = {
  rec: Row;
  meta?: Record<string, unknown>;
  /** Its model values: asked once it is among the first `maxCalls` records waiting. */
  values?: Promise<unknown[] | Error>;
  /** What `values` settled to, once it has (a transient failure is asked again). */
  settled?: unknown[] | Error;
};

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
  private cancelRetry?: () => void;
  private wakeRetry?: () => void;
  /** Window-result calls waiting to be asked again: woken (to fail) when the rule stops. */
  private readonly windowRetries = new Set<() => void>();
  /** Waiters for the queue to shrink (a paced reader feeding this rule). */
  private roomWaiters: { below: number; resolve: () => void }[] = [];
  /** A record held at the head while its model refuses it for now (QUEUE_FULL, MODEL_NOT_READY). */
  retrying?: { code: string; message: string; since: number; attempts: number };

  constructor(
    private readonly plan: Plan,
    opts: RuntimeOptions & {
      maxWaiting?: number;
      /** Records whose model calls are out at once (default 256): the rest wait here, not in the model's queue. */
      maxCalls?: number;
      /**
       * Model failures another attempt may cure (a full model queue, a model restarting): the
       * record stays at the head, in order, and is asked again with backoff for up to
       * `retryForMs` (default 60 s) before it counts as failed. Absent: every failure counts.
       */
      transient?: (e: Error) => boolean;
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
        this.waiting++;
        this.waitingRows += rows.length;
        this.emits = this.emits
          .then(() => resolved)
          .then(emit, (e: Error) => opts.onEmitError?.(e))
          .finally(() => {
            this.waiting--;
            this.waitingRows -= rows.length;
          });
      },
    });
    this.onError = opts.onError;
  }

  private readonly onError?: (rec: Row, e: Error) => void;
  private readonly clock: RuntimeOptions['clock'];

  private call(model: string, args: unknown[]): Promise<unknown> {
    if (!this.infer) return Promise.reject(new Error("no models here: infer() needs a site's models (or edgeweave sql --model)"));
    return this.infer(model, args);
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
    this.queue.push({ rec, meta });
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
    const env = { now: () => Date.now(), meta: e.meta };
    e.settled = undefined;
    const values = Promise.all(
      this.plan.infers.map((c) =>
        this.call(
          c.model,
          c.args.map((f) => f(e.rec, env)),
        ),
      ),
    ).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
    e.values = values;
    void values.then((v) => {
      if (e.values === values) e.settled = v;
    });
  }

  /** A model call over window results: a busy model is asked again (with backoff) as a record's would be. */
  private async callWindow(model: string, args: unknown[]): Promise<unknown> {
    const since = this.clock.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.call(model, args);
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        if (!this.transient?.(err) || this.stopped || this.clock.now() - since >= this.retryForMs) throw err;
        await new Promise<void>((resolve) => {
          const wake = () => {
            cancel();
            this.windowRetries.delete(wake);
            resolve();
          };
          const cancel = this.clock.setTimer(Math.min(1000, 10 * 2 ** Math.min(attempt, 10)), wake);
          this.windowRetries.add(wake);
        });
      }
    }
  }

  /** Resolves once fewer than `below` records wait here (at once if they already do, or the rule stopped). */
  untilBelow(below: number): Promise<void> {
    if (this.queue.length < below || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push({ below, resolve }));
  }

  private wakeRoom(): void {
    if (this.roomWaiters.length === 0) return;
    const ready = this.roomWaiters.filter((w) => this.stopped || this.queue.length < w.below);
    if (ready.length === 0) return;
    this.roomWaiters = this.roomWaiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  /** Waits `ms` on the rule's clock (cut short when the rule stops). */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wakeRetry = resolve;
      this.cancelRetry = this.clock.setTimer(ms, () => {
        this.cancelRetry = undefined;
        this.wakeRetry = undefined;
        resolve();
      });
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

  private async drain(): Promise<void> {
    while (this.queue.length && !this.stopped) {
      const head = this.queue[0]!;
      let v = await head.values!;
      if (v instanceof Error && this.transient?.(v)) {
        // Held at the head, in order: asked again with backoff while the model refuses it for now.
        const since = this.clock.now();
        let attempts = 0;
        while (v instanceof Error && this.transient(v) && !this.stopped && this.clock.now() - since < this.retryForMs) {
          this.retrying = { code: (v as { code?: string }).code ?? v.name, message: v.message, since, attempts: ++attempts };
          await this.pause(Math.min(1000, 10 * 2 ** Math.min(attempts, 10)));
          if (this.stopped) break;
          // Those behind it that the model refused too are asked again with it (not one per pause).
          for (let i = 0; i < this.issued; i++) {
            const e = this.queue[i]!;
            if (i === 0 || (e.settled instanceof Error && this.transient(e.settled))) this.ask(e);
          }
          v = await head.values!;
        }
        this.retrying = undefined;
      }
      if (this.stopped) break;
      this.queue.shift();
      this.issued--;
      this.issue();
      this.wakeRoom();
      if (v instanceof Error) this.fail(head.rec, v);
      else {
        this.plan.inferValues.set(head.rec, v);
        this.runtime.push(head.rec, head.meta);
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

  stop(): void {
    this.stopped = true;
    this.cancelRetry?.();
    this.wakeRetry?.();
    for (const w of [...this.windowRetries]) w();
    this.wakeRoom();
    this.runtime.stop();
  }
}
