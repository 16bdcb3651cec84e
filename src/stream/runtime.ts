import type { Clock } from '../lib/clock.ts';
import { EwError } from '../contracts/errors.ts';
import { showValue, type Acc, type Meter } from './functions.ts';
import { orderValue, RecordError, type Env, type Plan, type Row } from './planner.ts';

/**
 * Runs one planned rule: owns its window state, its watermark and its timers; everything that
 * decides (filter, keys, aggregates, projection) is the plan's pure closures. Time is the
 * injected clock (processing time) or a field of the records (event time).
 *
 * Event time: the watermark is the largest event time seen minus the allowed lateness, and
 * every record that arrives moves it — also one that WHERE filters out, and one of any key — so
 * windows close on time. A window closes and emits when the watermark passes its end. A record
 * whose windows have all closed (or, in a query without a window, whose time is behind the
 * watermark) is late: dropped and counted (`latePolicy: 'drop'`, the default) or handed to
 * `onLate` (`'side'`). A record whose event time is further ahead of the clock than
 * `maxFutureSkew` is an error: it would move the watermark past every honest record. Processing
 * time: a record's time is its arrival on the clock, and windows close on timers. `flush()`
 * closes every open window (end of input).
 *
 * As in eKuiper, windows come before WHERE: a count window counts every record and a sliding
 * window fires on every record; WHERE then picks the rows the window's output is made of.
 *
 * One record's failure (a missing timestamp, a type error, a function that throws) is counted and
 * handed to `onError`; the rule goes on with the next record. The rule's state (groups, buffered
 * records, kept values) is metered in cells; over `maxStateCells` the rule drops its state, stops
 * and reports RULE_STATE_BUDGET through `onFatal` — the site keeps running.
 */
export interface RuntimeOptions {
  clock: Clock;
  /** Allowed lateness for event time, ms. Default 0. */
  lateness?: number;
  latePolicy?: 'drop' | 'side';
  /** Event time may be at most this far (ms) ahead of the clock; absent: unchecked. */
  maxFutureSkew?: number;
  /** The rule's state budget in cells (one per group aggregate, buffered record or kept value). */
  maxStateCells?: number;
  emit: (rows: Row[]) => void;
  onLate?: (record: Row) => void;
  onError?: (record: Row, error: Error) => void;
  /** The rule stopped itself (over its state budget). */
  onFatal?: (error: EwError) => void;
  /**
   * A query without a window whose input ends (`edgeweave sql` over a file): hold its rows and
   * emit them at `flush()`, sorted by ORDER BY and cut by LIMIT over the whole input. The rows
   * count against the state budget.
   */
  collect?: boolean;
}

export const DEFAULT_MAX_STATE_CELLS = 1_000_000;

export interface RuleStats {
  in: number;
  out: number;
  filtered: number;
  late: number;
  errors: number;
  lastOutputAt: number | null;
  stateCells: number;
}

/** A record of the future, refused before it can move the watermark. */
export class FutureEventError extends Error {
  override readonly name = 'FutureEventError';
}

interface Group {
  accs: Acc[];
  first: Row;
  rows: Row[] | undefined;
}
type Groups = Map<Key, Group>;

interface Session {
  start: number;
  last: number;
  maxEnd: number;
  group: Group;
}
interface Buffered {
  ts: number;
  key: Key;
  row: Row;
  pass: boolean;
}

/**
 * A group's Map key. One primitive key is used as it is (a Map tells 1 from '1'), which saves a
 * string per record on the hot path; several keys, or an object, become one string.
 */
type Key = string | number | boolean | null;
const stringKey = (v: unknown): string =>
  v === null || v === undefined
    ? '\u0001'
    : typeof v === 'object'
      ? JSON.stringify(v)
      : typeof v === 'string'
        ? `s${v}`
        : `${typeof v}${String(v)}`;

/** How many records the schemaless field check looks at before it stops (it costs a lookup per field). */
const FIELD_CHECK_RECORDS = 1000;

