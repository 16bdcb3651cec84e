import type { Expr, Query } from './ast.ts';
import { sqlError, type Pos } from './lexer.ts';
import { closest, parse } from './parser.ts';
import { AGGREGATES, SCALARS, WINDOW_FUNCTIONS, distinctAcc, type Acc, type EvalEnv, type SqlType } from './functions.ts';
import { EwError } from '../contracts/errors.ts';

/**
 * The planner turns a parsed query into a Plan: it resolves fields against the stream's schema,
 * checks types and arities, separates row-level work (filter, grouping keys, aggregate inputs)
 * from emit-time work (projection, HAVING), reads the window, and compiles every expression to a
 * closure. `explain()` prints the plan. Everything here is pure.
 */
export interface StreamDef {
  name: string;
  /** field → type (string, int, float, bool, timestamp, object, array, any). */
  schema?: Record<string, string>;
  /** Event-time field (milliseconds, or an ISO-8601 string); processing time when absent. */
  timestamp?: string;
}

export type WindowSpec =
  | { kind: 'tumbling'; size: number }
  | { kind: 'hopping'; size: number; hop: number }
  | { kind: 'sliding'; size: number }
  | { kind: 'session'; timeout: number; max?: number }
  | { kind: 'count'; count: number; interval?: number };

export type Row = Record<string, unknown>;
export interface Env extends EvalEnv { aggs?: unknown[] }
export type Fn = (row: Row, env: Env) => unknown;

export interface AggSlot { name: string; text: string; arg?: Fn; make: () => Acc }

/** One `infer(model, …)` call: its arguments are computed per record before the rule sees it. */
export interface InferCall { model: string; args: Fn[]; text: string }

/**
 * `infer()` over a window's aggregates (`infer('m', avg(x), max(y))` in SELECT): computed after
 * the window closes. The runtime emits this placeholder; the runner replaces it with the model's
 * answer before the row reaches any sink.
 */
export class PendingInfer {
  constructor(readonly model: string, readonly args: unknown[]) {}
}

export interface Plan {
  sql: string;
  /**
   * The rule's `infer()` calls. A runner with models computes them for each record (batched
   * through each model's batcher) and stores the values with `inferValues.set(record, values)`
   * before it pushes the record; the compiled expressions read them back.
   */
  infers: InferCall[];
  inferValues: WeakMap<Row, unknown[]>;
  stream: StreamDef;
  filter?: Fn;
  /** True when the query has a window (results per window and group) — else one result per record. */
  windowed: boolean;
  window?: WindowSpec;
  keys: Fn[];
  aggs: AggSlot[];
  /** Output columns; `star` spreads the input record (non-windowed queries only). */
  columns: ({ name: string; fn: Fn } | { star: true })[];
  having?: Fn;
  explain(): string;
}

const UNIT_MS: Record<string, number> = { ms: 1, ss: 1000, mi: 60_000, hh: 3_600_000, dd: 86_400_000 };

const SCHEMA_TYPES: Record<string, SqlType> = {
  string: 'string', int: 'number', bigint: 'number', float: 'number', number: 'number', double: 'number', bool: 'bool', boolean: 'bool',
  timestamp: 'number', datetime: 'number', object: 'object', struct: 'object', array: 'array', any: 'any',
};

/** Checks a stream's declared schema; the error names the field. */
export function schemaTypes(def: StreamDef): Map<string, SqlType> | undefined {
  if (!def.schema) return undefined;
  const m = new Map<string, SqlType>();
  for (const [field, t] of Object.entries(def.schema)) {
    const st = SCHEMA_TYPES[t.toLowerCase()];
    if (!st) throw new EwError('SQL_INVALID', `stream ${def.name}: field "${field}" has type "${t}"; use one of ${Object.keys(SCHEMA_TYPES).join(', ')}`, { path: `schema.${field}` });
    m.set(field, st);
  }
  return m;
}

