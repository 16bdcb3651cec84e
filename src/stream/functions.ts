/**
 * The function library of the SQL dialect: scalar functions (math, strings, time, JSON,
 * conversion) and aggregates. Every function declares its arity so that the planner rejects a
 * wrong call with line and column before a rule ever runs. Functions are null-tolerant: a null
 * argument gives null, never an exception.
 */
export type SqlType = 'number' | 'string' | 'bool' | 'object' | 'array' | 'any' | 'null';

export interface EvalEnv {
  /** Processing time (the injected clock). */
  now(): number;
  /** The window being emitted, when there is one. */
  window?: { start: number; end: number };
  /** Source metadata: the MQTT topic of the record. */
  meta?: Record<string, unknown>;
}

export interface ScalarFn {
  min: number;
  max: number;
  returns: SqlType;
  fn: (args: unknown[], env: EvalEnv) => unknown;
  /** Functions that read the environment (now, window_start) must not be folded as constants. */
  pure?: false;
}

const num = (v: unknown): number | null => (typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' && !Number.isNaN(Number(v)) ? Number(v) : typeof v === 'boolean' ? (v ? 1 : 0) : null);
const str = (v: unknown): string | null => (v === null || v === undefined ? null : typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v));
const math1 = (f: (x: number) => number): ScalarFn => ({ min: 1, max: 1, returns: 'number', fn: ([a]) => { const x = num(a); return x === null ? null : f(x); } });
const anyNull = (args: unknown[]) => args.some((a) => a === null || a === undefined);

function dig(v: unknown, path: (string | number)[]): unknown {
  let cur = v;
  for (const p of path) {
    if (cur === null || cur === undefined) return null;
    if (typeof p === 'number') cur = Array.isArray(cur) ? cur[p < 0 ? cur.length + p : p] : undefined;
    else cur = typeof cur === 'object' ? (cur as Record<string, unknown>)[p] : undefined;
  }
  return cur === undefined ? null : cur;
}

/** `$.a.b[0].c` → ['a','b',0,'c']; the small JSONPath subset that covers field access. */
export function jsonPath(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  const re = /\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\['([^']*)'\]/g;
  const body = path.startsWith('$') ? path.slice(1) : `.${path}`;
  let m: RegExpExecArray | null;
  let consumed = 0;
  while ((m = re.exec(body))) {
    if (m.index !== consumed) throw new Error(`unsupported JSON path "${path}"`);
    consumed = re.lastIndex;
    out.push(m[1] ?? (m[2] !== undefined ? Number(m[2]) : m[3]!));
  }
  if (consumed !== body.length) throw new Error(`unsupported JSON path "${path}"`);
  return out;
}

const pad2 = (n: number) => String(n).padStart(2, '0');
function formatTime(ms: number, fmt: string): string {
  const d = new Date(ms);
  if (fmt === 'iso' || fmt === '') return d.toISOString();
  return fmt
    .replace(/YYYY/g, String(d.getUTCFullYear()))
    .replace(/MM/g, pad2(d.getUTCMonth() + 1))
    .replace(/DD/g, pad2(d.getUTCDate()))
    .replace(/HH/g, pad2(d.getUTCHours()))
    .replace(/mm/g, pad2(d.getUTCMinutes()))
    .replace(/ss/g, pad2(d.getUTCSeconds()))
    .replace(/SSS/g, String(d.getUTCMilliseconds()).padStart(3, '0'));
}
const timePart = (f: (d: Date) => number): ScalarFn => ({ min: 1, max: 1, returns: 'number', fn: ([a]) => { const x = num(a); return x === null ? null : f(new Date(x)); } });

