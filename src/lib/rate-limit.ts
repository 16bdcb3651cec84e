import type { Clock } from './clock.ts';

export interface TokenBucketOptions {
  /** Most tokens a key can hold: the burst it may spend at once. */
  capacity: number;
  /** Tokens a key earns back per second. */
  refillPerSecond: number;
  /**
   * Most keys remembered. Past it the least recently used key is forgotten, so memory stays
   * bounded whatever the number of keys an attacker invents; a forgotten key starts full again.
   */
  maxKeys: number;
  clock: Clock;
}

export interface TakeResult {
  ok: boolean;
  /** Tokens left after this take (fractional). */
  remaining: number;
  /** When `ok` is false: how long until `cost` tokens are there again (ms, rounded up). */
  retryAfterMs: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * Token buckets by key (an address, an API key id, a username): a pure core with an injected
 * clock and a bounded, least-recently-used table. Used for the cloud API's rate limits and the
 * MQTT guard's connection and bad-password throttles.
 *
 * @example
 * const b = new TokenBuckets({ capacity: 10, refillPerSecond: 1, maxKeys: 10_000, clock });
 * if (!b.take(address).ok) refuse();
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly o: TokenBucketOptions) {
    if (!(o.capacity > 0) || !(o.refillPerSecond > 0) || !(o.maxKeys >= 1))
      throw new Error('token buckets need a positive capacity, refill rate and key bound');
  }

  get size(): number {
    return this.buckets.size;
  }

  private current(key: string): Bucket {
    const now = this.o.clock.now();
    const b = this.buckets.get(key);
    let tokens = this.o.capacity;
    if (b) {
      tokens = Math.min(this.o.capacity, b.tokens + (Math.max(0, now - b.at) * this.o.refillPerSecond) / 1000);
      this.buckets.delete(key); // re-inserted below: Map order is the LRU order
    }
    const cur = { tokens, at: now };
    this.buckets.set(key, cur);
    while (this.buckets.size > this.o.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
    return cur;
  }

  /** Spends `cost` tokens if the key has them. */
  take(key: string, cost = 1): TakeResult {
    const b = this.current(key);
    if (b.tokens >= cost) {
      b.tokens -= cost;
      return { ok: true, remaining: b.tokens, retryAfterMs: 0 };
    }
    return { ok: false, remaining: b.tokens, retryAfterMs: Math.ceil(((cost - b.tokens) * 1000) / this.o.refillPerSecond) };
  }

  /** Tokens the key holds now, without spending any. */
  peek(key: string): number {
    const b = this.buckets.get(key);
    if (!b) return this.o.capacity;
    return Math.min(this.o.capacity, b.tokens + (Math.max(0, this.o.clock.now() - b.at) * this.o.refillPerSecond) / 1000);
  }

  /** How long until the key has `cost` tokens (0 when it has them now). */
  waitMs(key: string, cost = 1): number {
    const have = this.peek(key);
    return have >= cost ? 0 : Math.ceil(((cost - have) * 1000) / this.o.refillPerSecond);
  }
}