/** SQL text of an expression, for EXPLAIN and default column names. */
export function show(e: Expr): string {
  switch (e.k) {
    case 'lit': return e.v === null ? 'NULL' : typeof e.v === 'string' ? `'${e.v.replace(/'/g, "''")}'` : String(e.v);
    case 'field': return e.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
    case 'star': return '*';
    case 'call': return `${WINDOW_FUNCTIONS.has(e.name) ? e.name.toUpperCase() : e.name}(${e.distinct ? 'DISTINCT ' : ''}${e.star ? '*' : e.args.map(show).join(', ')})`;
    case 'unary': return e.op === 'NOT' ? `NOT ${show(e.e)}` : `-${show(e.e)}`;
    case 'bin': return `${paren(e.l)} ${e.op} ${paren(e.r)}`;
    case 'in': return `${show(e.e)} ${e.not ? 'NOT ' : ''}IN (${e.list.map(show).join(', ')})`;
    case 'between': return `${show(e.e)} ${e.not ? 'NOT ' : ''}BETWEEN ${show(e.lo)} AND ${show(e.hi)}`;
    case 'like': return `${show(e.e)} ${e.not ? 'NOT ' : ''}LIKE ${show(e.pattern)}`;
    case 'isnull': return `${show(e.e)} IS ${e.not ? 'NOT ' : ''}NULL`;
    case 'case': return `CASE ${e.operand ? `${show(e.operand)} ` : ''}${e.whens.map((w) => `WHEN ${show(w.when)} THEN ${show(w.then)}`).join(' ')}${e.else ? ` ELSE ${show(e.else)}` : ''} END`;
    case 'index': return `${show(e.e)}[${show(e.index)}]`;
    case 'member': return `${show(e.e)}.${e.name}`;
  }
}
const paren = (e: Expr) => (e.k === 'bin' ? `(${show(e)})` : show(e));

function likeToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\' && i + 1 < pattern.length) { re += pattern[++i]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'); continue; }
    re += c === '%' ? '.*' : c === '_' ? '.' : c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

const truthy = (v: unknown) => v === true || (typeof v === 'number' && v !== 0);
function compare(a: unknown, b: unknown): number | null {
  if (a === null || a === undefined || b === null || b === undefined) return null;
  if (typeof a === 'number' && typeof b === 'number') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'boolean' && typeof b === 'boolean') return a === b ? 0 : a ? 1 : -1;
  const x = Number(a);
  const y = Number(b);
  if (!Number.isNaN(x) && !Number.isNaN(y)) return x < y ? -1 : x > y ? 1 : 0;
  return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
}
const eq = (a: unknown, b: unknown): boolean | null => {
  if (a === null || a === undefined || b === null || b === undefined) return null;
  if (typeof a === 'object' || typeof b === 'object') return JSON.stringify(a) === JSON.stringify(b);
  return compare(a, b) === 0;
};

class Planner {
  private readonly types: Map<string, SqlType> | undefined;
  private readonly aggs: AggSlot[] = [];
  private readonly aggIndex = new Map<Expr, number>();
  private aliases = new Map<string, Expr>();
  private readonly infers: InferCall[] = [];
  private readonly inferValues = new WeakMap<Row, unknown[]>();

  constructor(private readonly q: Query, private readonly stream: StreamDef, private readonly models?: readonly string[]) {
    this.types = schemaTypes(stream);
  }

  private fieldName(e: Extract<Expr, { k: 'field' }>): (string | number)[] {
    const path = e.path;
    // `traffic.speed` names the stream; strip it unless the schema has a field of that name.
    if (path.length > 1 && path[0] === this.stream.name && !this.types?.has(this.stream.name)) return path.slice(1);
    return path;
  }

