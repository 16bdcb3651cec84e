import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, fullJitterDelay } from './backoff.ts';
import { ManualClock } from '../lib/clock.ts';

/** A seeded random source in [0, 1). */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
}

describe('reconnect back-off with full jitter (pure, fake clock)', () => {
  const o = { baseMs: 1000, capMs: 30_000 };

  it('draws uniformly from [0, min(cap, base·2^n)): the window doubles per failure up to the cap', () => {
    assert.equal(
      fullJitterDelay(0, o, () => 0),
      0,
    );
    assert.equal(
      fullJitterDelay(0, o, () => 0.999999),
      999,
    );
    assert.equal(
      fullJitterDelay(3, o, () => 0.5),
      4000,
    );
    assert.equal(
      fullJitterDelay(4, o, () => 0.999999),
      15_999,
    );
    assert.equal(
      fullJitterDelay(5, o, () => 0.999999),
      29_999,
      'capped at 30 s',
    );
    assert.equal(
      fullJitterDelay(500, o, () => 0.999999),
      29_999,
      'no overflow for long outages',
    );
  });

  it('runs the reconnect on the injected clock after the drawn delay, and starts over after a success', () => {
    const clock = new ManualClock(0);
    const b = new Backoff(clock, o, () => 0.5);
    let runs = 0;
    assert.equal(
      b.schedule(() => runs++),
      500,
    );
    clock.advance(499);
    assert.equal(runs, 0);
    clock.advance(1);
    assert.equal(runs, 1);
    assert.equal(
      b.schedule(() => runs++),
      1000,
      'second failure: window 2 s',
    );
    assert.equal(
      b.schedule(() => runs++),
      2000,
      'a new schedule replaces the pending one',
    );
    clock.advance(10_000);
    assert.equal(runs, 2, 'the replaced timer never fired');
    assert.equal(b.failures, 3);
    b.reset();
    assert.equal(
      b.schedule(() => runs++),
      500,
      'after a success the window is the base again',
    );
    b.stop();
    clock.advance(10_000);
    assert.equal(runs, 2, 'stopped: no reconnect');
  });

  it('spreads a fleet that lost its cloud at once instead of reconnecting in waves', () => {
    // 1,000 sites, all disconnected at t=0, the cloud back at t=0: when does each try first?
    const rand = seeded(7);
    const firstTry = Array.from({ length: 1000 }, () => fullJitterDelay(0, o, rand));
    const buckets = new Map<number, number>();
    for (const t of firstTry) buckets.set(Math.floor(t / 100), (buckets.get(Math.floor(t / 100)) ?? 0) + 1);
    // A fixed period puts all 1,000 in one instant; full jitter spreads them over ten 100 ms
    // buckets of about 100 each.
    assert.equal(buckets.size, 10);
    assert.ok(Math.max(...buckets.values()) < 150, `busiest 100 ms: ${Math.max(...buckets.values())} sites`);
    // Those that fail again spread over a window twice as wide, and so on.
    const second = Array.from({ length: 1000 }, () => fullJitterDelay(1, o, rand));
    assert.ok(Math.max(...second) > 1000 && Math.max(...second) < 2000);
  });

  it('refuses a nonsensical configuration', () => {
    assert.throws(() => new Backoff(new ManualClock(0), { baseMs: 0, capMs: 10 }), RangeError);
    assert.throws(() => new Backoff(new ManualClock(0), { baseMs: 100, capMs: 10 }), RangeError);
  });
});
