import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { planQuery, type Row, type StreamDef } from './planner.ts';
import { RuleRuntime } from './runtime.ts';
import { ManualClock } from '../lib/clock.ts';

/**
 * Table tests for the dialect's meaning, with eKuiper's behaviour as the expected value where
 * eKuiper defines one (its docs/en_US/sqls/*.md, its valuer and function sources, and its
 * operator test tables): SQL, input records, expected output — or the record's error.
 */
interface Opts {
  schema?: Record<string, string>;
  timestamp?: string | null;
  lateness?: number;
  clock?: ManualClock;
  maxFutureSkew?: number;
}
function run(sql: string, input: Row[], o: Opts = {}) {
  const stream: StreamDef = { name: 's', schema: o.schema, timestamp: o.timestamp === null ? undefined : (o.timestamp ?? 'ts') };
  const out: Row[] = [];
  const late: Row[] = [];
  const errors: string[] = [];
  const rt = new RuleRuntime(planQuery(sql, stream, { lateness: o.lateness }), {
    clock: o.clock ?? new ManualClock(0),
    lateness: o.lateness ?? 0,
    latePolicy: 'side',
    maxFutureSkew: o.maxFutureSkew,
    emit: (rows) => out.push(...rows),
    onLate: (r) => late.push(r),
    onError: (_r, e) => errors.push(e.message),
  });
  for (const r of input) rt.push(r);
  const beforeFlush = out.length;
  rt.flush();
  return { out, late, errors, beforeFlush, stats: rt.stats, rt };
}
/** One expression over one record (no event time): its value, or its error. */
function value(expr: string, rec: Row = {}, schema?: Record<string, string>): unknown {
  const r = run(`SELECT ${expr} AS x FROM s`, [rec], { timestamp: null, schema });
  if (r.errors.length) return new Error(r.errors[0]);
  return r.out[0]?.x;
}

type ValueCase = [expr: string, rec: Row, want: unknown, schema?: Record<string, string>];
function valueTable(cases: ValueCase[]) {
  for (const [expr, rec, want, schema] of cases) {
    it(`${expr}  with ${JSON.stringify(rec)}${schema ? ` schema ${JSON.stringify(schema)}` : ''}`, () => {
      const got = value(expr, rec, schema);
      if (want instanceof RegExp) {
        assert.ok(got instanceof Error, `an error, got ${JSON.stringify(got)}`);
        assert.match(got.message, want);
      } else {
        assert.ok(!(got instanceof Error), `no error, got ${String(got)}`);
        assert.deepEqual(got, want);
      }
    });
  }
}