  /** Type of an expression; throws on unknown fields and functions, wrong arity and bad operands. */
  typeOf(e: Expr, ctx: { aggAllowed: boolean; inAgg?: boolean; having?: boolean }): SqlType {
    switch (e.k) {
      case 'lit': return e.v === null ? 'null' : typeof e.v === 'number' ? 'number' : typeof e.v === 'string' ? 'string' : 'bool';
      case 'star': throw sqlError('SQL_INVALID', e.pos, '"*" is only allowed as a select item or in count(*)');
      case 'field': {
        const path = this.fieldName(e);
        const head = String(path[0]);
        if (ctx.having && path.length === 1 && this.aliases.has(head)) return 'any';
        if (!this.types) return 'any';
        const t = this.types.get(head);
        if (t === undefined) {
          const guess = closest(head, [...this.types.keys(), ...(ctx.having ? this.aliases.keys() : [])]);
          throw sqlError('SQL_INVALID', e.pos, `stream ${this.stream.name} has no field "${head}"`, guess ? `did you mean ${guess}?` : `its fields are ${[...this.types.keys()].join(', ')}`);
        }
        return path.length === 1 ? t : 'any';
      }
      case 'member': case 'index': this.typeOf(e.e, ctx); if (e.k === 'index') this.typeOf(e.index, ctx); return 'any';
      case 'unary': {
        const t = this.typeOf(e.e, ctx);
        if (e.op === '-' && (t === 'string' || t === 'bool')) throw sqlError('SQL_INVALID', e.pos, `cannot negate a ${t}`);
        return e.op === '-' ? 'number' : 'bool';
      }
      case 'bin': {
        const l = this.typeOf(e.l, ctx);
        const r = this.typeOf(e.r, ctx);
        if (['+', '-', '*', '/', '%'].includes(e.op)) {
          for (const [t, side] of [[l, e.l], [r, e.r]] as const) {
            if (t === 'string' || t === 'bool' || t === 'object' || t === 'array') {
              throw sqlError('SQL_INVALID', side.pos, `"${e.op}" needs numbers but ${show(side)} is a ${t}`, e.op === '+' && t === 'string' ? 'join strings with || or concat()' : undefined);
            }
          }
          return 'number';
        }
        if (e.op === '||') return 'string';
        if (['<', '<=', '>', '>='].includes(e.op) && ((l === 'number' && r === 'string') || (l === 'string' && r === 'number'))) {
          throw sqlError('SQL_INVALID', e.pos, `cannot compare ${show(e.l)} (${l}) with ${show(e.r)} (${r})`, 'cast one side, e.g. cast(x, \'float\')');
        }
        return 'bool';
      }
      case 'in': this.typeOf(e.e, ctx); e.list.forEach((x) => this.typeOf(x, ctx)); return 'bool';
      case 'between': this.typeOf(e.e, ctx); this.typeOf(e.lo, ctx); this.typeOf(e.hi, ctx); return 'bool';
      case 'like': {
        this.typeOf(e.e, ctx);
        if (e.pattern.k !== 'lit' || typeof e.pattern.v !== 'string') throw sqlError('SQL_INVALID', e.pattern.pos, 'LIKE needs a string constant pattern', "for example name LIKE 'press-%'");
        return 'bool';
      }
      case 'isnull': this.typeOf(e.e, ctx); return 'bool';
      case 'case': {
        if (e.operand) this.typeOf(e.operand, ctx);
        let t: SqlType | undefined;
        for (const w of e.whens) { this.typeOf(w.when, ctx); const tt = this.typeOf(w.then, ctx); if (tt !== 'null') t ??= tt; }
        if (e.else) { const tt = this.typeOf(e.else, ctx); if (tt !== 'null') t ??= tt; }
        return t ?? 'null';
      }
      case 'call': {
        if (e.name === 'llm') {
          // llm('endpoint', prompt [, '{"max_tokens": 60, "json_schema": {…}}']): a language model of the
          // app, called like infer() (asynchronously, results in order); the runner resolves the
          // endpoint. Options are a JSON string literal, checked here.
          const m = e.args[0];
          if (!m || m.k !== 'lit' || typeof m.v !== 'string') throw sqlError('SQL_INVALID', m?.pos ?? e.pos, "llm()'s first argument is the endpoint's name, a string", "llm('explain', concat('rms ', avg(rms)))");
          if (e.args.length < 2 || e.args.length > 3) throw sqlError('SQL_INVALID', e.pos, 'llm() takes the endpoint, the prompt and optionally its options', `llm('explain', prompt, '{"max_tokens": 60}')`);
          const o = e.args[2];
          if (o) {
            if (o.k !== 'lit' || typeof o.v !== 'string') throw sqlError('SQL_INVALID', o.pos, "llm()'s options are a JSON string literal", `'{"max_tokens": 60, "json_schema": {"type": "object"}}'`);
            let opts: unknown;
            try { opts = JSON.parse(o.v); } catch (err) { throw sqlError('SQL_INVALID', o.pos, `llm()'s options are not valid JSON: ${(err as Error).message}`); }
            if (typeof opts !== 'object' || opts === null || Array.isArray(opts)) throw sqlError('SQL_INVALID', o.pos, "llm()'s options are a JSON object");
            for (const [k, v] of Object.entries(opts)) {
              if (k === 'max_tokens' ? !(Number.isInteger(v) && (v as number) > 0) : k === 'json_schema' ? typeof v !== 'object' || v === null : k === 'temperature' ? typeof v !== 'number' || v < 0 || v > 2 : true) {
                throw sqlError('SQL_INVALID', o.pos, `llm() option "${k}" is not valid`, 'options: max_tokens (a positive integer), json_schema (an object), temperature (0–2)');
              }
            }
          }
          if (ctx.having && !ctx.inAgg) throw sqlError('SQL_INVALID', e.pos, 'llm() over a window is computed after the window closes, so HAVING cannot use it');
          this.typeOf(e.args[1]!, { aggAllowed: ctx.aggAllowed && !ctx.inAgg, inAgg: ctx.inAgg });
          return 'any';
        }
        if (e.name === 'infer') {
          const m = e.args[0];
          if (!m || m.k !== 'lit' || typeof m.v !== 'string') throw sqlError('SQL_INVALID', m?.pos ?? e.pos, "infer()'s first argument is the model's name, a string", "infer('vib-ae', rms, kurtosis, peakHz)");
          if (e.args.length < 2) throw sqlError('SQL_INVALID', e.pos, 'infer() needs the model name and at least one value');
          if (this.models && !this.models.includes(m.v)) {
            const guess = closest(m.v, this.models);
            throw sqlError('SQL_INVALID', m.pos, `the app has no model "${m.v}"`, guess ? `did you mean '${guess}'?` : this.models.length ? `its models are ${this.models.join(', ')}` : 'declare it in spec.models');
          }
          if (ctx.having && !ctx.inAgg) throw sqlError('SQL_INVALID', e.pos, 'infer() over a window is computed after the window closes, so HAVING cannot use it', 'filter its result downstream, or call infer() inside an aggregate: max(infer(…))');
          e.args.slice(1).forEach((a) => this.typeOf(a, { aggAllowed: ctx.aggAllowed && !ctx.inAgg, inAgg: ctx.inAgg }));
          return 'any';
        }
        if (WINDOW_FUNCTIONS.has(e.name)) throw sqlError('SQL_INVALID', e.pos, `${e.name.toUpperCase()} belongs in GROUP BY`, `GROUP BY key, ${e.name.toUpperCase()}(ss, 10)`);
        const agg = AGGREGATES[e.name];
        if (agg) {
          if (!ctx.aggAllowed) throw sqlError('SQL_INVALID', e.pos, `aggregate ${e.name}() is not allowed here`, ctx.inAgg ? 'aggregates cannot be nested' : 'filter groups with HAVING, not WHERE');
          if (e.star && !agg.star) throw sqlError('SQL_INVALID', e.pos, `${e.name}(*) is not valid`, `name a field: ${e.name}(x)`);
          const want = (e.star ? 0 : 1) + agg.extra;
          if (e.args.length !== want) throw sqlError('SQL_INVALID', e.pos, `${e.name}() takes ${agg.extra ? `a value and ${agg.extra} constant${agg.extra > 1 ? 's' : ''}` : 'one value'} but got ${e.args.length} argument${e.args.length === 1 ? '' : 's'}`);
          e.args.slice(e.star ? 0 : 1).forEach((x) => {
            if (x.k !== 'lit' || typeof x.v !== 'number') throw sqlError('SQL_INVALID', x.pos, `${e.name}()'s extra argument must be a number constant`);
            if (e.name === 'percentile' && (x.v < 0 || x.v > 1)) throw sqlError('SQL_INVALID', x.pos, `percentile fraction must be between 0 and 1`, 'percentile(latency, 0.95)');
          });
          if (!e.star) this.typeOf(e.args[0]!, { aggAllowed: false, inAgg: true });
          return agg.returns;
        }
        const fn = SCALARS[e.name];
        if (!fn) {
          const guess = closest(e.name, [...Object.keys(SCALARS), ...Object.keys(AGGREGATES)]);
          throw sqlError('SQL_INVALID', e.pos, `unknown function ${e.name}()`, guess ? `did you mean ${guess}()?` : 'see docs/sql.md for the functions');
        }
        if (e.distinct || e.star) throw sqlError('SQL_INVALID', e.pos, `${e.name}() takes no ${e.distinct ? 'DISTINCT' : '*'}`);
        if (e.args.length < fn.min || e.args.length > fn.max) {
          throw sqlError('SQL_INVALID', e.pos, `${e.name}() takes ${fn.min === fn.max ? fn.min : `${fn.min} to ${fn.max}`} argument${fn.max === 1 ? '' : 's'} but got ${e.args.length}`);
        }
        e.args.forEach((x) => this.typeOf(x, ctx));
        return fn.returns;
      }
    }
  }

