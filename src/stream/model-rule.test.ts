import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ModelRule } from './model-rule.ts';
import { planQuery } from './planner.ts';
import { EwError, isEwError } from '../contracts/errors.ts';
import { ManualClock } from '../lib/clock.ts';

/**
 * The asynchronous model calls around a rule: how many are out at once, what a model that is
 * busy for now (QUEUE_FULL, MODEL_NOT_READY) gets, and how a reader feeding the rule is paced.
 */
const stream = { name: 's', schema: { n: 'int' as const } };
const plan = () => planQuery("SELECT n, infer('m', n) AS y FROM s", stream, { models: ['m'], lateness: 0 });
const turns = async (n = 20) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};
const transient = (e: Error) => isEwError(e) && (e.code === 'QUEUE_FULL' || e.code === 'MODEL_NOT_READY');

/** A model with a bounded queue (as the batcher): past `capacity` calls out, it refuses with QUEUE_FULL. */
function boundedModel(capacity: number) {
  const waiting: { n: number; resolve: (v: number) => void }[] = [];
  const m = {
    out: 0,
    maxOut: 0,
    calls: 0,
    refused: 0,
    infer: async (_model: string, args: unknown[]): Promise<unknown> => {
      m.calls++;
      if (m.out >= capacity) {
        m.refused++;
        throw new EwError('QUEUE_FULL', `the model's queue holds ${capacity} of ${capacity} rows; retry shortly`);
      }
      m.out++;
      m.maxOut = Math.max(m.maxOut, m.out);
      return new Promise<number>((resolve) => waiting.push({ n: args[0] as number, resolve }));
    },
    /** Answers up to `k` waiting calls (n × 10). */
    answer(k = Infinity) {
      for (const w of waiting.splice(0, Math.min(k, waiting.length))) {
        m.out--;
        w.resolve(w.n * 10);
      }
    },
  };
  return m;
}