export class RuleRuntime {
  readonly stats: RuleStats = { in: 0, out: 0, filtered: 0, late: 0, errors: 0, lastOutputAt: null, stateCells: 0 };
  /** Set when the rule stopped itself; later records are counted as errors and dropped. */
  failed?: EwError;
  private watermark = -Infinity;
  /** End of the earliest open time window (Infinity when none). */
  private earliestEnd = Infinity;
  private maxTs = -Infinity;
  /** Time windows (tumbling, hopping) by start time. */
  private readonly windows = new Map<number, Groups>();
  /** Session windows by group key. */
  private readonly sessions = new Map<Key, Session[]>();
  /** Sliding windows: buffered records in time order, and the ones waiting for the watermark. */
  private slideBuf: Buffered[] = [];
  private slidePending: Buffered[] = [];
  /** Count windows: every record (WHERE is applied when the window fires). */
  private countBuf: Buffered[] = [];
  private countTotal = 0;
  /** Records since the count window last fired (flush emits them, if any). */
  private sinceFire = 0;
  private cancelTimer?: () => void;
  private timerAt = Infinity;
  private readonly eventTime: boolean;
  private readonly env: Env;
  private readonly meter: Meter = { cells: 0 };
  private readonly scratch: Meter = { cells: 0 };
  private readonly groupCells: number;
  private readonly holding: number[];
  /** The current record's aggregate inputs (one array, refilled per record). */
  private readonly vals: unknown[];
  private readonly maxCells: number;
  /** Schemaless streams: referenced fields not seen yet in any record (checked on the first records). */
  private unseen?: Map<string, { name: string; pos: { line: number; col: number } }>;
  private checked = 0;
  private collected?: { rows: Row[]; keys: unknown[][] | undefined };
  /**
   * Hopping windows whose size is a multiple of the hop run on panes (one per hop): a record
   * updates one pane, not every window covering it, and a closing window merges its panes —
   * size/hop times less work per record (how Flink slices windows).
   */
  private readonly panes?: Map<number, Groups>;
  /** Start of the earliest pane-built window not emitted yet. */
  private nextStart?: number;

  constructor(
    private readonly plan: Plan,
    private readonly o: RuntimeOptions,
  ) {
    this.eventTime = !!plan.stream.timestamp;
    this.env = { now: () => o.clock.now() };
    const w = plan.window;
    if (w?.kind === 'hopping' && w.size > w.hop && w.size % w.hop === 0) this.panes = new Map();
    this.groupCells = 1 + plan.aggs.length;
    this.vals = new Array<unknown>(plan.aggs.length);
    // Only collect, percentile and DISTINCT keep values; the others are one number each.
    this.holding = plan.aggs.map((a, i) => (typeof a.make(this.scratch).held === 'function' ? i : -1)).filter((i) => i >= 0);
    this.maxCells = o.maxStateCells ?? DEFAULT_MAX_STATE_CELLS;
    if (o.collect && !plan.windowed) this.collected = { rows: [], keys: plan.order.length ? [] : undefined };
    if (!plan.stream.schema && plan.fieldRefs.length) this.unseen = new Map(plan.fieldRefs.map((f) => [f.name.toLowerCase(), f]));
  }

  /** Warnings for the rule's status: referenced fields that no record has carried (schemaless streams). */
  warnings(): string[] {
    if (!this.unseen || this.checked === 0) return [];
    return [...this.unseen.values()].map(
      (f) =>
        `field "${f.name}" (line ${f.pos.line}, column ${f.pos.col}) was in none of the first ${this.checked} records; check its spelling`,
    );
  }

  private checkFields(row: Row): void {
    const unseen = this.unseen!;
    this.checked++;
    for (const k in row) if (unseen.delete(k.toLowerCase()) && unseen.size === 0) break;
    if (unseen.size === 0 || this.checked >= FIELD_CHECK_RECORDS) {
      if (unseen.size === 0) this.unseen = undefined;
      else this.checkFields = () => {}; // stop looking; keep the warnings
    }
  }

  private minPane(): number {
    let m = Infinity;
    for (const p of this.panes!.keys()) if (p < m) m = p;
    return m;
  }

  private pushPane(key: Key, ts: number, row: Row, w: { size: number; hop: number }): boolean {
    const p = Math.floor(ts / w.hop) * w.hop;
    // Every window holding this pane starts in (p - size, p]; if the last of them was emitted, it is late.
    if (this.nextStart !== undefined && p < this.nextStart) return false;
    this.nextStart ??= p - w.size + w.hop;
    let groups = this.panes!.get(p);
    if (!groups) {
      groups = new Map();
      this.panes!.set(p, groups);
    }
    this.addTo(this.groupIn(groups, key, row), row);
    return true;
  }