describe('eKuiper semantics 1: every record moves the watermark; late records are late everywhere', () => {
  it('a record that WHERE filters out still closes windows', () => {
    const r = run('SELECT count(*) AS n FROM s WHERE v > 0 GROUP BY TUMBLINGWINDOW(ss, 10)', [
      { v: 1, ts: 1000 },
      { v: -1, ts: 12_000 },
    ]);
    assert.equal(r.beforeFlush, 1, 'the window [0, 10 s) closed on the filtered record at 12 s');
    assert.deepEqual(r.out, [{ n: 1 }]);
    assert.equal(r.stats.filtered, 1);
  });
  it("a filtered record's time makes older records late", () => {
    const r = run('SELECT count(*) AS n FROM s WHERE v > 0 GROUP BY TUMBLINGWINDOW(ss, 1)', [
      { v: -1, ts: 10_000 },
      { v: 1, ts: 5000 },
      { v: 1, ts: 10_500 },
    ]);
    assert.equal(r.stats.late, 1);
    assert.deepEqual(r.late, [{ v: 1, ts: 5000 }]);
    assert.deepEqual(r.out, [{ n: 1 }]);
  });
  it('a record that fails (a type error) still moves the watermark: its time is valid', () => {
    const r = run('SELECT count(*) AS n, sum(v) AS s FROM s GROUP BY TUMBLINGWINDOW(ss, 10)', [
      { v: 1, ts: 1000 },
      { v: 'x', ts: 12_000 },
    ]);
    assert.equal(r.beforeFlush, 1);
    assert.deepEqual(r.out, [{ n: 1, s: 1 }]);
    assert.equal(r.stats.errors, 1);
  });
  it("a record of another key closes this key's window", () => {
    const r = run('SELECT k, count(*) AS n FROM s GROUP BY k, TUMBLINGWINDOW(ss, 10)', [
      { k: 'a', ts: 1000 },
      { k: 'b', ts: 10_000 },
    ]);
    assert.equal(r.beforeFlush, 1);
    assert.deepEqual(r.out, [
      { k: 'a', n: 1 },
      { k: 'b', n: 1 },
    ]);
  });
  it('a query without a window drops records behind the watermark (and keeps those within the lateness)', () => {
    const strict = run('SELECT ts FROM s', [{ ts: 5000 }, { ts: 3000 }, { ts: 5000 }, { ts: 6000 }]);
    assert.deepEqual(strict.out, [{ ts: 5000 }, { ts: 5000 }, { ts: 6000 }]);
    assert.deepEqual(strict.late, [{ ts: 3000 }]);
    const lenient = run('SELECT ts FROM s', [{ ts: 5000 }, { ts: 3500 }, { ts: 2000 }, { ts: 6000 }], { lateness: 1500 });
    assert.deepEqual(lenient.out, [{ ts: 5000 }, { ts: 3500 }, { ts: 6000 }]);
    assert.deepEqual(lenient.late, [{ ts: 2000 }]);
  });
  it('an event time far in the future is an error and does not move the watermark (issue 8.4)', () => {
    const now = Date.UTC(2026, 10, 30);
    const recs = [{ ts: 8.64e15 }, ...Array.from({ length: 1000 }, (_, i) => ({ ts: now - 60_000 + i }))];
    const r = run('SELECT count(*) AS n FROM s GROUP BY TUMBLINGWINDOW(mi, 10)', recs, {
      clock: new ManualClock(now),
      maxFutureSkew: 300_000,
    });
    assert.equal(r.stats.errors, 1);
    assert.match(r.errors[0]!, /event time in "ts" is \d+ s ahead of the site's clock \(at most 300 s allowed, options.maxFutureSkew\)/);
    assert.equal(r.stats.late, 0, 'the 1,000 honest records after it are not late');
    assert.equal(
      r.out.reduce((a, x) => a + (x.n as number), 0),
      1000,
    );
    // Within the skew: accepted.
    const ok = run('SELECT ts FROM s', [{ ts: now + 200_000 }], { clock: new ManualClock(now), maxFutureSkew: 300_000 });
    assert.deepEqual(ok.errors, []);
  });
});

describe("eKuiper semantics 2: types and comparisons, never JavaScript's", () => {
  valueTable([
    // comparisons: numbers with numbers, strings with strings; anything else is the record's error
    ['v > 1', { v: 2 }, true],
    ["s < 'b'", { s: 'a' }, true],
    ["v > 'a'", { v: 1 }, /line 1, column 10: cannot compare v = 1 \(a number\) with 'a' = "a" \(a string\) using >/],
    ['s > 1', { s: '10' }, /cannot compare s = "10" \(a string\) with 1 = 1 \(a number\) using >; convert with cast/],
    ['o >= 1', { o: { a: 1 } }, /cannot compare o = an object with 1 = 1 \(a number\) using >=/],
    ['a < 2', { a: [1] }, /cannot compare a = an array of 1/],
    ['b > false', { b: true }, /cannot compare b = true \(a bool\) with false = false \(a bool\) using >/],
    ['v = s', { v: 1, s: '1' }, /cannot compare v = 1 \(a number\) with s = "1" \(a string\) using =/],
    ['b = true', { b: true }, true],
    // null (eKuiper's valuer): = <= >= true only for two nulls, != when one is null, < > never
    ['x = 1', {}, false],
    ['x != 1', {}, true],
    ['x < 1', {}, false],
    ['x >= 1', {}, false],
    ['x = y', {}, true],
    ['x <= y', {}, true],
    ['x != y', {}, false],
    // arithmetic: numbers only; + is never concatenation; numeric strings are not coerced
    ['v + 1', { v: 1.5 }, 2.5],
    ['s + 1', { s: 'x' }, /"\+" needs numbers but s = "x" \(a string\); join strings with \|\| or concat\(\)/],
    ['s * 2', { s: '3' }, /"\*" needs numbers but s = "3" \(a string\)/],
    ['x + 1', {}, null],
    ["s || '-' || v", { s: 'a', v: 1 }, 'a-1'],
    ["cast(s, 'bigint') + 1", { s: '12' }, 13],
    ["cast(s, 'float') * 2", { s: '1.5' }, 3],
    ["cast(s, 'float')", { s: 'abc' }, /cannot cast "abc" \(a string\) to float/],
    // integers divide as integers (eKuiper's int64), floats as floats; schemaless JSON numbers are floats
    ['7 / 2', {}, 3],
    ['-7 / 2', {}, -3],
    ['7.0 / 2', {}, 3.5],
    ['7 % 3', {}, 1],
    ['v / 2', { v: 7 }, 3.5],
    ['n / 2', { n: 7 }, 3, { n: 'int' }],
    ['f / 2', { f: 7 }, 3.5, { f: 'float' }],
    ['v / 0', { v: 1 }, /line 1, column 10: v \/ 0: divided by zero/],
    ['v % 0', { v: 1 }, /divided by zero/],
    ['-s', { s: 'a' }, /cannot negate s = "a" \(a string\)/],
    // conditions are bools
    ['v AND true', { v: 1 }, /AND needs a bool but got 1 \(a number\)/],
    ['NOT b', { b: false }, true],
    ['NOT x', {}, null],
    // round: half away from zero, on decimal digits
    ['round(2.5)', {}, 3],
    ['round(-2.5)', {}, -3],
    ['round(0.5)', {}, 1],
    ['round(-0.5)', {}, -1],
    ['round(2.675, 2)', {}, 2.68],
    ['round(1.005, 2)', {}, 1.01],
    ['round(-1.45, 1)', {}, -1.5],
    // functions take numbers, not numeric strings
    ['abs(s)', { s: '1' }, /line 1, column 8: abs\(\)'s argument 1 must be a number but is "1" \(a string\); convert it with cast/],
    ['power(v, 2)', { v: 3 }, 9],
  ]);

  it("WHERE takes a bool: a number there is the record's error with its position", () => {
    const r = run('SELECT k FROM s WHERE v', [
      { k: 'a', v: 1, ts: 0 },
      { k: 'b', v: true, ts: 1 },
    ]);
    assert.deepEqual(r.out, [{ k: 'b' }]);
    assert.deepEqual(r.errors, ['line 1, column 23: WHERE needs a bool but v = 1 (a number)']);
  });

  it('schema types are checked before the rule runs: a number against a string constant', () => {
    assert.throws(
      () => planQuery("SELECT v FROM s WHERE v > '3'", { name: 's', schema: { v: 'float' } }),
      /line 1, column 25: cannot compare v \(number\) with '3' \(string\) using >/,
    );
    assert.throws(() => planQuery("SELECT 1 = '1' AS x FROM s", { name: 's' }), /cannot compare 1 \(int\) with '1' \(string\) using =/);
  });

  it('avg and sum of an int column are ints (eKuiper truncates the average of integers)', () => {
    const r = run(
      'SELECT sum(n) AS s, avg(n) AS a, avg(f) AS af FROM s GROUP BY TUMBLINGWINDOW(ss, 10)',
      [
        { n: 1, f: 1, ts: 0 },
        { n: 2, f: 2, ts: 1 },
      ],
      { schema: { n: 'int', f: 'float', ts: 'timestamp' } },
    );
    assert.deepEqual(r.out, [{ s: 3, a: 1, af: 1.5 }]);
  });

  it("a string in sum() is the record's error, naming the aggregate, its position and the value; the rule goes on", () => {
    const r = run('SELECT sum(v) AS s FROM s GROUP BY TUMBLINGWINDOW(ss, 10)', [
      { v: 1, ts: 0 },
      { v: 'x', ts: 1 },
      { v: 2, ts: 2 },
    ]);
    assert.equal(r.stats.errors, 1);
    assert.match(r.errors[0]!, /line 1, column 8: sum\(v\): sum\(\) needs numbers but got "x" \(a string\)/);
    assert.deepEqual(r.out, [{ s: 3 }]);
  });

  it('a failing record leaves no trace in any window: no phantom group, no partial count', () => {
    const r = run('SELECT k, count(*) AS n, sum(v) AS s FROM s GROUP BY k, TUMBLINGWINDOW(ss, 10)', [
      { k: 'a', v: 1, ts: 0 },
      { k: 'b', v: 'x', ts: 1 },
      { k: 'a', v: 'y', ts: 2 },
    ]);
    assert.deepEqual(r.out, [{ k: 'a', n: 1, s: 1 }]);
    assert.equal(r.stats.errors, 2);
    const c = run('SELECT count(*) AS n, sum(v) AS s FROM s GROUP BY COUNTWINDOW(2, 1)', [
      { v: 1, ts: 0 },
      { v: 'x', ts: 1 },
      { v: 2, ts: 2 },
      { v: 3, ts: 3 },
    ]);
    assert.deepEqual(c.out, [
      { n: 2, s: 3 },
      { n: 2, s: 5 },
    ]);
    assert.equal(c.stats.errors, 1, 'reported once, not once per window');
  });

  it('min and max order numbers or strings, not both', () => {
    const r = run('SELECT min(v) AS lo, max(v) AS hi FROM s GROUP BY TUMBLINGWINDOW(ss, 10)', [
      { v: 'b', ts: 0 },
      { v: 'a', ts: 1 },
      { v: 3, ts: 2 },
    ]);
    assert.deepEqual(r.out, [{ lo: 'a', hi: 'b' }]);
    assert.match(r.errors[0]!, /min\(\) cannot order 3 \(a number\) against "a" \(a string\)/);
  });
});

describe('eKuiper semantics 3: null in string and math functions (docs/sql.md table)', () => {
  valueTable([
    ["concat('a', x, 'b')", {}, 'ab'],
    ['length(x)', {}, 0],
    ['numbytes(x)', {}, 0],
    ["startswith(x, 'a')", {}, false],
    ["endswith(x, 'a')", {}, false],
    ["regexp_matches(x, 'a')", {}, false],
    ["indexof(x, 'a')", {}, -1],
    ['upper(x)', {}, null],
    ['lower(x)', {}, null],
    ['trim(x)', {}, null],
    ['ltrim(x)', {}, null],
    ['rtrim(x)', {}, null],
    ['lpad(x, 2)', {}, null],
    ['rpad(x, 2)', {}, null],
    ['substring(x, 1)', {}, null],
    ["split_value(x, '/', 0)", {}, null],
    ["regexp_replace(x, 'a', 'b')", {}, null],
    ["replace(x, 'a', 'b')", {}, null],
    ['reverse(x)', {}, null],
    ['md5(x)', {}, null],
    ['sha256(x)', {}, null],
    ['crc32(x)', {}, null],
    ['abs(x)', {}, null],
    ['round(x)', {}, null],
    ['sqrt(x)', {}, null],
    ['power(x, 2)', {}, null],
    ['mod(x, 2)', {}, null],
    ['log(x)', {}, null],
    ['coalesce(x, y, 3)', {}, 3],
    ['ifnull(x, 0)', {}, 0],
    ['isnull(x)', {}, true],
    ['nullif(1, 1)', {}, null],
    ["cast(x, 'float')", {}, null],
    ['format_time(x)', {}, null],
  ]);
});

describe('eKuiper semantics 4: windows', () => {
  const recs = (spec: [string, number, number][]) => spec.map(([k, v, ts]) => ({ k, v, ts }));
  it('a window without aggregates emits every row of the window', () => {
    const r = run(
      'SELECT k, v FROM s GROUP BY TUMBLINGWINDOW(ss, 10)',
      recs([
        ['a', 1, 0],
        ['b', 2, 1],
        ['a', 3, 10_000],
      ]),
    );
    assert.deepEqual(r.out, [
      { k: 'a', v: 1 },
      { k: 'b', v: 2 },
      { k: 'a', v: 3 },
    ]);
  });
  it('SELECT * with a window emits the records; with a key and an aggregate, the first record of each group', () => {
    const all = run(
      'SELECT * FROM s GROUP BY TUMBLINGWINDOW(ss, 10)',
      recs([
        ['a', 1, 0],
        ['b', 2, 1],
      ]),
    );
    assert.deepEqual(all.out, [
      { k: 'a', v: 1, ts: 0 },
      { k: 'b', v: 2, ts: 1 },
    ]);
    const grouped = run(
      'SELECT *, count(*) AS n FROM s GROUP BY k, TUMBLINGWINDOW(ss, 10)',
      recs([
        ['a', 1, 0],
        ['b', 2, 1],
        ['a', 3, 2],
      ]),
    );
    assert.deepEqual(grouped.out, [
      { k: 'a', v: 1, ts: 0, n: 2 },
      { k: 'b', v: 2, ts: 1, n: 1 },
    ]);
  });
  it('a sliding window includes both ends', () => {
    const r = run(
      'SELECT count(*) AS n, window_start() AS ws, window_end() AS we FROM s GROUP BY SLIDINGWINDOW(ss, 5)',
      recs([
        ['a', 1, 0],
        ['a', 1, 5000],
      ]),
    );
    assert.deepEqual(r.out, [
      { n: 1, ws: -5000, we: 0 },
      { n: 2, ws: 0, we: 5000 },
    ]);
  });
  it("SESSIONWINDOW(unit, max, timeout) takes eKuiper's order, and checks the maximum at multiples of it", () => {
    // max 10 s, gap 3 s: 0, 2, 4, 6, 8 are one session until the check at 10 s; 11 starts the next.
    const r = run(
      'SELECT count(*) AS n, window_start() AS ws, window_end() AS we FROM s GROUP BY SESSIONWINDOW(ss, 10, 3)',
      recs([
        ['a', 1, 0],
        ['a', 1, 2000],
        ['a', 1, 4000],
        ['a', 1, 6000],
        ['a', 1, 8000],
        ['a', 1, 11_000],
        ['a', 1, 20_000],
      ]),
    );
    assert.deepEqual(r.out, [
      { n: 5, ws: 0, we: 10_000 },
      { n: 1, ws: 11_000, we: 14_000 },
      { n: 1, ws: 20_000, we: 23_000 },
    ]);
  });
  it('a hopping window whose hop is longer than its size is accepted; records between windows belong to none', () => {
    const r = run(
      'SELECT count(*) AS n, window_start() AS ws FROM s GROUP BY HOPPINGWINDOW(ss, 2, 5)',
      recs([
        ['a', 1, 1000],
        ['a', 1, 3000],
        ['a', 1, 6000],
        ['a', 1, 12_500],
      ]),
    );
    assert.deepEqual(r.out, [
      { n: 1, ws: 0 },
      { n: 1, ws: 5000 },
    ]);
    assert.equal(r.stats.late, 0);
    assert.equal(r.stats.filtered, 2, 'the records at 3 s and 12.5 s are in no window');
  });
  it('window_start() and window_end() of a count window are the times of its first and last record', () => {
    const r = run(
      'SELECT count(*) AS n, window_start() AS ws, window_end() AS we FROM s GROUP BY COUNTWINDOW(2)',
      recs([
        ['a', 1, 100],
        ['a', 1, 200],
        ['a', 1, 300],
        ['a', 1, 400],
      ]),
    );
    assert.deepEqual(r.out, [
      { n: 2, ws: 100, we: 200 },
      { n: 2, ws: 300, we: 400 },
    ]);
  });
  it('a count window counts every record, and WHERE picks rows from it (eKuiper runs the window before WHERE)', () => {
    const r = run(
      'SELECT sum(v) AS s, count(*) AS n FROM s WHERE v > 1 GROUP BY COUNTWINDOW(3)',
      [1, 2, 3, 4, 5, 6].map((v, i) => ({ v, ts: i })),
    );
    assert.deepEqual(r.out, [
      { s: 5, n: 2 },
      { s: 15, n: 3 },
    ]);
  });
  it('COUNTWINDOW(5, 2) fires at every second record with the last five, once five arrived', () => {
    const r = run(
      'SELECT collect(v) AS c FROM s GROUP BY COUNTWINDOW(5, 2)',
      [1, 2, 3, 4, 5, 6, 7, 8].map((v, i) => ({ v, ts: i })),
    );
    assert.deepEqual(r.out, [{ c: [2, 3, 4, 5, 6] }, { c: [4, 5, 6, 7, 8] }]);
  });
});

describe('eKuiper semantics 5: the missing dialect', () => {
  const recs = (spec: [string, number, number][]) => spec.map(([k, v, ts]) => ({ k, v, ts }));
  it("ORDER BY and LIMIT apply to each window's rows", () => {
    const r = run(
      'SELECT k, count(*) AS n FROM s GROUP BY k, TUMBLINGWINDOW(ss, 10) ORDER BY n DESC, k LIMIT 2',
      recs([
        ['c', 1, 0],
        ['b', 1, 1],
        ['a', 1, 2],
        ['b', 1, 3],
        ['c', 1, 4],
      ]),
    );
    assert.deepEqual(r.out, [
      { k: 'b', n: 2 },
      { k: 'c', n: 2 },
    ]);
    const rows = run(
      'SELECT v FROM s GROUP BY TUMBLINGWINDOW(ss, 10) ORDER BY v DESC LIMIT 2',
      recs([
        ['a', 1, 0],
        ['a', 3, 1],
        ['a', 2, 2],
      ]),
    );
    assert.deepEqual(rows.out, [{ v: 3 }, { v: 2 }]);
  });
  it('a plain query over an input that ends (edgeweave sql) sorts and cuts the whole output', () => {
    const out: Row[] = [];
    const rt = new RuleRuntime(planQuery('SELECT k, v FROM s WHERE v > 0 ORDER BY v DESC, k LIMIT 3', { name: 's' }), {
      clock: new ManualClock(0),
      collect: true,
      emit: (rows) => out.push(...rows),
    });
    for (const [k, v] of [
      ['a', 1],
      ['b', 5],
      ['c', -1],
      ['d', 3],
      ['e', 5],
    ] as const)
      rt.push({ k, v });
    assert.deepEqual(out, [], 'nothing before the end of the input');
    rt.flush();
    assert.deepEqual(out, [
      { k: 'b', v: 5 },
      { k: 'e', v: 5 },
      { k: 'd', v: 3 },
    ]);
  });
  it('LIMIT 0 emits nothing; ORDER BY a field that is not selected', () => {
    assert.deepEqual(run('SELECT k FROM s LIMIT 0', recs([['a', 1, 0]])).out, []);
    const r = run(
      'SELECT k FROM s GROUP BY TUMBLINGWINDOW(ss, 10) ORDER BY v',
      recs([
        ['x', 3, 0],
        ['y', 1, 1],
        ['z', 2, 2],
      ]),
    );
    assert.deepEqual(r.out, [{ k: 'y' }, { k: 'z' }, { k: 'x' }]);
  });
  it("a select item may name an earlier item's alias", () => {
    assert.deepEqual(run('SELECT v * 2 AS d, d + 1 AS e FROM s', [{ v: 1, ts: 0 }]).out, [{ d: 2, e: 3 }]);
    // An alias named like a field: inside its own expression the name is the field.
    assert.deepEqual(run('SELECT v + 1 AS v, v * 2 AS w FROM s', [{ v: 1, ts: 0 }]).out, [{ v: 2, w: 4 }]);
    const w = run('SELECT avg(v) AS a, a * 10 AS a10 FROM s GROUP BY TUMBLINGWINDOW(ss, 10) HAVING a10 > 5', [
      { v: 1, ts: 0 },
      { v: 2, ts: 1 },
    ]);
    assert.deepEqual(w.out, [{ a: 1.5, a10: 15 }]);
  });
  it('LIKE takes a field as the pattern', () => {
    const r = run('SELECT name FROM s WHERE name LIKE pat', [
      { name: 'press-01', pat: 'press-%', ts: 0 },
      { name: 'drill-01', pat: 'press-%', ts: 1 },
      { name: 'a_c', pat: 'a\\_c', ts: 2 },
      { name: 'abc', pat: 'a\\_c', ts: 3 },
    ]);
    assert.deepEqual(r.out, [{ name: 'press-01' }, { name: 'a_c' }]);
  });
  it('field names are case-insensitive, as in eKuiper', () => {
    assert.deepEqual(run('SELECT temp, A.b AS ab FROM s', [{ Temp: 20, a: { B: 1 }, ts: 0 }]).out, [{ temp: 20, ab: 1 }]);
    const plan = planQuery('SELECT TEMP FROM s WHERE temp > 1', { name: 's', schema: { Temp: 'float' } });
    assert.match(plan.explain(), /Filter: temp > 1/);
  });
  it('double-quoted text is a string literal (eKuiper); backquotes quote a field name', () => {
    assert.deepEqual(
      run('SELECT "a" AS x, `odd name` AS y FROM s WHERE k = "b"', [
        { k: 'b', 'odd name': 1, ts: 0 },
        { k: 'c', ts: 1 },
      ]).out,
      [{ x: 'a', y: 1 }],
    );
  });
  it('-> reads a nested field, as in eKuiper', () => {
    assert.deepEqual(run('SELECT a->b->c AS c FROM s', [{ a: { b: { c: 7 } }, ts: 0 }]).out, [{ c: 7 }]);
  });
  valueTable([
    ["md5('abc')", {}, createHash('md5').update('abc').digest('hex')],
    ["sha1('abc')", {}, 'a9993e364706816aba3e25717850c26c9cd0d89d'],
    ["sha256('abc')", {}, 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'],
    ["crc32('hello')", {}, '3610a686'],
    ["encode('hi', 'base64')", {}, 'aGk='],
    ["decode('aGk=', 'base64')", {}, 'hi'],
    ["reverse('abc')", {}, 'cba'],
    ["regexp_replace('a1b22', '[0-9]+', '#')", {}, 'a#b#'],
    ["regexp_substr('ab12c', '[0-9]+')", {}, '12'],
    ["lpad('a', 2)", {}, '  a'],
    ["rpad('a', 1)", {}, 'a '],
    ["substring('abcdef', 1, 3)", {}, 'bc'],
    ["substring('abc', 2, 1)", {}, /substring\(\): the start 2 is after the end 1/],
    ["split_value('a/b', '/', 5)", {}, /index 5 is out of range \(2 parts\)/],
    ["length('héllo')", {}, 5],
    ["numbytes('héllo')", {}, 6],
    ['bitand(12, 10)', {}, 8],
    ['bitor(12, 10)', {}, 14],
    ['bitxor(12, 10)', {}, 6],
    ['bitnot(0)', {}, -1],
    ['trunc(2.789, 1)', {}, 2.7],
    ['ceiling(1.2)', {}, 2],
    ['degrees(pi())', {}, 180],
    ['cot(1)', {}, 1 / Math.tan(1)],
    ['sign(-3)', {}, -1],
    ['cardinality(a)', { a: [1, 2, 3] }, 3],
    ['array_contains(a, 2)', { a: [1, 2] }, true],
    ['array_position(a, 2)', { a: [1, 2] }, 1],
    ['element_at(a, -1)', { a: [1, 2] }, 2],
    ["element_at(o, 'k')", { o: { k: 'v' } }, 'v'],
    ['array_distinct(a)', { a: [1, 1, 2] }, [1, 2]],
    ['array_max(a)', { a: [3, 9, 1] }, 9],
    ["array_join(a, '-')", { a: ['x', 'y'] }, 'x-y'],
    ['array_remove(a, 1)', { a: [1, 2, 1] }, [2]],
    ['sequence(1, 4)', {}, [1, 2, 3, 4]],
    ['array_flatten(a)', { a: [[1], [2, 3]] }, [1, 2, 3]],
    ['keys(o)', { o: { a: 1, b: 2 } }, ['a', 'b']],
    ['values(o)', { o: { a: 1 } }, [1]],
    ["object_construct('a', 1, 'b', 2)", {}, { a: 1, b: 2 }],
    ["erase(o, 'a')", { o: { a: 1, b: 2 } }, { b: 2 }],
    ['object_concat(o, p)', { o: { a: 1 }, p: { b: 2 } }, { a: 1, b: 2 }],
    ["object(array_create('a', 'b'), array_create(1, 2))", {}, { a: 1, b: 2 }],
    ['zip(a)', { a: [['a', 1]] }, { a: 1 }],
    ["day_of_week(to_timestamp('2026-11-29T00:00:00Z'))", {}, 1],
    ["day_of_year(to_timestamp('2026-02-01T00:00:00Z'))", {}, 32],
    ["unix_timestamp('1970-01-01T00:01:00Z')", {}, 60],
    ['from_unix_time(60)', {}, '1970-01-01T00:01:00.000Z'],
    ["json_path_exists(o, '$.a.b')", { o: { a: { b: 1 } } }, true],
    ['chr(65)', {}, 'A'],
    ["format_time(t, 'yyyy-MM-dd HH:mm:ss.SSS')", { t: Date.UTC(2026, 10, 29, 15, 4, 5, 7) }, '2026-11-29 15:04:05.007'],
    ["format_time(t, 'YYYY/M/d h:mm a ''UTC''')", { t: Date.UTC(2026, 0, 2, 15, 4) }, '2026/1/2 3:04 PM UTC'],
  ]);
  it('stddev and var are the population forms; stddevs and vars the sample forms (eKuiper)', () => {
    const r = run(
      'SELECT stddev(v) AS sd, stddevs(v) AS sds, var(v) AS va, vars(v) AS vas, percentile_disc(v, 0.5) AS pd FROM s GROUP BY TUMBLINGWINDOW(ss, 10)',
      [1, 2, 3, 4].map((v, i) => ({ v, ts: i })),
    );
    assert.deepEqual(r.out, [{ sd: Math.sqrt(1.25), sds: Math.sqrt(5 / 3), va: 1.25, vas: 5 / 3, pd: 2 }]);
    const one = run('SELECT stddev(v) AS sd, stddevs(v) AS sds FROM s GROUP BY TUMBLINGWINDOW(ss, 10)', [{ v: 5, ts: 0 }]);
    assert.deepEqual(one.out, [{ sd: 0, sds: null }]);
  });
});

describe('eKuiper semantics 6: unknown fields', () => {
  it('with a schema: an error before the rule runs, with line and column (names match case-insensitively)', () => {
    assert.throws(
      () => planQuery('SELECT temp,\n  humdity FROM s', { name: 's', schema: { temp: 'float', humidity: 'float' } }),
      (e: Error & { pos?: unknown }) => {
        assert.match(e.message, /line 2, column 3: stream s has no field "humdity"; did you mean humidity\?/);
        assert.deepEqual(e.pos, { line: 2, col: 3 });
        return true;
      },
    );
  });
  it("without a schema: a warning in the rule's status naming the field and where it is", () => {
    const r = run(
      'SELECT tmep, hum FROM s WHERE Hum > 0',
      Array.from({ length: 5 }, (_, i) => ({ temp: i, hum: 1, ts: i })),
    );
    assert.deepEqual(r.rt.warnings(), ['field "tmep" (line 1, column 8) was in none of the first 5 records; check its spelling']);
    assert.equal(r.out.length, 5, 'the rule runs on (the field is null)');
  });
});
