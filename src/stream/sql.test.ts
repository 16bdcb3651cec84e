import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { planQuery, type Row, type StreamDef } from './planner.ts';
import { RuleRuntime } from './runtime.ts';
import { ManualClock } from '../lib/clock.ts';
import { isEwError, type EwError } from '../contracts/errors.ts';

/** Runs a query over records in event time ("ts") and returns what it emitted, then flushes. */
function run(
  sql: string,
  input: Row[],
  opts: { schema?: Record<string, string>; timestamp?: string | null; lateness?: number; meta?: Record<string, unknown> } = {},
) {
  const stream: StreamDef = { name: 's', schema: opts.schema, timestamp: opts.timestamp === null ? undefined : (opts.timestamp ?? 'ts') };
  const out: Row[] = [];
  const late: Row[] = [];
  const errors: string[] = [];
  const rt = new RuleRuntime(planQuery(sql, stream), {
    clock: new ManualClock(0),
    lateness: opts.lateness ?? 0,
    latePolicy: 'side',
    emit: (rows) => out.push(...rows),
    onLate: (r) => late.push(r),
    onError: (_r, e) => errors.push(e.message),
  });
  for (const r of input) rt.push(r, opts.meta);
  const beforeFlush = out.length;
  rt.flush();
  return { out, late, errors, beforeFlush, stats: rt.stats };
}

const recs = (spec: [string, number, number][]) => spec.map(([k, v, ts]) => ({ k, v, ts }));

interface Case {
  name: string;
  sql: string;
  input: Row[];
  want: Row[];
  schema?: Record<string, string>;
  lateness?: number;
}

