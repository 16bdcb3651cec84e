import type { Clock } from '../lib/clock.ts';
import type { Acc } from './functions.ts';
import type { Env, Plan, Row } from './planner.ts';

/**
 * Runs one planned rule: owns its window state, its watermark and its timers; everything that
 * decides (filter, keys, aggregates, projection) is the plan's pure closures. Time is the
 * injected clock (processing time) or a field of the records (event time).
 *
 * Event time: the watermark is the largest event time seen minus the allowed lateness; a window
 * closes and emits when the watermark passes its end. A record whose windows have all closed is
 * late: it is dropped and counted (`latePolicy: 'drop'`, the default) or handed to `onLate`
 * (`'side'`). Processing time: a record's time is its arrival on the clock, and windows close on
 * timers. `flush()` closes every open window (end of input).
 *
 * One record's failure (a missing timestamp, a function that throws) is counted and handed to
 * `onError`; the rule goes on with the next record.
 */
export interface RuntimeOptions {
  clock: Clock;
  /** Allowed lateness for event time, ms. Default 0. */
  lateness?: number;
  latePolicy?: 'drop' | 'side';
  emit: (rows: Row[]) => void;
  onLate?: (record: Row) => void;
  onError?: (record: Row, error: Error) => void;
}

export interface RuleStats { in: number; out: number; filtered: number; late: number; errors: number; lastOutputAt: number | null }

interface Group { accs: Acc[]; last: Row }
type Groups = Map<Key, Group>;

interface Session { start: number; last: number; group: Group }

/**
 * A group's Map key. One primitive key is used as it is (a Map tells 1 from '1'), which saves a
 * string per record on the hot path; several keys, or an object, become one string.
 */
type Key = string | number | boolean | null;
const stringKey = (v: unknown): string => (v === null || v === undefined ? '\u0001' : typeof v === 'object' ? JSON.stringify(v) : typeof v === 'string' ? `s${v}` : `${typeof v}${String(v)}`);

export class RuleRuntime {
  readonly stats: RuleStats = { in: 0, out: 0, filtered: 0, late: 0, errors: 0, lastOutputAt: null };
  private watermark = -Infinity;
  /** End of the earliest open time window (Infinity when none). */
  private earliestEnd = Infinity;
  private maxTs = -Infinity;
  /** Time windows (tumbling, hopping) by start time. */
  private readonly windows = new Map<number, Groups>();
  /** Session windows by group key. */
  private readonly sessions = new Map<Key, Session[]>();
  /** Sliding windows: buffered records (time, key, record) in time order. */
  private slideBuf: { ts: number; key: Key; row: Row }[] = [];
  private slidePending: { ts: number; key: Key; row: Row }[] = [];
  /** Count windows. */
  private countBuf: Row[] = [];
  private cancelTimer?: () => void;
  private timerAt = Infinity;
  private readonly eventTime: boolean;
  private readonly env: Env;
  /**
   * Hopping windows whose size is a multiple of the hop run on panes (one per hop): a record
   * updates one pane, not every window covering it, and a closing window merges its panes —
   * size/hop times less work per record (how Flink slices windows).
   */
  private readonly panes?: Map<number, Groups>;
  /** Start of the earliest pane-built window not emitted yet. */
  private nextStart?: number;