export const SCALARS: Record<string, ScalarFn> = {
  // math
  abs: math1(Math.abs), ceil: math1(Math.ceil), floor: math1(Math.floor), sqrt: math1(Math.sqrt), exp: math1(Math.exp),
  ln: math1(Math.log), log10: math1(Math.log10), sign: math1(Math.sign), sin: math1(Math.sin), cos: math1(Math.cos),
  tan: math1(Math.tan), asin: math1(Math.asin), acos: math1(Math.acos), atan: math1(Math.atan),
  round: { min: 1, max: 2, returns: 'number', fn: ([a, d]) => { const x = num(a); if (x === null) return null; const p = 10 ** (num(d) ?? 0); return Math.round(x * p) / p; } },
  log: { min: 1, max: 2, returns: 'number', fn: (args) => { if (anyNull(args)) return null; return args.length === 1 ? Math.log10(num(args[0])!) : Math.log(num(args[1])!) / Math.log(num(args[0])!); } },
  power: { min: 2, max: 2, returns: 'number', fn: ([a, b]) => (a === null || b === null ? null : (num(a)! ** num(b)!)) },
  pow: { min: 2, max: 2, returns: 'number', fn: ([a, b]) => (a === null || b === null ? null : (num(a)! ** num(b)!)) },
  mod: { min: 2, max: 2, returns: 'number', fn: ([a, b]) => (a === null || b === null ? null : num(a)! % num(b)!) },
  atan2: { min: 2, max: 2, returns: 'number', fn: ([a, b]) => (a === null || b === null ? null : Math.atan2(num(a)!, num(b)!)) },
  pi: { min: 0, max: 0, returns: 'number', fn: () => Math.PI },
  greatest: { min: 1, max: 64, returns: 'any', fn: (args) => args.filter((a) => a !== null && a !== undefined).reduce<unknown>((m, a) => (m === null || (a as number) > (m as number) ? a : m), null) },
  least: { min: 1, max: 64, returns: 'any', fn: (args) => args.filter((a) => a !== null && a !== undefined).reduce<unknown>((m, a) => (m === null || (a as number) < (m as number) ? a : m), null) },
  // strings
  lower: { min: 1, max: 1, returns: 'string', fn: ([a]) => str(a)?.toLowerCase() ?? null },
  upper: { min: 1, max: 1, returns: 'string', fn: ([a]) => str(a)?.toUpperCase() ?? null },
  length: { min: 1, max: 1, returns: 'number', fn: ([a]) => (a === null || a === undefined ? null : Array.isArray(a) ? a.length : str(a)!.length) },
  trim: { min: 1, max: 1, returns: 'string', fn: ([a]) => str(a)?.trim() ?? null },
  ltrim: { min: 1, max: 1, returns: 'string', fn: ([a]) => str(a)?.trimStart() ?? null },
  rtrim: { min: 1, max: 1, returns: 'string', fn: ([a]) => str(a)?.trimEnd() ?? null },
  concat: { min: 1, max: 64, returns: 'string', fn: (args) => (anyNull(args) ? null : args.map((a) => str(a)).join('')) },
  substring: { min: 2, max: 3, returns: 'string', fn: ([s, a, b]) => { const x = str(s); return x === null ? null : x.substring(num(a) ?? 0, b === undefined ? undefined : num(b) ?? undefined); } },
  startswith: { min: 2, max: 2, returns: 'bool', fn: ([s, p]) => (anyNull([s, p]) ? null : str(s)!.startsWith(str(p)!)) },
  endswith: { min: 2, max: 2, returns: 'bool', fn: ([s, p]) => (anyNull([s, p]) ? null : str(s)!.endsWith(str(p)!)) },
  indexof: { min: 2, max: 2, returns: 'number', fn: ([s, p]) => (anyNull([s, p]) ? null : str(s)!.indexOf(str(p)!)) },
  replace: { min: 3, max: 3, returns: 'string', fn: ([s, a, b]) => (anyNull([s, a, b]) ? null : str(s)!.split(str(a)!).join(str(b)!)) },
  split_value: { min: 3, max: 3, returns: 'string', fn: ([s, sep, i]) => (anyNull([s, sep, i]) ? null : str(s)!.split(str(sep)!)[num(i)!] ?? null) },
  regexp_matches: { min: 2, max: 2, returns: 'bool', fn: ([s, re]) => (anyNull([s, re]) ? null : new RegExp(str(re)!).test(str(s)!)) },
  lpad: { min: 2, max: 3, returns: 'string', fn: ([s, n, c]) => (anyNull([s, n]) ? null : str(s)!.padStart(num(n)!, c === undefined ? ' ' : str(c)!)) },
  rpad: { min: 2, max: 3, returns: 'string', fn: ([s, n, c]) => (anyNull([s, n]) ? null : str(s)!.padEnd(num(n)!, c === undefined ? ' ' : str(c)!)) },
  // time (milliseconds since the epoch, UTC)
  now: { min: 0, max: 0, returns: 'number', fn: (_a, env) => env.now(), pure: false },
  window_start: { min: 0, max: 0, returns: 'number', fn: (_a, env) => env.window?.start ?? null, pure: false },
  window_end: { min: 0, max: 0, returns: 'number', fn: (_a, env) => env.window?.end ?? null, pure: false },
  format_time: { min: 1, max: 2, returns: 'string', fn: ([t, f]) => { const x = num(t); return x === null ? null : formatTime(x, f === undefined ? 'iso' : str(f) ?? 'iso'); } },
  to_timestamp: { min: 1, max: 1, returns: 'number', fn: ([s]) => { if (s === null || s === undefined) return null; if (typeof s === 'number') return s; const t = Date.parse(str(s)!); return Number.isNaN(t) ? null : t; } },
  year: timePart((d) => d.getUTCFullYear()), month: timePart((d) => d.getUTCMonth() + 1), day: timePart((d) => d.getUTCDate()),
  hour: timePart((d) => d.getUTCHours()), minute: timePart((d) => d.getUTCMinutes()), second: timePart((d) => d.getUTCSeconds()),
  // JSON and conversion
  json_path_query: { min: 2, max: 2, returns: 'any', fn: ([o, p]) => (anyNull([o, p]) ? null : dig(typeof o === 'string' ? JSON.parse(o) : o, jsonPath(str(p)!))) },
  to_json: { min: 1, max: 1, returns: 'string', fn: ([a]) => (a === undefined ? null : JSON.stringify(a)) },
  parse_json: { min: 1, max: 1, returns: 'any', fn: ([a]) => { if (a === null || a === undefined) return null; try { return JSON.parse(str(a)!); } catch { return null; } } },
  cast: {
    min: 2, max: 2, returns: 'any',
    fn: ([a, t]) => {
      if (a === null || a === undefined) return null;
      switch (str(t)) {
        case 'float': case 'number': return num(a);
        case 'int': case 'bigint': { const x = num(a); return x === null ? null : Math.trunc(x); }
        case 'string': return str(a);
        case 'bool': case 'boolean': return typeof a === 'string' ? a === 'true' || a === '1' : Boolean(a);
        default: throw new Error(`cast to "${String(t)}" is not supported: use float, int, string or bool`);
      }
    },
  },
  coalesce: { min: 1, max: 64, returns: 'any', fn: (args) => args.find((a) => a !== null && a !== undefined) ?? null },
  nullif: { min: 2, max: 2, returns: 'any', fn: ([a, b]) => (a === b ? null : a ?? null) },
  meta: { min: 1, max: 1, returns: 'any', fn: ([k], env) => (env.meta ? (env.meta[str(k) ?? ''] ?? null) : null), pure: false },
};

