import type { Clock } from '../../lib/clock.ts';

/**
 * Per-API-key limits for the inference endpoints: a token bucket (rate and burst) and a cap on
 * requests in flight. Pure state with an injected clock; the HTTP layer answers 429 with
 * Retry-After from `retryAfterS`.
 *
 * NOTE for the integrator: the hard-cloud work may bring its own token-bucket module for the
 * control-plane API; this one is the router's and can be unified with it (same semantics:
 * refill `ratePerS`, capacity `burst`, whole seconds in Retry-After, rounded up).
 */
export interface LimitOptions {
  /** Sustained requests per second per key. */
  ratePerS: number;
  /** Bucket capacity: requests a key may send at once after being idle. */
  burst: number;
  /** Requests a key may have in flight. */
  concurrency: number;
  clock: Clock;
  /** Keys tracked at most (a bound: the least recently used idle key is forgotten first). */
  maxKeys?: number;
}

export type Admission =
  | { ok: true; release: () => void }
  | { ok: false; code: 'RATE_LIMITED' | 'TOO_MANY_CONCURRENT'; retryAfterS: number; message: string };

interface KeyState { tokens: number; at: number; inFlight: number }

export class KeyLimiter {
  private readonly keys = new Map<string, KeyState>();
  private readonly maxKeys: number;

  constructor(private readonly o: LimitOptions) {
    this.maxKeys = o.maxKeys ?? 100_000;
  }

  get trackedKeys(): number {
    return this.keys.size;
  }

  private state(key: string, now: number): KeyState {
    let s = this.keys.get(key);
    if (!s) {
      if (this.keys.size >= this.maxKeys) this.evict();
      s = { tokens: this.o.burst, at: now, inFlight: 0 };
      this.keys.set(key, s);
    } else {
      s.tokens = Math.min(this.o.burst, s.tokens + ((now - s.at) / 1000) * this.o.ratePerS);
      s.at = now;
      // Most recently used last: eviction walks from the front.
      this.keys.delete(key);
      this.keys.set(key, s);
    }
    return s;
  }

  /** Forgets the least recently used key with nothing in flight (its bucket refills meanwhile anyway). */
  private evict(): void {
    for (const [k, s] of this.keys) {
      if (s.inFlight === 0) { this.keys.delete(k); return; }
    }
  }

  acquire(key: string): Admission {
    const now = this.o.clock.now();
    const s = this.state(key, now);
    if (s.inFlight >= this.o.concurrency) {
      return { ok: false, code: 'TOO_MANY_CONCURRENT', retryAfterS: 1, message: `this API key has ${s.inFlight} inference requests in flight, its limit; retry when one finishes` };
    }
    if (s.tokens < 1) {
      const retryAfterS = Math.max(1, Math.ceil((1 - s.tokens) / this.o.ratePerS));
      return { ok: false, code: 'RATE_LIMITED', retryAfterS, message: `this API key may send ${this.o.ratePerS} inference requests per second (bursts of ${this.o.burst}); retry after ${retryAfterS} s` };
    }
    s.tokens -= 1;
    s.inFlight++;
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        s.inFlight--;
      },
    };
  }
}
