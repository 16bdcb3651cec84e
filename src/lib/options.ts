import { readFileSync, statSync } from 'node:fs';
import { z } from 'zod';
import { LineCounter, parseDocument, isMap, isScalar } from 'yaml';
import { EwError, type SourcePos } from '../contracts/errors.ts';

/**
 * One schema per process for what an operator configures (src/cloud/config.ts,
 * src/edge/config.ts): a zod object whose fields carry their defaults and descriptions, and
 * beside it how each field is named on the command line, in the environment and in a YAML config
 * file. The four sources map onto the same schema with the precedence
 * flag > environment > file > default, and a bad value is refused naming the flag and where
 * the value came from (CONFIG_INVALID, exit 2). Commander's options are built from the same
 * table (src/cli/schema-options.ts) and a test checks docs/operators.md against it.
 */
export interface OptionSpec {
  /** The command-line flag: `--port`, or `--no-console` for a switch that is on by default. */
  flag: string;
  /** The flag's value placeholder (`<port>`); none for a switch. */
  arg?: string;
  /** The environment variable; default: the table's prefix and the flag's name (`EW_CLOUD_PORT`). */
  env?: string;
  /** A secret (or, as a function, whether this value holds one): never shown in an error, never in a file others can read. */
  secret?: boolean | ((value: unknown) => boolean);
  /** How text (a flag, a variable, a string in the file) becomes the field's value; default: by the field's type. */
  fromText?: (text: string) => unknown;
  /** The default as an operator writes it (help and docs), when the value is not (`10G`), or there is none (`from the cloud`). */
  defaultLabel?: string;
}

export interface OptionTable<S extends z.ZodRawShape = z.ZodRawShape> {
  /** The command: `cloud`, `edge`. */
  command: string;
  /** Prefix of the environment variables: `EW_CLOUD_`. */
  envPrefix: string;
  schema: z.ZodObject<S>;
  options: { [K in keyof S]: OptionSpec };
}

/** Where a value came from, for the message that refuses it. */
export type ValueSource = { kind: 'flag' } | { kind: 'env'; name: string } | { kind: 'file'; pos: SourcePos };

export function defineOptions<S extends z.ZodRawShape>(t: OptionTable<S>): OptionTable<S> {
  return t;
}

/** The key of an option in a config file: the flag's name without `--` (and without `no-` for a switch). */
export function fileKey(spec: OptionSpec): string {
  return spec.flag.replace(/^--(no-)?/, '');
}

export function envName(t: OptionTable, key: string): string {
  const spec = t.options[key]!;
  return spec.env ?? `${t.envPrefix}${fileKey(spec).toUpperCase().replace(/-/g, '_')}`;
}

function unwrap(s: z.ZodType): z.ZodType {
  let cur: z.ZodType = s;
  while (cur instanceof z.ZodDefault || cur instanceof z.ZodOptional) cur = cur.def.innerType as z.ZodType;
  return cur;
}

/** The schema's default for a field, or undefined when it has none. */
export function defaultOf(t: OptionTable, key: string): unknown {
  const s = t.schema.shape[key] as z.ZodType;
  return s instanceof z.ZodDefault ? s.def.defaultValue : undefined;
}

/** The default as help and docs show it. */
export function defaultLabel(t: OptionTable, key: string): string | undefined {
  const spec = t.options[key]!;
  if (spec.defaultLabel !== undefined) return spec.defaultLabel;
  const d = defaultOf(t, key);
  if (d === undefined) return undefined;
  if (typeof d === 'boolean') return d ? 'on' : 'off';
  return String(d);
}

export function describe(t: OptionTable, key: string): string {
  return (t.schema.shape[key] as z.ZodType).description ?? '';
}

/** Whether the field takes a switch (no value) on the command line. */
export function isSwitch(t: OptionTable, key: string): boolean {
  return unwrap(t.schema.shape[key] as z.ZodType) instanceof z.ZodBoolean;
}

/** Text to the field's type; what does not convert is left as text for the schema to refuse by name. */
export function fromText(t: OptionTable, key: string, text: string): unknown {
  const spec = t.options[key]!;
  if (spec.fromText) return spec.fromText(text);
  const base = unwrap(t.schema.shape[key] as z.ZodType);
  if (base instanceof z.ZodNumber) {
    const n = Number(text.trim());
    return text.trim() !== '' && Number.isFinite(n) ? n : text;
  }
  if (base instanceof z.ZodBoolean) {
    const v = text.trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(v)) return true;
    if (['false', '0', 'no', 'off'].includes(v)) return false;
    return text;
  }
  return text;
}

/** Values from environment variables named in the table (empty ones are unset). */
export function envLayer(t: OptionTable, env: NodeJS.ProcessEnv): { values: Record<string, unknown>; sources: Map<string, ValueSource> } {
  const values: Record<string, unknown> = {};
  const sources = new Map<string, ValueSource>();
  for (const key of Object.keys(t.options)) {
    const name = envName(t, key);
    const text = env[name];
    if (text === undefined || text === '') continue;
    values[key] = fromText(t, key, text);
    sources.set(key, { kind: 'env', name });
  }
  return { values, sources };
}

/** The largest options file read. */
const MAX_CONFIG_BYTES = 256 * 1024;

/**
 * A YAML config file: a map whose keys are the flags' names without `--` (`port: 8080`,
 * `rate-limit: off`, `console: false`). An unknown key or a file that is not such a map is
 * refused at its line and column.
 */
