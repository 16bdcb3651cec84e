import { createHash, randomUUID } from 'node:crypto';
import { crc32 } from 'node:zlib';

/**
 * The function library of the SQL dialect: scalar functions (math, strings, hashing, time, arrays,
 * objects, JSON, conversion) and aggregates, with eKuiper's meaning. Every function declares its
 * arity so that the planner rejects a wrong call with line and column before a rule ever runs.
 *
 * Types follow eKuiper: a number is never read from a string (`abs('1')` is an error; use cast),
 * and a value of the wrong type is a ValueError, which the planner turns into the record's error
 * with the call's position. Null follows eKuiper function by function (docs/sql.md has the
 * table): most functions give null for a null argument; concat treats it as '', length and
 * numbytes as 0, startswith/endswith/regexp_matches give false, indexof gives -1.
 */
export type SqlType = 'number' | 'int' | 'string' | 'bool' | 'object' | 'array' | 'any' | 'null';

export const isNumType = (t: SqlType): boolean => t === 'number' || t === 'int';

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

/** A value of the wrong type or out of range; the planner adds the SQL position and the rule adds its name. */
export class ValueError extends Error {}

/** A value as an error message shows it: short, with its type. */
export function showValue(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return `"${v.length > 40 ? `${v.slice(0, 40)}…` : v}" (a string)`;
  if (typeof v === 'number') return `${v} (a number)`;
  if (typeof v === 'boolean') return `${v} (a bool)`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return 'an object';
}

const isNull = (v: unknown): v is null | undefined => v === null || v === undefined;
/** A number argument, strictly: null stays null; a string, bool, object or array is an error. */
function num(v: unknown, fn: string, i = 0): number | null {
  if (typeof v === 'number') return v;
  if (isNull(v)) return null;
  throw new ValueError(`${fn}()'s argument ${i + 1} must be a number but is ${showValue(v)}; convert it with cast(x, 'float')`);
}
function int(v: unknown, fn: string, i: number): number | null {
  const x = num(v, fn, i);
  if (x !== null && !Number.isInteger(x)) throw new ValueError(`${fn}()'s argument ${i + 1} must be a whole number but is ${x}`);
  return x;
}
/** Text of any value (eKuiper's ToStringAlways): objects and arrays as JSON; null is null. */
const str = (v: unknown): string | null =>
  isNull(v) ? null : typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
const text = (v: unknown): string => str(v) ?? '';
const math1 = (name: string, f: (x: number) => number, returns: SqlType = 'number'): ScalarFn => ({
  min: 1,
  max: 1,
  returns,
  fn: ([a]) => {
    const x = num(a, name);
    return x === null ? null : f(x);
  },
});
const math2 = (name: string, f: (x: number, y: number) => number, returns: SqlType = 'number'): ScalarFn => ({
  min: 2,
  max: 2,
  returns,
  fn: ([a, b]) => {
    const x = num(a, name, 0);
    const y = num(b, name, 1);
    return x === null || y === null ? null : f(x, y);
  },
});
const anyNull = (args: unknown[]) => args.some(isNull);
/** String functions that give null for a null first argument. */
const str1 = (f: (s: string) => unknown, returns: SqlType = 'string'): ScalarFn => ({
  min: 1,
  max: 1,
  returns,
  fn: ([a]) => (isNull(a) ? null : f(text(a))),
});
const hash = (alg: string): ScalarFn => ({
  min: 1,
  max: 1,
  returns: 'string',
  fn: ([a]) => (isNull(a) ? null : createHash(alg).update(text(a)).digest('hex')),
});
function arr(v: unknown, fn: string, i = 0): unknown[] | null {
  if (Array.isArray(v)) return v;
  if (isNull(v)) return null;
  throw new ValueError(`${fn}()'s argument ${i + 1} must be an array but is ${showValue(v)}`);
}
function obj(v: unknown, fn: string, i = 0): Record<string, unknown> | null {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  if (isNull(v)) return null;
  throw new ValueError(`${fn}()'s argument ${i + 1} must be an object but is ${showValue(v)}`);
}
/** Equality as `=` has it, for array functions: same type and value; objects and arrays by content. */
const same = (a: unknown, b: unknown): boolean =>
  a === b || (a !== null && b !== null && typeof a === 'object' && typeof b === 'object' && JSON.stringify(a) === JSON.stringify(b));

/** Half away from zero (as Go's math.Round, which eKuiper uses), on the decimal text so 2.675 → 2.68. */
export function roundHalfAway(x: number, digits = 0): number {
  if (!Number.isFinite(x)) return x;
  const sign = x < 0 ? -1 : 1;
  const r = Number(`${Math.round(Number(`${Math.abs(x)}e${digits}`))}e${-digits}`);
  return Number.isFinite(r) ? sign * r : (sign * Math.round(Math.abs(x) * 10 ** digits)) / 10 ** digits;
}

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
    if (m.index !== consumed) throw new ValueError(`unsupported JSON path "${path}"`);
    consumed = re.lastIndex;
    out.push(m[1] ?? (m[2] !== undefined ? Number(m[2]) : m[3]!));
  }
  if (consumed !== body.length) throw new ValueError(`unsupported JSON path "${path}"`);
  return out;
}