  /** Compiles an expression to a closure. `emit` mode reads aggregates from env.aggs. */
  compile(e: Expr, emit: boolean): Fn {
    switch (e.k) {
      case 'lit': { const v = e.v; return () => v; }
      case 'star': return (row) => row;
      case 'field': {
        const path = this.fieldName(e);
        if (emit && path.length === 1 && this.aliases.has(String(path[0])) && !(this.types?.has(String(path[0])))) {
          return this.compile(this.aliases.get(String(path[0]))!, emit);
        }
        if (path.length === 1) { const k = path[0] as string; return (row) => { const v = row[k]; return v === undefined ? null : v; }; }
        return (row) => {
          let cur: unknown = row;
          for (const p of path) {
            if (cur === null || cur === undefined) return null;
            if (typeof p === 'number') cur = Array.isArray(cur) ? cur[p < 0 ? cur.length + p : p] : undefined;
            else cur = typeof cur === 'object' ? (cur as Row)[p] : undefined;
          }
          return cur === undefined ? null : cur;
        };
      }
      case 'member': { const o = this.compile(e.e, emit); const n = e.name; return (r, env) => { const v = o(r, env); return v && typeof v === 'object' ? ((v as Row)[n] ?? null) : null; }; }
      case 'index': {
        const o = this.compile(e.e, emit);
        const i = this.compile(e.index, emit);
        return (r, env) => { const v = o(r, env); const k = i(r, env); if (v === null || typeof v !== 'object') return null; if (Array.isArray(v) && typeof k === 'number') return v[k < 0 ? v.length + k : k] ?? null; return (v as Row)[String(k)] ?? null; };
      }
      case 'unary': {
        const x = this.compile(e.e, emit);
        if (e.op === '-') return (r, env) => { const v = x(r, env); return typeof v === 'number' ? -v : v === null ? null : -Number(v); };
        return (r, env) => { const v = x(r, env); return v === null || v === undefined ? null : !truthy(v); };
      }
      case 'bin': {
        const l = this.compile(e.l, emit);
        const r = this.compile(e.r, emit);
        switch (e.op) {
          case '+': return (row, env) => { const a = l(row, env); const b = r(row, env); return a === null || b === null ? null : (a as number) + (b as number); };
          case '-': return (row, env) => { const a = l(row, env); const b = r(row, env); return a === null || b === null ? null : (a as number) - (b as number); };
          case '*': return (row, env) => { const a = l(row, env); const b = r(row, env); return a === null || b === null ? null : (a as number) * (b as number); };
          case '/': return (row, env) => { const a = l(row, env); const b = r(row, env); return a === null || b === null || b === 0 ? null : (a as number) / (b as number); };
          case '%': return (row, env) => { const a = l(row, env); const b = r(row, env); return a === null || b === null || b === 0 ? null : (a as number) % (b as number); };
          case '||': return (row, env) => { const a = l(row, env); const b = r(row, env); return a === null || b === null ? null : `${typeof a === 'object' ? JSON.stringify(a) : String(a)}${typeof b === 'object' ? JSON.stringify(b) : String(b)}`; };
          case '=': return (row, env) => eq(l(row, env), r(row, env));
          case '!=': return (row, env) => { const v = eq(l(row, env), r(row, env)); return v === null ? null : !v; };
          case '<': return (row, env) => { const c = compare(l(row, env), r(row, env)); return c === null ? null : c < 0; };
          case '<=': return (row, env) => { const c = compare(l(row, env), r(row, env)); return c === null ? null : c <= 0; };
          case '>': return (row, env) => { const c = compare(l(row, env), r(row, env)); return c === null ? null : c > 0; };
          case '>=': return (row, env) => { const c = compare(l(row, env), r(row, env)); return c === null ? null : c >= 0; };
          case 'AND': return (row, env) => { const a = l(row, env); if (a !== null && !truthy(a)) return false; const b = r(row, env); if (b !== null && !truthy(b)) return false; return a === null || b === null ? null : true; };
          case 'OR': return (row, env) => { const a = l(row, env); if (truthy(a)) return true; const b = r(row, env); if (truthy(b)) return true; return a === null || b === null ? null : false; };
        }
        break;
      }
      case 'in': {
        const x = this.compile(e.e, emit);
        const list = e.list.map((i) => this.compile(i, emit));
        const not = e.not;
        return (r, env) => { const v = x(r, env); if (v === null) return null; const hit = list.some((f) => eq(v, f(r, env)) === true); return not ? !hit : hit; };
      }
      case 'between': {
        const x = this.compile(e.e, emit);
        const lo = this.compile(e.lo, emit);
        const hi = this.compile(e.hi, emit);
        const not = e.not;
        return (r, env) => { const a = compare(x(r, env), lo(r, env)); const b = compare(x(r, env), hi(r, env)); if (a === null || b === null) return null; const inside = a >= 0 && b <= 0; return not ? !inside : inside; };
      }
      case 'like': {
        const x = this.compile(e.e, emit);
        const re = likeToRegExp((e.pattern as { v: string }).v);
        const not = e.not;
        return (r, env) => { const v = x(r, env); if (v === null) return null; const m = re.test(String(v)); return not ? !m : m; };
      }
      case 'isnull': { const x = this.compile(e.e, emit); const not = e.not; return (r, env) => { const v = x(r, env); const isNull = v === null || v === undefined; return not ? !isNull : isNull; }; }
      case 'case': {
        const operand = e.operand && this.compile(e.operand, emit);
        const whens = e.whens.map((w) => ({ when: this.compile(w.when, emit), then: this.compile(w.then, emit) }));
        const otherwise = e.else ? this.compile(e.else, emit) : () => null;
        if (operand) return (r, env) => { const v = operand(r, env); for (const w of whens) if (eq(v, w.when(r, env)) === true) return w.then(r, env); return otherwise(r, env); };
        return (r, env) => { for (const w of whens) if (truthy(w.when(r, env))) return w.then(r, env); return otherwise(r, env); };
      }
      case 'call': {
        if ((e.name === 'infer' || e.name === 'llm') && emit) {
          const model = `${e.name === 'llm' ? 'llm:' : ''}${(e.args[0] as { v: string }).v}`;
          const args = e.args.slice(1).map((a) => this.compile(a, true));
          return (row, env) => new PendingInfer(model, args.map((f) => f(row, env)));
        }
        if (e.name === 'infer' || e.name === 'llm') {
          const text = show(e);
          let idx = this.infers.findIndex((x) => x.text === text);
          if (idx < 0) {
            // llm() calls travel as model "llm:<endpoint>" (model names cannot hold ':').
            this.infers.push({ model: `${e.name === 'llm' ? 'llm:' : ''}${(e.args[0] as { v: string }).v}`, args: e.args.slice(1).map((a) => this.compile(a, false)), text });
            idx = this.infers.length - 1;
          }
          const values = this.inferValues;
          return (row) => values.get(row)?.[idx] ?? null;
        }
        const agg = AGGREGATES[e.name];
        if (agg) {
          if (!emit) throw new Error('aggregate compiled in row mode'); // the type check rules this out
          const idx = this.slotFor(e);
          return (_r, env) => env.aggs![idx];
        }
        const fn = SCALARS[e.name]!;
        const args = e.args.map((a) => this.compile(a, emit));
        const f = fn.fn;
        return (r, env) => f(args.map((a) => a(r, env)), env);
      }
    }
    throw new Error(`unhandled expression ${(e as Expr).k}`);
  }