export function readConfigFile(t: OptionTable, file: string): { values: Record<string, unknown>; sources: Map<string, ValueSource> } {
  let text: string;
  try {
    // An options file is a few lines; a larger one is a mistake (a log, a binary) not to read into memory.
    if (statSync(file).size > MAX_CONFIG_BYTES) throw new Error(`larger than ${MAX_CONFIG_BYTES / 1024} KiB; is it the right file?`);
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new EwError('CONFIG_INVALID', `--config ${file}: ${(e as Error).message}`, { path: '--config', cause: e });
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false });
  const at = (offset: number): SourcePos => ({ file, ...lc.linePos(offset) });
  const refuse = (pos: SourcePos, detail: string): never => {
    throw new EwError('CONFIG_INVALID', `${file}:${pos.line}:${pos.col}: ${detail}`, { path: '--config', pos, detail });
  };
  if (doc.errors.length) refuse(at(doc.errors[0]!.pos[0]), `not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
  const values: Record<string, unknown> = {};
  const sources = new Map<string, ValueSource>();
  if (doc.contents === null) return { values, sources };
  if (!isMap(doc.contents))
    return refuse(at(doc.contents.range?.[0] ?? 0), `a config file is a map of option names to values (port: 8080)`);
  const js = (doc.toJS() ?? {}) as Record<string, unknown>;
  const byFileKey = new Map(Object.entries(t.options).map(([key, spec]) => [fileKey(spec), key]));
  for (const pair of doc.contents.items) {
    const k = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
    const keyPos = at((pair.key as { range?: [number, number, number] } | null)?.range?.[0] ?? 0);
    const key = byFileKey.get(k);
    if (key === undefined)
      refuse(keyPos, `unknown option "${k}" for edgeweave ${t.command}; the options are ${[...byFileKey.keys()].join(', ')}`);
    const node = pair.value as { range?: [number, number, number] } | null;
    let value: unknown = js[k] ?? null;
    // Text where the field is not text (a size "10G", a spec "key=100/20") converts as a flag would.
    if (typeof value === 'string') value = fromText(t, key!, value);
    if (value === null) continue; // `port:` with nothing after it: as if absent
    values[key!] = value;
    sources.set(key!, { kind: 'file', pos: at(node?.range?.[0] ?? 0) });
    // A secret in a file other users can read is as exposed as one on the command line.
    if (isSecret(t.options[key!]!, value) && (statSync(file).mode & 0o077) !== 0) {
      refuse(
        keyPos,
        `${k} is a secret, and this file can be read by other users of the machine; chmod 600 ${file}, or pass it in ${envName(t, key!)}`,
      );
    }
  }
  return { values, sources };
}

function isSecret(spec: OptionSpec, value: unknown): boolean {
  return typeof spec.secret === 'function' ? spec.secret(value) : !!spec.secret;
}

function show(value: unknown): string {
  const s = JSON.stringify(value) ?? String(value);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function from(source: ValueSource | undefined): string {
  if (!source || source.kind === 'flag') return '';
  if (source.kind === 'env') return ` (from ${source.name})`;
  return ` (from ${source.pos.file}:${source.pos.line}:${source.pos.col})`;
}

/**
 * Checks the operator's options in `input` against the table's schema and fills in the
 * defaults; other fields of `input` (a clock, a logger) pass through untouched. A bad value is
 * refused naming the flag, the value (never a secret's) and where it came from.
 */
export function parseOptions<S extends z.ZodRawShape, I extends object>(
  t: OptionTable<S>,
  input: I,
  sources: ReadonlyMap<string, ValueSource> = new Map(),
): I & z.output<z.ZodObject<S>> {
  const own: Record<string, unknown> = {};
  for (const key of Object.keys(t.options))
    if ((input as Record<string, unknown>)[key] !== undefined) own[key] = (input as Record<string, unknown>)[key];
  const r = t.schema.safeParse(own);
  if (r.success) return { ...input, ...r.data };
  const issue = r.error.issues[0]!;
  const key = String(issue.path[0] ?? '');
  const spec = t.options[key];
  if (!spec) throw new EwError('CONFIG_INVALID', `${t.command} configuration: ${issue.message}`, { cause: r.error });
  const value = own[key];
  const source = sources.get(key);
  const shown = value === undefined ? '' : isSecret(spec, value) ? ' (value not shown)' : ` ${show(value)}`;
  const detail = value === undefined ? `${spec.flag} is required: ${describe(t, key)}` : issue.message;
  throw new EwError('CONFIG_INVALID', value === undefined ? detail : `${spec.flag}${shown}${from(source)}: ${detail}`, {
    path: spec.flag,
    detail,
    cause: r.error,
    ...(source?.kind === 'file' ? { pos: source.pos } : {}),
  });
}

/**
 * The options of one start from their four sources: `flags` (what was given on the command
 * line) over `env` over the config `file` over the schema's defaults; checked, defaults filled.
 */
export function resolveOptions<S extends z.ZodRawShape>(
  t: OptionTable<S>,
  layers: { flags?: Record<string, unknown>; env?: NodeJS.ProcessEnv; file?: string },
): z.output<z.ZodObject<S>> {
  const file = layers.file ? readConfigFile(t, layers.file) : { values: {}, sources: new Map<string, ValueSource>() };
  const env = envLayer(t, layers.env ?? {});
  const flags = layers.flags ?? {};
  const sources = new Map<string, ValueSource>([...file.sources, ...env.sources]);
  for (const key of Object.keys(flags)) if (flags[key] !== undefined) sources.set(key, { kind: 'flag' });
  const merged = { ...file.values, ...env.values, ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)) };
  return parseOptions(t, merged, sources);
}