const pad2 = (n: number) => String(n).padStart(2, '0');
/**
 * Formats a time (UTC) with eKuiper's pattern letters — yyyy (or YYYY) yy MM M dd (or DD) d HH H
 * hh h mm m ss s SSS SS S a Z — and text in single quotes; 'iso' (or no format) gives ISO-8601.
 */
function formatTime(ms: number, fmt: string): string {
  const d = new Date(ms);
  if (fmt === 'iso' || fmt === '') return d.toISOString();
  const h = d.getUTCHours();
  const msPart = String(d.getUTCMilliseconds()).padStart(3, '0');
  return fmt.replace(/yyyy|YYYY|yy|YY|MM|M|dd|DD|d|HH|H|hh|h|mm|m|ss|s|SSS|SS|S|a|Z|'[^']*'/g, (t) => {
    switch (t) {
      case 'yyyy':
      case 'YYYY':
        return String(d.getUTCFullYear());
      case 'yy':
      case 'YY':
        return pad2(d.getUTCFullYear() % 100);
      case 'MM':
        return pad2(d.getUTCMonth() + 1);
      case 'M':
        return String(d.getUTCMonth() + 1);
      case 'dd':
      case 'DD':
        return pad2(d.getUTCDate());
      case 'd':
        return String(d.getUTCDate());
      case 'HH':
        return pad2(h);
      case 'H':
        return String(h);
      case 'hh':
        return pad2(h % 12 || 12);
      case 'h':
        return String(h % 12 || 12);
      case 'mm':
        return pad2(d.getUTCMinutes());
      case 'm':
        return String(d.getUTCMinutes());
      case 'ss':
        return pad2(d.getUTCSeconds());
      case 's':
        return String(d.getUTCSeconds());
      case 'SSS':
        return msPart;
      case 'SS':
        return msPart.slice(0, 2);
      case 'S':
        return msPart.slice(0, 1);
      case 'a':
        return h < 12 ? 'AM' : 'PM';
      case 'Z':
        return '+00:00';
      default:
        return t.slice(1, -1); // 'quoted text'
    }
  });
}
/** A time argument: milliseconds since the epoch, or an ISO-8601 string. */
function time(v: unknown, fn: string): number | null {
  if (typeof v === 'number') return v;
  if (isNull(v)) return null;
  if (typeof v === 'string') {
    const t = Date.parse(v);
    if (!Number.isNaN(t)) return t;
  }
  throw new ValueError(`${fn}() needs a time (milliseconds or an ISO-8601 string) but got ${showValue(v)}`);
}
const timePart = (name: string, f: (d: Date) => number): ScalarFn => ({
  min: 1,
  max: 1,
  returns: 'int',
  fn: ([a]) => {
    const x = time(a, name);
    return x === null ? null : f(new Date(x));
  },
});
const regexCache = new Map<string, RegExp>();
function regex(p: string, fn: string, flags = ''): RegExp {
  const key = `${flags}/${p}`;
  let re = regexCache.get(key);
  if (!re) {
    try {
      re = new RegExp(p, flags);
    } catch (e) {
      throw new ValueError(`${fn}(): bad regular expression "${p}": ${(e as Error).message}`);
    }
    if (regexCache.size > 256) regexCache.clear(); // patterns taken from records must not grow without bound
    regexCache.set(key, re);
  }
  return re;
}

function castTo(a: unknown, t: unknown): unknown {
  if (isNull(a)) return null;
  const to = str(t);
  const bad = (): never => {
    throw new ValueError(`cannot cast ${showValue(a)} to ${to}`);
  };
  switch (to) {
    case 'float':
    case 'number':
    case 'double': {
      if (typeof a === 'number') return a;
      if (typeof a === 'boolean') return a ? 1 : 0;
      if (typeof a === 'string' && a.trim() !== '' && !Number.isNaN(Number(a))) return Number(a);
      return bad();
    }
    case 'int':
    case 'bigint': {
      if (typeof a === 'number') return Math.trunc(a);
      if (typeof a === 'boolean') return a ? 1 : 0;
      if (typeof a === 'string' && a.trim() !== '' && !Number.isNaN(Number(a))) return Math.trunc(Number(a));
      return bad();
    }
    case 'string':
      return str(a);
    case 'bool':
    case 'boolean': {
      if (typeof a === 'boolean') return a;
      if (typeof a === 'number') return a !== 0;
      if (typeof a === 'string') {
        const l = a.trim().toLowerCase();
        if (['true', '1', 't'].includes(l)) return true;
        if (['false', '0', 'f'].includes(l)) return false;
      }
      return bad();
    }
    case 'datetime': {
      const x = time(a, 'cast');
      return x;
    }
    default:
      throw new ValueError(`cast to "${String(t)}" is not supported: use float, bigint, string, boolean or datetime`);
  }
}