const table: Case[] = [
  // --- stateless ---
  {
    name: 'projection, arithmetic and aliases',
    sql: 'SELECT k, v * 2 + 1 AS y, v / 2 AS z FROM s',
    input: recs([
      ['a', 1, 0],
      ['b', 2, 1],
    ]),
    want: [
      { k: 'a', y: 3, z: 0.5 },
      { k: 'b', y: 5, z: 1 },
    ],
  },
  {
    name: 'SELECT * with a filter',
    sql: "SELECT * FROM s WHERE v >= 2 AND k != 'c'",
    input: recs([
      ['a', 1, 0],
      ['b', 2, 1],
      ['c', 3, 2],
    ]),
    want: [{ k: 'b', v: 2, ts: 1 }],
  },
  {
    name: 'nested fields and array indexes',
    sql: 'SELECT a.b[0].c AS c, a.b[1] AS second, s.top AS top FROM s',
    input: [{ a: { b: [{ c: 7 }, 'x'] }, top: 1, ts: 0 }],
    want: [{ c: 7, second: 'x', top: 1 }],
  },
  {
    name: 'missing fields are null',
    sql: 'SELECT nothere, a.b.c AS deep FROM s',
    input: [{ a: 1, ts: 0 }],
    want: [{ nothere: null, deep: null }],
  },
  {
    name: 'CASE, searched and simple',
    sql: "SELECT CASE WHEN v > 2 THEN 'high' WHEN v > 1 THEN 'mid' ELSE 'low' END AS level, CASE k WHEN 'a' THEN 1 ELSE 0 END AS isA FROM s",
    input: recs([
      ['a', 3, 0],
      ['b', 2, 1],
      ['c', 0, 2],
    ]),
    want: [
      { level: 'high', isA: 1 },
      { level: 'mid', isA: 0 },
      { level: 'low', isA: 0 },
    ],
  },
  {
    name: 'IN, NOT IN, BETWEEN',
    sql: "SELECT k FROM s WHERE k IN ('a', 'b') AND v BETWEEN 1 AND 2 AND k NOT IN ('b')",
    input: recs([
      ['a', 1, 0],
      ['b', 2, 1],
      ['a', 5, 2],
    ]),
    want: [{ k: 'a' }],
  },
  {
    name: 'LIKE with % and _, and IS NULL',
    sql: "SELECT name FROM s WHERE name LIKE 'press-0_' AND x IS NULL AND name NOT LIKE '%9'",
    input: [
      { name: 'press-01', ts: 0 },
      { name: 'press-09', ts: 1 },
      { name: 'press-011', ts: 2 },
      { name: 'press-02', x: 1, ts: 3 },
    ],
    want: [{ name: 'press-01' }],
  },
  {
    name: 'null logic: unknown is not true',
    sql: 'SELECT k FROM s WHERE v > 1 OR w > 1',
    input: [
      { k: 'a', v: null, w: 2, ts: 0 },
      { k: 'b', ts: 1 },
    ],
    want: [{ k: 'a' }],
  },
  {
    name: 'string functions and ||',
    sql: "SELECT upper(k) || '-' || lpad(cast(v, 'string'), 2, '0') AS id, length(k) AS n, substring('abcdef', 1, 3) AS sub, replace(k, 'a', 'b') AS r FROM s",
    input: recs([['ab', 7, 0]]),
    want: [{ id: 'AB-007', n: 2, sub: 'bc', r: 'bb' }],
  },
  {
    name: 'math functions',
    sql: 'SELECT round(v / 3, 2) AS r, abs(-v) AS a, power(v, 2) AS p, mod(v, 4) AS m, greatest(v, 10) AS g FROM s',
    input: recs([['a', 7, 0]]),
    want: [{ r: 2.33, a: 7, p: 49, m: 3, g: 10 }],
  },
  {
    name: 'time functions (UTC)',
    sql: "SELECT format_time(ts, 'YYYY-MM-DD HH:mm') AS t, hour(ts) AS h, to_timestamp('2026-01-02T03:04:05Z') AS p FROM s",
    input: [{ ts: Date.UTC(2026, 10, 29, 3, 17) }],
    want: [{ t: '2026-11-29 03:17', h: 3, p: Date.UTC(2026, 0, 2, 3, 4, 5) }],
  },
  {
    name: 'JSON functions',
    sql: "SELECT json_path_query(doc, '$.a.b[1]') AS x, to_json(doc.a) AS j, parse_json('{\"q\":1}').q AS q, coalesce(nope, 5) AS c FROM s",
    input: [{ doc: { a: { b: [1, 2] } }, ts: 0 }],
    want: [{ x: 2, j: '{"b":[1,2]}', q: 1, c: 5 }],
  },
  // --- windows ---
  {
    name: 'TUMBLINGWINDOW with two keys, count/sum/avg/min/max',
    sql: 'SELECT k, z, count(*) AS n, sum(v) AS s, avg(v) AS a, min(v) AS lo, max(v) AS hi, window_start() AS ws, window_end() AS we FROM s GROUP BY k, z, TUMBLINGWINDOW(ss, 10)',
    input: [
      { k: 'a', z: 1, v: 1, ts: 0 },
      { k: 'a', z: 2, v: 4, ts: 1000 },
      { k: 'a', z: 1, v: 3, ts: 9999 },
      { k: 'b', z: 1, v: 10, ts: 10_000 },
    ],
    want: [
      { k: 'a', z: 1, n: 2, s: 4, a: 2, lo: 1, hi: 3, ws: 0, we: 10_000 },
      { k: 'a', z: 2, n: 1, s: 4, a: 4, lo: 4, hi: 4, ws: 0, we: 10_000 },
      { k: 'b', z: 1, n: 1, s: 10, a: 10, lo: 10, hi: 10, ws: 10_000, we: 20_000 },
    ],
  },
  {
    name: 'HOPPINGWINDOW: a record is in every window that covers it',
    sql: 'SELECT count(*) AS n, window_start() AS ws FROM s GROUP BY HOPPINGWINDOW(ss, 10, 5)',
    input: recs([
      ['a', 1, 1000],
      ['a', 1, 6000],
      ['a', 1, 12_000],
    ]),
    want: [
      { n: 1, ws: -5000 },
      { n: 2, ws: 0 },
      { n: 2, ws: 5000 },
      { n: 1, ws: 10_000 },
    ],
  },
  {
    name: 'SLIDINGWINDOW: each record emits every group over [t - size, t], both ends included (eKuiper)',
    sql: 'SELECT k, count(*) AS n, sum(v) AS s FROM s GROUP BY k, SLIDINGWINDOW(ss, 5)',
    input: recs([
      ['a', 1, 1000],
      ['b', 5, 2000],
      ['a', 2, 4000],
      ['a', 3, 7000],
    ]),
    want: [
      { k: 'a', n: 1, s: 1 },
      { k: 'a', n: 1, s: 1 },
      { k: 'b', n: 1, s: 5 },
      { k: 'a', n: 2, s: 3 },
      { k: 'b', n: 1, s: 5 },
      { k: 'b', n: 1, s: 5 },
      { k: 'a', n: 2, s: 5 }, // b at 2 s is in [2 s, 7 s]
    ],
  },
  {
    name: 'SESSIONWINDOW per key: a gap longer than the timeout closes the session',
    sql: 'SELECT k, count(*) AS n, window_start() AS ws, window_end() AS we FROM s GROUP BY k, SESSIONWINDOW(ss, 60, 5)',
    input: recs([
      ['a', 1, 0],
      ['a', 1, 3000],
      ['b', 1, 4000],
      ['a', 1, 20_000],
      ['b', 1, 30_000],
    ]),
    want: [
      { k: 'a', n: 2, ws: 0, we: 8000 },
      { k: 'b', n: 1, ws: 4000, we: 9000 },
      { k: 'a', n: 1, ws: 20_000, we: 25_000 },
      { k: 'b', n: 1, ws: 30_000, we: 35_000 },
    ],
  },
  {
    name: 'SESSIONWINDOW with a maximum length splits a busy session',
    sql: 'SELECT count(*) AS n FROM s GROUP BY SESSIONWINDOW(ss, 10, 5)',
    input: recs([
      ['a', 1, 0],
      ['a', 1, 4000],
      ['a', 1, 8000],
      ['a', 1, 12_000],
    ]),
    want: [{ n: 3 }, { n: 1 }],
  },
  {
    name: 'COUNTWINDOW: every n records, grouped',
    sql: 'SELECT k, count(*) AS n FROM s GROUP BY k, COUNTWINDOW(3)',
    input: recs([
      ['a', 1, 0],
      ['b', 1, 1],
      ['a', 1, 2],
      ['a', 1, 3],
      ['a', 1, 4],
    ]),
    want: [
      { k: 'a', n: 2 },
      { k: 'b', n: 1 },
      { k: 'a', n: 2 },
    ],
  },
  {
    name: 'COUNTWINDOW with an interval slides by that many records',
    sql: 'SELECT sum(v) AS s FROM s GROUP BY COUNTWINDOW(3, 1)',
    input: recs([
      ['a', 1, 0],
      ['a', 2, 1],
      ['a', 3, 2],
      ['a', 4, 3],
    ]),
    want: [{ s: 6 }, { s: 9 }], // end of input: no record came since the last window, so nothing more
  },
  {
    name: 'stddev, var, percentile, median, first, last, collect, count(distinct)',
    sql: 'SELECT stddev(v) AS sd, var(v) AS va, stddevs(v) AS sds, vars(v) AS vas, percentile(v, 0.9) AS p90, median(v) AS med, first(v) AS f, last(v) AS l, collect(v) AS c, count(DISTINCT k) AS dk FROM s GROUP BY TUMBLINGWINDOW(ss, 60)',
    input: recs([
      ['a', 2, 0],
      ['b', 4, 1],
      ['a', 4, 2],
      ['c', 4, 3],
      ['a', 5, 4],
      ['a', 5, 5],
      ['a', 7, 6],
      ['a', 9, 7],
    ]),
    want: [
      { sd: 2, va: 4, sds: 2.138089935299395, vas: 4.571428571428571, p90: 7.6, med: 4.5, f: 2, l: 9, c: [2, 4, 4, 4, 5, 5, 7, 9], dk: 3 },
    ],
  },
  {
    name: 'HAVING filters groups and may use select aliases',
    sql: 'SELECT k, avg(v) AS a FROM s GROUP BY k, TUMBLINGWINDOW(ss, 10) HAVING a > 2 AND count(*) >= 2',
    input: recs([
      ['a', 1, 0],
      ['a', 2, 1],
      ['b', 3, 2],
      ['b', 4, 3],
      ['c', 9, 4],
    ]),
    want: [{ k: 'b', a: 3.5 }],
  },
  {
    name: 'a non-aggregated field takes the first record of its group (eKuiper)',
    sql: 'SELECT k, v, count(*) AS n FROM s GROUP BY k, TUMBLINGWINDOW(ss, 10)',
    input: recs([
      ['a', 1, 0],
      ['a', 2, 1],
    ]),
    want: [{ k: 'a', v: 1, n: 2 }],
  },
  {
    name: 'out-of-order records within the same open window count',
    sql: 'SELECT count(*) AS n, window_start() AS ws FROM s GROUP BY TUMBLINGWINDOW(ss, 10)',
    input: recs([
      ['a', 1, 5000],
      ['a', 1, 1000],
      ['a', 1, 9000],
      ['a', 1, 2000],
    ]),
    want: [{ n: 4, ws: 0 }],
  },
];

