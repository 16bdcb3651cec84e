import { EwError } from '../../contracts/errors.ts';

/**
 * Slots of a language model (its parallel sequences), handed out fairly: waiting requests queue
 * per client (an API caller, a rule) and a freed slot goes to the next client in round-robin
 * order, so one busy rule or caller cannot starve the others. Bounded: past `maxQueued` waiting
 * requests a new one is refused at once with QUEUE_FULL. A waiter whose signal aborts leaves the
 * queue at once. Pure: no timers, no I/O.
 */
export class FairQueue {
  private busy = 0;
  private queued = 0;
  /** client → its waiters, in arrival order; Map order is the round-robin order. */
  private readonly waiting = new Map<string, { grant: (release: () => void) => void; fail: (e: unknown) => void }[]>();

  constructor(
    private readonly slots: number,
    private readonly maxQueued = 256,
  ) {
    if (!(slots >= 1)) throw new RangeError('a FairQueue needs at least one slot');
  }

  get stats(): { busy: number; queued: number; slots: number } {
    return { busy: this.busy, queued: this.queued, slots: this.slots };
  }

  /** Resolves with a `release` function once the client holds a slot. */
  acquire(client: string, signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
    if (this.busy < this.slots && this.queued === 0) return Promise.resolve(this.take());
    if (this.queued >= this.maxQueued) {
      return Promise.reject(
        new EwError('QUEUE_FULL', `${this.queued} requests are already waiting for this model's ${this.slots} slot(s); retry shortly`),
      );
    }
    return new Promise((resolve, reject) => {
      const entry = {
        grant: (release: () => void) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
        fail: reject,
      };
      const onAbort = () => {
        const list = this.waiting.get(client);
        const i = list?.indexOf(entry) ?? -1;
        if (list && i >= 0) {
          list.splice(i, 1);
          this.queued--;
          if (list.length === 0) this.waiting.delete(client);
        }
        reject(signal!.reason ?? new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const list = this.waiting.get(client);
      if (list) list.push(entry);
      else this.waiting.set(client, [entry]);
      this.queued++;
    });
  }

  /** Refuses every waiter (the model is going away). */
  failAll(e: unknown): void {
    for (const list of this.waiting.values()) for (const w of list) w.fail(e);
    this.waiting.clear();
    this.queued = 0;
  }

  private take(): () => void {
    this.busy++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.busy--;
      this.next();
    };
  }

  private next(): void {
    while (this.busy < this.slots && this.queued > 0) {
      const [client, list] = this.waiting.entries().next().value as [
        string,
        { grant: (r: () => void) => void; fail: (e: unknown) => void }[],
      ];
      const w = list.shift()!;
      this.queued--;
      // Round-robin: the client goes to the back of the line (if it still waits for more).
      this.waiting.delete(client);
      if (list.length) this.waiting.set(client, list);
      w.grant(this.take());
    }
  }
}