  constructor(private readonly plan: Plan, private readonly o: RuntimeOptions) {
    this.eventTime = !!plan.stream.timestamp;
    this.env = { now: () => o.clock.now() };
    const w = plan.window;
    if (w?.kind === 'hopping' && w.size > w.hop && w.size % w.hop === 0) this.panes = new Map();
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
    if (!groups) { groups = new Map(); this.panes!.set(p, groups); }
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
          if (!m) { m = { accs: this.plan.aggs.map((a) => a.make()), last: g.last }; merged.set(key, m); }
          for (let i = 0; i < g.accs.length; i++) m.accs[i]!.merge(g.accs[i]!);
          m.last = g.last;
        }
      }
      if (merged.size) this.emitGroups(merged, { start, end: start + w.size });
      panes.delete(start); // the window starting at this pane was its last one
      this.nextStart = start + w.hop;
    }
  }

  private timeOf(row: Row): number {
    if (!this.eventTime) return this.o.clock.now();
    const v = row[this.plan.stream.timestamp!];
    const t = typeof v === 'number' ? v : typeof v === 'string' ? Date.parse(v) : NaN;
    if (!Number.isFinite(t)) throw new Error(`record has no valid event time in "${this.plan.stream.timestamp}" (milliseconds or an ISO-8601 string)`);
    return t;
  }

  private newGroup(row: Row): Group {
    return { accs: this.plan.aggs.map((a) => a.make()), last: row };
  }

  private addTo(g: Group, row: Row): void {
    const aggs = this.plan.aggs;
    for (let i = 0; i < aggs.length; i++) g.accs[i]!.add(aggs[i]!.arg!(row, this.env));
    g.last = row;
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
    if (!g) { g = this.newGroup(row); groups.set(key, g); }
    return g;
  }

  /** One record in. `meta` (e.g. the MQTT topic) is readable with meta('topic'). */
  push(row: Row, meta?: Record<string, unknown>): void {
    this.stats.in++;
    const p = this.plan;
    try {
      this.env.meta = meta;
      this.env.window = undefined;
      if (p.filter && p.filter(row, this.env) !== true) { this.stats.filtered++; return; }
      if (!p.windowed) { this.emitRows([this.project(row, undefined)].filter((r): r is Row => r !== undefined)); return; }
      const w = p.window!;
      if (w.kind === 'count') { this.pushCount(row); return; }
      const ts = this.timeOf(row);
      const key = this.keyOf(row);
      let accepted = false;
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
      } else if (w.kind === 'session') {
        accepted = this.pushSession(key, ts, row, w.timeout, w.max);
      } else {
        if (ts > this.watermark || (!this.eventTime && ts >= this.watermark)) {
          this.slidePending.push({ ts, key, row });
          accepted = true;
        }
      }
      if (!accepted) {
        this.stats.late++;
        if (this.o.latePolicy === 'side') this.o.onLate?.(row);
        return;
      }
      if (ts > this.maxTs) this.maxTs = ts;
      if (this.eventTime) this.advance(this.maxTs - (this.o.lateness ?? 0));
      else this.schedule();
    } catch (e) {
      this.stats.errors++;
      this.o.onError?.(row, e as Error);
    }
  }

  private pushSession(key: Key, ts: number, row: Row, timeout: number, max?: number): boolean {
    let list = this.sessions.get(key);
    if (!list) { list = []; this.sessions.set(key, list); }
    for (const s of list) {
      if (ts >= s.start - timeout && ts <= s.last + timeout && (max === undefined || Math.max(s.last, ts) - Math.min(s.start, ts) < max)) {
        s.start = Math.min(s.start, ts);
        s.last = Math.max(s.last, ts);
        this.addTo(s.group, row);
        return true;
      }
    }
    if (ts + timeout <= this.watermark) return false; // its session would already have closed
    const g = this.newGroup(row);
    this.addTo(g, row);
    list.push({ start: ts, last: ts, group: g });
    return true;
  }

  private pushCount(row: Row): void {
    const w = this.plan.window as { kind: 'count'; count: number; interval?: number };
    this.countBuf.push(row);
    if (this.countBuf.length < w.count) return;
    this.emitGroups(this.groupRows(this.countBuf), undefined);
    this.countBuf = w.interval ? this.countBuf.slice(w.interval) : [];
  }

  private groupRows(rows: Row[]): Groups {
    const groups: Groups = new Map();
    for (const r of rows) {
      const key = this.keyOf(r);
      this.addTo(this.groupIn(groups, key, r), r);
    }
    return groups;
  }

  /** Moves the watermark and emits every window that closed, in time order. */
  private advance(to: number): void {
    if (to <= this.watermark) return;
    this.watermark = to;
    const w = this.plan.window!;
    if (this.panes) {
      this.closePanes(to, w as { size: number; hop: number });
    } else if (w.kind === 'tumbling' || w.kind === 'hopping') {
      // Cheap exit on the hot path: nothing closes before the earliest open window's end.
      if (to < this.earliestEnd) return;
      const due = [...this.windows.keys()].filter((s) => s + w.size <= to).sort((a, b) => a - b);
      for (const s of due) {
        const groups = this.windows.get(s)!;
        this.windows.delete(s);
        this.emitGroups(groups, { start: s, end: s + w.size });
      }
      this.earliestEnd = Infinity;
      for (const s of this.windows.keys()) if (s + w.size < this.earliestEnd) this.earliestEnd = s + w.size;
    } else if (w.kind === 'session') {
      const closed: { s: Session; key: Key }[] = [];
      for (const [key, list] of this.sessions) {
        const keep = list.filter((s) => {
          const done = s.last + w.timeout <= to || (w.max !== undefined && s.start + w.max <= to);
          if (done) closed.push({ s, key });
          return !done;
        });
        if (keep.length) this.sessions.set(key, keep); else this.sessions.delete(key);
      }
      closed.sort((a, b) => a.s.last - b.s.last);
      for (const { s, key } of closed) this.emitGroups(new Map([[key, s.group]]), { start: s.start, end: s.last + w.timeout });
    } else if (w.kind === 'sliding') {
      this.slidePending.sort((a, b) => a.ts - b.ts);
      let i = 0;
      for (; i < this.slidePending.length && this.slidePending[i]!.ts <= to; i++) {
        const trig = this.slidePending[i]!;
        this.insertSorted(trig);
        const from = trig.ts - w.size;
        const g = this.newGroup(trig.row);
        for (const b of this.slideBuf) if (b.key === trig.key && b.ts > from && b.ts <= trig.ts) this.addTo(g, b.row);
        g.last = trig.row;
        this.emitGroups(new Map([[trig.key, g]]), { start: from, end: trig.ts });
      }
      this.slidePending = this.slidePending.slice(i);
      const horizon = to - w.size;
      let cut = 0;
      while (cut < this.slideBuf.length && this.slideBuf[cut]!.ts <= horizon) cut++;
      if (cut) this.slideBuf = this.slideBuf.slice(cut);
    }
  }

  private insertSorted(x: { ts: number; key: Key; row: Row }): void {
    let i = this.slideBuf.length;
    while (i > 0 && this.slideBuf[i - 1]!.ts > x.ts) i--;
    this.slideBuf.splice(i, 0, x);
  }

  private project(row: Row, window: { start: number; end: number } | undefined, aggs?: unknown[]): Row | undefined {
    const env = this.env;
    env.window = window;
    env.aggs = aggs;
    if (this.plan.having && this.plan.having(row, env) !== true) return undefined;
    const out: Row = {};
    for (const c of this.plan.columns) {
      if ('star' in c) Object.assign(out, row);
      else out[c.name] = c.fn(row, env);
    }
    return out;
  }

  private emitGroups(groups: Groups, window: { start: number; end: number } | undefined): void {
    const rows: Row[] = [];
    // One array for the aggregate values, refilled per group: projections read it, never keep it.
    const aggs = new Array<unknown>(this.plan.aggs.length);
    for (const g of groups.values()) {
      try {
        for (let i = 0; i < aggs.length; i++) aggs[i] = g.accs[i]!.result();
        const r = this.project(g.last, window, aggs);
        if (r) rows.push(r);
      } catch (e) {
        this.stats.errors++;
        this.o.onError?.(g.last, e as Error);
      }
    }
    this.emitRows(rows);
  }

  private emitRows(rows: Row[]): void {
    if (rows.length === 0) return;
    this.stats.out += rows.length;
    this.stats.lastOutputAt = this.o.clock.now();
    this.o.emit(rows);
  }

  /** Processing time: a timer for the earliest deadline of the open windows. */
  private schedule(): void {
    const w = this.plan.window!;
    let next = Infinity;
    if (this.panes) { if (this.panes.size && this.nextStart !== undefined) next = Math.max(this.nextStart, this.minPane() - (w as { size: number }).size + (w as { hop: number }).hop) + (w as { size: number }).size; }
    else if (w.kind === 'tumbling' || w.kind === 'hopping') for (const s of this.windows.keys()) next = Math.min(next, s + w.size);
    else if (w.kind === 'session') for (const list of this.sessions.values()) for (const s of list) next = Math.min(next, s.last + w.timeout, w.max !== undefined ? s.start + w.max : Infinity);
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
    if (!w) return;
    if (w.kind === 'count') {
      if (this.countBuf.length) this.emitGroups(this.groupRows(this.countBuf), undefined);
      this.countBuf = [];
      return;
    }
    this.advance(Infinity);
    this.watermark = Math.max(this.maxTs, -Infinity);
  }

  stop(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }
}