  /** Emits, in order, every pane-built window that ends by `to`, and drops panes no window needs. */
  private closePanes(to: number, w: { size: number; hop: number }): void {
    const panes = this.panes!;
    while (this.nextStart !== undefined && panes.size > 0) {
      // Skip empty stretches: no window before the first pane's earliest window holds data.
      this.nextStart = Math.max(this.nextStart, this.minPane() - w.size + w.hop);
      const start = this.nextStart;
      if (start + w.size > to) break;
      const merged: Groups = new Map();
      for (let p = start; p < start + w.size; p += w.hop) {
        const groups = panes.get(p);
        if (!groups) continue;
        for (const [key, g] of groups) {
          let m = merged.get(key);
          if (!m) {
            m = { accs: this.plan.aggs.map((a) => a.make(this.scratch)), first: g.first, rows: g.rows ? [] : undefined };
            merged.set(key, m);
          }
          for (let i = 0; i < g.accs.length; i++) m.accs[i]!.merge(g.accs[i]!);
          if (g.rows) for (const r of g.rows) m.rows!.push(r);
        }
      }
      if (merged.size) this.emitGroups(merged, { start, end: start + w.size });
      const gone = panes.get(start);
      if (gone) {
        this.release(gone);
        panes.delete(start);
      } // the window starting at this pane was its last one
      this.nextStart = start + w.hop;
    }
  }

  private timeOf(row: Row): number {
    if (!this.eventTime) return this.o.clock.now();
    const v = row[this.plan.stream.timestamp!];
    const t = typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : NaN;
    if (!Number.isFinite(t))
      throw new Error(`record has no valid event time in "${this.plan.stream.timestamp}" (milliseconds or an ISO-8601 string)`);
    const skew = this.o.maxFutureSkew;
    if (skew !== undefined) {
      const ahead = t - this.o.clock.now();
      if (ahead > skew)
        throw new FutureEventError(
          `event time in "${this.plan.stream.timestamp}" is ${Math.round(ahead / 1000)} s ahead of the site's clock (at most ${Math.round(skew / 1000)} s allowed, options.maxFutureSkew); the record is refused so that it cannot move the watermark`,
        );
    }
    return t;
  }

  private newGroup(row: Row): Group {
    this.meter.cells += this.groupCells;
    return { accs: this.plan.aggs.map((a) => a.make(this.meter)), first: row, rows: this.plan.rowsMode ? [] : undefined };
  }

  /** Gives back the cells of groups that left the state. */
  private release(groups: Map<Key, Group> | Group[]): void {
    const size = groups instanceof Map ? groups.size : groups.length;
    let n = size * this.groupCells;
    if (this.plan.rowsMode || this.holding.length) {
      for (const g of groups.values()) {
        n += g.rows?.length ?? 0;
        for (const i of this.holding) n += g.accs[i]!.held!();
      }
    }
    this.meter.cells -= n;
  }

  /**
   * A record's aggregate inputs, computed and checked before any window state changes: a record
   * that fails leaves no trace in any window (eKuiper ignores an error event in a window).
   */
  private evalArgs(row: Row): void {
    const aggs = this.plan.aggs;
    const vals = this.vals;
    for (let i = 0; i < aggs.length; i++) {
      const a = aggs[i]!;
      let v: unknown;
      try {
        v = a.arg!(row, this.env);
      } catch (e) {
        throw e instanceof RecordError ? e : new RecordError(a.pos, `${a.text}: ${(e as Error).message}`);
      }
      if (a.numeric && typeof v !== 'number' && v !== null && v !== undefined) {
        throw new RecordError(a.pos, `${a.text}: ${a.name}() needs numbers but got ${showValue(v)}; convert it with cast(x, 'float')`);
      }
      vals[i] = v;
    }
  }