  private slotFor(e: Extract<Expr, { k: 'call' }>): number {
    const text = show(e);
    const existing = this.aggs.findIndex((a) => a.text === text);
    if (existing >= 0) return existing;
    const agg = AGGREGATES[e.name]!;
    const extra = e.args.slice(e.star ? 0 : 1).map((x) => (x as { v: unknown }).v);
    const arg = e.star ? (e.name === 'count' ? () => 1 : (row: Row) => row) : this.compile(e.args[0]!, false);
    const make = e.distinct ? () => distinctAcc(agg.make(extra)) : () => agg.make(extra);
    this.aggs.push({ name: e.name, text, arg, make });
    this.aggIndex.set(e, this.aggs.length - 1);
    return this.aggs.length - 1;
  }

  private windowOf(e: Extract<Expr, { k: 'call' }>): WindowSpec {
    const name = e.name;
    const usage: Record<string, string> = {
      tumblingwindow: 'TUMBLINGWINDOW(ss, 10)', hoppingwindow: 'HOPPINGWINDOW(ss, 60, 10)', slidingwindow: 'SLIDINGWINDOW(ss, 30)',
      sessionwindow: 'SESSIONWINDOW(mi, 5[, 60])', countwindow: 'COUNTWINDOW(100[, 10])',
    };
    const bad = (pos: Pos, msg: string): never => { throw sqlError('SQL_INVALID', pos, msg, `for example ${usage[name]}`); };
    const numArg = (i: number, what: string): number => {
      const a = e.args[i];
      if (!a || a.k !== 'lit' || typeof a.v !== 'number' || !(a.v > 0) || !Number.isFinite(a.v)) return bad(a?.pos ?? e.pos, `${name.toUpperCase()} needs a positive number for ${what}`);
      return a.v;
    };
    if (name === 'countwindow') {
      if (e.args.length < 1 || e.args.length > 2) bad(e.pos, 'COUNTWINDOW takes a count and an optional interval');
      const count = numArg(0, 'the count');
      const interval = e.args.length > 1 ? numArg(1, 'the interval') : undefined;
      if (!Number.isInteger(count) || (interval !== undefined && (!Number.isInteger(interval) || interval > count))) bad(e.pos, 'COUNTWINDOW counts are whole numbers and the interval is at most the count');
      return { kind: 'count', count, interval };
    }
    const unitArg = e.args[0];
    const unitName = unitArg?.k === 'field' && unitArg.path.length === 1 ? String(unitArg.path[0]).toLowerCase() : undefined;
    const unit = unitName !== undefined ? UNIT_MS[unitName] : undefined;
    if (unit === undefined) bad(unitArg?.pos ?? e.pos, `${name.toUpperCase()}'s first argument is a time unit: ms, ss, mi, hh or dd`);
    const n = e.args.length - 1;
    if (name === 'tumblingwindow' || name === 'slidingwindow') {
      if (n !== 1) bad(e.pos, `${name.toUpperCase()} takes a unit and a size`);
      const size = numArg(1, 'the size') * unit!;
      return name === 'tumblingwindow' ? { kind: 'tumbling', size } : { kind: 'sliding', size };
    }
    if (name === 'hoppingwindow') {
      if (n !== 2) bad(e.pos, 'HOPPINGWINDOW takes a unit, a size and a hop');
      const size = numArg(1, 'the size') * unit!;
      const hop = numArg(2, 'the hop') * unit!;
      if (hop > size) bad(e.args[2]!.pos, 'the hop must not be longer than the window');
      return { kind: 'hopping', size, hop };
    }
    if (n < 1 || n > 2) bad(e.pos, 'SESSIONWINDOW takes a unit, a gap timeout and an optional maximum length');
    const timeout = numArg(1, 'the gap timeout') * unit!;
    const max = n === 2 ? numArg(2, 'the maximum length') * unit! : undefined;
    if (max !== undefined && max < timeout) bad(e.args[2]!.pos, 'the maximum length must be at least the gap timeout');
    return { kind: 'session', timeout, max };
  }

