import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { planQuery, type Row } from './planner.ts';
import { RuleRuntime } from './runtime.ts';
import { decodeCheckpoint, encodeCheckpoint } from './checkpoint.ts';
import { ManualClock } from '../lib/clock.ts';

/**
 * The checkpoint seam: a rule stopped at any record, its state encoded, decoded and restored into
 * a fresh runtime of the same plan, then fed the rest, emits exactly what one uninterrupted run
 * emits — for every window kind and the stateful aggregates (DISTINCT, percentile, collect).
 */
const stream = { name: 's', timestamp: 'ts', schema: { k: 'string', v: 'float', ts: 'timestamp' } };
const QUERIES: [string, string][] = [
  ['tumbling', 'SELECT k, count(*) AS n, avg(v) AS a, max(v) AS m FROM s GROUP BY k, TUMBLINGWINDOW(ss, 1)'],
  ['hopping on panes', 'SELECT k, count(*) AS n, sum(v) AS t FROM s GROUP BY k, HOPPINGWINDOW(ss, 4, 1)'],
  ['session', 'SELECT k, count(*) AS n, min(v) AS lo FROM s GROUP BY k, SESSIONWINDOW(ss, 10, 2)'],
  ['sliding', 'SELECT k, count(*) AS n FROM s GROUP BY k, SLIDINGWINDOW(ss, 2)'],
  ['count', 'SELECT count(*) AS n, max(v) AS m FROM s GROUP BY COUNTWINDOW(7)'],
  [
    'distinct, percentile, collect',
    'SELECT k, count(DISTINCT v) AS d, percentile(v, 0.9) AS p, collect(v) AS all FROM s GROUP BY k, TUMBLINGWINDOW(ss, 2)',
  ],
];

function records(n: number): Row[] {
  let seed = 11;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
  // Event time moves forward with gaps (sessions close), keys mixed, values repeat (DISTINCT).
  let ts = 0;
  return Array.from({ length: n }, () => {
    ts += Math.floor(rand() * 400) + (rand() < 0.05 ? 3000 : 0);
    return { k: `k${Math.floor(rand() * 4)}`, v: Math.floor(rand() * 10), ts };
  });
}

const run = (sql: string, recs: Row[], cutAt?: number): Row[] => {
  const plan = planQuery(sql, stream);
  const out: Row[] = [];
  let rt = new RuleRuntime(plan, { clock: new ManualClock(0), emit: (rows) => out.push(...rows) });
  for (let i = 0; i < recs.length; i++) {
    if (i === cutAt) {
      const bytes = encodeCheckpoint({ fingerprint: 'f', epoch: 'e', ordinal: out.length, runtime: rt.snapshot() });
      rt.stop();
      rt = new RuleRuntime(planQuery(sql, stream), { clock: new ManualClock(0), emit: (rows) => out.push(...rows) });
      rt.restore(decodeCheckpoint(bytes).runtime);
    }
    rt.push(recs[i]!);
  }
  rt.flush();
  return out;
};

describe('rule checkpoints: snapshot → encode → restore reproduces an uninterrupted run', () => {
  const recs = records(400);
  for (const [name, sql] of QUERIES) {
    it(name, () => {
      const whole = run(sql, recs);
      assert.ok(whole.length > 5, `${name} emits (${whole.length})`);
      for (const cut of [1, 57, 133, 250, 399]) assert.deepEqual(run(sql, recs, cut), whole, `cut at record ${cut}`);
    });
  }

  it('keeps the counters across the restore', () => {
    const plan = planQuery(QUERIES[0]![1], stream);
    const a = new RuleRuntime(plan, { clock: new ManualClock(0), emit: () => {} });
    for (const r of records(50)) a.push(r);
    const b = new RuleRuntime(planQuery(QUERIES[0]![1], stream), { clock: new ManualClock(0), emit: () => {} });
    b.restore(decodeCheckpoint(encodeCheckpoint({ fingerprint: 'f', epoch: 'e', ordinal: 0, runtime: a.snapshot() })).runtime);
    assert.deepEqual(b.stats, a.stats);
  });
});
