import type { Expr, Query } from './ast.ts';
import { sqlError, type Pos } from './lexer.ts';
import { closest, parse } from './parser.ts';
import {
  AGGREGATES,
  SCALARS,
  WINDOW_FUNCTIONS,
  ValueError,
  distinctAcc,
  isNumType,
  showValue,
  type Acc,
  type EvalEnv,
  type Meter,
  type SqlType,
} from './functions.ts';
import { EwError } from '../contracts/errors.ts';
import type { FieldType } from '../contracts/manifest.ts';

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
  | { kind: 'session'; timeout: number; max: number }
  | { kind: 'count'; count: number; interval?: number };

/**
 * Plan-time bounds on a rule's windows (issue: a window spec alone must not be able to exhaust a
 * site). Defaults in DEFAULT_LIMITS; docs/sql.md lists them.
 */
export interface PlanLimits {
  /** Windows one record can fall in (a hopping window's size / hop). */
  maxWindowsPerRecord: number;
  /** Time windows open at once: (size + lateness) / hop. */
  maxOpenWindows: number;
  /** Records a count window holds. */
  maxRowsPerWindow: number;
}
export const DEFAULT_LIMITS: PlanLimits = { maxWindowsPerRecord: 1000, maxOpenWindows: 10_000, maxRowsPerWindow: 100_000 };

/**
 * A record's failure inside a rule: a value of the wrong type, a division by zero. It names the
 * SQL position, the expression and the values; the rule host adds the rule's name. The record
 * goes to the rule's errors and dead letters and the rule goes on.
 */
export class RecordError extends Error {
  override readonly name = 'RecordError';
  constructor(
    readonly pos: Pos,
    readonly detail: string,
  ) {
    super(`line ${pos.line}, column ${pos.col}: ${detail}`);
  }
}
const recordError = (pos: Pos, e: unknown): Error =>
  e instanceof RecordError ? e : e instanceof ValueError ? new RecordError(pos, e.message) : (e as Error);

export type Row = Record<string, unknown>;
export interface Env extends EvalEnv {
  aggs?: unknown[];
}
export type Fn = (row: Row, env: Env) => unknown;

export interface AggSlot {
  name: string;
  text: string;
  pos: Pos;
  arg?: Fn;
  make: (meter: Meter) => Acc;
  /** Takes numbers only (sum, avg, stddev, percentile, …): a non-number fails the record before any state changes. */
  numeric: boolean;
}

/** One `infer(model, …)` call: its arguments are computed per record before the rule sees it. */
export interface InferCall {
  model: string;
  args: Fn[];
  text: string;
}

/**
 * `infer()` over a window's aggregates (`infer('m', avg(x), max(y))` in SELECT): computed after
 * the window closes. The runtime emits this placeholder; the runner replaces it with the model's
 * answer before the row reaches any sink.
 */
export class PendingInfer {
  constructor(
    readonly model: string,
    readonly args: unknown[],
  ) {}
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
  /**
   * Every model the rule calls, per record or over window results (`llm()` endpoints as
   * "llm:<endpoint>"): a site holds the rule's input while one of them loads.
   */
  models: string[];
  stream: StreamDef;
  filter?: Fn;
  /** True when the query has a window (results per window and group) — else one result per record. */
  windowed: boolean;
  window?: WindowSpec;
  keys: Fn[];
  aggs: AggSlot[];
  /** Output columns; `star` spreads the input record (a window's group: its first record). */
  columns: ({ name: string; fn: Fn } | { star: true })[];
  having?: Fn;
  /**
   * A window query with no aggregate and no GROUP BY key emits every row of the window, one
   * output row per record (eKuiper); otherwise one row per group.
   */
  rowsMode: boolean;
  /** ORDER BY keys, evaluated like the projection; applied to each emission. */
  order: { fn: Fn; desc: boolean }[];
  limit?: number;
  /** Top-level fields the query reads (schemaless streams: the runtime warns about ones never seen). */
  fieldRefs: { name: string; pos: Pos }[];
  explain(): string;
}

const UNIT_MS: Record<string, number> = { ms: 1, ss: 1000, mi: 60_000, hh: 3_600_000, dd: 86_400_000 };

/** Each field type a schema may declare (the manifest's FieldType), as the SQL type checker sees it. */
const SCHEMA_TYPES: Record<FieldType, SqlType> = {
  string: 'string',
  int: 'int',
  bigint: 'int',
  float: 'number',
  number: 'number',
  double: 'number',
  bool: 'bool',
  boolean: 'bool',
  timestamp: 'any',
  datetime: 'any',
  object: 'object',
  struct: 'object',
  array: 'array',
  any: 'any',
};

/** Checks a stream's declared schema; the error names the field. */
export function schemaTypes(def: StreamDef): Map<string, SqlType> | undefined {
  if (!def.schema) return undefined;
  const m = new Map<string, SqlType>();
  for (const [field, t] of Object.entries(def.schema)) {
    // Case-insensitive: `edgeweave sql --schema` passes the user's JSON as written.
    const key = t.toLowerCase();
    const st = Object.hasOwn(SCHEMA_TYPES, key) ? SCHEMA_TYPES[key as FieldType] : undefined;
    if (!st)
      throw new EwError(
        'SQL_INVALID',
        `stream ${def.name}: field "${field}" has type "${t}"; use one of ${Object.keys(SCHEMA_TYPES).join(', ')}`,
        { path: `schema.${field}` },
      );
    m.set(field, st);
  }
  return m;
}

/** SQL text of an expression, for EXPLAIN and default column names. */
export function show(e: Expr): string {
  switch (e.k) {
    case 'lit':
      return e.v === null ? 'NULL' : typeof e.v === 'string' ? `'${e.v.replace(/'/g, "''")}'` : String(e.v);
    case 'field':
      return e.path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
    case 'star':
      return '*';
    case 'call':
      return `${WINDOW_FUNCTIONS.has(e.name) ? e.name.toUpperCase() : e.name}(${e.distinct ? 'DISTINCT ' : ''}${e.star ? '*' : e.args.map(show).join(', ')})`;
    case 'unary':
      return e.op === 'NOT' ? `NOT ${show(e.e)}` : `-${show(e.e)}`;
    case 'bin':
      return `${paren(e.l)} ${e.op} ${paren(e.r)}`;
    case 'in':
      return `${show(e.e)} ${e.not ? 'NOT ' : ''}IN (${e.list.map(show).join(', ')})`;
    case 'between':
      return `${show(e.e)} ${e.not ? 'NOT ' : ''}BETWEEN ${show(e.lo)} AND ${show(e.hi)}`;
    case 'like':
      return `${show(e.e)} ${e.not ? 'NOT ' : ''}LIKE ${show(e.pattern)}`;
    case 'isnull':
      return `${show(e.e)} IS ${e.not ? 'NOT ' : ''}NULL`;
    case 'case':
      return `CASE ${e.operand ? `${show(e.operand)} ` : ''}${e.whens.map((w) => `WHEN ${show(w.when)} THEN ${show(w.then)}`).join(' ')}${e.else ? ` ELSE ${show(e.else)}` : ''} END`;
    case 'index':
      return `${show(e.e)}[${show(e.index)}]`;
    case 'member':
      return `${show(e.e)}.${e.name}`;
  }
}
const paren = (e: Expr) => (e.k === 'bin' ? `(${show(e)})` : show(e));

function likeToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\' && i + 1 < pattern.length) {
      re += pattern[++i]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      continue;
    }
    re += c === '%' ? '.*' : c === '_' ? '.' : c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}

/** LIKE patterns read from records are compiled once each, in a bounded cache. */
const likeCache = new Map<string, RegExp>();
function likeRe(p: string): RegExp {
  let re = likeCache.get(p);
  if (!re) {
    if (likeCache.size >= 256) likeCache.clear();
    re = likeToRegExp(p);
    likeCache.set(p, re);
  }
  return re;
}

/** A field the record does not spell exactly: eKuiper matches names case-insensitively. */
function lookupCI(row: Row, k: string): unknown {
  const lk = k.toLowerCase();
  for (const key in row) if (key.toLowerCase() === lk) return row[key] ?? null;
  return null;
}

const kindOf = (v: unknown): string => (v === null || v === undefined ? 'null' : Array.isArray(v) ? 'array' : typeof v);

/**
 * Comparison as eKuiper has it: numbers with numbers, strings with strings, bools only for = and
 * !=; anything else (a number against a string, an object, an array) is the record's error.
 * With a null side, = <= >= are true only when both are null, != when exactly one is, < > never.
 */
type CmpOp = '=' | '!=' | '<' | '<=' | '>' | '>=';
function compareSlow(a: unknown, b: unknown, op: CmpOp, site: { pos: Pos; l: string; r: string }): boolean {
  const an = a === null || a === undefined;
  const bn = b === null || b === undefined;
  if (an || bn) {
    if (op === '=' || op === '<=' || op === '>=') return an && bn;
    if (op === '!=') return an !== bn;
    return false;
  }
  const ka = kindOf(a);
  if (ka === kindOf(b) && (ka === 'number' || ka === 'string' || (ka === 'boolean' && (op === '=' || op === '!=')))) {
    const x = a as number | string | boolean;
    const y = b as number | string | boolean;
    switch (op) {
      case '=':
        return x === y;
      case '!=':
        return x !== y;
      case '<':
        return x < y;
      case '<=':
        return x <= y;
      case '>':
        return x > y;
      case '>=':
        return x >= y;
    }
  }
  throw new RecordError(
    site.pos,
    `cannot compare ${site.l} = ${showValue(a)} with ${site.r} = ${showValue(b)} using ${op}${ka === 'string' || kindOf(b) === 'string' ? "; convert with cast(x, 'float') or cast(x, 'string')" : ''}`,
  );
}
/** = for IN lists: same type and value, never an error. */
const sameValue = (a: unknown, b: unknown): boolean =>
  a === b || (a !== null && b !== null && typeof a === 'object' && typeof b === 'object' && JSON.stringify(a) === JSON.stringify(b));

/** A condition (WHERE, HAVING, AND, OR, NOT) must be a bool or null, as in eKuiper. */
function cond(v: unknown, pos: Pos, what: string): boolean | null {
  if (v === true || v === false) return v;
  if (v === null || v === undefined) return null;
  throw new RecordError(pos, `${what} needs a bool but got ${showValue(v)}`);
}

