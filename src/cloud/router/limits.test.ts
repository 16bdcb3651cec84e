import { it } from 'node:test';
import assert from 'node:assert/strict';
import { KeyLimiter } from './limits.ts';
import { ManualClock } from '../../lib/clock.ts';

it('a key gets its burst, then its rate, with Retry-After that is long enough', () => {
  const clock = new ManualClock(0);
  const l = new KeyLimiter({ ratePerS: 2, burst: 3, concurrency: 100, clock });
  const ok = [1, 2, 3].map(() => l.acquire('k'));
  assert.ok(ok.every((a) => a.ok));
  const no = l.acquire('k');
  assert.ok(!no.ok && no.code === 'RATE_LIMITED' && no.retryAfterS === 1);
  assert.ok(l.acquire('other').ok, 'keys are limited separately');
  clock.advance(500);
  assert.ok(l.acquire('k').ok, 'one token back after 1/rate seconds');
  assert.ok(!l.acquire('k').ok);
});

it('caps requests in flight per key, and a release frees the slot once', () => {
  const clock = new ManualClock(0);
  const l = new KeyLimiter({ ratePerS: 1000, burst: 1000, concurrency: 2, clock });
  const a = l.acquire('k');
  const b = l.acquire('k');
  assert.ok(a.ok && b.ok);
  const c = l.acquire('k');
  assert.ok(!c.ok && c.code === 'TOO_MANY_CONCURRENT');
  a.release();
  a.release();
  assert.ok(l.acquire('k').ok);
  assert.ok(!l.acquire('k').ok, 'a double release did not free two slots');
});

it('tracks a bounded number of keys under a flood of new ones, and memory stays flat', () => {
  const clock = new ManualClock(0);
  const l = new KeyLimiter({ ratePerS: 10, burst: 10, concurrency: 4, clock, maxKeys: 1000 });
  const held = l.acquire('busy');
  globalThis.gc?.();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < 200_000; i++) {
    const a = l.acquire(`attacker-${i}`);
    if (a.ok) a.release();
  }
  assert.ok(l.trackedKeys <= 1000, `tracked ${l.trackedKeys}`);
  globalThis.gc?.();
  const grew = process.memoryUsage().heapUsed - before;
  assert.ok(grew < 20 * 1024 * 1024, `heap grew ${grew} bytes`);
  assert.ok(held.ok);
  for (let i = 0; i < 3; i++) assert.ok(l.acquire('busy').ok);
  assert.ok(!l.acquire('busy').ok, 'a key with requests in flight is never forgotten, so its cap holds');
});