export const SCALARS: Record<string, ScalarFn> = {
  // math (null → null; a non-number is an error)
  abs: math1('abs', Math.abs, 'any'),
  ceil: math1('ceil', Math.ceil),
  ceiling: math1('ceiling', Math.ceil),
  floor: math1('floor', Math.floor),
  sqrt: math1('sqrt', Math.sqrt),
  exp: math1('exp', Math.exp),
  ln: math1('ln', Math.log),
  log10: math1('log10', Math.log10),
  sign: math1('sign', (x) => (x > 0 ? 1 : x < 0 ? -1 : 0), 'int'),
  sin: math1('sin', Math.sin),
  cos: math1('cos', Math.cos),
  tan: math1('tan', Math.tan),
  asin: math1('asin', Math.asin),
  acos: math1('acos', Math.acos),
  atan: math1('atan', Math.atan),
  sinh: math1('sinh', Math.sinh),
  cosh: math1('cosh', Math.cosh),
  tanh: math1('tanh', Math.tanh),
  cot: math1('cot', (x) => 1 / Math.tan(x)),
  degrees: math1('degrees', (x) => (x * 180) / Math.PI),
  radians: math1('radians', (x) => (x * Math.PI) / 180),
  bitnot: {
    min: 1,
    max: 1,
    returns: 'int',
    fn: ([a]) => {
      const x = int(a, 'bitnot', 0);
      return x === null ? null : Number(~BigInt(x));
    },
  },
  bitand: math2('bitand', (x, y) => Number(BigInt(x) & BigInt(y)), 'int'),
  bitor: math2('bitor', (x, y) => Number(BigInt(x) | BigInt(y)), 'int'),
  bitxor: math2('bitxor', (x, y) => Number(BigInt(x) ^ BigInt(y)), 'int'),
  round: {
    min: 1,
    max: 2,
    returns: 'number',
    fn: ([a, d]) => {
      const x = num(a, 'round');
      if (x === null) return null;
      return roundHalfAway(x, int(d ?? 0, 'round', 1) ?? 0);
    },
  },
  trunc: {
    min: 1,
    max: 2,
    returns: 'number',
    fn: ([a, d]) => {
      const x = num(a, 'trunc');
      if (x === null) return null;
      const p = 10 ** (int(d ?? 0, 'trunc', 1) ?? 0);
      return Math.trunc(x * p) / p;
    },
  },
  log: {
    min: 1,
    max: 2,
    returns: 'number',
    fn: (args) => {
      if (anyNull(args)) return null;
      return args.length === 1 ? Math.log10(num(args[0], 'log')!) : Math.log(num(args[1], 'log', 1)!) / Math.log(num(args[0], 'log')!);
    },
  },
  power: math2('power', (x, y) => x ** y),
  pow: math2('pow', (x, y) => x ** y),
  mod: math2(
    'mod',
    (x, y) => {
      if (y === 0) throw new ValueError('mod(): divided by zero');
      return x % y;
    },
    'any',
  ),
  atan2: math2('atan2', Math.atan2),
  pi: { min: 0, max: 0, returns: 'number', fn: () => Math.PI },
  rand: { min: 0, max: 0, returns: 'number', fn: () => Math.random(), pure: false },
  greatest: {
    min: 1,
    max: 64,
    returns: 'any',
    fn: (args) =>
      args.reduce<number | null>((m, a, i) => {
        const x = num(a, 'greatest', i);
        return x === null ? m : m === null || x > m ? x : m;
      }, null),
  },
  least: {
    min: 1,
    max: 64,
    returns: 'any',
    fn: (args) =>
      args.reduce<number | null>((m, a, i) => {
        const x = num(a, 'least', i);
        return x === null ? m : m === null || x < m ? x : m;
      }, null),
  },
  // strings
  lower: str1((s) => s.toLowerCase()),
  upper: str1((s) => s.toUpperCase()),
  trim: str1((s) => s.trim()),
  ltrim: str1((s) => s.trimStart()),
  rtrim: str1((s) => s.trimEnd()),
  reverse: str1((s) => [...s].reverse().join('')),
  length: {
    min: 1,
    max: 1,
    returns: 'int',
    fn: ([a]) => (Array.isArray(a) ? a.length : a !== null && typeof a === 'object' ? Object.keys(a).length : [...text(a)].length),
  },
  numbytes: { min: 1, max: 1, returns: 'int', fn: ([a]) => Buffer.byteLength(text(a)) },
  concat: { min: 1, max: 64, returns: 'string', fn: (args) => args.map(text).join('') },
  substring: {
    min: 2,
    max: 3,
    returns: 'string',
    fn: ([s, a, b]) => {
      if (isNull(s)) return null;
      const x = text(s);
      const from = int(a, 'substring', 1)!;
      const to = b === undefined ? x.length : int(b, 'substring', 2)!;
      if (from < 0 || to < 0) throw new ValueError(`substring(): indexes must not be negative (got ${from}, ${to})`);
      if (from > to) throw new ValueError(`substring(): the start ${from} is after the end ${to}`);
      return x.substring(from, to);
    },
  },
  startswith: { min: 2, max: 2, returns: 'bool', fn: ([s, p]) => (anyNull([s, p]) ? false : text(s).startsWith(text(p))) },
  endswith: { min: 2, max: 2, returns: 'bool', fn: ([s, p]) => (anyNull([s, p]) ? false : text(s).endsWith(text(p))) },
  indexof: { min: 2, max: 2, returns: 'int', fn: ([s, p]) => (anyNull([s, p]) ? -1 : text(s).indexOf(text(p))) },
  replace: { min: 3, max: 3, returns: 'string', fn: ([s, a, b]) => (anyNull([s, a, b]) ? null : text(s).split(text(a)).join(text(b))) },
  split_value: {
    min: 3,
    max: 3,
    returns: 'string',
    fn: ([s, sep, i]) => {
      if (anyNull([s, sep])) return null;
      const parts = text(s).split(text(sep));
      const k = int(i, 'split_value', 2)!;
      if (k < 0 || k >= parts.length) throw new ValueError(`split_value(): index ${k} is out of range (${parts.length} parts)`);
      return parts[k]!;
    },
  },
  regexp_matches: {
    min: 2,
    max: 2,
    returns: 'bool',
    fn: ([s, re]) => (anyNull([s, re]) ? false : regex(text(re), 'regexp_matches').test(text(s))),
  },
  regexp_replace: {
    min: 3,
    max: 3,
    returns: 'string',
    fn: ([s, re, by]) => (anyNull([s, re, by]) ? null : text(s).replace(regex(text(re), 'regexp_replace', 'g'), text(by))),
  },
  regexp_substr: {
    min: 2,
    max: 2,
    returns: 'string',
    fn: ([s, re]) => (anyNull([s, re]) ? null : (regex(text(re), 'regexp_substr').exec(text(s))?.[0] ?? '')),
  },
  // lpad(s, n) / rpad(s, n) add n spaces, as eKuiper's do; a third argument pads with that text instead.
  lpad: {
    min: 2,
    max: 3,
    returns: 'string',
    fn: ([s, n, c]) => (isNull(s) ? null : (c === undefined ? ' ' : text(c)).repeat(Math.max(0, int(n, 'lpad', 1) ?? 0)) + text(s)),
  },
  rpad: {
    min: 2,
    max: 3,
    returns: 'string',
    fn: ([s, n, c]) => (isNull(s) ? null : text(s) + (c === undefined ? ' ' : text(c)).repeat(Math.max(0, int(n, 'rpad', 1) ?? 0))),
  },
  chr: {
    min: 1,
    max: 1,
    returns: 'string',
    fn: ([a]) => {
      const x = int(a, 'chr', 0);
      return x === null ? null : String.fromCodePoint(x);
    },
  },
  // hashing (hex digests of the text)
  md5: hash('md5'),
  sha1: hash('sha1'),
  sha256: hash('sha256'),
  sha384: hash('sha384'),
  sha512: hash('sha512'),
  crc32: { min: 1, max: 1, returns: 'string', fn: ([a]) => (isNull(a) ? null : crc32(text(a)).toString(16).padStart(8, '0')) },
  encode: {
    min: 2,
    max: 2,
    returns: 'string',
    fn: ([a, f]) => {
      if (isNull(a)) return null;
      if (text(f) !== 'base64') throw new ValueError(`encode(): format "${text(f)}" is not supported: use 'base64'`);
      return Buffer.from(text(a)).toString('base64');
    },
  },
  decode: {
    min: 2,
    max: 2,
    returns: 'string',
    fn: ([a, f]) => {
      if (isNull(a)) return null;
      if (text(f) !== 'base64') throw new ValueError(`decode(): format "${text(f)}" is not supported: use 'base64'`);
      return Buffer.from(text(a), 'base64').toString('utf8');
    },
  },
  // time (milliseconds since the epoch, UTC)
  now: { min: 0, max: 0, returns: 'int', fn: (_a, env) => env.now(), pure: false },
  tstamp: { min: 0, max: 0, returns: 'int', fn: (_a, env) => env.now(), pure: false },
  window_start: { min: 0, max: 0, returns: 'int', fn: (_a, env) => env.window?.start ?? null, pure: false },
  window_end: { min: 0, max: 0, returns: 'int', fn: (_a, env) => env.window?.end ?? null, pure: false },
  format_time: {
    min: 1,
    max: 2,
    returns: 'string',
    fn: ([t, f]) => {
      const x = time(t, 'format_time');
      return x === null ? null : formatTime(x, f === undefined ? 'iso' : (str(f) ?? 'iso'));
    },
  },
  to_timestamp: { min: 1, max: 1, returns: 'int', fn: ([s]) => time(s, 'to_timestamp') },
  unix_timestamp: {
    min: 0,
    max: 1,
    returns: 'int',
    fn: ([t], env) => {
      const x = t === undefined ? env.now() : time(t, 'unix_timestamp');
      return x === null ? null : Math.floor(x / 1000);
    },
    pure: false,
  },
  from_unix_time: {
    min: 1,
    max: 1,
    returns: 'string',
    fn: ([t]) => {
      const x = num(t, 'from_unix_time');
      return x === null ? null : new Date(x * 1000).toISOString();
    },
  },
  year: timePart('year', (d) => d.getUTCFullYear()),
  month: timePart('month', (d) => d.getUTCMonth() + 1),
  day: timePart('day', (d) => d.getUTCDate()),
  day_of_month: timePart('day_of_month', (d) => d.getUTCDate()),
  day_of_week: timePart('day_of_week', (d) => d.getUTCDay() + 1), // 1 = Sunday, as eKuiper (MySQL's DAYOFWEEK)
  day_of_year: timePart('day_of_year', (d) => Math.floor((d.getTime() - Date.UTC(d.getUTCFullYear(), 0, 1)) / 86_400_000) + 1),
  hour: timePart('hour', (d) => d.getUTCHours()),
  minute: timePart('minute', (d) => d.getUTCMinutes()),
  second: timePart('second', (d) => d.getUTCSeconds()),
  // arrays
  cardinality: { min: 1, max: 1, returns: 'int', fn: ([a]) => (arr(a, 'cardinality') ?? []).length },
  array_contains: {
    min: 2,
    max: 2,
    returns: 'bool',
    fn: ([a, v]) => {
      const x = arr(a, 'array_contains');
      return x === null ? null : x.some((e) => same(e, v));
    },
  },
  array_position: {
    min: 2,
    max: 2,
    returns: 'int',
    fn: ([a, v]) => {
      const x = arr(a, 'array_position');
      return x === null ? null : x.findIndex((e) => same(e, v));
    },
  },
  array_last_position: {
    min: 2,
    max: 2,
    returns: 'int',
    fn: ([a, v]) => {
      const x = arr(a, 'array_last_position');
      if (x === null) return null;
      for (let i = x.length - 1; i >= 0; i--) if (same(x[i], v)) return i;
      return -1;
    },
  },
  element_at: {
    min: 2,
    max: 2,
    returns: 'any',
    fn: ([a, i]) => {
      if (isNull(a)) return null;
      if (Array.isArray(a)) {
        const k = int(i, 'element_at', 1)!;
        const j = k < 0 ? a.length + k : k;
        if (j < 0 || j >= a.length) throw new ValueError(`element_at(): index ${k} is out of range (length ${a.length})`);
        return a[j] ?? null;
      }
      const o = obj(a, 'element_at');
      return o![text(i)] ?? null;
    },
  },
  array_remove: {
    min: 2,
    max: 2,
    returns: 'array',
    fn: ([a, v]) => {
      const x = arr(a, 'array_remove');
      return x === null ? null : x.filter((e) => !same(e, v));
    },
  },
  array_distinct: {
    min: 1,
    max: 1,
    returns: 'array',
    fn: ([a]) => {
      const x = arr(a, 'array_distinct');
      if (x === null) return null;
      const out: unknown[] = [];
      for (const e of x) if (!out.some((o) => same(o, e))) out.push(e);
      return out;
    },
  },
  array_max: {
    min: 1,
    max: 1,
    returns: 'any',
    fn: ([a]) => {
      const x = arr(a, 'array_max');
      return x === null
        ? null
        : x.reduce<number | null>((m, e, i) => {
            const n = num(e, 'array_max', i);
            return n === null ? m : m === null || n > m ? n : m;
          }, null);
    },
  },
  array_min: {
    min: 1,
    max: 1,
    returns: 'any',
    fn: ([a]) => {
      const x = arr(a, 'array_min');
      return x === null
        ? null
        : x.reduce<number | null>((m, e, i) => {
            const n = num(e, 'array_min', i);
            return n === null ? m : m === null || n < m ? n : m;
          }, null);
    },
  },
  array_join: {
    min: 2,
    max: 3,
    returns: 'string',
    fn: ([a, sep, nul]) => {
      const x = arr(a, 'array_join');
      return x === null
        ? null
        : x
            .filter((e) => !isNull(e) || nul !== undefined)
            .map((e) => (isNull(e) ? text(nul) : text(e)))
            .join(text(sep));
    },
  },
  array_concat: {
    min: 1,
    max: 64,
    returns: 'array',
    fn: (args) => (anyNull(args) ? null : args.flatMap((a, i) => arr(a, 'array_concat', i)!)),
  },
  array_flatten: {
    min: 1,
    max: 1,
    returns: 'array',
    fn: ([a]) => {
      const x = arr(a, 'array_flatten');
      return x === null ? null : x.flat();
    },
  },
  array_create: { min: 0, max: 64, returns: 'array', fn: (args) => args.map((a) => a ?? null) },
  sequence: {
    min: 2,
    max: 3,
    returns: 'array',
    fn: ([a, b, st]) => {
      const from = int(a, 'sequence', 0)!;
      const to = int(b, 'sequence', 1)!;
      const step = st === undefined ? (to >= from ? 1 : -1) : int(st, 'sequence', 2)!;
      if (step === 0 || Math.abs((to - from) / step) > 10_000)
        throw new ValueError(`sequence(${from}, ${to}, ${step}) is empty-stepped or longer than 10000 elements`);
      const out: number[] = [];
      for (let v = from; step > 0 ? v <= to : v >= to; v += step) out.push(v);
      return out;
    },
  },
  // objects
  keys: {
    min: 1,
    max: 1,
    returns: 'array',
    fn: ([o]) => {
      const x = obj(o, 'keys');
      return x === null ? null : Object.keys(x);
    },
  },
  values: {
    min: 1,
    max: 1,
    returns: 'array',
    fn: ([o]) => {
      const x = obj(o, 'values');
      return x === null ? null : Object.values(x);
    },
  },
  items: {
    min: 1,
    max: 1,
    returns: 'array',
    fn: ([o]) => {
      const x = obj(o, 'items');
      return x === null ? null : Object.entries(x);
    },
  },
  object: {
    min: 2,
    max: 2,
    returns: 'object',
    fn: ([k, v]) => {
      const ks = arr(k, 'object', 0);
      const vs = arr(v, 'object', 1);
      if (ks === null || vs === null) return null;
      if (ks.length !== vs.length) throw new ValueError(`object(): ${ks.length} keys but ${vs.length} values`);
      return Object.fromEntries(ks.map((kk, i) => [text(kk), vs[i] ?? null]));
    },
  },
  zip: {
    min: 1,
    max: 1,
    returns: 'object',
    fn: ([a]) => {
      const x = arr(a, 'zip');
      if (x === null) return null;
      return Object.fromEntries(
        x.map((p) => {
          if (!Array.isArray(p) || p.length !== 2) throw new ValueError('zip() needs an array of [key, value] pairs');
          return [text(p[0]), p[1] ?? null];
        }),
      );
    },
  },
  object_concat: {
    min: 1,
    max: 64,
    returns: 'object',
    fn: (args) => Object.assign({}, ...args.map((a, i) => obj(a, 'object_concat', i) ?? {})),
  },
  object_construct: {
    min: 0,
    max: 64,
    returns: 'object',
    fn: (args) => {
      if (args.length % 2) throw new ValueError('object_construct() takes key, value pairs');
      const o: Record<string, unknown> = {};
      for (let i = 0; i < args.length; i += 2) if (!isNull(args[i + 1])) o[text(args[i])] = args[i + 1];
      return o;
    },
  },
  erase: {
    min: 2,
    max: 2,
    returns: 'object',
    fn: ([o, k]) => {
      const x = obj(o, 'erase');
      if (x === null) return null;
      const drop = new Set((Array.isArray(k) ? k : [k]).map(text));
      return Object.fromEntries(Object.entries(x).filter(([kk]) => !drop.has(kk)));
    },
  },
  object_size: {
    min: 1,
    max: 1,
    returns: 'int',
    fn: ([o]) => {
      const x = obj(o, 'object_size');
      return x === null ? null : Object.keys(x).length;
    },
  },
  // JSON and conversion
  json_path_query: {
    min: 2,
    max: 2,
    returns: 'any',
    fn: ([o, p]) => (anyNull([o, p]) ? null : dig(typeof o === 'string' ? parseJson(o) : o, jsonPath(text(p)))),
  },
  json_path_exists: {
    min: 2,
    max: 2,
    returns: 'bool',
    fn: ([o, p]) => (anyNull([o, p]) ? false : dig(typeof o === 'string' ? parseJson(o) : o, jsonPath(text(p))) !== null),
  },
  to_json: { min: 1, max: 1, returns: 'string', fn: ([a]) => (a === undefined ? 'null' : JSON.stringify(a)) },
  parse_json: { min: 1, max: 1, returns: 'any', fn: ([a]) => (isNull(a) ? null : parseJson(text(a))) },
  cast: { min: 2, max: 2, returns: 'any', fn: ([a, t]) => castTo(a, t) },
  // conditionals and others
  coalesce: { min: 1, max: 64, returns: 'any', fn: (args) => args.find((a) => !isNull(a)) ?? null },
  ifnull: { min: 2, max: 2, returns: 'any', fn: ([a, b]) => (isNull(a) ? (b ?? null) : a) },
  nullif: { min: 2, max: 2, returns: 'any', fn: ([a, b]) => (same(a, b) ? null : (a ?? null)) },
  isnull: { min: 1, max: 1, returns: 'bool', fn: ([a]) => isNull(a) },
  newuuid: { min: 0, max: 0, returns: 'string', fn: () => randomUUID(), pure: false },
  meta: { min: 1, max: 1, returns: 'any', fn: ([k], env) => (env.meta ? (env.meta[str(k) ?? ''] ?? null) : null), pure: false },
};

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch (e) {
    throw new ValueError(`not JSON: ${(e as Error).message}`);
  }
}