/** An aggregate's running state for one group of one window. */
/**
 * An aggregate's running state for one group of one window. `merge` folds in another state of
 * the same aggregate that saw later records (hopping windows are built from panes this way).
 */
export interface Acc { add(v: unknown): void; result(): unknown; merge(later: Acc): void }

export interface AggregateFn {
  /** Arguments after the first (e.g. percentile's fraction): constants, checked by the planner. */
  extra: number;
  returns: SqlType;
  /** `count(*)` is the only aggregate that takes `*`. */
  star?: boolean;
  make(extra: unknown[]): Acc;
}

const numeric = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : num(v));

// Accumulators are small classes, not closures: a window can hold a group per key, each with
// one accumulator per aggregate, and classes keep that allocation cheap and call sites monomorphic.
class CountAcc implements Acc {
  n = 0;
  add(v: unknown) { if (v !== null && v !== undefined) this.n++; }
  result() { return this.n; }
  merge(o: CountAcc) { this.n += o.n; }
}
class SumAcc implements Acc {
  s = 0; any = false;
  add(v: unknown) { const x = typeof v === 'number' ? v : numeric(v); if (x !== null) { this.s += x; this.any = true; } }
  result() { return this.any ? this.s : null; }
  merge(o: SumAcc) { this.s += o.s; this.any ||= o.any; }
}
class AvgAcc implements Acc {
  s = 0; n = 0;
  add(v: unknown) { const x = typeof v === 'number' ? v : numeric(v); if (x !== null) { this.s += x; this.n++; } }
  result() { return this.n ? this.s / this.n : null; }
  merge(o: AvgAcc) { this.s += o.s; this.n += o.n; }
}
class MinAcc implements Acc {
  m: unknown = null;
  add(v: unknown) { if (v !== null && v !== undefined && (this.m === null || (v as number) < (this.m as number))) this.m = v; }
  result() { return this.m; }
  merge(o: MinAcc) { this.add(o.m); }
}
class MaxAcc implements Acc {
  m: unknown = null;
  add(v: unknown) { if (v !== null && v !== undefined && (this.m === null || (v as number) > (this.m as number))) this.m = v; }
  result() { return this.m; }
  merge(o: MaxAcc) { this.add(o.m); }
}
class Welford implements Acc {
  n = 0; mean = 0; m2 = 0;
  constructor(private readonly kind: 'var' | 'stddev') {}
  add(v: unknown) { const x = numeric(v); if (x === null) return; this.n++; const d = x - this.mean; this.mean += d / this.n; this.m2 += d * (x - this.mean); }
  /** Chan et al.'s parallel combination of two Welford states. */
  merge(o: Welford) {
    if (o.n === 0) return;
    const n = this.n + o.n;
    const d = o.mean - this.mean;
    this.mean += (d * o.n) / n;
    this.m2 += o.m2 + (d * d * this.n * o.n) / n;
    this.n = n;
  }
  result() { if (this.n < 2) return this.n === 1 ? 0 : null; const v = this.m2 / (this.n - 1); return this.kind === 'var' ? v : Math.sqrt(v); }
}
class PercentileAcc implements Acc {
  vals: number[] = [];
  constructor(private readonly p: number) {}
  add(v: unknown) { const x = numeric(v); if (x !== null) this.vals.push(x); }
  merge(o: PercentileAcc) { for (const x of o.vals) this.vals.push(x); }
  result() { return percentileOf(this.vals, this.p); }
}
class FirstAcc implements Acc {
  f: unknown = null; seen = false;
  add(v: unknown) { if (!this.seen) { this.f = v ?? null; this.seen = true; } }
  result() { return this.f; }
  merge(o: FirstAcc) { if (!this.seen && o.seen) { this.f = o.f; this.seen = true; } }
}
class LastAcc implements Acc {
  l: unknown = null; seen = false;
  add(v: unknown) { this.l = v ?? null; this.seen = true; }
  result() { return this.l; }
  merge(o: LastAcc) { if (o.seen) { this.l = o.l; this.seen = true; } }
}
class CollectAcc implements Acc {
  out: unknown[] = [];
  add(v: unknown) { this.out.push(v ?? null); }
  result() { return this.out; }
  merge(o: CollectAcc) { for (const v of o.out) this.out.push(v); }
}