/** Orders emitted rows for ORDER BY: nulls first, then numbers, strings, bools, others as JSON. */
function orderValue(a: unknown, b: unknown): number {
  const an = a === null || a === undefined;
  const bn = b === null || b === undefined;
  if (an || bn) return an && bn ? 0 : an ? -1 : 1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  const rank = (v: unknown) => (typeof v === 'number' ? 0 : typeof v === 'string' ? 1 : typeof v === 'boolean' ? 2 : 3);
  if (rank(a) !== rank(b)) return rank(a) - rank(b);
  const x = JSON.stringify(a);
  const y = JSON.stringify(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
export { orderValue };

class Planner {
  private readonly types: Map<string, SqlType> | undefined;
  /** Schema field names by lower case: names are matched case-insensitively, as in eKuiper. */
  private readonly schemaCI = new Map<string, string>();
  private readonly aggs: AggSlot[] = [];
  /** Select aliases visible where the expression is: earlier items in SELECT; all in HAVING and ORDER BY. */
  private aliases = new Map<string, Expr>();
  private aliasScope = false;
  private readonly staticType = new WeakMap<Expr, SqlType>();
  private readonly infers: InferCall[] = [];
  private readonly models = new Set<string>();
  private readonly inferValues = new WeakMap<Row, unknown[]>();
  private readonly fieldRefs = new Map<string, Pos>();

  constructor(
    private readonly q: Query,
    private readonly stream: StreamDef,
    private readonly opts: PlanOptions,
  ) {
    this.types = schemaTypes(stream);
    for (const k of this.types?.keys() ?? []) this.schemaCI.set(k.toLowerCase(), k);
  }

  private fieldName(e: Extract<Expr, { k: 'field' }>): (string | number)[] {
    let path = e.path;
    // `traffic.speed` names the stream; strip it unless the schema has a field of that name.
    if (path.length > 1 && path[0] === this.stream.name && !this.schemaField(String(path[0]))) path = path.slice(1);
    const head = this.schemaField(String(path[0]));
    return head && head !== path[0] ? [head, ...path.slice(1)] : path;
  }
  private schemaField(name: string): string | undefined {
    return this.types?.has(name) ? name : this.schemaCI.get(name.toLowerCase());
  }
  private aliasOf(e: Expr): Expr | undefined {
    if (!this.aliasScope || e.k !== 'field' || e.path.length !== 1) return undefined;
    const name = String(e.path[0]).toLowerCase();
    // Inside its own expansion a name is the record's field: SELECT v + 1 AS v, v * 2 AS w.
    if (this.schemaField(name) || this.expanding.has(name)) return undefined;
    return this.aliases.get(name);
  }
  /** Types or compiles an alias's expression in place of the name that refers to it. */
  private expand<T>(e: Expr, alias: Expr, f: (x: Expr) => T): T {
    const name = String((e as { path: unknown[] }).path[0]).toLowerCase();
    this.expanding.add(name);
    try {
      return f(alias);
    } finally {
      this.expanding.delete(name);
    }
  }
  private readonly expanding = new Set<string>();

  typeOf(e: Expr, ctx: { aggAllowed: boolean; inAgg?: boolean; having?: boolean }): SqlType {
    const t = this.typeOf0(e, ctx);
    this.staticType.set(e, t);
    return t;
  }
  private isInt(e: Expr): boolean {
    return this.staticType.get(e) === 'int';
  }

  /** Type of an expression; throws on unknown fields and functions, wrong arity and bad operands. */
  private typeOf0(e: Expr, ctx: { aggAllowed: boolean; inAgg?: boolean; having?: boolean }): SqlType {
    switch (e.k) {
      case 'lit':
        return e.v === null
          ? 'null'
          : typeof e.v === 'number'
            ? e.float || !Number.isInteger(e.v)
              ? 'number'
              : 'int'
            : typeof e.v === 'string'
              ? 'string'
              : 'bool';
      case 'star':
        throw sqlError('SQL_INVALID', e.pos, '"*" is only allowed as a select item or in count(*)');
      case 'field': {
        const alias = this.aliasOf(e);
        if (alias) return this.expand(e, alias, (x) => this.typeOf(x, ctx));
        const path = this.fieldName(e);
        const head = String(path[0]);
        if (!this.fieldRefs.has(head)) this.fieldRefs.set(head, e.pos);
        if (!this.types) return 'any';
        const t = this.types.get(head);
        if (t === undefined) {
          const guess = closest(head, [...this.types.keys(), ...(this.aliasScope ? this.aliases.keys() : [])]);
          throw sqlError(
            'SQL_INVALID',
            e.pos,
            `stream ${this.stream.name} has no field "${head}"`,
            guess ? `did you mean ${guess}?` : `its fields are ${[...this.types.keys()].join(', ')}`,
          );
        }
        return path.length === 1 ? t : 'any';
      }
      case 'member':
      case 'index':
        this.typeOf(e.e, ctx);
        if (e.k === 'index') this.typeOf(e.index, ctx);
        return 'any';
      case 'unary': {
        const t = this.typeOf(e.e, ctx);
        if (e.op === '-' && !isNumType(t) && t !== 'any' && t !== 'null')
          throw sqlError('SQL_INVALID', e.pos, `cannot negate ${show(e.e)}, a ${t}`);
        if (e.op === 'NOT' && t !== 'bool' && t !== 'any' && t !== 'null')
          throw sqlError('SQL_INVALID', e.pos, `NOT needs a bool but ${show(e.e)} is a ${t}`);
        return e.op === '-' ? (t === 'int' ? 'int' : 'number') : 'bool';
      }
      case 'bin': {
        const l = this.typeOf(e.l, ctx);
        const r = this.typeOf(e.r, ctx);
        const known = (t: SqlType) => t !== 'any' && t !== 'null';
        if (['+', '-', '*', '/', '%'].includes(e.op)) {
          for (const [t, side] of [
            [l, e.l],
            [r, e.r],
          ] as const) {
            if (known(t) && !isNumType(t)) {
              throw sqlError(
                'SQL_INVALID',
                side.pos,
                `"${e.op}" needs numbers but ${show(side)} is a ${t}`,
                e.op === '+' && t === 'string' ? 'join strings with || or concat()' : undefined,
              );
            }
          }
          return l === 'int' && r === 'int' ? 'int' : 'number';
        }
        if (e.op === '||') return 'string';
        if (e.op === 'AND' || e.op === 'OR') {
          for (const [t, side] of [
            [l, e.l],
            [r, e.r],
          ] as const)
            if (known(t) && t !== 'bool') throw sqlError('SQL_INVALID', side.pos, `${e.op} needs bools but ${show(side)} is a ${t}`);
          return 'bool';
        }
        if (known(l) && known(r)) {
          const kind = (t: SqlType) => (isNumType(t) ? 'number' : t);
          const ordered = ['<', '<=', '>', '>='].includes(e.op);
          if (kind(l) !== kind(r) || l === 'object' || l === 'array' || (ordered && l === 'bool')) {
            throw sqlError(
              'SQL_INVALID',
              e.pos,
              `cannot compare ${show(e.l)} (${l}) with ${show(e.r)} (${r}) using ${e.op}`,
              kind(l) !== kind(r) ? "convert one side, e.g. cast(x, 'float')" : undefined,
            );
          }
        }
        return 'bool';
      }
      case 'in':
        this.typeOf(e.e, ctx);
        for (const x of e.list) this.typeOf(x, ctx);
        return 'bool';
      case 'between':
        this.typeOf(e.e, ctx);
        this.typeOf(e.lo, ctx);
        this.typeOf(e.hi, ctx);
        return 'bool';
      case 'like': {
        this.typeOf(e.e, ctx);
        const pt = this.typeOf(e.pattern, ctx);
        if (pt !== 'string' && pt !== 'any' && pt !== 'null')
          throw sqlError(
            'SQL_INVALID',
            e.pattern.pos,
            `LIKE needs a string pattern but ${show(e.pattern)} is a ${pt}`,
            "for example name LIKE 'press-%'",
          );
        return 'bool';
      }
      case 'isnull':
        this.typeOf(e.e, ctx);
        return 'bool';
      case 'case': {
        if (e.operand) this.typeOf(e.operand, ctx);
        const ts: SqlType[] = [];
        for (const w of e.whens) {
          this.typeOf(w.when, ctx);
          ts.push(this.typeOf(w.then, ctx));
        }
        if (e.else) ts.push(this.typeOf(e.else, ctx));
        const real = ts.filter((t) => t !== 'null');
        if (real.length && real.every((t) => t === 'int')) return 'int';
        if (real.length && real.every(isNumType)) return 'number';
        return real.find((t) => t !== 'any') && real.every((t) => t === real[0]) ? real[0]! : real.length ? 'any' : 'null';
      }
      case 'call': {
        if (e.name === 'llm') {
          // llm('endpoint', prompt [, '{"max_tokens": 60, "json_schema": {…}}']): a language model of the
          // app, called like infer() (asynchronously, results in order); the runner resolves the
          // endpoint. Options are a JSON string literal, checked here.
          const m = e.args[0];
          if (!m || m.k !== 'lit' || typeof m.v !== 'string')
            throw sqlError(
              'SQL_INVALID',
              m?.pos ?? e.pos,
              "llm()'s first argument is the endpoint's name, a string",
              "llm('explain', concat('rms ', avg(rms)))",
            );
          if (e.args.length < 2 || e.args.length > 3)
            throw sqlError(
              'SQL_INVALID',
              e.pos,
              'llm() takes the endpoint, the prompt and optionally its options',
              `llm('explain', prompt, '{"max_tokens": 60}')`,
            );
          const o = e.args[2];
          if (o) {
            if (o.k !== 'lit' || typeof o.v !== 'string')
              throw sqlError(
                'SQL_INVALID',
                o.pos,
                "llm()'s options are a JSON string literal",
                `'{"max_tokens": 60, "json_schema": {"type": "object"}}'`,
              );
            let opts: unknown;
            try {
              opts = JSON.parse(o.v);
            } catch (err) {
              throw sqlError('SQL_INVALID', o.pos, `llm()'s options are not valid JSON: ${(err as Error).message}`);
            }
            if (typeof opts !== 'object' || opts === null || Array.isArray(opts))
              throw sqlError('SQL_INVALID', o.pos, "llm()'s options are a JSON object");
            for (const [k, v] of Object.entries(opts)) {
              if (
                k === 'max_tokens'
                  ? !(Number.isInteger(v) && (v as number) > 0)
                  : k === 'json_schema'
                    ? typeof v !== 'object' || v === null
                    : k === 'temperature'
                      ? typeof v !== 'number' || v < 0 || v > 2
                      : true
              ) {
                throw sqlError(
                  'SQL_INVALID',
                  o.pos,
                  `llm() option "${k}" is not valid`,
                  'options: max_tokens (a positive integer), json_schema (an object), temperature (0–2)',
                );
              }
            }
          }
          if (ctx.having && !ctx.inAgg)
            throw sqlError('SQL_INVALID', e.pos, 'llm() over a window is computed after the window closes, so HAVING cannot use it');
          this.typeOf(e.args[1]!, { aggAllowed: ctx.aggAllowed && !ctx.inAgg, inAgg: ctx.inAgg });
          return 'any';
        }
        if (e.name === 'infer') {
          const m = e.args[0];
          if (!m || m.k !== 'lit' || typeof m.v !== 'string')
            throw sqlError(
              'SQL_INVALID',
              m?.pos ?? e.pos,
              "infer()'s first argument is the model's name, a string",
              "infer('vib-ae', rms, kurtosis, peakHz)",
            );
          if (e.args.length < 2) throw sqlError('SQL_INVALID', e.pos, 'infer() needs the model name and at least one value');
          const models = this.opts.models;
          if (models && !models.includes(m.v)) {
            const guess = closest(m.v, models);
            throw sqlError(
              'SQL_INVALID',
              m.pos,
              `the app has no model "${m.v}"`,
              guess ? `did you mean '${guess}'?` : models.length ? `its models are ${models.join(', ')}` : 'declare it in spec.models',
            );
          }
          if (ctx.having && !ctx.inAgg)
            throw sqlError(
              'SQL_INVALID',
              e.pos,
              'infer() over a window is computed after the window closes, so HAVING cannot use it',
              'filter its result downstream, or call infer() inside an aggregate: max(infer(…))',
            );
          for (const a of e.args.slice(1)) this.typeOf(a, { aggAllowed: ctx.aggAllowed && !ctx.inAgg, inAgg: ctx.inAgg });
          return 'any';
        }
        if (WINDOW_FUNCTIONS.has(e.name))
          throw sqlError(
            'SQL_INVALID',
            e.pos,
            `${e.name.toUpperCase()} belongs in GROUP BY`,
            `GROUP BY key, ${e.name.toUpperCase()}(ss, 10)`,
          );
        const agg = AGGREGATES[e.name];
        if (agg) {
          if (!ctx.aggAllowed)
            throw sqlError(
              'SQL_INVALID',
              e.pos,
              `aggregate ${e.name}() is not allowed here`,
              ctx.inAgg ? 'aggregates cannot be nested' : 'filter groups with HAVING, not WHERE',
            );
          if (e.star && !agg.star) throw sqlError('SQL_INVALID', e.pos, `${e.name}(*) is not valid`, `name a field: ${e.name}(x)`);
          const want = (e.star ? 0 : 1) + agg.extra;
          if (e.args.length !== want)
            throw sqlError(
              'SQL_INVALID',
              e.pos,
              `${e.name}() takes ${agg.extra ? `a value and ${agg.extra} constant${agg.extra > 1 ? 's' : ''}` : 'one value'} but got ${e.args.length} argument${e.args.length === 1 ? '' : 's'}`,
            );
          e.args.slice(e.star ? 0 : 1).forEach((x) => {
            if (x.k !== 'lit' || typeof x.v !== 'number')
              throw sqlError('SQL_INVALID', x.pos, `${e.name}()'s extra argument must be a number constant`);
            if (e.name.startsWith('percentile') && (x.v < 0 || x.v > 1))
              throw sqlError('SQL_INVALID', x.pos, `percentile fraction must be between 0 and 1`, 'percentile(latency, 0.95)');
          });
          const scope = this.aliasScope;
          this.aliasScope = false; // an aggregate reads the records, not the output
          const at = e.star ? 'any' : this.typeOf(e.args[0]!, { aggAllowed: false, inAgg: true });
          this.aliasScope = scope;
          if (
            ['sum', 'avg', 'stddev', 'stddevs', 'var', 'vars', 'percentile', 'percentile_cont', 'percentile_disc', 'median'].includes(
              e.name,
            ) &&
            at !== 'any' &&
            at !== 'null' &&
            !isNumType(at)
          ) {
            throw sqlError('SQL_INVALID', e.args[0]!.pos, `${e.name}() needs numbers but ${show(e.args[0]!)} is a ${at}`);
          }
          return agg.returnsFor ? agg.returnsFor(at) : agg.returns;
        }
        const fn = SCALARS[e.name];
        if (!fn) {
          const guess = closest(e.name, [...Object.keys(SCALARS), ...Object.keys(AGGREGATES)]);
          throw sqlError(
            'SQL_INVALID',
            e.pos,
            `unknown function ${e.name}()`,
            guess ? `did you mean ${guess}()?` : 'see docs/sql.md for the functions',
          );
        }
        if (e.distinct || e.star) throw sqlError('SQL_INVALID', e.pos, `${e.name}() takes no ${e.distinct ? 'DISTINCT' : '*'}`);
        if (e.args.length < fn.min || e.args.length > fn.max) {
          throw sqlError(
            'SQL_INVALID',
            e.pos,
            `${e.name}() takes ${fn.min === fn.max ? fn.min : `${fn.min} to ${fn.max}`} argument${fn.max === 1 ? '' : 's'} but got ${e.args.length}`,
          );
        }
        const ats = e.args.map((x) => this.typeOf(x, ctx));
        if (e.name === 'cast') {
          const t = e.args[1];
          if (t?.k === 'lit' && (t.v === 'int' || t.v === 'bigint')) return 'int';
        }
        if ((e.name === 'abs' || e.name === 'mod') && ats.every((t) => t === 'int')) return 'int';
        if (e.name === 'abs' || e.name === 'mod') return 'number';
        return fn.returns;
      }
    }
  }

  /** Compiles an expression to a closure. `emit` mode reads aggregates from env.aggs. */
  compile(e: Expr, emit: boolean): Fn {
    switch (e.k) {
      case 'lit': {
        const v = e.v;
        return () => v;
      }
      case 'star':
        return (row) => row;
      case 'field': {
        const alias = this.aliasOf(e);
        if (alias) return this.expand(e, alias, (x) => this.compile(x, emit));
        const path = this.fieldName(e);
        if (path.length === 1) {
          const k = path[0] as string;
          return (row) => {
            const v = row[k];
            return v !== undefined ? v : lookupCI(row, k);
          };
        }
        return (row) => {
          let cur: unknown = row;
          for (const p of path) {
            if (cur === null || cur === undefined) return null;
            if (typeof p === 'number') cur = Array.isArray(cur) ? cur[p < 0 ? cur.length + p : p] : undefined;
            else if (typeof cur === 'object') {
              const o = cur as Row;
              cur = o[p] !== undefined ? o[p] : lookupCI(o, p);
            } else cur = undefined;
          }
          return cur === undefined ? null : cur;
        };
      }
      case 'member': {
        const o = this.compile(e.e, emit);
        const n = e.name;
        return (r, env) => {
          const v = o(r, env);
          if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
          const x = (v as Row)[n];
          return x !== undefined ? x : lookupCI(v as Row, n);
        };
      }
      case 'index': {
        const o = this.compile(e.e, emit);
        const i = this.compile(e.index, emit);
        return (r, env) => {
          const v = o(r, env);
          const k = i(r, env);
          if (v === null || typeof v !== 'object') return null;
          if (Array.isArray(v) && typeof k === 'number') return v[k < 0 ? v.length + k : k] ?? null;
          return (v as Row)[String(k)] ?? null;
        };
      }
      case 'unary': {
        const x = this.compile(e.e, emit);
        const pos = e.pos;
        const text = show(e.e);
        if (e.op === '-')
          return (r, env) => {
            const v = x(r, env);
            if (typeof v === 'number') return -v;
            if (v === null || v === undefined) return null;
            throw new RecordError(pos, `cannot negate ${text} = ${showValue(v)}`);
          };
        return (r, env) => {
          const v = cond(x(r, env), pos, 'NOT');
          return v === null ? null : !v;
        };
      }
      case 'bin':
        return this.compileBin(e, emit);
      case 'in': {
        const x = this.compile(e.e, emit);
        const list = e.list.map((i) => this.compile(i, emit));
        const not = e.not;
        return (r, env) => {
          const v = x(r, env);
          if (v === null) return null;
          const hit = list.some((f) => sameValue(v, f(r, env)));
          return not ? !hit : hit;
        };
      }
      case 'between': {
        const x = this.compile(e.e, emit);
        const lo = this.compile(e.lo, emit);
        const hi = this.compile(e.hi, emit);
        const not = e.not;
        const site = { pos: e.pos, l: show(e.e), r: `${show(e.lo)} AND ${show(e.hi)}` };
        return (r, env) => {
          const v = x(r, env);
          if (v === null || v === undefined) return false;
          const inside = compareSlow(v, lo(r, env), '>=', site) && compareSlow(v, hi(r, env), '<=', site);
          return not ? !inside : inside;
        };
      }
      case 'like': {
        const x = this.compile(e.e, emit);
        const not = e.not;
        const pos = e.pos;
        const text = show(e.e);
        const fixed = e.pattern.k === 'lit' && typeof e.pattern.v === 'string' ? likeToRegExp(e.pattern.v) : undefined;
        const pat = this.compile(e.pattern, emit);
        return (r, env) => {
          const v = x(r, env);
          if (v === null || v === undefined) return false;
          if (typeof v !== 'string') throw new RecordError(pos, `LIKE needs a string but ${text} = ${showValue(v)}`);
          let re = fixed;
          if (!re) {
            const p = pat(r, env);
            if (p === null || p === undefined) return false;
            if (typeof p !== 'string') throw new RecordError(pos, `LIKE needs a string pattern but got ${showValue(p)}`);
            re = likeRe(p);
          }
          const m = re.test(v);
          return not ? !m : m;
        };
      }
      case 'isnull': {
        const x = this.compile(e.e, emit);
        const not = e.not;
        return (r, env) => {
          const v = x(r, env);
          const isNull = v === null || v === undefined;
          return not ? !isNull : isNull;
        };
      }
      case 'case': {
        const operand = e.operand && this.compile(e.operand, emit);
        const whens = e.whens.map((w) => ({
          when: this.compile(w.when, emit),
          then: this.compile(w.then, emit),
          site: { pos: w.when.pos, l: e.operand ? show(e.operand) : '', r: show(w.when) },
        }));
        const otherwise = e.else ? this.compile(e.else, emit) : () => null;
        if (operand)
          return (r, env) => {
            const v = operand(r, env);
            for (const w of whens) if (compareSlow(v, w.when(r, env), '=', w.site)) return w.then(r, env);
            return otherwise(r, env);
          };
        return (r, env) => {
          for (const w of whens) if (w.when(r, env) === true) return w.then(r, env);
          return otherwise(r, env);
        };
      }
      case 'call': {
        if ((e.name === 'infer' || e.name === 'llm') && emit) {
          const model = `${e.name === 'llm' ? 'llm:' : ''}${(e.args[0] as { v: string }).v}`;
          this.models.add(model);
          const args = e.args.slice(1).map((a) => this.compile(a, true));
          return (row, env) =>
            new PendingInfer(
              model,
              args.map((f) => f(row, env)),
            );
        }
        if (e.name === 'infer' || e.name === 'llm') {
          const text = show(e);
          this.models.add(`${e.name === 'llm' ? 'llm:' : ''}${(e.args[0] as { v: string }).v}`);
          let idx = this.infers.findIndex((x) => x.text === text);
          if (idx < 0) {
            // llm() calls travel as model "llm:<endpoint>" (model names cannot hold ':').
            this.infers.push({
              model: `${e.name === 'llm' ? 'llm:' : ''}${(e.args[0] as { v: string }).v}`,
              args: e.args.slice(1).map((a) => this.compile(a, false)),
              text,
            });
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
        const pos = e.pos;
        return (r, env) => {
          const vals = args.map((a) => a(r, env));
          try {
            return f(vals, env);
          } catch (err) {
            throw recordError(pos, err);
          }
        };
      }
    }
    throw new Error(`unhandled expression ${(e as Expr).k}`);
  }

  private compileBin(e: Extract<Expr, { k: 'bin' }>, emit: boolean): Fn {
    const l = this.compile(e.l, emit);
    const r = this.compile(e.r, emit);
    const site = { pos: e.pos, l: show(e.l), r: show(e.r) };
    const op = e.op;
    const notNumber = (a: unknown, b: unknown): never => {
      const [bad, text] = typeof a !== 'number' ? [a, site.l] : [b, site.r];
      throw new RecordError(
        site.pos,
        `"${op}" needs numbers but ${text} = ${showValue(bad)}${op === '+' && typeof bad === 'string' ? '; join strings with || or concat()' : ''}`,
      );
    };
    const ints = this.isInt(e.l) && this.isInt(e.r);
    switch (op) {
      case '+':
        return (row, env) => {
          const a = l(row, env);
          const b = r(row, env);
          if (typeof a === 'number' && typeof b === 'number') return a + b;
          return a === null || b === null || a === undefined || b === undefined ? null : notNumber(a, b);
        };
      case '-':
        return (row, env) => {
          const a = l(row, env);
          const b = r(row, env);
          if (typeof a === 'number' && typeof b === 'number') return a - b;
          return a === null || b === null || a === undefined || b === undefined ? null : notNumber(a, b);
        };
      case '*':
        return (row, env) => {
          const a = l(row, env);
          const b = r(row, env);
          if (typeof a === 'number' && typeof b === 'number') return a * b;
          return a === null || b === null || a === undefined || b === undefined ? null : notNumber(a, b);
        };
      case '/':
      case '%':
        return (row, env) => {
          const a = l(row, env);
          const b = r(row, env);
          if (typeof a !== 'number' || typeof b !== 'number')
            return a === null || b === null || a === undefined || b === undefined ? null : notNumber(a, b);
          if (b === 0) throw new RecordError(site.pos, `${site.l} ${op} ${site.r}: divided by zero`);
          if (op === '%') return a % b;
          // Two integers divide as integers (7 / 2 = 3), as eKuiper's int64 division does.
          return ints && Number.isInteger(a) && Number.isInteger(b) ? Math.trunc(a / b) : a / b;
        };
      case '||':
        return (row, env) => {
          const a = l(row, env);
          const b = r(row, env);
          return a === null || b === null || a === undefined || b === undefined
            ? null
            : `${typeof a === 'object' ? JSON.stringify(a) : String(a)}${typeof b === 'object' ? JSON.stringify(b) : String(b)}`;
        };
      case '=':
      case '!=':
      case '<':
      case '<=':
      case '>':
      case '>=': {
        const cop = op;
        switch (cop) {
          case '>':
            return (row, env) => {
              const a = l(row, env);
              const b = r(row, env);
              return typeof a === 'number' && typeof b === 'number' ? a > b : compareSlow(a, b, cop, site);
            };
          case '>=':
            return (row, env) => {
              const a = l(row, env);
              const b = r(row, env);
              return typeof a === 'number' && typeof b === 'number' ? a >= b : compareSlow(a, b, cop, site);
            };
          case '<':
            return (row, env) => {
              const a = l(row, env);
              const b = r(row, env);
              return typeof a === 'number' && typeof b === 'number' ? a < b : compareSlow(a, b, cop, site);
            };
          case '<=':
            return (row, env) => {
              const a = l(row, env);
              const b = r(row, env);
              return typeof a === 'number' && typeof b === 'number' ? a <= b : compareSlow(a, b, cop, site);
            };
          default:
            return (row, env) => compareSlow(l(row, env), r(row, env), cop, site);
        }
      }
      case 'AND':
        return (row, env) => {
          const a = cond(l(row, env), site.pos, 'AND');
          if (a === false) return false;
          const b = cond(r(row, env), site.pos, 'AND');
          if (b === false) return false;
          return a === null || b === null ? null : true;
        };
      case 'OR':
        return (row, env) => {
          const a = cond(l(row, env), site.pos, 'OR');
          if (a === true) return true;
          const b = cond(r(row, env), site.pos, 'OR');
          if (b === true) return true;
          return a === null || b === null ? null : false;
        };
    }
  }

  /** WHERE and HAVING: a bool or null; a condition whose type is only known at run time is checked there. */
  private condition(e: Expr, t: SqlType, f: Fn, what: string): Fn {
    if (t === 'bool' || t === 'null') return f;
    const text = show(e);
    const pos = e.pos;
    return (r, env) => {
      const v = f(r, env);
      if (v === true || v === false || v === null || v === undefined) return v;
      throw new RecordError(pos, `${what} needs a bool but ${text} = ${showValue(v)}`);
    };
  }

  private slotFor(e: Extract<Expr, { k: 'call' }>): number {
    const text = show(e);
    const existing = this.aggs.findIndex((a) => a.text === text);
    if (existing >= 0) return existing;
    const agg = AGGREGATES[e.name]!;
    const extra = e.args.slice(e.star ? 0 : 1).map((x) => (x as { v: unknown }).v);
    const scope = this.aliasScope;
    this.aliasScope = false;
    const arg = e.star ? (e.name === 'count' ? () => 1 : (row: Row) => row) : this.compile(e.args[0]!, false);
    this.aliasScope = scope;
    const int = !e.star && this.isInt(e.args[0]!);
    const make = e.distinct
      ? (meter: Meter) => distinctAcc(agg.make(extra, int, meter), meter)
      : (meter: Meter) => agg.make(extra, int, meter);
    const numeric = [
      'sum',
      'avg',
      'stddev',
      'stddevs',
      'var',
      'vars',
      'percentile',
      'percentile_cont',
      'percentile_disc',
      'median',
    ].includes(e.name);
    this.aggs.push({ name: e.name, text, pos: e.pos, arg, make, numeric });
    return this.aggs.length - 1;
  }

  private windowOf(e: Extract<Expr, { k: 'call' }>): WindowSpec {
    const name = e.name;
    const usage: Record<string, string> = {
      tumblingwindow: 'TUMBLINGWINDOW(ss, 10)',
      hoppingwindow: 'HOPPINGWINDOW(ss, 60, 10)',
      slidingwindow: 'SLIDINGWINDOW(ss, 30)',
      sessionwindow: 'SESSIONWINDOW(mi, 60, 5) — the maximum length, then the gap timeout, as in eKuiper',
      countwindow: 'COUNTWINDOW(100[, 10])',
    };
    const bad = (pos: Pos, msg: string): never => {
      throw sqlError('SQL_INVALID', pos, msg, `for example ${usage[name]}`);
    };
    const numArg = (i: number, what: string): number => {
      const a = e.args[i];
      if (!a || a.k !== 'lit' || typeof a.v !== 'number' || !(a.v > 0) || !Number.isFinite(a.v))
        return bad(a?.pos ?? e.pos, `${name.toUpperCase()} needs a positive number for ${what}`);
      return a.v;
    };
    const limits = this.opts.limits;
    const limit = (pos: Pos, msg: string, hint: string): never => {
      throw sqlError('SQL_LIMIT', pos, msg, hint);
    };
    if (name === 'countwindow') {
      if (e.args.length < 1 || e.args.length > 2) bad(e.pos, 'COUNTWINDOW takes a count and an optional interval');
      const count = numArg(0, 'the count');
      const interval = e.args.length > 1 ? numArg(1, 'the interval') : undefined;
      if (!Number.isInteger(count) || (interval !== undefined && (!Number.isInteger(interval) || interval > count)))
        bad(e.pos, 'COUNTWINDOW counts are whole numbers and the interval is at most the count');
      if (count > limits.maxRowsPerWindow)
        limit(
          e.args[0]!.pos,
          `COUNTWINDOW(${count}) holds more than ${limits.maxRowsPerWindow} records`,
          'use a smaller count, or a time window with aggregates (which keep one value per group, not every record)',
        );
      return { kind: 'count', count, interval };
    }
    const unitArg = e.args[0];
    const unitName = unitArg?.k === 'field' && unitArg.path.length === 1 ? String(unitArg.path[0]).toLowerCase() : undefined;
    const unit = unitName !== undefined ? UNIT_MS[unitName] : undefined;
    if (unit === undefined) bad(unitArg?.pos ?? e.pos, `${name.toUpperCase()}'s first argument is a time unit: ms, ss, mi, hh or dd`);
    const n = e.args.length - 1;
    const lateness = this.opts.lateness ?? 0;
    const checkOpen = (size: number, hop: number, pos: Pos) => {
      const perRecord = Math.ceil(size / hop);
      if (perRecord > limits.maxWindowsPerRecord)
        limit(
          pos,
          `a record falls in ${perRecord} windows of this ${name.toUpperCase()} (size / hop); at most ${limits.maxWindowsPerRecord} are allowed`,
          'use a longer hop or a shorter window',
        );
      const open = Math.ceil((size + lateness) / hop) + 1;
      if (open > limits.maxOpenWindows)
        limit(
          pos,
          `this window keeps up to ${open} windows open at once ((size + lateness ${lateness} ms) / hop); at most ${limits.maxOpenWindows} are allowed`,
          'use a longer hop or a smaller options.lateness',
        );
    };
    if (name === 'tumblingwindow' || name === 'slidingwindow') {
      if (name === 'slidingwindow' && n === 2)
        bad(
          e.args[2]!.pos,
          'SLIDINGWINDOW with a trigger delay (a third argument) is not supported; see docs/sql.md, differences from eKuiper',
        );
      if (n !== 1) bad(e.pos, `${name.toUpperCase()} takes a unit and a size`);
      const size = numArg(1, 'the size') * unit!;
      if (name === 'tumblingwindow') {
        checkOpen(size, size, e.args[1]!.pos);
        return { kind: 'tumbling', size };
      }
      return { kind: 'sliding', size };
    }
    if (name === 'hoppingwindow') {
      if (n !== 2) bad(e.pos, 'HOPPINGWINDOW takes a unit, a size and a hop');
      const size = numArg(1, 'the size') * unit!;
      const hop = numArg(2, 'the hop') * unit!;
      // A hop longer than the size is accepted: records between two windows belong to none (eKuiper).
      checkOpen(size, hop, e.args[2]!.pos);
      return { kind: 'hopping', size, hop };
    }
    if (n !== 2) bad(e.pos, 'SESSIONWINDOW takes a unit, a maximum length and a gap timeout');
    const max = numArg(1, 'the maximum length') * unit!;
    const timeout = numArg(2, 'the gap timeout') * unit!;
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
        case 'call':
          return !!AGGREGATES[e.name] || e.args.some(hasAgg);
        case 'unary':
        case 'member':
        case 'isnull':
          return hasAgg(e.e);
        case 'index':
          return hasAgg(e.e) || hasAgg(e.index);
        case 'bin':
          return hasAgg(e.l) || hasAgg(e.r);
        case 'in':
          return hasAgg(e.e) || e.list.some(hasAgg);
        case 'between':
          return hasAgg(e.e) || hasAgg(e.lo) || hasAgg(e.hi);
        case 'like':
          return hasAgg(e.e) || hasAgg(e.pattern);
        case 'case':
          return (
            (e.operand ? hasAgg(e.operand) : false) ||
            e.whens.some((w) => hasAgg(w.when) || hasAgg(w.then)) ||
            (e.else ? hasAgg(e.else) : false)
          );
        default:
          return false;
      }
    };
    const windowed = window !== undefined;
    if (!windowed) {
      const agg = q.items.find((i) => hasAgg(i.expr)) ?? (q.having ? { pos: q.having.pos } : undefined);
      if (keyExprs.length)
        throw sqlError('SQL_INVALID', keyExprs[0]!.pos, 'GROUP BY needs a window', 'add one: GROUP BY key, TUMBLINGWINDOW(ss, 10)');
      if (agg)
        throw sqlError(
          'SQL_INVALID',
          agg.pos,
          'aggregates and HAVING need a window',
          'add GROUP BY TUMBLINGWINDOW(ss, 10) (or another window)',
        );
    }
    if (q.where) {
      const t = this.typeOf(q.where, { aggAllowed: false });
      if (t !== 'bool' && t !== 'any' && t !== 'null')
        throw sqlError('SQL_INVALID', q.where.pos, `WHERE needs a condition but ${show(q.where)} is a ${t}`);
    }
    const rowsMode =
      windowed &&
      keyExprs.length === 0 &&
      !q.items.some((i) => hasAgg(i.expr)) &&
      !(q.having && hasAgg(q.having)) &&
      !q.orderBy.some((o) => hasAgg(o.expr));

    const columns: Plan['columns'] = [];
    const names = new Set<string>();
    this.aliasScope = true;
    q.items.forEach((it, i) => {
      if (it.expr.k === 'star') {
        columns.push({ star: true });
        return;
      }
      this.typeOf(it.expr, { aggAllowed: windowed });
      // Default names follow eKuiper: a field's last segment, a function's name, else col_N.
      const name =
        it.alias ??
        (it.expr.k === 'field' ? String(it.expr.path[it.expr.path.length - 1]) : it.expr.k === 'call' ? it.expr.name : `col_${i + 1}`);
      if (names.has(name)) throw sqlError('SQL_INVALID', it.pos, `two output columns are named "${name}"`, 'give one an alias with AS');
      names.add(name);
      columns.push({ name, fn: this.compile(it.expr, windowed) });
      // Later items, HAVING and ORDER BY may name this one (eKuiper's alias references).
      if (it.alias) this.aliases.set(it.alias.toLowerCase(), it.expr);
    });
    let having: Fn | undefined;
    if (q.having) {
      const t = this.typeOf(q.having, { aggAllowed: true, having: true });
      if (t !== 'bool' && t !== 'any' && t !== 'null')
        throw sqlError('SQL_INVALID', q.having.pos, `HAVING needs a condition but ${show(q.having)} is a ${t}`);
      having = this.condition(q.having, t, this.compile(q.having, true), 'HAVING');
    }
    const order = q.orderBy.map((o) => {
      this.typeOf(o.expr, { aggAllowed: windowed });
      return { fn: this.compile(o.expr, windowed), desc: o.desc };
    });
    this.aliasScope = false;
    const filter = q.where ? this.condition(q.where, this.staticType.get(q.where)!, this.compile(q.where, false), 'WHERE') : undefined;
    const keys = keyExprs.map((k) => this.compile(k, false));
    const stream = this.stream;
    const aggs = this.aggs;
    const fieldRefs = [...this.fieldRefs].filter(([n]) => n !== stream.timestamp).map(([name, pos]) => ({ name, pos }));
    const explainText = (): string => {
      const text =
        `SELECT ${q.items.map((it) => (it.alias ? `${show(it.expr)} AS ${it.alias}` : show(it.expr))).join(', ')} FROM ${q.from.name}` +
        `${q.where ? ` WHERE ${show(q.where)}` : ''}${q.groupBy.length ? ` GROUP BY ${q.groupBy.map(show).join(', ')}` : ''}${q.having ? ` HAVING ${show(q.having)}` : ''}` +
        `${q.orderBy.length ? ` ORDER BY ${q.orderBy.map((o) => `${show(o.expr)}${o.desc ? ' DESC' : ''}`).join(', ')}` : ''}${q.limit ? ` LIMIT ${q.limit.n}` : ''}`;
      const lines = [`Query: ${text}`];
      lines.push(
        `  Source: stream ${stream.name} (${stream.timestamp ? `event time from "${stream.timestamp}"` : 'processing time'}${
          stream.schema
            ? `, schema ${Object.entries(stream.schema)
                .map(([k, v]) => `${k}:${v}`)
                .join(' ')}`
            : ', schemaless'
        })`,
      );
      if (this.infers.length) lines.push(`  Infer: ${this.infers.map((i) => i.text).join(', ')} (batched per model, before the filter)`);
      if (q.where) lines.push(`  Filter: ${show(q.where)}`);
      if (window) lines.push(`  Window: ${describeWindow(window)}`);
      if (rowsMode) lines.push('  Rows: every record of the window (no aggregate, no key)');
      else if (windowed) {
        lines.push(
          `  Aggregate: group by [${keyExprs.map(show).join(', ')}]${aggs.length ? `; ${aggs.map((a) => a.text).join(', ')}` : ''}`,
        );
      }
      if (q.having) lines.push(`  Having: ${show(q.having)}`);
      lines.push(
        `  Project: ${q.items.map((it) => (it.expr.k === 'star' ? '*' : it.alias ? `${it.alias} := ${show(it.expr)}` : show(it.expr))).join(', ')}`,
      );
      if (q.orderBy.length) lines.push(`  Order: ${q.orderBy.map((o) => `${show(o.expr)}${o.desc ? ' DESC' : ' ASC'}`).join(', ')}`);
      if (q.limit) lines.push(`  Limit: ${q.limit.n}`);
      return lines.join('\n');
    };
    return {
      sql,
      stream,
      infers: this.infers,
      inferValues: this.inferValues,
      models: [...this.models],
      filter,
      windowed,
      window,
      keys,
      aggs,
      columns,
      having,
      rowsMode,
      order,
      limit: q.limit?.n,
      fieldRefs,
      explain: explainText,
    };
  }
}

export function describeWindow(w: WindowSpec): string {
  const d = (ms: number) =>
    ms % 86_400_000 === 0
      ? `${ms / 86_400_000}d`
      : ms % 3_600_000 === 0
        ? `${ms / 3_600_000}h`
        : ms % 60_000 === 0
          ? `${ms / 60_000}min`
          : ms % 1000 === 0
            ? `${ms / 1000}s`
            : `${ms}ms`;
  switch (w.kind) {
    case 'tumbling':
      return `TUMBLING size ${d(w.size)}`;
    case 'hopping':
      return `HOPPING size ${d(w.size)} hop ${d(w.hop)}`;
    case 'sliding':
      return `SLIDING size ${d(w.size)} (emits on every record, both ends included)`;
    case 'session':
      return `SESSION max ${d(w.max)} gap ${d(w.timeout)}`;
    case 'count':
      return `COUNT ${w.count}${w.interval ? ` every ${w.interval}` : ''} records`;
  }
}

export interface PlanOptions {
  /** The app's models, for infer(); absent: any model name is accepted. */
  models?: readonly string[];
  /** The rule's allowed lateness (ms): open windows are bounded with it. */
  lateness?: number;
  limits: PlanLimits;
}

/** Parses and plans a rule; syntax and semantic errors carry line and column. */
export function planQuery(
  sql: string,
  stream: StreamDef,
  opts: { models?: readonly string[]; lateness?: number; limits?: Partial<PlanLimits> } = {},
): Plan {
  return new Planner(parse(sql), stream, { ...opts, limits: { ...DEFAULT_LIMITS, ...opts.limits } }).plan(sql);
}