describe('streaming SQL: table tests (event time, manual clock)', () => {
  for (const c of table) {
    it(c.name, () => {
      const r = run(c.sql, c.input, { schema: c.schema, lateness: c.lateness });
      assert.deepEqual(r.errors, []);
      assert.deepEqual(r.out, c.want);
    });
  }
});

describe('streaming SQL: event time, watermarks and late records', () => {
  it('emits a window as soon as the watermark passes its end, not before', () => {
    const r = run(
      'SELECT count(*) AS n FROM s GROUP BY TUMBLINGWINDOW(ss, 10)',
      recs([
        ['a', 1, 1000],
        ['a', 1, 9000],
        ['a', 1, 10_000],
        ['a', 1, 15_000],
      ]),
    );
    assert.equal(r.beforeFlush, 1, 'the first window closed when the record at 10 s arrived');
    assert.deepEqual(r.out, [{ n: 2 }, { n: 2 }]);
  });

  it('drops a record whose window already closed, counts it and hands it to the side output', () => {
    const r = run(
      'SELECT count(*) AS n FROM s GROUP BY TUMBLINGWINDOW(ss, 10)',
      recs([
        ['a', 1, 1000],
        ['a', 1, 12_000],
        ['late', 1, 3000],
        ['a', 1, 13_000],
      ]),
    );
    assert.deepEqual(r.out, [{ n: 1 }, { n: 2 }]);
    assert.deepEqual(
      r.late.map((x) => x.k),
      ['late'],
    );
    assert.equal(r.stats.late, 1);
  });

  it('keeps a window open for the allowed lateness, so an out-of-order record still counts', () => {
    const r = run(
      'SELECT count(*) AS n FROM s GROUP BY TUMBLINGWINDOW(ss, 10)',
      recs([
        ['a', 1, 1000],
        ['a', 1, 12_000],
        ['ok', 1, 3000],
        ['a', 1, 16_000],
      ]),
      { lateness: 5000 },
    );
    assert.deepEqual(r.late, []);
    assert.deepEqual(r.out, [{ n: 2 }, { n: 2 }]);
    assert.equal(r.beforeFlush, 1, 'the first window closed once the watermark (16 s - 5 s) passed 10 s');
  });

  it('reads ISO-8601 event times and counts records without one as failed', () => {
    const r = run('SELECT count(*) AS n FROM s GROUP BY TUMBLINGWINDOW(ss, 10)', [
      { ts: '1970-01-01T00:00:01Z' },
      { ts: 'yesterday' },
      { nots: 1 },
      { ts: 2000 },
    ]);
    assert.deepEqual(r.out, [{ n: 2 }]);
    assert.equal(r.stats.errors, 2);
    assert.match(r.errors[0]!, /no valid event time in "ts"/);
  });

  it('keeps processing the other records when one throws', () => {
    const r = run('SELECT k, cast(v, t) AS x FROM s', [
      { k: 'a', v: '1', t: 'int', ts: 0 },
      { k: 'b', v: '1', t: 'uuid', ts: 1 },
      { k: 'c', v: '2.5', t: 'float', ts: 2 },
    ]);
    assert.deepEqual(r.out, [
      { k: 'a', x: 1 },
      { k: 'c', x: 2.5 },
    ]);
    assert.equal(r.stats.errors, 1);
    assert.match(r.errors[0]!, /cast to "uuid" is not supported/);
  });

  it('reads source metadata with meta()', () => {
    const r = run("SELECT split_value(meta('topic'), '/', 1) AS machine FROM s", [{ ts: 0 }], {
      meta: { topic: 'factory/press-01/vibration' },
    });
    assert.deepEqual(r.out, [{ machine: 'press-01' }]);
  });
});