function percentileOf(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const s = values.slice().sort((a, b) => a - b);
  const idx = p * (s.length - 1);
  const lo = Math.floor(idx);
  const hi = Math.ceil(idx);
  return s[lo]! + (s[hi]! - s[lo]!) * (idx - lo);
}

export const AGGREGATES: Record<string, AggregateFn> = {
  count: { extra: 0, returns: 'number', star: true, make: () => new CountAcc() },
  sum: { extra: 0, returns: 'number', make: () => new SumAcc() },
  avg: { extra: 0, returns: 'number', make: () => new AvgAcc() },
  min: { extra: 0, returns: 'any', make: () => new MinAcc() },
  max: { extra: 0, returns: 'any', make: () => new MaxAcc() },
  stddev: { extra: 0, returns: 'number', make: () => new Welford('stddev') },
  var: { extra: 0, returns: 'number', make: () => new Welford('var') },
  percentile: { extra: 1, returns: 'number', make: ([p]) => new PercentileAcc(p as number) },
  median: { extra: 0, returns: 'number', make: () => new PercentileAcc(0.5) },
  first: { extra: 0, returns: 'any', make: () => new FirstAcc() },
  last: { extra: 0, returns: 'any', make: () => new LastAcc() },
  collect: { extra: 0, returns: 'array', star: true, make: () => new CollectAcc() },
};

/** count(DISTINCT x) and friends: the same aggregate over each distinct value once. */
export function distinctAcc(inner: Acc): Acc {
  return new DistinctAcc(inner);
}

class DistinctAcc implements Acc {
  /** key → value, so that merging can replay the other side's distinct values. */
  readonly seen = new Map<unknown, unknown>();
  constructor(private readonly inner: Acc) {}
  add(v: unknown) {
    const key = v !== null && typeof v === 'object' ? JSON.stringify(v) : v;
    if (this.seen.has(key)) return;
    this.seen.set(key, v);
    this.inner.add(v);
  }
  result() { return this.inner.result(); }
  merge(o: DistinctAcc) { for (const v of o.seen.values()) this.add(v); }
}

export const WINDOW_FUNCTIONS = new Set(['tumblingwindow', 'hoppingwindow', 'slidingwindow', 'sessionwindow', 'countwindow']);

export { dig };
