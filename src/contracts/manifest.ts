import { z } from 'zod';
import { EwError, formatPath } from './errors.ts';

/**
 * The edgeweave/v1 App manifest: models, streams, rules, endpoints, policy.
 * This issue fixes the outer shape and the identity fields; the streaming-SQL, inference and
 * deployment issues tighten `streams`, `rules`, `models` and `endpoints`. Unknown top-level keys
 * are refused so that a typo never silently does nothing.
 */
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
// Semantic Versioning 2.0.0 (https://semver.org), without build metadata.
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;

export const Name = z.string().regex(NAME, 'use lower-case letters, digits and "-", at most 63 characters, starting and ending with a letter or digit');
export const Version = z.string().regex(SEMVER, 'use a semantic version such as 1.0.0 or 1.2.0-rc.1');

export const ModelSpec = z.object({
  name: Name,
  /** onnx and gguf files travel as artifacts; builtin pipelines ship with the agent. */
  format: z.enum(['onnx', 'gguf', 'remote', 'builtin']),
  /** For format builtin: which pipeline (pp-ocrv4: PaddleOCR v4 text detection + recognition). */
  builtin: z.enum(['pp-ocrv4']).optional(),
  /** The file in the app bundle; `app push` uploads it and fills in sha256. */
  path: z.string().min(1).optional(),
  /** The artifact the site downloads and verifies (required for onnx and gguf). */
  sha256: z.string().regex(/^[a-f0-9]{64}$/, 'a lower-case hex sha256').optional(),
  batching: z.object({
    maxBatchSize: z.number().int().positive().max(4096),
    maxQueueDelayMs: z.number().nonnegative().max(10_000),
    preferredBatchSizes: z.array(z.number().int().positive().max(4096)).max(16),
    maxQueueSize: z.number().int().positive().max(1_000_000),
  }).partial().strict().optional(),
  runtime: z.object({
    threads: z.number().int().positive().max(256),
    graphOptimization: z.enum(['disabled', 'basic', 'extended', 'all']),
    executionProvider: z.enum(['cpu', 'cuda']),
  }).partial().strict().optional(),
}).passthrough()
  .refine((m) => m.format === 'remote' || m.format === 'builtin' || m.sha256 !== undefined, { message: 'onnx and gguf models need the sha256 of their uploaded file (edgeweave app push fills it in)', path: ['sha256'] })
  .refine((m) => (m.format === 'builtin') === (m.builtin !== undefined), { message: 'format builtin names its pipeline in "builtin" (pp-ocrv4), and only builtin models do', path: ['builtin'] });

const Ident = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an identifier: letters, digits, "_", starting with a letter or "_"');
/** A result stream's name, as it appears in the cloud (`ew/{site}/up/{name}`). */
// Names starting with "_" are reserved for the site's own streams (such as _egress-audit).
const ResultName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'letters, digits, "_", "-", "." (at most 128), starting with a letter or digit');

