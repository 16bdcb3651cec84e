import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { planQuery, type Row } from './planner.ts';
import { RuleRuntime } from './runtime.ts';
import { ManualClock } from '../lib/clock.ts';

/**
 * Property tests: on random streams (seeded, so a failure replays), the engine's output equals a
 * brute-force reference written from the definitions in docs/sql.md — for the watermark (what is
 * late, and when each window is emitted) and for every window kind.
 */
function rng(seed: number) {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
}

interface Emitted {
  row: Row;
  at: number;
}
function runEngine(sql: string, recs: Row[], lateness = 0) {
  const out: Emitted[] = [];
  const late: Row[] = [];
  let at = 0;
  const rt = new RuleRuntime(planQuery(sql, { name: 's', timestamp: 'ts' }, { lateness }), {
    clock: new ManualClock(0),
    lateness,
    latePolicy: 'side',
    emit: (rows) => {
      for (const row of rows) out.push({ row, at });
    },
    onLate: (r) => late.push(r),
    onError: (_r, e) => {
      throw e;
    },
  });
  for (const r of recs) {
    rt.push(r);
    at++;
  }
  rt.flush();
  return { out, late };
}

const byKey = (a: Record<string, unknown>, b: Record<string, unknown>) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1);
const sortRows = <T extends Record<string, unknown>>(xs: T[]) => [...xs].sort(byKey);

describe('property: the watermark (tumbling windows, out-of-order records, WHERE, keys, lateness)', () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`seed ${seed}: late records and emission times equal the reference`, () => {
      const rand = rng(seed);
      const size = 1000;
      const lateness = [0, 300, 1500][seed % 3]!;
      // Mostly increasing time with jitter backwards, three keys, a fifth filtered out.
      let base = 0;
      const recs = Array.from({ length: 400 }, () => {
        base += Math.floor(rand() * 120);
        return {
          k: `k${Math.floor(rand() * 3)}`,
          v: rand() < 0.2 ? -1 : Math.floor(rand() * 10),
          ts: Math.max(0, base - Math.floor(rand() * rand() * 2500)),
        };
      });
      const got = runEngine(
        `SELECT k, count(*) AS n, sum(v) AS s, window_start() AS ws FROM s WHERE v >= 0 GROUP BY k, TUMBLINGWINDOW(ms, ${size})`,
        recs,
        lateness,
      );

      // Reference: every record moves the watermark (max time seen - lateness); a passing record
      // is late when its window's end is at or before the watermark before it; a window is
      // emitted at the first record after which the watermark reaches its end.
      let maxTs = -Infinity;
      let wm = -Infinity;
      const open = new Map<number, Map<string, { n: number; s: number }>>();
      const want: Emitted[] = [];
      const wantLate: Row[] = [];
      const emitDue = (at: number, to: number) => {
        for (const start of [...open.keys()].sort((a, b) => a - b)) {
          if (start + size > to) continue;
          for (const [k, g] of open.get(start)!) want.push({ row: { k, n: g.n, s: g.s, ws: start }, at });
          open.delete(start);
        }
      };
      recs.forEach((r, i) => {
        if (r.v >= 0) {
          const start = Math.floor(r.ts / size) * size;
          if (start + size <= wm) {
            wantLate.push(r);
            return;
          }
          let g = open.get(start);
          if (!g) {
            g = new Map();
            open.set(start, g);
          }
          const a = g.get(r.k) ?? { n: 0, s: 0 };
          a.n++;
          a.s += r.v;
          g.set(r.k, a);
        }
        maxTs = Math.max(maxTs, r.ts);
        if (maxTs - lateness > wm) {
          wm = maxTs - lateness;
          emitDue(i, wm);
        }
      });
      emitDue(recs.length, Infinity);
      assert.deepEqual(got.late, wantLate);
      // Within one emission the order of groups is the engine's; compare each emission as a set.
      const group = (xs: Emitted[]) => {
        const m = new Map<string, Row[]>();
        for (const x of xs) {
          const key = `${x.at}/${x.row.ws}`;
          m.set(key, [...(m.get(key) ?? []), x.row]);
        }
        return [...m].map(([key, rows]) => [key, sortRows(rows)]);
      };
      assert.deepEqual(group(got.out), group(want));
    });
  }
});