describe('ModelRule: model calls in flight, busy models, pacing', () => {
  it('keeps at most maxCalls model calls out; the rest wait here, and records leave in order', async () => {
    const model = boundedModel(1_000_000);
    const out: { n: number; y: number }[] = [];
    const rule = new ModelRule(
      plan(),
      { clock: new ManualClock(0), lateness: 0, emit: (rows) => out.push(...(rows as { n: number; y: number }[])), maxCalls: 8 },
      model.infer,
    );
    for (let n = 0; n < 100; n++) rule.push({ n });
    await turns();
    assert.equal(model.calls, 8, 'only the first 8 asked');
    assert.equal(rule.backlog.records, 100);
    while (out.length < 100) {
      model.answer(3);
      await turns(3);
    }
    assert.equal(model.maxOut, 8);
    assert.deepEqual(
      out.map((r) => r.n),
      Array.from({ length: 100 }, (_, i) => i),
    );
    assert.ok(out.every((r) => r.y === r.n * 10));
    assert.equal(rule.runtime.stats.errors, 0);
  });

  it('a busy model (QUEUE_FULL) delays records, in order, instead of failing them', async () => {
    const clock = new ManualClock(0);
    const model = boundedModel(5);
    const out: number[] = [];
    const failed: string[] = [];
    const rule = new ModelRule(
      plan(),
      {
        clock,
        lateness: 0,
        emit: (rows) => out.push(...rows.map((r) => r.n as number)),
        onError: (_r, e) => failed.push(e.message),
        maxCalls: 20,
        transient,
      },
      model.infer,
    );
    for (let n = 0; n < 50; n++) rule.push({ n });
    await turns();
    assert.equal(model.refused, 15, '15 of the first 20 refused: the model holds 5');
    for (let i = 0; i < 200 && out.length < 50; i++) {
      model.answer(2);
      await turns(3);
      if (rule.retrying) {
        assert.equal(rule.retrying.code, 'QUEUE_FULL');
        clock.advance(1000);
        await turns(3);
      }
    }
    assert.deepEqual(failed, []);
    assert.deepEqual(
      out,
      Array.from({ length: 50 }, (_, i) => i),
    );
    assert.equal(rule.runtime.stats.errors, 0);
    assert.equal(rule.retrying, undefined);
  });

  it('an outage longer than retryForMs fails the records it refuses; the next answer ends the outage', async () => {
    const clock = new ManualClock(0);
    let busy = true;
    const failed: { n: number; code: string }[] = [];
    const out: number[] = [];
    let calls = 0;
    const rule = new ModelRule(
      plan(),
      {
        clock,
        lateness: 0,
        emit: (rows) => out.push(...rows.map((r) => r.n as number)),
        onError: (r, e) => failed.push({ n: r.n as number, code: (e as EwError).code }),
        transient,
        retryForMs: 5_000,
      },
      async (_m, args) => {
        calls++;
        if (busy) throw new EwError('MODEL_NOT_READY', 'model m is restarting');
        return (args[0] as number) * 10;
      },
    );
    const run = async (ms: number) => {
      for (let t = 0; t < ms; t += 100) {
        clock.advance(100);
        await turns(2);
      }
    };
    rule.push({ n: 1 });
    rule.push({ n: 2 });
    await turns();
    assert.equal(rule.retrying?.code, 'MODEL_NOT_READY');
    // Backoff (10 ms doubling to 1 s, jittered), the head alone asked: about a dozen calls in 5 s.
    await run(6000);
    assert.ok(calls > 6 && calls < 30, `asked again with backoff (${calls} calls)`);
    assert.deepEqual(
      failed.map((f) => [f.n, f.code]),
      [
        [1, 'MODEL_NOT_READY'],
        [2, 'MODEL_NOT_READY'],
      ],
      'past the budget, the head fails, and the next one is asked once more and fails too',
    );
    assert.equal(rule.retrying, undefined);
    busy = false;
    rule.push({ n: 3 });
    await run(200);
    assert.deepEqual(out, [3], 'the model answers: the outage is over');
    // A new outage gets a new budget.
    busy = true;
    rule.push({ n: 4 });
    await run(1000);
    assert.equal((rule.retrying as { code: string } | undefined)?.code, 'MODEL_NOT_READY', 'a new outage');
    busy = false;
    await run(1500);
    assert.deepEqual(out, [3, 4]);
    assert.equal(failed.length, 2);
  });

  it('an infer() argument that cannot be computed fails its record in its turn; the records around it go on', async () => {
    const model = boundedModel(1_000_000);
    const out: number[] = [];
    const failed: number[] = [];
    const rule = new ModelRule(
      planQuery("SELECT n, infer('m', x + 1) AS y FROM s", { name: 's' }, { models: ['m'], lateness: 0 }),
      {
        clock: new ManualClock(0),
        lateness: 0,
        emit: (rows) => out.push(...rows.map((r) => r.n as number)),
        onError: (r) => failed.push(r.n as number),
        maxCalls: 2,
      },
      model.infer,
    );
    for (let n = 0; n < 6; n++) rule.push({ n, x: n === 3 ? 'oops' : n });
    while (out.length + failed.length < 6) {
      model.answer();
      await turns(3);
    }
    assert.deepEqual(failed, [3]);
    assert.deepEqual(out, [0, 1, 2, 4, 5]);
  });

  it('stop() ends the retries and releases a paced reader', async () => {
    const clock = new ManualClock(0);
    let calls = 0;
    const rule = new ModelRule(plan(), { clock, lateness: 0, emit: () => {}, transient, maxCalls: 4 }, async () => {
      calls++;
      throw new EwError('QUEUE_FULL', 'full');
    });
    for (let n = 0; n < 10; n++) rule.push({ n });
    await turns();
    let released = false;
    void rule.untilBelow(5).then(() => {
      released = true;
    });
    await turns();
    assert.equal(released, false, 'ten records wait: a reader waiting for fewer than five waits');
    rule.stop();
    await turns();
    assert.equal(released, true);
    const before = calls;
    clock.advance(60_000);
    await turns();
    assert.equal(calls, before, 'no call after stop');
    await rule.settle();
  });

  it('untilBelow resolves as the queue drains', async () => {
    const model = boundedModel(1000);
    const rule = new ModelRule(plan(), { clock: new ManualClock(0), lateness: 0, emit: () => {} }, model.infer);
    for (let n = 0; n < 10; n++) rule.push({ n });
    await turns();
    let released = false;
    void rule.untilBelow(4).then(() => {
      released = true;
    });
    model.answer(6);
    await turns();
    assert.equal(released, false, '4 still wait');
    model.answer(1);
    await turns();
    assert.equal(released, true);
    model.answer();
    await rule.settle();
  });

  it('infer() over window results: a busy model delays the window row, it does not drop it', async () => {
    const clock = new ManualClock(0);
    let busyFor = 3;
    const out: Record<string, unknown>[] = [];
    const emitErrors: string[] = [];
    const rule = new ModelRule(
      planQuery("SELECT count(*) AS c, infer('m', count(*)) AS y FROM s GROUP BY TUMBLINGWINDOW(ss, 1)", stream, {
        models: ['m'],
        lateness: 0,
      }),
      { clock, lateness: 0, emit: (rows) => out.push(...rows), onEmitError: (e) => emitErrors.push(e.message), transient },
      async (_m, args) => {
        if (busyFor-- > 0) throw new EwError('QUEUE_FULL', 'full');
        return (args[0] as number) + 100;
      },
    );
    for (let n = 0; n < 3; n++) rule.push({ n });
    clock.advance(1000); // the window closes
    for (let i = 0; i < 20 && out.length === 0; i++) {
      await turns(3);
      clock.advance(100);
    }
    assert.deepEqual(emitErrors, []);
    assert.deepEqual(out, [{ c: 3, y: 103 }]);
  });
});