export const StreamSpec = z.object({
  name: Ident,
  /** MQTT topic filter on the site's device broker (`+` and `#` allowed). */
  topic: z.string().min(1).refine((t) => !t.startsWith('ew/') && !t.startsWith('$') && !/(^|\/)#./.test(t), 'a topic filter outside ew/ and $, with # only at the end'),
  format: z.enum(['json']).default('json'),
  /** Event-time field (ms since the epoch or ISO-8601); processing time when absent. */
  timestamp: z.string().min(1).optional(),
  /** field → string | int | float | bool | timestamp | object | array | any; records that do not fit go to the dead letters. */
  schema: z.record(z.string(), z.enum(['string', 'int', 'bigint', 'float', 'number', 'double', 'bool', 'boolean', 'timestamp', 'datetime', 'object', 'struct', 'array', 'any'])).optional(),
}).strict();

export const SinkSpec = z.union([
  z.object({ uplink: ResultName }).strict(),
  z.object({ mqtt: z.string().min(1).refine((t) => !t.includes('+') && !t.includes('#') && !t.startsWith('ew/') && !t.startsWith('$'), 'a concrete topic (no wildcards) outside ew/ and $') }).strict(),
  z.object({
    webhook: z.object({
      url: z.string().url().refine((u) => /^https?:\/\//.test(u), 'an http(s) URL'),
      /** The result stream name the egress policy knows this output by. */
      stream: ResultName,
      headers: z.record(z.string(), z.string()).optional(),
      timeoutMs: z.number().int().positive().max(60_000).default(5000),
      maxRetries: z.number().int().min(0).max(20).default(5),
    }).strict(),
  }).strict(),
  z.object({ log: z.union([z.literal(true), z.object({ level: z.enum(['info', 'warn']).default('info') }).strict()]) }).strict(),
  z.object({ memory: Ident }).strict(),
]);
export type SinkSpec = z.infer<typeof SinkSpec>;

export const RuleSpec = z.object({
  name: Name,
  sql: z.string().min(1),
  sinks: z.array(SinkSpec).min(1, 'a rule needs at least one sink'),
  options: z.object({
    /** Allowed lateness for event-time windows, ms. */
    lateness: z.number().int().min(0).max(86_400_000).default(0),
    /** Late records: dropped and counted, or sent to the stream's dead letters too. */
    latePolicy: z.enum(['drop', 'side']).default('drop'),
    /** Event time at most this far (ms) ahead of the site's clock; records further ahead go to the dead letters. */
    maxFutureSkew: z.number().int().min(0).max(7 * 86_400_000).default(300_000),
    /** The rule's state budget in cells (groups × aggregates, buffered records, kept values); over it the rule stops. */
    maxState: z.number().int().min(1000).max(50_000_000).default(1_000_000),
  }).strict().default({ lateness: 0, latePolicy: 'drop', maxFutureSkew: 300_000, maxState: 1_000_000 }),
}).strict();
export type RuleSpec = z.infer<typeof RuleSpec>;

/**
 * One egress grant: results named `stream` may leave the site — only the listed `fields` (all
 * when absent), only to the listed destinations (`cloud` for the uplink, or an http(s) URL prefix
 * for webhooks; default `[cloud]`). Raw device records (a rule that selects `*`) leave only
 * under a grant with `raw: true`.
 */
export const EgressGrant = z.union([
  ResultName,
  z.object({ stream: ResultName, fields: z.array(z.string().min(1)).optional(), to: z.array(z.string().min(1)).min(1).optional(), raw: z.boolean().optional() }).strict(),
]);
export type EgressGrant = z.infer<typeof EgressGrant>;

export const EndpointSpec = z.object({ name: Name, model: Name }).passthrough();

export const PolicySpec = z.object({
  egress: z.object({ allow: z.array(EgressGrant).default([]) }).strict().optional(),
  placement: z.object({ selector: z.record(z.string(), z.string()).default({}) }).passthrough().optional(),
}).passthrough();

export const AppManifest = z.object({
  apiVersion: z.literal('edgeweave/v1'),
  kind: z.literal('App'),
  metadata: z.object({
    name: Name,
    version: Version,
    description: z.string().max(2000).optional(),
    labels: z.record(z.string(), z.string()).optional(),
  }).strict(),
  spec: z.object({
    models: z.array(ModelSpec).default([]),
    streams: z.array(StreamSpec).default([]),
    rules: z.array(RuleSpec).default([]),
    endpoints: z.array(EndpointSpec).default([]),
    policy: PolicySpec.default({}),
  }).strict(),
}).strict();
export type AppManifest = z.infer<typeof AppManifest>;

/** Validates a manifest object; the error names the first bad field's path. */
export function parseManifest(input: unknown): AppManifest {
  const r = AppManifest.safeParse(input);
  if (r.success) {
    const names = new Set<string>();
    r.data.spec.models.forEach((m, i) => {
      if (names.has(m.name)) throw new EwError('INVALID_MANIFEST', `model name "${m.name}" is used twice; model names must be unique in an app`, { path: `spec.models[${i}].name` });
      names.add(m.name);
    });
    return r.data;
  }
  const issue = r.error.issues[0]!;
  const path = formatPath(issue.path);
  throw new EwError('INVALID_MANIFEST', `manifest field ${path || '(root)'}: ${issue.message}`, { path });
}
