import type { Clock } from '../lib/clock.ts';

/**
 * Reconnect back-off with full jitter (the "Exponential Backoff And Jitter" scheme): the n-th
 * consecutive failure waits a uniformly random time in [0, min(cap, base · 2^n)). A fixed period
 * makes a fleet that lost its cloud at the same instant come back in synchronized waves; full
 * jitter spreads it over the whole window while the mean delay still doubles per failure.
 *
 * Pure: the random source is injected (Math.random in production, a seeded one in tests).
 */
export interface BackoffOptions {
  /** First window, ms (the agent's reconnectPeriodMs). */
  baseMs: number;
  /** Largest window, ms. */
  capMs: number;
}

export function fullJitterDelay(attempt: number, o: BackoffOptions, random: () => number): number {
  const window = Math.min(o.capMs, o.baseMs * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.floor(random() * window);
}

/**
 * The stateful shell around fullJitterDelay: `schedule(fn)` runs `fn` after the next delay on the
 * injected clock (consecutive calls grow the window); `reset()` after a success starts again
 * from the base. One pending timer at most.
 */
export class Backoff {
  private attempt = 0;
  private cancel?: () => void;
  constructor(
    private readonly clock: Clock,
    private readonly o: BackoffOptions,
    private readonly random: () => number = Math.random,
  ) {
    if (!(o.baseMs > 0) || !(o.capMs >= o.baseMs)) throw new RangeError('backoff needs 0 < baseMs <= capMs');
  }

  /** Consecutive failures so far. */
  get failures(): number {
    return this.attempt;
  }

  /** Schedules `fn` after the next delay; returns that delay (ms). */
  schedule(fn: () => void): number {
    this.cancel?.();
    const delay = fullJitterDelay(this.attempt++, this.o, this.random);
    this.cancel = this.clock.setTimer(delay, () => {
      this.cancel = undefined;
      fn();
    });
    return delay;
  }

  reset(): void {
    this.attempt = 0;
  }

  stop(): void {
    this.cancel?.();
    this.cancel = undefined;
  }
}