/**
 * An aggregate's running state for one group of one window. `merge` folds in another state of
 * the same aggregate that saw later records (hopping windows are built from panes this way).
 * `held()` says how many values it keeps (collect, percentile, DISTINCT keep each value; the
 * others keep one number), which the rule's state budget counts.
 */
export interface Acc {
  add(v: unknown): void;
  result(): unknown;
  merge(later: Acc): void;
  held?(): number;
}

/** The rule's state meter: every kept value counts one cell; the runtime checks it against the budget. */
export interface Meter {
  cells: number;
}

export interface AggregateFn {
  /** Arguments after the first (e.g. percentile's fraction): constants, checked by the planner. */
  extra: number;
  returns: SqlType;
  /** `count(*)` is the only aggregate that takes `*`. */
  star?: boolean;
  /** What it returns for an argument of static type `arg` (sum of ints is an int). */
  returnsFor?: (arg: SqlType) => SqlType;
  make(extra: unknown[], int: boolean, meter: Meter): Acc;
}

function needNumber(name: string, v: unknown): never {
  throw new ValueError(`${name}() needs numbers but got ${showValue(v)}; convert it with cast(x, 'float')`);
}

// Accumulators are small classes, not closures: a window can hold a group per key, each with
// one accumulator per aggregate, and classes keep that allocation cheap and call sites monomorphic.
class CountAcc implements Acc {
  n = 0;
  add(v: unknown) {
    if (v !== null && v !== undefined) this.n++;
  }
  result() {
    return this.n;
  }
  merge(o: CountAcc) {
    this.n += o.n;
  }
}
class SumAcc implements Acc {
  s = 0;
  any = false;
  constructor(private readonly name: string) {}
  add(v: unknown) {
    if (typeof v === 'number') {
      this.s += v;
      this.any = true;
    } else if (v !== null && v !== undefined) needNumber(this.name, v);
  }
  result() {
    return this.any ? this.s : null;
  }
  merge(o: SumAcc) {
    this.s += o.s;
    this.any ||= o.any;
  }
}
class AvgAcc implements Acc {
  s = 0;
  n = 0;
  /** eKuiper: the average of integers is an integer (the sum divided, truncated). */
  constructor(private readonly int: boolean) {}
  add(v: unknown) {
    if (typeof v === 'number') {
      this.s += v;
      this.n++;
    } else if (v !== null && v !== undefined) needNumber('avg', v);
  }
  result() {
    return this.n ? (this.int ? Math.trunc(this.s / this.n) : this.s / this.n) : null;
  }
  merge(o: AvgAcc) {
    this.s += o.s;
    this.n += o.n;
  }
}
/** min and max: numbers with numbers, strings with strings; mixing them is an error. */
function order(name: string, a: unknown, b: unknown): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  throw new ValueError(`${name}() cannot order ${showValue(a)} against ${showValue(b)}`);
}
class MinAcc implements Acc {
  m: unknown = null;
  add(v: unknown) {
    if (typeof v === 'number' && typeof this.m === 'number') {
      if (v < this.m) this.m = v;
      return;
    }
    if (v === null || v === undefined) return;
    if (typeof v !== 'number' && typeof v !== 'string') throw new ValueError(`min() needs numbers or strings but got ${showValue(v)}`);
    if (this.m === null || order('min', v, this.m) < 0) this.m = v;
  }
  result() {
    return this.m;
  }
  merge(o: MinAcc) {
    this.add(o.m);
  }
}
class MaxAcc implements Acc {
  m: unknown = null;
  add(v: unknown) {
    if (typeof v === 'number' && typeof this.m === 'number') {
      if (v > this.m) this.m = v;
      return;
    }
    if (v === null || v === undefined) return;
    if (typeof v !== 'number' && typeof v !== 'string') throw new ValueError(`max() needs numbers or strings but got ${showValue(v)}`);
    if (this.m === null || order('max', v, this.m) > 0) this.m = v;
  }
  result() {
    return this.m;
  }
  merge(o: MaxAcc) {
    this.add(o.m);
  }
}
/** Variance and standard deviation, population (eKuiper's stddev, var) or sample (stddevs, vars). */
class Welford implements Acc {
  n = 0;
  mean = 0;
  m2 = 0;
  constructor(
    private readonly name: string,
    private readonly sqrt: boolean,
    private readonly sample: boolean,
  ) {}
  add(v: unknown) {
    if (typeof v !== 'number') {
      if (v !== null && v !== undefined) needNumber(this.name, v);
      return;
    }
    this.n++;
    const d = v - this.mean;
    this.mean += d / this.n;
    this.m2 += d * (v - this.mean);
  }
  /** Chan et al.'s parallel combination of two Welford states. */
  merge(o: Welford) {
    if (o.n === 0) return;
    const n = this.n + o.n;
    const d = o.mean - this.mean;
    this.mean += (d * o.n) / n;
    this.m2 += o.m2 + (d * d * this.n * o.n) / n;
    this.n = n;
  }
  result() {
    const div = this.sample ? this.n - 1 : this.n;
    if (div <= 0) return null; // no values (or one value, for a sample): undefined, not NaN
    const v = this.m2 / div;
    return this.sqrt ? Math.sqrt(v) : v;
  }
}
class PercentileAcc implements Acc {
  vals: number[] = [];
  constructor(
    private readonly p: number,
    private readonly disc: boolean,
    private readonly meter: Meter,
    private readonly name: string,
  ) {}
  add(v: unknown) {
    if (typeof v === 'number') {
      this.vals.push(v);
      this.meter.cells++;
    } else if (v !== null && v !== undefined) needNumber(this.name, v);
  }
  merge(o: PercentileAcc) {
    for (const x of o.vals) this.vals.push(x);
  }
  result() {
    return this.disc ? percentileDisc(this.vals, this.p) : percentileOf(this.vals, this.p);
  }
  held() {
    return this.vals.length;
  }
}
class FirstAcc implements Acc {
  f: unknown = null;
  seen = false;
  add(v: unknown) {
    if (!this.seen) {
      this.f = v ?? null;
      this.seen = true;
    }
  }
  result() {
    return this.f;
  }
  merge(o: FirstAcc) {
    if (!this.seen && o.seen) {
      this.f = o.f;
      this.seen = true;
    }
  }
}
class LastAcc implements Acc {
  l: unknown = null;
  seen = false;
  add(v: unknown) {
    this.l = v ?? null;
    this.seen = true;
  }
  result() {
    return this.l;
  }
  merge(o: LastAcc) {
    if (o.seen) {
      this.l = o.l;
      this.seen = true;
    }
  }
}
class CollectAcc implements Acc {
  out: unknown[] = [];
  constructor(private readonly meter: Meter) {}
  add(v: unknown) {
    this.out.push(v ?? null);
    this.meter.cells++;
  }
  result() {
    return this.out;
  }
  merge(o: CollectAcc) {
    for (const v of o.out) this.out.push(v);
  }
  held() {
    return this.out.length;
  }
}

