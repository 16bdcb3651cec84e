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
 * Used by a site's rule host and by `edgeweave sql --model`. Rules without infer() pay nothing.
 */
export type InferFn = (model: string, args: unknown[]) => Promise<unknown>;

export class ModelRule {
  readonly runtime: RuleRuntime;
  private queue: { rec: Row; meta?: Record<string, unknown>; values: Promise<unknown[] | Error> }[] = [];
  private draining?: Promise<void>;
  private emits: Promise<void> = Promise.resolve();
  /** Emissions still waiting for a model: later rows queue behind them to keep the order. */
  private waiting = 0;
  /** Rows of those emissions (not yet at the sinks). */
  private waitingRows = 0;
  private readonly maxWaiting: number;

  constructor(
    private readonly plan: Plan,
    opts: RuntimeOptions & { maxWaiting?: number; onEmitError?: (e: Error) => void },
    private readonly infer: InferFn | undefined,
  ) {
    this.maxWaiting = opts.maxWaiting ?? 10_000;
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
            for (const [k, v] of Object.entries(row)) out[k] = v instanceof PendingInfer ? await this.call(v.model, v.args) : v;
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
    const env = { now: () => Date.now(), meta };
    const values = Promise.all(
      this.plan.infers.map((c) =>
        this.call(
          c.model,
          c.args.map((f) => f(rec, env)),
        ),
      ),
    ).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
    this.queue.push({ rec, meta, values });
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
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
    while (this.queue.length) {
      const head = this.queue[0]!;
      const v = await head.values;
      this.queue.shift();
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
    this.runtime.stop();
  }
}
