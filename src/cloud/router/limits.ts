import type { Clock } from '../../lib/clock.ts';
import { TokenBuckets } from '../../lib/rate-limit.ts';

/**
 * Per-API-key limits for the inference endpoints: a token bucket (rate and burst — the same
 * `TokenBuckets` the control-plane API and the MQTT guard use) and a cap on requests in flight.
 * Pure state with an injected clock; the HTTP layer answers 429 with Retry-After (whole seconds,
 * rounded up) from `retryAfterS`.
 */
export interface LimitOptions {
  /** Sustained requests per second per key. */
  ratePerS: number;
  /** Bucket capacity: requests a key may send at once after being idle. */
  burst: number;
  /** Requests a key may have in flight. */
  concurrency: number;
  clock: Clock;
  /** Keys tracked at most (a bound: the least recently used bucket is forgotten first). */
  maxKeys?: number;
}

export type Admission =
  | { ok: true; release: () => void }
  | { ok: false; code: 'RATE_LIMITED' | 'TOO_MANY_CONCURRENT'; retryAfterS: number; message: string };

export class KeyLimiter {
  private readonly buckets: TokenBuckets;
  /** Only keys with requests in flight: bounded by the requests the server holds, and by maxKeys. */
  private readonly inFlight = new Map<string, number>();
  private readonly maxKeys: number;

  constructor(private readonly o: LimitOptions) {
    this.maxKeys = o.maxKeys ?? 100_000;
    this.buckets = new TokenBuckets({ capacity: o.burst, refillPerSecond: o.ratePerS, maxKeys: this.maxKeys, clock: o.clock });
  }

  get trackedKeys(): number {
    return Math.max(this.buckets.size, this.inFlight.size);
  }

  acquire(key: string): Admission {
    const n = this.inFlight.get(key) ?? 0;
    if (n >= this.o.concurrency || (n === 0 && this.inFlight.size >= this.maxKeys)) {
      return {
        ok: false,
        code: 'TOO_MANY_CONCURRENT',
        retryAfterS: 1,
        message:
          n > 0
            ? `this API key has ${n} inference requests in flight, its limit; retry when one finishes`
            : 'the cloud serves as many API keys at once as it may; retry shortly',
      };
    }
    const t = this.buckets.take(key);
    if (!t.ok) {
      const retryAfterS = Math.max(1, Math.ceil(t.retryAfterMs / 1000));
      return {
        ok: false,
        code: 'RATE_LIMITED',
        retryAfterS,
        message: `this API key may send ${this.o.ratePerS} inference requests per second (bursts of ${this.o.burst}); retry after ${retryAfterS} s`,
      };
    }
    this.inFlight.set(key, n + 1);
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        const m = (this.inFlight.get(key) ?? 1) - 1;
        if (m <= 0) this.inFlight.delete(key);
        else this.inFlight.set(key, m);
      },
    };
  }
}