  /** Adds the values evalArgs computed (for `row`) to a group. */
  private addTo(g: Group, row: Row): void {
    const vals = this.vals;
    const accs = g.accs;
    let i = 0;
    try {
      for (; i < accs.length; i++) accs[i]!.add(vals[i]);
    } catch (e) {
      const a = this.plan.aggs[i]!;
      throw new RecordError(a.pos, `${a.text}: ${(e as Error).message}`);
    }
    if (g.rows) {
      g.rows.push(row);
      this.meter.cells++;
    }
  }

  private keyOf(row: Row): Key {
    const keys = this.plan.keys;
    if (keys.length === 0) return '';
    if (keys.length === 1) {
      const v = keys[0]!(row, this.env);
      return v === undefined ? null : typeof v === 'object' && v !== null ? stringKey(v) : (v as Key);
    }
    let k = '';
    for (let i = 0; i < keys.length; i++) k += `${stringKey(keys[i]!(row, this.env))}\u0000`;
    return k;
  }

  private groupIn(groups: Groups, key: Key, row: Row): Group {
    let g = groups.get(key);
    if (!g) {
      g = this.newGroup(row);
      groups.set(key, g);
    }
    return g;
  }

  /** WHERE on one record: true, false (filtered), or the record's error for a non-bool. */
  private passes(row: Row): boolean {
    const f = this.plan.filter;
    if (!f) return true;
    return f(row, this.env) === true; // the plan checks that a condition is a bool (or null)
  }

  /** One record in. `meta` (e.g. the MQTT topic) is readable with meta('topic'). */
  push(row: Row, meta?: Record<string, unknown>): void {
    this.stats.in++;
    if (this.failed) {
      this.stats.errors++;
      return;
    }
    const p = this.plan;
    /** The record's time, once known: a record that fails after it still moves the watermark. */
    let timed: number | undefined;
    try {
      this.env.meta = meta;
      this.env.window = undefined;
      if (this.unseen) this.checkFields(row);
      if (!p.windowed) {
        let ts = 0;
        if (this.eventTime) {
          ts = this.timeOf(row);
          if (ts < this.watermark) {
            this.late(row);
            return;
          }
          if (ts > this.maxTs) {
            this.maxTs = ts;
            this.watermark = ts - (this.o.lateness ?? 0);
          }
        }
        if (!this.passes(row)) {
          this.stats.filtered++;
          return;
        }
        if (this.collected) {
          this.projectInto(this.collected.rows, this.collected.keys, row, undefined, []);
          this.meter.cells++;
          this.checkBudget();
          return;
        }
        const out = this.project(row, undefined);
        if (out) this.emitRows(this.limit([out]));
        return;
      }
      const w = p.window!;
      const ts = w.kind === 'count' && !this.eventTime ? this.o.clock.now() : this.timeOf(row);
      timed = ts;
      if (w.kind === 'count') {
        this.pushCount(row, ts);
        this.checkBudget();
        return;
      }
      if (w.kind === 'sliding') {
        // Every record fires the window (eKuiper); only records that pass WHERE are in it.
        if (!(ts > this.watermark || (!this.eventTime && ts >= this.watermark))) {
          this.late(row);
          return;
        }
        const pass = this.passes(row);
        if (pass) {
          this.keyOf(row);
          this.evalArgs(row);
        } else this.stats.filtered++; // a failing record is in no window
        this.slidePending.push({ ts, key: null, row, pass });
        this.meter.cells++;
        this.moved(ts);
        return;
      }
      if (!this.passes(row)) {
        this.stats.filtered++;
        this.moved(ts);
        return;
      }
      const key = this.keyOf(row);
      this.evalArgs(row);
      let accepted = false;
      if (w.kind === 'hopping' && w.hop > w.size && ts - Math.floor(ts / w.hop) * w.hop >= w.size) {
        // Between two windows (a hop longer than the size): in none, as in eKuiper.
        this.stats.filtered++;
        this.moved(ts);
        return;
      }
      if (this.panes) {
        accepted = this.pushPane(key, ts, row, w as { size: number; hop: number });
      } else if (w.kind === 'tumbling' || w.kind === 'hopping') {
        const hop = w.kind === 'tumbling' ? w.size : w.hop;
        for (let s = Math.floor(ts / hop) * hop; s > ts - w.size; s -= hop) {
          if (s + w.size <= this.watermark) break; // this and earlier windows have closed
          let groups = this.windows.get(s);
          if (!groups) {
            groups = new Map();
            this.windows.set(s, groups);
            if (s + w.size < this.earliestEnd) this.earliestEnd = s + w.size;
          }
          this.addTo(this.groupIn(groups, key, row), row);
          accepted = true;
        }
      } else {
        accepted = this.pushSession(key, ts, row, w.timeout, w.max);
      }
      if (!accepted) {
        this.late(row);
        return;
      }
      this.moved(ts);
    } catch (e) {
      this.stats.errors++;
      this.o.onError?.(row, e as Error);
      const w = p.window;
      if (timed !== undefined && w && w.kind !== 'count' && w.kind !== 'sliding') {
        try {
          this.moved(timed);
        } catch {
          /* emission errors are counted where they happen */
        }
      }
    }
  }