function percentileOf(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const s = values.slice().sort((a, b) => a - b);
  const idx = p * (s.length - 1);
  const lo = Math.floor(idx);
  const hi = Math.ceil(idx);
  return s[lo]! + (s[hi]! - s[lo]!) * (idx - lo);
}
/** The smallest value whose cumulative share reaches p. */
function percentileDisc(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const s = values.slice().sort((a, b) => a - b);
  return s[Math.max(0, Math.ceil(p * s.length) - 1)]!;
}

const sameType = (t: SqlType) => t;
export const AGGREGATES: Record<string, AggregateFn> = {
  count: { extra: 0, returns: 'int', star: true, make: () => new CountAcc() },
  sum: { extra: 0, returns: 'number', returnsFor: (t) => (t === 'int' ? 'int' : 'number'), make: () => new SumAcc('sum') },
  avg: { extra: 0, returns: 'number', returnsFor: (t) => (t === 'int' ? 'int' : 'number'), make: (_e, int) => new AvgAcc(int) },
  min: { extra: 0, returns: 'any', returnsFor: sameType, make: () => new MinAcc() },
  max: { extra: 0, returns: 'any', returnsFor: sameType, make: () => new MaxAcc() },
  stddev: { extra: 0, returns: 'number', make: () => new Welford('stddev', true, false) },
  stddevs: { extra: 0, returns: 'number', make: () => new Welford('stddevs', true, true) },
  var: { extra: 0, returns: 'number', make: () => new Welford('var', false, false) },
  vars: { extra: 0, returns: 'number', make: () => new Welford('vars', false, true) },
  percentile: { extra: 1, returns: 'number', make: ([p], _i, m) => new PercentileAcc(p as number, false, m, 'percentile') },
  percentile_cont: { extra: 1, returns: 'number', make: ([p], _i, m) => new PercentileAcc(p as number, false, m, 'percentile_cont') },
  percentile_disc: { extra: 1, returns: 'number', make: ([p], _i, m) => new PercentileAcc(p as number, true, m, 'percentile_disc') },
  median: { extra: 0, returns: 'number', make: (_e, _i, m) => new PercentileAcc(0.5, false, m, 'median') },
  first: { extra: 0, returns: 'any', returnsFor: sameType, make: () => new FirstAcc() },
  last: { extra: 0, returns: 'any', returnsFor: sameType, make: () => new LastAcc() },
  collect: { extra: 0, returns: 'array', star: true, make: (_e, _i, m) => new CollectAcc(m) },
};

/** count(DISTINCT x) and friends: the same aggregate over each distinct value once. */
export function distinctAcc(inner: Acc, meter: Meter): Acc {
  return new DistinctAcc(inner, meter);
}

class DistinctAcc implements Acc {
  /** key → value, so that merging can replay the other side's distinct values. */
  readonly seen = new Map<unknown, unknown>();
  constructor(
    private readonly inner: Acc,
    private readonly meter: Meter,
  ) {}
  add(v: unknown) {
    const key = v !== null && typeof v === 'object' ? JSON.stringify(v) : v;
    if (this.seen.has(key)) return;
    this.seen.set(key, v);
    this.meter.cells++;
    this.inner.add(v);
  }
  result() {
    return this.inner.result();
  }
  merge(o: DistinctAcc) {
    for (const v of o.seen.values()) this.add(v);
  }
  held() {
    return this.seen.size + (this.inner.held?.() ?? 0);
  }
}

export const WINDOW_FUNCTIONS = new Set(['tumblingwindow', 'hoppingwindow', 'slidingwindow', 'sessionwindow', 'countwindow']);

export { dig };