  plan(sql: string): Plan {
    const q = this.q;
    if (q.from.name !== this.stream.name) {
      throw sqlError('SQL_INVALID', q.from.pos, `unknown stream "${q.from.name}"`, `this rule can read ${this.stream.name}`);
    }
    // Window and keys.
    let window: WindowSpec | undefined;
    const keyExprs: Expr[] = [];
    for (const g of q.groupBy) {
      if (g.k === 'call' && WINDOW_FUNCTIONS.has(g.name)) {
        if (window) throw sqlError('SQL_INVALID', g.pos, 'a query has at most one window');
        window = this.windowOf(g);
      } else {
        this.typeOf(g, { aggAllowed: false });
        keyExprs.push(g);
      }
    }
    const hasAgg = (e: Expr): boolean => {
      switch (e.k) {
        case 'call': return !!AGGREGATES[e.name] || e.args.some(hasAgg);
        case 'unary': case 'member': case 'isnull': return hasAgg(e.e);
        case 'index': return hasAgg(e.e) || hasAgg(e.index);
        case 'bin': return hasAgg(e.l) || hasAgg(e.r);
        case 'in': return hasAgg(e.e) || e.list.some(hasAgg);
        case 'between': return hasAgg(e.e) || hasAgg(e.lo) || hasAgg(e.hi);
        case 'like': return hasAgg(e.e);
        case 'case': return (e.operand ? hasAgg(e.operand) : false) || e.whens.some((w) => hasAgg(w.when) || hasAgg(w.then)) || (e.else ? hasAgg(e.else) : false);
        default: return false;
      }
    };
    const windowed = window !== undefined;
    if (!windowed) {
      const agg = q.items.find((i) => hasAgg(i.expr)) ?? (q.having ? { pos: q.having.pos } : undefined);
      if (keyExprs.length) throw sqlError('SQL_INVALID', keyExprs[0]!.pos, 'GROUP BY needs a window', 'add one: GROUP BY key, TUMBLINGWINDOW(ss, 10)');
      if (agg) throw sqlError('SQL_INVALID', agg.pos, 'aggregates and HAVING need a window', 'add GROUP BY TUMBLINGWINDOW(ss, 10) (or another window)');
    }
    if (q.where) this.typeOf(q.where, { aggAllowed: false });

    const columns: Plan['columns'] = [];
    const names = new Set<string>();
    const named = q.items.map((it, i) => {
      if (it.expr.k === 'star') {
        if (windowed) throw sqlError('SQL_INVALID', it.pos, 'SELECT * cannot be used with a window', 'name the fields and aggregates you want');
        return undefined;
      }
      this.typeOf(it.expr, { aggAllowed: windowed });
      // Default names follow eKuiper: a field's last segment, a function's name, else col_N.
      const name = it.alias ?? (it.expr.k === 'field' ? String(it.expr.path[it.expr.path.length - 1]) : it.expr.k === 'call' ? it.expr.name : `col_${i + 1}`);
      if (names.has(name)) throw sqlError('SQL_INVALID', it.pos, `two output columns are named "${name}"`, 'give one an alias with AS');
      names.add(name);
      if (it.alias) this.aliases.set(it.alias, it.expr);
      return name;
    });
    q.items.forEach((it, i) => {
      const name = named[i];
      columns.push(name === undefined ? { star: true } : { name, fn: this.compile(it.expr, windowed) });
    });
    if (q.having) this.typeOf(q.having, { aggAllowed: true, having: true });
    const having = q.having ? this.compile(q.having, true) : undefined;
    const filter = q.where ? this.compile(q.where, false) : undefined;
    const keys = keyExprs.map((k) => this.compile(k, false));
    const stream = this.stream;
    const aggs = this.aggs;
    const explainText = (): string => {
      const text = `SELECT ${q.items.map((it) => (it.alias ? `${show(it.expr)} AS ${it.alias}` : show(it.expr))).join(', ')} FROM ${q.from.name}`
        + `${q.where ? ` WHERE ${show(q.where)}` : ''}${q.groupBy.length ? ` GROUP BY ${q.groupBy.map(show).join(', ')}` : ''}${q.having ? ` HAVING ${show(q.having)}` : ''}`;
      const lines = [`Query: ${text}`];
      lines.push(`  Source: stream ${stream.name} (${stream.timestamp ? `event time from "${stream.timestamp}"` : 'processing time'}${stream.schema ? `, schema ${Object.entries(stream.schema).map(([k, v]) => `${k}:${v}`).join(' ')}` : ', schemaless'})`);
      if (this.infers.length) lines.push(`  Infer: ${this.infers.map((i) => i.text).join(', ')} (batched per model, before the filter)`);
      if (q.where) lines.push(`  Filter: ${show(q.where)}`);
      if (window) lines.push(`  Window: ${describeWindow(window)}`);
      if (windowed) {
        lines.push(`  Aggregate: group by [${keyExprs.map(show).join(', ')}]${aggs.length ? `; ${aggs.map((a) => a.text).join(', ')}` : ''}`);
      }
      if (q.having) lines.push(`  Having: ${show(q.having)}`);
      lines.push(`  Project: ${q.items.map((it) => (it.expr.k === 'star' ? '*' : it.alias ? `${it.alias} := ${show(it.expr)}` : show(it.expr))).join(', ')}`);
      return lines.join('\n');
    };
    return { sql, stream, infers: this.infers, inferValues: this.inferValues, filter, windowed, window, keys, aggs, columns, having, explain: explainText };
  }
}

export function describeWindow(w: WindowSpec): string {
  const d = (ms: number) => (ms % 86_400_000 === 0 ? `${ms / 86_400_000}d` : ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}min` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);
  switch (w.kind) {
    case 'tumbling': return `TUMBLING size ${d(w.size)}`;
    case 'hopping': return `HOPPING size ${d(w.size)} hop ${d(w.hop)}`;
    case 'sliding': return `SLIDING size ${d(w.size)} (emits on every record)`;
    case 'session': return `SESSION gap ${d(w.timeout)}${w.max ? ` max ${d(w.max)}` : ''}`;
    case 'count': return `COUNT ${w.count}${w.interval ? ` every ${w.interval}` : ''} records`;
  }
}

/** Parses and plans a rule; syntax and semantic errors carry line and column. */
export function planQuery(sql: string, stream: StreamDef, opts: { models?: readonly string[] } = {}): Plan {
  return new Planner(parse(sql), stream, opts.models).plan(sql);
}