describe('streaming SQL: hopping windows built from panes', () => {
  it('give the same results as computing every window from its records (random data, every aggregate)', () => {
    let seed = 11;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
    const recs = Array.from({ length: 600 }, (_, i) => ({
      k: `k${Math.floor(rand() * 4)}`,
      v: Math.round(rand() * 1000) / 10,
      ts: i * 97,
    }));
    const r = run(
      'SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi, first(v) AS f, last(v) AS l, collect(v) AS c, count(DISTINCT v) AS d, percentile(v, 0.5) AS p50, window_start() AS ws FROM s GROUP BY k, HOPPINGWINDOW(ss, 6, 2)',
      recs,
    );
    assert.deepEqual(r.errors, []);
    // Brute force: every window [ws, ws + 6 s) on a 2 s grid, from its own records.
    const expected: Record<string, unknown>[] = [];
    for (let ws = -4000; ws <= 600 * 97; ws += 2000) {
      const inWin = recs.filter((x) => x.ts >= ws && x.ts < ws + 6000);
      const keys = [...new Set(inWin.map((x) => x.k))];
      for (const k of keys) {
        const vs = inWin.filter((x) => x.k === k).map((x) => x.v);
        const sorted = [...vs].sort((a, b) => a - b);
        const idx = 0.5 * (sorted.length - 1);
        const p50 = sorted[Math.floor(idx)]! + (sorted[Math.ceil(idx)]! - sorted[Math.floor(idx)]!) * (idx - Math.floor(idx));
        expected.push({
          k,
          n: vs.length,
          s: vs.reduce((a, b) => a + b, 0),
          lo: Math.min(...vs),
          hi: Math.max(...vs),
          f: vs[0],
          l: vs.at(-1),
          c: vs,
          d: new Set(vs).size,
          p50,
          ws,
        });
      }
    }
    const key = (x: Record<string, unknown>) => `${x.ws}/${x.k}`;
    const byKey = new Map(r.out.map((x) => [key(x), x]));
    assert.equal(r.out.length, expected.length);
    for (const e of expected) {
      const got = byKey.get(key(e))!;
      assert.ok(got, `window ${key(e)}`);
      assert.ok(Math.abs((got.s as number) - (e.s as number)) < 1e-9);
      assert.deepEqual({ ...got, s: 0 }, { ...e, s: 0 });
    }
  });

  it('drop a record whose every window has closed, and keep one that still has an open window', () => {
    const r = run(
      'SELECT count(*) AS n, window_start() AS ws FROM s GROUP BY HOPPINGWINDOW(ss, 10, 5)',
      recs([
        ['a', 1, 1000],
        ['a', 1, 16_000],
        ['stale', 1, 2000],
        ['late-too', 1, 7000],
        ['ok', 1, 12_000],
      ]),
    );
    // 16 s closed the windows starting at -5, 0 and 5 s: 2 s and 7 s have no open window left;
    // 12 s still counts in [10, 20) (though not in the closed [5, 15)).
    assert.deepEqual(
      r.late.map((x) => x.k),
      ['stale', 'late-too'],
    );
    assert.deepEqual(r.out, [
      { n: 1, ws: -5000 },
      { n: 1, ws: 0 },
      { n: 2, ws: 10_000 },
      { n: 1, ws: 15_000 },
    ]);
  });
});