  private late(row: Row): void {
    this.stats.late++;
    if (this.o.latePolicy === 'side') this.o.onLate?.(row);
  }

  /** A record's time is known and it was not late: it moves the watermark (event time) or the timers. */
  private moved(ts: number): void {
    if (ts > this.maxTs) this.maxTs = ts;
    if (this.eventTime) this.advance(this.maxTs - (this.o.lateness ?? 0));
    else this.schedule();
    this.checkBudget();
  }

  private checkBudget(): void {
    this.stats.stateCells = this.meter.cells;
    if (this.meter.cells <= this.maxCells) return;
    const held = this.meter.cells;
    this.failed = new EwError(
      'RULE_STATE_BUDGET',
      `the rule held ${held} cells of window state (groups, buffered records, kept values), over its budget of ${this.maxCells}; it was stopped and its open windows dropped`,
    );
    // Give the memory back at once: the rule is stopped, nothing of it will be emitted.
    this.windows.clear();
    this.sessions.clear();
    this.panes?.clear();
    this.slideBuf = [];
    this.slidePending = [];
    this.countBuf = [];
    this.meter.cells = 0;
    this.stats.stateCells = 0;
    this.stop();
    this.o.onFatal?.(this.failed);
  }

  private pushSession(key: Key, ts: number, row: Row, timeout: number, max: number): boolean {
    let list = this.sessions.get(key);
    if (!list) {
      list = [];
      this.sessions.set(key, list);
    }
    for (const s of list) {
      if (ts >= s.start - timeout && ts <= s.last + timeout && ts < s.maxEnd) {
        if (ts < s.start) {
          s.start = ts;
          s.maxEnd = maxEndOf(ts, max);
        }
        s.last = Math.max(s.last, ts);
        this.addTo(s.group, row);
        return true;
      }
    }
    if (ts + timeout <= this.watermark) return false; // its session would already have closed
    const g = this.newGroup(row);
    this.addTo(g, row);
    list.push({ start: ts, last: ts, maxEnd: maxEndOf(ts, max), group: g });
    return true;
  }

  private pushCount(row: Row, ts: number): void {
    const w = this.plan.window as { kind: 'count'; count: number; interval?: number };
    // A record that fails (a type error in WHERE, a key or an aggregate input) is in no window;
    // one that WHERE filters out still counts: it is one of the n records.
    const pass = this.passes(row);
    if (pass) {
      this.keyOf(row);
      this.evalArgs(row);
    } else this.stats.filtered++;
    this.countBuf.push({ ts, key: null, row, pass });
    this.meter.cells++;
    this.countTotal++;
    this.sinceFire++;
    // eKuiper: COUNTWINDOW(n, i) fires at every i-th record with the last n, once n have arrived.
    const every = w.interval ?? w.count;
    if (this.countTotal < w.count || this.countTotal % every !== 0) return;
    this.sinceFire = 0;
    this.fireCount(this.countBuf.slice(-w.count));
    const drop = this.countBuf.length - Math.max(0, w.count - every);
    this.countBuf = this.countBuf.slice(drop);
    this.meter.cells -= drop;
  }

  private fireCount(buf: Buffered[]): void {
    if (buf.length === 0) return;
    const rows = buf.filter((b) => b.pass).map((b) => b.row);
    if (rows.length) this.emitGroups(this.groupRows(rows), { start: buf[0]!.ts, end: buf[buf.length - 1]!.ts });
  }

