import type { Clock } from '../lib/clock.ts';
import { EwError } from '../contracts/errors.ts';

/**
 * The dynamic batcher in front of every model (Triton's policy): requests queue; a batch goes
 * to the model when the queue holds `maxBatchSize` rows, when it reaches one of the preferred
 * batch sizes, or when its oldest request has waited `maxQueueDelayMs` — whichever comes first,
 * with at most `instances` batches running at once. The queue is bounded in rows: past
 * `maxQueueSize` a request is refused at once with QUEUE_FULL (back-pressure), never queued.
 * When a batch fails as a whole, its requests are run again one by one, so one bad request
 * fails alone. Pure apart from the injected clock; the executor does the I/O.
 */
export interface BatcherOptions {
  maxBatchSize: number;
  /** 0 sends what is queued at once (batching only what piles up while the model is busy). */
  maxQueueDelayMs: number;
  preferredBatchSizes?: number[];
  /** Most rows waiting; default 16 × maxBatchSize. */
  maxQueueSize?: number;
  /** Batches in flight at once; default 1. */
  instances?: number;
  clock: Clock;
}

export interface BatchStats {
  size: number;
  requests: number;
  queueMs: number[];
  computeMs: number;
  failed: boolean;
}

interface Item<I, O> {
  input: I;
  rows: number;
  at: number;
  resolve: (o: O) => void;
  reject: (e: unknown) => void;
}

export class DynamicBatcher<I, O> {
  private queue: Item<I, O>[] = [];
  private queuedRows = 0;
  private running = 0;
  private cancelTimer?: () => void;
  private timerFor?: Item<I, O>;
  private readonly maxQueue: number;
  private readonly preferred: number[];

  constructor(
    private readonly o: BatcherOptions,
    /** Runs one batch; returns one output per input, in order. */
    private readonly execute: (inputs: I[]) => Promise<O[]>,
    private readonly onBatch?: (s: BatchStats) => void,
  ) {
    if (!(o.maxBatchSize >= 1)) throw new RangeError('maxBatchSize must be at least 1');
    if (!(o.maxQueueDelayMs >= 0)) throw new RangeError('maxQueueDelayMs must be 0 or more');
    this.maxQueue = o.maxQueueSize ?? o.maxBatchSize * 16;
    this.preferred = [...(o.preferredBatchSizes ?? [])].filter((n) => n >= 1 && n <= o.maxBatchSize).sort((a, b) => b - a);
  }

  get queueLength(): number {
    return this.queue.length;
  }

  /** Queues one request of `rows` rows; resolves with its own output. */
  submit(input: I, rows = 1): Promise<O> {
    if (rows > this.o.maxBatchSize) {
      return Promise.reject(
        new EwError(
          'INFER_INPUT_INVALID',
          `the request has ${rows} rows but the model's maxBatchSize is ${this.o.maxBatchSize}; split it`,
          { path: 'inputs' },
        ),
      );
    }
    if (this.queuedRows + rows > this.maxQueue) {
      return Promise.reject(
        new EwError('QUEUE_FULL', `the model's queue holds ${this.queuedRows} of ${this.maxQueue} rows; retry shortly`),
      );
    }
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ input, rows, at: this.o.clock.now(), resolve, reject });
      this.queuedRows += rows;
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.queue.length > 0 && this.running < (this.o.instances ?? 1)) {
      const waited = this.o.clock.now() - this.queue[0]!.at;
      let take = 0;
      if (this.queuedRows >= this.o.maxBatchSize) take = this.o.maxBatchSize;
      else if (this.preferred.length && this.preferred.some((p) => p <= this.queuedRows))
        take = this.preferred.find((p) => p <= this.queuedRows)!;
      else if (waited >= this.o.maxQueueDelayMs) take = this.queuedRows;
      if (take === 0) break;
      this.runBatch(this.takeRows(take));
    }
    this.armTimer();
  }

  /** Whole requests, oldest first, up to `rows` rows (at least one request). */
  private takeRows(rows: number): Item<I, O>[] {
    const batch: Item<I, O>[] = [];
    let n = 0;
    while (this.queue.length && (batch.length === 0 || n + this.queue[0]!.rows <= rows)) {
      const it = this.queue.shift()!;
      n += it.rows;
      batch.push(it);
    }
    this.queuedRows -= n;
    return batch;
  }

  private armTimer(): void {
    const head = this.queue[0];
    if (!head || this.running >= (this.o.instances ?? 1)) {
      this.cancelTimer?.();
      this.cancelTimer = undefined;
      this.timerFor = undefined;
      return;
    }
    if (this.timerFor === head) return;
    this.cancelTimer?.();
    this.timerFor = head;
    const due = Math.max(0, head.at + this.o.maxQueueDelayMs - this.o.clock.now());
    this.cancelTimer = this.o.clock.setTimer(due, () => {
      this.cancelTimer = undefined;
      this.timerFor = undefined;
      this.dispatch();
    });
  }

  private runBatch(batch: Item<I, O>[]): void {
    this.running++;
    const start = this.o.clock.now();
    const queueMs = batch.map((b) => start - b.at);
    const size = batch.reduce((a, b) => a + b.rows, 0);
    const finish = (failed: boolean) => {
      this.onBatch?.({ size, requests: batch.length, queueMs, computeMs: this.o.clock.now() - start, failed });
      this.running--;
      this.dispatch();
    };
    this.execute(batch.map((b) => b.input))
      .then((outs) => {
        if (outs.length !== batch.length) throw new Error(`executor returned ${outs.length} outputs for ${batch.length} requests`);
        batch.forEach((b, i) => {
          b.resolve(outs[i]!);
        });
        finish(false);
      })
      .catch(async (err: unknown) => {
        if (batch.length === 1) {
          batch[0]!.reject(err);
          finish(true);
          return;
        }
        // Isolate the culprit: each request alone, so the good ones still succeed.
        for (const b of batch) {
          try {
            const [out] = await this.execute([b.input]);
            b.resolve(out!);
          } catch (e) {
            b.reject(e);
          }
        }
        finish(true);
      });
  }

  /** Refuses everything still queued (model unloading). */
  close(): void {
    this.cancelTimer?.();
    for (const it of this.queue.splice(0)) it.reject(new EwError('MODEL_NOT_READY', 'the model was unloaded'));
    this.queuedRows = 0;
  }
}