describe('streaming SQL: processing time on the injected clock', () => {
  it('closes tumbling windows on timers', () => {
    const clock = new ManualClock(0);
    const out: Row[] = [];
    const rt = new RuleRuntime(planQuery('SELECT count(*) AS n, window_end() AS we FROM s GROUP BY TUMBLINGWINDOW(ss, 1)', { name: 's' }), {
      clock,
      emit: (r) => out.push(...r),
    });
    rt.push({});
    clock.advance(400);
    rt.push({});
    assert.deepEqual(out, []);
    clock.advance(600);
    assert.deepEqual(out, [{ n: 2, we: 1000 }]);
    clock.advance(500);
    rt.push({});
    clock.advance(499);
    assert.equal(out.length, 1);
    clock.advance(1);
    assert.deepEqual(out[1], { n: 1, we: 2000 });
    rt.stop();
  });

  it('closes a session after the gap on the clock', () => {
    const clock = new ManualClock(0);
    const out: Row[] = [];
    const rt = new RuleRuntime(planQuery('SELECT k, count(*) AS n FROM s GROUP BY k, SESSIONWINDOW(ss, 60, 2)', { name: 's' }), {
      clock,
      emit: (r) => out.push(...r),
    });
    rt.push({ k: 'a' });
    clock.advance(1500);
    rt.push({ k: 'a' });
    clock.advance(1999);
    assert.deepEqual(out, []);
    clock.advance(1);
    assert.deepEqual(out, [{ k: 'a', n: 2 }]);
  });
});

