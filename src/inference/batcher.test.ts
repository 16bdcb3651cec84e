import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DynamicBatcher, type BatchStats } from './batcher.ts';
import { ManualClock } from '../lib/clock.ts';
import { isEwError } from '../contracts/errors.ts';

/** A fake model: records each batch it is given and lets the test finish it. */
function fakeModel() {
  const calls: { inputs: number[]; done: (o?: number[]) => void; fail: (e: Error) => void }[] = [];
  const execute = (inputs: number[]) =>
    new Promise<number[]>((resolve, reject) => {
      calls.push({ inputs, done: (o) => resolve(o ?? inputs.map((x) => x * 10)), fail: reject });
    });
  return { calls, execute };
}
const tick = () => new Promise((r) => setImmediate(r));

describe('DynamicBatcher (manual clock)', () => {
  it('sends a full batch at once, without waiting for the delay', async () => {
    const clock = new ManualClock();
    const m = fakeModel();
    const b = new DynamicBatcher({ maxBatchSize: 3, maxQueueDelayMs: 100, clock }, m.execute);
    const ps = [1, 2, 3].map((x) => b.submit(x));
    assert.deepEqual(
      m.calls.map((c) => c.inputs),
      [[1, 2, 3]],
    );
    m.calls[0]!.done();
    assert.deepEqual(await Promise.all(ps), [10, 20, 30]);
  });

  it('sends a partial batch when the oldest request has waited maxQueueDelayMs', async () => {
    const clock = new ManualClock();
    const m = fakeModel();
    const b = new DynamicBatcher({ maxBatchSize: 8, maxQueueDelayMs: 5, clock }, m.execute);
    const p1 = b.submit(1);
    clock.advance(3);
    const p2 = b.submit(2);
    clock.advance(1);
    assert.equal(m.calls.length, 0, 'not before the deadline');
    clock.advance(1);
    assert.deepEqual(
      m.calls.map((c) => c.inputs),
      [[1, 2]],
      'at 5 ms after the first request',
    );
    m.calls[0]!.done();
    assert.deepEqual(await Promise.all([p1, p2]), [10, 20]);
  });

  it('sends as soon as the queue reaches a preferred size', () => {
    const clock = new ManualClock();
    const m = fakeModel();
    const b = new DynamicBatcher({ maxBatchSize: 16, maxQueueDelayMs: 100, preferredBatchSizes: [4, 8], clock }, m.execute);
    for (let i = 0; i < 3; i++) void b.submit(i);
    assert.equal(m.calls.length, 0);
    void b.submit(3);
    assert.deepEqual(
      m.calls.map((c) => c.inputs.length),
      [4],
    );
  });

  it('batches what piles up while the model is busy', async () => {
    const clock = new ManualClock();
    const m = fakeModel();
    const stats: BatchStats[] = [];
    const b = new DynamicBatcher({ maxBatchSize: 4, maxQueueDelayMs: 0, clock }, m.execute, (s) => stats.push(s));
    const first = b.submit(1);
    assert.deepEqual(
      m.calls.map((c) => c.inputs),
      [[1]],
      'delay 0: sent at once',
    );
    const rest = [2, 3, 4, 5, 6].map((x) => b.submit(x));
    assert.equal(m.calls.length, 1, 'one instance: the rest wait');
    clock.advance(7);
    m.calls[0]!.done();
    await first;
    await tick();
    assert.deepEqual(
      m.calls.map((c) => c.inputs),
      [[1], [2, 3, 4, 5]],
    );
    m.calls[1]!.done();
    await tick();
    assert.deepEqual(m.calls[2]!.inputs, [6]);
    m.calls[2]!.done();
    assert.deepEqual(await Promise.all(rest), [20, 30, 40, 50, 60]);
    assert.deepEqual(
      stats.map((s) => [s.size, s.requests]),
      [
        [1, 1],
        [4, 4],
        [1, 1],
      ],
    );
    assert.deepEqual(stats[1]!.queueMs, [7, 7, 7, 7]);
  });

  it('refuses with QUEUE_FULL past the bound, and an oversized request at once', async () => {
    const clock = new ManualClock();
    const m = fakeModel();
    const b = new DynamicBatcher({ maxBatchSize: 2, maxQueueDelayMs: 50, maxQueueSize: 3, clock }, m.execute);
    void b.submit(1);
    void b.submit(2, 2); // 1 goes to the (busy) model; 2 waits with its 2 rows
    void b.submit(3); // 3 rows waiting: the bound
    assert.equal(b.queueLength, 2);
    await assert.rejects(b.submit(9), (e: unknown) => isEwError(e, 'QUEUE_FULL'));
    await assert.rejects(b.submit(9, 3), (e: unknown) => isEwError(e, 'INFER_INPUT_INVALID'));
  });

  it('keeps whole multi-row requests together and never passes maxBatchSize', () => {
    const clock = new ManualClock();
    const m = fakeModel();
    const b = new DynamicBatcher({ maxBatchSize: 4, maxQueueDelayMs: 10, clock }, m.execute);
    void b.submit(1, 3);
    void b.submit(2, 3);
    assert.deepEqual(
      m.calls.map((c) => c.inputs),
      [[1]],
      'the second request would pass 4 rows: it waits',
    );
  });

  it('fails one bad request alone: a failed batch is retried request by request', async () => {
    const clock = new ManualClock();
    const execute = async (inputs: number[]) => {
      if (inputs.includes(13)) throw new Error('bad input 13');
      return inputs.map((x) => x + 1);
    };
    const b = new DynamicBatcher({ maxBatchSize: 3, maxQueueDelayMs: 1, clock }, execute);
    const ps = [1, 13, 3].map((x) => b.submit(x));
    const res = await Promise.allSettled(ps);
    assert.deepEqual(
      res.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.equal((res[0] as PromiseFulfilledResult<number>).value, 2);
    assert.match(String((res[1] as PromiseRejectedResult).reason), /bad input 13/);
  });
});