  /** Groups rows for an emission, outside the rule's state (count and sliding windows). */
  private groupRows(rows: Row[]): Groups {
    const groups: Groups = new Map();
    for (const r of rows) {
      const key = this.keyOf(r);
      try {
        this.evalArgs(r);
      } catch (e) {
        // Computed at emission (count and sliding windows): the record is left out of this window.
        this.stats.errors++;
        this.o.onError?.(r, e as Error);
        continue;
      }
      let g = groups.get(key);
      if (!g) {
        g = { accs: this.plan.aggs.map((a) => a.make(this.scratch)), first: r, rows: this.plan.rowsMode ? [] : undefined };
        groups.set(key, g);
      }
      this.addTo(g, r);
    }
    return groups;
  }

  /** Moves the watermark and emits every window that closed, in time order. */
  private advance(to: number): void {
    if (to <= this.watermark) return;
    this.watermark = to;
    const w = this.plan.window;
    if (!w) return;
    if (this.panes) {
      this.closePanes(to, w as { size: number; hop: number });
    } else if (w.kind === 'tumbling' || w.kind === 'hopping') {
      // Cheap exit on the hot path: nothing closes before the earliest open window's end.
      if (to < this.earliestEnd) return;
      const due = [...this.windows.keys()].filter((s) => s + w.size <= to).sort((a, b) => a - b);
      for (const s of due) {
        const groups = this.windows.get(s)!;
        this.windows.delete(s);
        this.release(groups);
        this.emitGroups(groups, { start: s, end: s + w.size });
      }
      this.earliestEnd = Infinity;
      for (const s of this.windows.keys()) if (s + w.size < this.earliestEnd) this.earliestEnd = s + w.size;
    } else if (w.kind === 'session') {
      const closed: { s: Session; key: Key }[] = [];
      for (const [key, list] of this.sessions) {
        const keep = list.filter((s) => {
          const done = s.last + w.timeout <= to || s.maxEnd <= to;
          if (done) closed.push({ s, key });
          return !done;
        });
        if (keep.length) this.sessions.set(key, keep);
        else this.sessions.delete(key);
      }
      closed.sort((a, b) => a.s.last - b.s.last);
      for (const { s, key } of closed) {
        this.release([s.group]);
        this.emitGroups(new Map([[key, s.group]]), { start: s.start, end: Math.min(s.last + w.timeout, s.maxEnd) });
      }
    } else if (w.kind === 'sliding') {
      this.slidePending.sort((a, b) => a.ts - b.ts);
      let i = 0;
      for (; i < this.slidePending.length && this.slidePending[i]!.ts <= to; i++) {
        const trig = this.slidePending[i]!;
        this.insertSorted(trig);
        // Both ends included, as eKuiper: [t - size, t]. Every group in the window is emitted.
        const from = trig.ts - w.size;
        const rows: Row[] = [];
        for (const b of this.slideBuf) if (b.pass && b.ts >= from && b.ts <= trig.ts) rows.push(b.row);
        if (rows.length) this.emitGroups(this.groupRows(rows), { start: from, end: trig.ts });
      }
      this.slidePending = this.slidePending.slice(i);
      const horizon = to - w.size;
      let cut = 0;
      while (cut < this.slideBuf.length && this.slideBuf[cut]!.ts < horizon) cut++;
      if (cut) {
        this.slideBuf = this.slideBuf.slice(cut);
        this.meter.cells -= cut;
      }
    }
  }

  private insertSorted(x: Buffered): void {
    let i = this.slideBuf.length;
    while (i > 0 && this.slideBuf[i - 1]!.ts > x.ts) i--;
    this.slideBuf.splice(i, 0, x);
  }

  private project(row: Row, window: { start: number; end: number } | undefined, aggs?: unknown[]): Row | undefined {
    const env = this.env;
    env.window = window;
    env.aggs = aggs;
    const p = this.plan;
    if (p.having) {
      if (p.having(row, env) !== true) return undefined; // the plan checks that it is a bool (or null)
    }
    const out: Row = {};
    const cols = p.columns;
    for (let i = 0; i < cols.length; i++) {
      const c = cols[i]!;
      if ('star' in c) Object.assign(out, row);
      else out[c.name] = c.fn(row, env);
    }
    return out;
  }