describe('streaming SQL: errors name line and column and say how to fix', () => {
  const schema = { machineId: 'string', rms: 'float', ts: 'timestamp' };
  const bad: [string, string, RegExp, string, { lateness?: number }?][] = [
    [
      'SELECT machineId\nFORM vibration',
      'SQL_SYNTAX',
      /line 2, column 1: expected FROM, "," or AS but found "FORM"; did you mean FROM\?/,
      '2:1',
    ],
    ['SELECT machineId FROM vibration WHERE', 'SQL_SYNTAX', /expected an expression but found the end of the query/, '1:38'],
    ["SELECT 'open FROM vibration", 'SQL_SYNTAX', /unterminated string/, '1:8'],
    ['SELECT avg(rms FROM vibration', 'SQL_SYNTAX', /expected "\)" to close avg\(/, '1:16'],
    ['SELECT machineId FROM vibration GROUP machineId', 'SQL_SYNTAX', /expected BY/, '1:39'],
    ['SELECT rsm FROM vibration', 'SQL_INVALID', /no field "rsm"; did you mean rms\?/, '1:8'],
    ['SELECT avgg(rms) FROM vibration', 'SQL_INVALID', /unknown function avgg\(\); did you mean avg\(\)\?/, '1:8'],
    ['SELECT avg(rms) FROM vibration', 'SQL_INVALID', /aggregates and HAVING need a window/, '1:8'],
    [
      'SELECT machineId FROM vibration WHERE avg(rms) > 1 GROUP BY TUMBLINGWINDOW(ss, 1)',
      'SQL_INVALID',
      /filter groups with HAVING, not WHERE/,
      '1:39',
    ],
    [
      'SELECT machineId + 1 FROM vibration',
      'SQL_INVALID',
      /"\+" needs numbers but machineId is a string; join strings with \|\| or concat\(\)/,
      '1:8',
    ],
    [
      'SELECT count(*) FROM vibration GROUP BY TUMBLINGWINDOW(xx, 10)',
      'SQL_INVALID',
      /first argument is a time unit: ms, ss, mi, hh or dd; for example TUMBLINGWINDOW\(ss, 10\)/,
      '1:56',
    ],
    [
      'SELECT count(*) FROM vibration GROUP BY HOPPINGWINDOW(ms, 2000001, 2)',
      'SQL_LIMIT',
      /a record falls in 1000001 windows .* at most 1000 are allowed; use a longer hop/,
      '1:68',
    ],
    [
      'SELECT count(*) FROM vibration GROUP BY TUMBLINGWINDOW(ms, 1)',
      'SQL_LIMIT',
      /keeps up to 86400002 windows open .*lateness 86400000 ms/,
      '1:60',
      { lateness: 86_400_000 },
    ],
    [
      'SELECT count(*) FROM vibration GROUP BY COUNTWINDOW(1000000)',
      'SQL_LIMIT',
      /COUNTWINDOW\(1000000\) holds more than 100000 records/,
      '1:53',
    ],
    [
      'SELECT count(*) FROM vibration GROUP BY SESSIONWINDOW(ss, 5)',
      'SQL_INVALID',
      /SESSIONWINDOW takes a unit, a maximum length and a gap timeout; for example SESSIONWINDOW\(mi, 60, 5\)/,
      '1:41',
    ],
    [
      "SELECT machineId FROM vibration WHERE rms > 'high'",
      'SQL_INVALID',
      /cannot compare rms \(number\) with 'high' \(string\) using >/,
      '1:43',
    ],
    ['SELECT machineId FROM vibration ORDER BY rms LIMIT 1.5', 'SQL_SYNTAX', /a whole number of rows after LIMIT/, '1:52'],
    ['SELECT count(*) FROM vibration GROUP BY TUMBLINGWINDOW(ss, 1), COUNTWINDOW(5)', 'SQL_INVALID', /at most one window/, '1:64'],
    [
      'SELECT sum(machineId) FROM vibration GROUP BY TUMBLINGWINDOW(ss, 1)',
      'SQL_INVALID',
      /sum\(\) needs numbers but machineId is a string/,
      '1:12',
    ],
    ['SELECT rms FROM traffic', 'SQL_INVALID', /unknown stream "traffic"; this rule can read vibration/, '1:17'],
    ['SELECT percentile(rms, 95) FROM vibration GROUP BY TUMBLINGWINDOW(ss, 1)', 'SQL_INVALID', /between 0 and 1/, '1:24'],
    ['SELECT rms AS x, machineId AS x FROM vibration', 'SQL_INVALID', /two output columns are named "x"/, '1:18'],
    ['SELECT round(rms, 1, 2, 3) FROM vibration', 'SQL_INVALID', /round\(\) takes 1 to 2 arguments but got 4/, '1:8'],
    [
      "SELECT machineId FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 1) HAVING infer('m', avg(rms)) > 1",
      'SQL_INVALID',
      /HAVING cannot use it/,
      '1:82',
    ],
    ['SELECT infer(rms, 1) FROM vibration', 'SQL_INVALID', /first argument is the model's name, a string/, '1:14'],
  ];
  for (const [sql, code, msg, path, opts] of bad) {
    it(`${code}: ${sql.replace(/\n/g, ' ')}`, () => {
      assert.throws(
        () => planQuery(sql, { name: 'vibration', schema, timestamp: 'ts' }, opts),
        (e: unknown) => {
          assert.ok(isEwError(e), `an EwError, got ${String(e)}`);
          assert.equal((e as EwError).code, code);
          assert.match((e as Error).message, msg);
          // The position is data (pos), not encoded in a path.
          assert.equal((e as EwError).path, undefined);
          assert.deepEqual((e as EwError).pos, { line: Number(path.split(':')[0]), col: Number(path.split(':')[1]) });
          return true;
        },
      );
    });
  }
});