describe('property: windows against brute force', () => {
  const stream = (seed: number, n: number, step: number) => {
    const rand = rng(seed);
    let t = 0;
    return Array.from({ length: n }, () => {
      t += 1 + Math.floor(rand() * step);
      return { k: `k${Math.floor(rand() * 3)}`, v: Math.floor(rand() * 100) - 10, ts: t };
    });
  };

  for (const [size, hop] of [
    [7000, 3000],
    [2000, 5000],
    [6000, 2000],
    [5000, 5000],
  ] as const) {
    it(`HOPPINGWINDOW(ms, ${size}, ${hop}) with WHERE: every window and group equals its records`, () => {
      for (const seed of [11, 12, 13]) {
        const recs = stream(seed, 300, 400);
        const got = runEngine(
          `SELECT k, count(*) AS n, sum(v) AS s, window_start() AS ws FROM s WHERE v >= 0 GROUP BY k, HOPPINGWINDOW(ms, ${size}, ${hop})`,
          recs,
        );
        const want: Row[] = [];
        const last = recs.at(-1)!.ts;
        for (let ws = Math.floor((recs[0]!.ts - size) / hop) * hop; ws <= last; ws += hop) {
          const inWin = recs.filter((r) => r.v >= 0 && r.ts >= ws && r.ts < ws + size);
          for (const k of new Set(inWin.map((r) => r.k))) {
            const vs = inWin.filter((r) => r.k === k).map((r) => r.v);
            want.push({ k, n: vs.length, s: vs.reduce((a, b) => a + b, 0), ws });
          }
        }
        assert.deepEqual(sortRows(got.out.map((x) => x.row)), sortRows(want), `seed ${seed}`);
        assert.deepEqual(got.late, []);
      }
    });
  }

  it('SLIDINGWINDOW(ms, 3000): each record fires [t - 3000, t] over every group', () => {
    for (const seed of [21, 22]) {
      const recs = stream(seed, 200, 700);
      const got = runEngine(
        'SELECT k, count(*) AS n, sum(v) AS s, window_end() AS we FROM s WHERE v >= 0 GROUP BY k, SLIDINGWINDOW(ms, 3000)',
        recs,
      );
      const want: Row[] = [];
      for (const trig of recs) {
        const inWin = recs.filter((r) => r.v >= 0 && r.ts >= trig.ts - 3000 && r.ts <= trig.ts);
        for (const k of new Set(inWin.map((r) => r.k))) {
          const vs = inWin.filter((r) => r.k === k).map((r) => r.v);
          want.push({ k, n: vs.length, s: vs.reduce((a, b) => a + b, 0), we: trig.ts });
        }
      }
      assert.deepEqual(sortRows(got.out.map((x) => x.row)), sortRows(want), `seed ${seed}`);
    }
  });

  it('SESSIONWINDOW(ms, max, gap) per key: sessions split by the gap and at multiples of the maximum', () => {
    for (const seed of [31, 32, 33]) {
      const recs = stream(seed, 300, 900);
      const max = 8000;
      const gap = 999.5; // never equal to a whole-millisecond distance: no tie between a record and the gap's end
      const got = runEngine(
        `SELECT k, count(*) AS n, sum(v) AS s, window_start() AS ws, window_end() AS we FROM s GROUP BY k, SESSIONWINDOW(ms, ${max}, ${gap})`,
        recs,
      );
      const want: Row[] = [];
      for (const k of new Set(recs.map((r) => r.k))) {
        let cur: { start: number; last: number; maxEnd: number; n: number; s: number } | undefined;
        const close = () => {
          if (cur) want.push({ k, n: cur.n, s: cur.s, ws: cur.start, we: Math.min(cur.last + gap, cur.maxEnd) });
        };
        for (const r of recs.filter((x) => x.k === k)) {
          if (cur && r.ts - cur.last <= gap && r.ts < cur.maxEnd) {
            cur.last = r.ts;
            cur.n++;
            cur.s += r.v;
            continue;
          }
          close();
          cur = { start: r.ts, last: r.ts, maxEnd: Math.ceil((r.ts + max) / max) * max, n: 1, s: r.v };
        }
        close();
      }
      assert.deepEqual(sortRows(got.out.map((x) => x.row)), sortRows(want), `seed ${seed}`);
    }
  });

  for (const [n, every] of [
    [5, undefined],
    [5, 2],
    [4, 1],
    [3, 3],
  ] as const) {
    it(`COUNTWINDOW(${n}${every ? `, ${every}` : ''}) with WHERE: fires at every ${every ?? n}-th record with the last ${n}`, () => {
      const recs = stream(41, 103, 10);
      const got = runEngine(
        `SELECT count(*) AS c, sum(v) AS s FROM s WHERE v >= 0 GROUP BY COUNTWINDOW(${n}${every ? `, ${every}` : ''})`,
        recs,
      );
      const want: Row[] = [];
      let lastFire = 0;
      for (let t = 1; t <= recs.length; t++) {
        if (t < n || t % (every ?? n) !== 0) continue;
        const rows = recs.slice(t - n, t).filter((r) => r.v >= 0);
        if (rows.length) want.push({ c: rows.length, s: rows.reduce((a, r) => a + r.v, 0) });
        lastFire = t;
      }
      if (lastFire < recs.length) {
        // End of input: the records still held — at most n, and for a tumbling count window only those since it last fired.
        const held = Math.max(0, lastFire - (n - (every ?? n)), recs.length - n);
        const rows = recs.slice(held).filter((r) => r.v >= 0);
        if (rows.length) want.push({ c: rows.length, s: rows.reduce((a, r) => a + r.v, 0) });
      }
      assert.deepEqual(
        got.out.map((x) => x.row),
        want,
      );
    });
  }
});