  /** One group's (or, in rows mode, one row's) output, and its ORDER BY keys when there are any. */
  private projectInto(
    rows: Row[],
    keys: unknown[][] | undefined,
    row: Row,
    window: { start: number; end: number } | undefined,
    aggs: unknown[],
  ): void {
    try {
      const r = this.project(row, window, aggs);
      if (!r) return;
      rows.push(r);
      if (keys) keys.push(this.plan.order.map((o) => o.fn(row, this.env)));
    } catch (e) {
      this.stats.errors++;
      this.o.onError?.(row, e as Error);
    }
  }

  private emitGroups(groups: Groups, window: { start: number; end: number } | undefined): void {
    const rows: Row[] = [];
    const order = this.plan.order;
    const keys = order.length ? ([] as unknown[][]) : undefined;
    // One array for the aggregate values, refilled per group: projections read it, never keep it.
    const aggs = new Array<unknown>(this.plan.aggs.length);
    for (const g of groups.values()) {
      try {
        for (let i = 0; i < aggs.length; i++) aggs[i] = g.accs[i]!.result();
      } catch (e) {
        this.stats.errors++;
        this.o.onError?.(g.first, e as Error);
        continue;
      }
      if (g.rows) for (const row of g.rows) this.projectInto(rows, keys, row, window, aggs);
      else this.projectInto(rows, keys, g.first, window, aggs);
    }
    this.emitRows(this.limit(this.sorted(rows, keys)));
  }

  /** ORDER BY: the rows in key order (stable). */
  private sorted(rows: Row[], keys: unknown[][] | undefined): Row[] {
    if (!keys) return rows;
    const order = this.plan.order;
    const idx = rows.map((_, i) => i);
    idx.sort((a, b) => {
      for (let i = 0; i < order.length; i++) {
        const c = orderValue(keys[a]![i], keys[b]![i]);
        if (c !== 0) return order[i]!.desc ? -c : c;
      }
      return a - b;
    });
    return idx.map((i) => rows[i]!);
  }

  private limit(rows: Row[]): Row[] {
    const n = this.plan.limit;
    return n !== undefined && rows.length > n ? rows.slice(0, n) : rows;
  }

  private emitRows(rows: Row[]): void {
    if (rows.length === 0) return;
    this.stats.out += rows.length;
    this.stats.lastOutputAt = this.o.clock.now();
    this.o.emit(rows);
  }

  /** Processing time: a timer for the earliest deadline of the open windows. */
  private schedule(): void {
    const w = this.plan.window;
    if (!w) return;
    let next = Infinity;
    if (this.panes) {
      if (this.panes.size && this.nextStart !== undefined)
        next =
          Math.max(this.nextStart, this.minPane() - (w as { size: number }).size + (w as { hop: number }).hop) +
          (w as { size: number }).size;
    } else if (w.kind === 'tumbling' || w.kind === 'hopping') for (const s of this.windows.keys()) next = Math.min(next, s + w.size);
    else if (w.kind === 'session')
      for (const list of this.sessions.values()) for (const s of list) next = Math.min(next, s.last + w.timeout, s.maxEnd);
    else if (w.kind === 'sliding' && this.slidePending.length) next = this.o.clock.now();
    if (next === Infinity || next >= this.timerAt) return;
    this.cancelTimer?.();
    this.timerAt = next;
    this.cancelTimer = this.o.clock.setTimer(Math.max(0, next - this.o.clock.now()), () => {
      this.timerAt = Infinity;
      this.cancelTimer = undefined;
      this.advance(this.o.clock.now());
      this.schedule();
    });
  }

  /** Closes every open window, emitting what it holds (end of input, or rule stop). */
  flush(): void {
    const w = this.plan.window;
    if (this.failed) return;
    if (this.collected) {
      const { rows, keys } = this.collected;
      this.collected = { rows: [], keys: keys ? [] : undefined };
      this.meter.cells = 0;
      this.emitRows(this.limit(this.sorted(rows, keys)));
      return;
    }
    if (!w) return;
    if (w.kind === 'count') {
      // The last, partial window, if records came since the last one fired.
      if (this.sinceFire > 0) this.fireCount(this.countBuf.slice(-w.count));
      this.sinceFire = 0;
      this.meter.cells -= this.countBuf.length;
      this.countBuf = [];
      return;
    }
    const wm = this.watermark;
    this.advance(Infinity);
    this.watermark = Math.max(wm, this.maxTs - (this.o.lateness ?? 0));
  }

  stop(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  /**
   * Checkpoint seam (src/stream/checkpoint.ts encodes it; src/edge/rules.ts takes it with the
   * rule's journal cursor): the rule's mutable state — open windows, panes, sessions, buffered
   * records, watermark, counters. Only data: accumulators travel as their fields and come back
   * through the plan's own constructors in `restore`. Taken between records, never inside one.
   */
  snapshot(): RuntimeState {
    return {
      v: 1,
      watermark: this.watermark,
      earliestEnd: this.earliestEnd,
      maxTs: this.maxTs,
      windows: this.windows,
      sessions: this.sessions,
      slideBuf: this.slideBuf,
      slidePending: this.slidePending,
      countBuf: this.countBuf,
      countTotal: this.countTotal,
      sinceFire: this.sinceFire,
      cells: this.meter.cells,
      stats: { ...this.stats },
      checked: this.checked,
      panes: this.panes,
      nextStart: this.nextStart,
    };
  }

  /** Puts back a snapshot taken from a runtime of the same plan (a fresh one, before any record). */
  restore(st: RuntimeState): void {
    if (st.v !== 1) throw new Error(`unknown rule checkpoint version ${String(st.v)}`);
    const groups = (g: Groups): Groups => new Map([...g].map(([k, x]) => [k, this.revive(x)]));
    this.watermark = st.watermark;
    this.earliestEnd = st.earliestEnd;
    this.maxTs = st.maxTs;
    this.windows.clear();
    for (const [start, g] of st.windows) this.windows.set(start, groups(g));
    this.sessions.clear();
    for (const [k, list] of st.sessions)
      this.sessions.set(
        k,
        list.map((x) => ({ ...x, group: this.revive(x.group) })),
      );
    this.slideBuf = st.slideBuf;
    this.slidePending = st.slidePending;
    this.countBuf = st.countBuf;
    this.countTotal = st.countTotal;
    this.sinceFire = st.sinceFire;
    this.meter.cells = st.cells;
    Object.assign(this.stats, st.stats);
    this.checked = st.checked;
    if (this.panes && st.panes) {
      this.panes.clear();
      for (const [p, g] of st.panes) this.panes.set(p, groups(g));
    }
    this.nextStart = st.nextStart;
    if (!this.eventTime) this.schedule();
  }

  /** A group from a snapshot: each accumulator made anew by its aggregate, then given its fields. */
  private revive(g: Group): Group {
    return { ...g, accs: g.accs.map((saved, i) => reviveInto(this.plan.aggs[i]!.make(this.meter), saved, this.meter)) };
  }
}

/** The data a checkpoint holds (see RuleRuntime.snapshot). */
export interface RuntimeState {
  v: 1;
  watermark: number;
  earliestEnd: number;
  maxTs: number;
  windows: Map<number, Groups>;
  sessions: Map<Key, Session[]>;
  slideBuf: Buffered[];
  slidePending: Buffered[];
  countBuf: Buffered[];
  countTotal: number;
  sinceFire: number;
  cells: number;
  stats: RuleStats;
  checked: number;
  panes: Map<number, Groups> | undefined;
  nextStart: number | undefined;
}

/** Copies a saved accumulator's fields into a fresh one; nested accumulators (DISTINCT's inner) likewise; the shared meter stays. */
function reviveInto<T extends object>(target: T, saved: unknown, meter: Meter): T {
  const t = target as Record<string, unknown>;
  for (const [k, v] of Object.entries(saved as Record<string, unknown>)) {
    const cur = t[k];
    if (cur === meter) continue;
    const proto = cur && typeof cur === 'object' ? Object.getPrototypeOf(cur) : null;
    if (proto && proto !== Object.prototype && !(cur instanceof Map) && !(cur instanceof Set) && !Array.isArray(cur))
      reviveInto(cur as object, v, meter);
    else t[k] = v;
  }
  return target;
}

/** eKuiper checks a session's length at multiples of its maximum: the first check at or after start + max closes it. */
function maxEndOf(start: number, max: number): number {
  return Math.ceil((start + max) / max) * max;
}
