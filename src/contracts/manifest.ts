import { z } from 'zod';
import { EwError, formatPath } from './errors.ts';
import { ModbusWriteSink, OpcuaWriteSink, SourceSpec, WritePolicy } from './industrial.ts';
import { MAX_FILTER_LEVELS } from '../lib/topic-filter.ts';

/**
 * The edgeweave/v1 App manifest: models, streams, rules, endpoints, policy.
 * This issue fixes the outer shape and the identity fields; the streaming-SQL, inference and
 * deployment issues tighten `streams`, `rules`, `models` and `endpoints`. Unknown top-level keys
 * are refused so that a typo never silently does nothing.
 */
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
// Semantic Versioning 2.0.0 (https://semver.org), without build metadata.
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/;

export const Name = z
  .string()
  .regex(NAME, 'use lower-case letters, digits and "-", at most 63 characters, starting and ending with a letter or digit');
export const Version = z.string().regex(SEMVER, 'use a semantic version such as 1.0.0 or 1.2.0-rc.1');

export const ModelSpec = z
  .object({
    name: Name,
    /** onnx and gguf files travel as artifacts; builtin pipelines ship with the agent. */
    format: z.enum(['onnx', 'gguf', 'remote', 'builtin']),
    /** For format builtin: which pipeline (pp-ocrv4: PaddleOCR v4 text detection + recognition). */
    builtin: z.enum(['pp-ocrv4']).optional(),
    /** The file in the app bundle; `app push` uploads it and fills in sha256. */
    path: z.string().min(1).optional(),
    /** The artifact the site downloads and verifies (required for onnx and gguf). */
    sha256: z
      .string()
      .regex(/^[a-f0-9]{64}$/, 'a lower-case hex sha256')
      .optional(),
    batching: z
      .object({
        maxBatchSize: z.number().int().positive().max(4096),
        maxQueueDelayMs: z.number().nonnegative().max(10_000),
        preferredBatchSizes: z.array(z.number().int().positive().max(4096)).max(16),
        maxQueueSize: z.number().int().positive().max(1_000_000),
      })
      .partial()
      .strict()
      .optional(),
    runtime: z
      .object({
        threads: z.number().int().positive().max(256),
        graphOptimization: z.enum(['disabled', 'basic', 'extended', 'all']),
        executionProvider: z.enum(['cpu', 'cuda', 'vulkan']),
        /** gguf: tokens per sequence (prompt + completion). Default 2048, at most the model's training context. */
        contextSize: z.number().int().min(64).max(1_048_576),
        /** gguf: sequences generating at once (slots). Default 2. */
        parallel: z.number().int().positive().max(64),
        /** gguf: layers offloaded to the GPU. Default 0 on cpu, all with cuda/vulkan. */
        gpuLayers: z.number().int().min(0).max(1000),
        /** gguf: memory granted to the model (weights + context). Default 75 % of the site's memory. */
        memoryLimitMB: z.number().int().positive(),
        /** Requests that may wait for a slot before QUEUE_FULL. Default 256. */
        maxQueued: z.number().int().positive().max(100_000),
      })
      .partial()
      .strict()
      .optional(),
    /** `cloud`: only the cloud-side runtime loads it (a cascade's larger model); sites skip it. Default `edge`. */
    tier: z.enum(['edge', 'cloud']).optional(),
    /** format remote: the OpenAI-compatible upstream. The key comes from a site secret, never from here. */
    upstream: z
      .object({
        baseUrl: z
          .string()
          .url()
          .refine((u) => /^https?:\/\//.test(u), 'an http(s) URL such as https://llm.example.com/v1'),
        model: z.string().min(1).max(256),
        apiKeySecret: z
          .string()
          .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a secret name: lower-case letters, digits and "-"')
          .optional(),
        timeoutMs: z.number().int().positive().max(600_000).optional(),
        retries: z.number().int().min(0).max(10).optional(),
        concurrency: z.number().int().positive().max(1024).optional(),
      })
      .strict()
      .optional(),
  })
  .passthrough()
  .refine((m) => m.format === 'remote' || m.format === 'builtin' || m.sha256 !== undefined, {
    message: 'onnx and gguf models need the sha256 of their uploaded file (edgeweave app push fills it in)',
    path: ['sha256'],
  })
  .refine((m) => (m.format === 'remote') === (m.upstream !== undefined), {
    message:
      'format remote names its OpenAI-compatible upstream in "upstream" ({ baseUrl, model, apiKeySecret }), and only remote models do',
    path: ['upstream'],
  })
  .refine((m) => (m.format === 'builtin') === (m.builtin !== undefined), {
    message: 'format builtin names its pipeline in "builtin" (pp-ocrv4), and only builtin models do',
    path: ['builtin'],
  });

const Ident = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an identifier: letters, digits, "_", starting with a letter or "_"');
/** A result stream's name, as it appears in the cloud (`ew/{site}/up/{name}`). */
// Names starting with "_" are reserved for the site's own streams (such as _egress-audit).
const ResultName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'letters, digits, "_", "-", "." (at most 128), starting with a letter or digit');

/**
 * MQTT 5 message properties copied into a stream's records (field → property): `user:<name>`
 * (one user property), `user` (all of them, as an object), `message-expiry` (seconds left),
 * `expires-at` (ms since the epoch), `content-type`, `response-topic`.
 */
export const MQTT_PROPERTY = /^(user:.{1,256}|user|message-expiry|expires-at|content-type|response-topic)$/;

// Stream names starting with "_" are reserved for the site's own streams, as result names are.
const StreamName = z
  .string()
  .regex(
    /^[A-Za-z][A-Za-z0-9_]{0,127}$/,
    'an identifier: letters, digits, "_", starting with a letter ("_…" names are reserved for the site)',
  );

/**
 * The types a stream's schema may give a field (aliases included: `float`, `number` and `double`
 * are one type). The one list: the SQL planner (src/stream/planner.ts) maps each to its SQL type
 * and the record router (src/edge/record-router.ts) checks records against each, both in tables
 * keyed by FieldType, so a type added here does not compile until both handle it.
 */
export const FieldType = z.enum([
  'string',
  'int',
  'bigint',
  'float',
  'number',
  'double',
  'bool',
  'boolean',
  'timestamp',
  'datetime',
  'object',
  'struct',
  'array',
  'any',
]);
export type FieldType = z.infer<typeof FieldType>;

export const StreamSpec = z
  .object({
    name: StreamName,
    /** MQTT topic filter on the site's device broker (`+` and `#` allowed); absent when `source` says where records come from. */
    topic: z
      .string()
      .min(1)
      .refine(
        (t) => !t.startsWith('ew/') && !t.startsWith('$') && !/(^|\/)#./.test(t),
        'a topic filter outside ew/ and $, with # only at the end',
      )
      .refine((t) => t.split('/').length <= MAX_FILTER_LEVELS, `a topic filter of at most ${MAX_FILTER_LEVELS} levels`)
      .optional(),
    /** An industrial source instead of MQTT: an OPC UA server or a Modbus TCP device (docs/industrial.md). */
    source: SourceSpec.optional(),
    /** MQTT 5 properties into fields (docs/industrial.md). */
    properties: z
      .record(Ident, z.string().regex(MQTT_PROPERTY, 'one of user:<name>, user, message-expiry, expires-at, content-type, response-topic'))
      .optional(),
    format: z.enum(['json']).default('json'),
    /** Event-time field (ms since the epoch or ISO-8601); processing time when absent. */
    timestamp: z.string().min(1).optional(),
    /** field → string | int | float | bool | timestamp | object | array | any; records that do not fit go to the dead letters. */
    schema: z.record(z.string(), FieldType).optional(),
  })
  .strict()
  .refine((s) => (s.topic === undefined) !== (s.source === undefined), {
    message: 'a stream reads either an MQTT topic or a source (opcua, modbus): give exactly one',
    path: ['topic'],
  })
  .refine((s) => s.properties === undefined || s.topic !== undefined, {
    message: 'MQTT 5 properties apply to MQTT streams only',
    path: ['properties'],
  });

export const SinkSpec = z.union([
  z.object({ uplink: ResultName }).strict(),
  z
    .object({
      mqtt: z
        .string()
        .min(1)
        .refine(
          (t) => !t.includes('+') && !t.includes('#') && !t.startsWith('ew/') && !t.startsWith('$'),
          'a concrete topic (no wildcards) outside ew/ and $',
        ),
    })
    .strict(),
  z
    .object({
      webhook: z
        .object({
          url: z
            .string()
            .url()
            .refine((u) => /^https?:\/\//.test(u), 'an http(s) URL'),
          /** The result stream name the egress policy knows this output by. */
          stream: ResultName,
          headers: z.record(z.string(), z.string()).optional(),
          timeoutMs: z.number().int().positive().max(60_000).default(5000),
          maxRetries: z.number().int().min(0).max(20).default(5),
        })
        .strict(),
    })
    .strict(),
  z.object({ log: z.union([z.literal(true), z.object({ level: z.enum(['info', 'warn']).default('info') }).strict()]) }).strict(),
  z.object({ memory: Ident }).strict(),
  // Write-back to machines, guarded by spec.policy.writes (docs/industrial.md).
  OpcuaWriteSink,
  ModbusWriteSink,
]);
export type SinkSpec = z.infer<typeof SinkSpec>;

export const RuleSpec = z
  .object({
    name: Name,
    sql: z.string().min(1),
    sinks: z.array(SinkSpec).min(1, 'a rule needs at least one sink'),
    options: z
      .object({
        /** Allowed lateness for event-time windows, ms. */
        lateness: z.number().int().min(0).max(86_400_000).default(0),
        /** Late records: dropped and counted, or sent to the stream's dead letters too. */
        latePolicy: z.enum(['drop', 'side']).default('drop'),
        /** Event time at most this far (ms) ahead of the site's clock; records further ahead go to the dead letters. */
        maxFutureSkew: z
          .number()
          .int()
          .min(0)
          .max(7 * 86_400_000)
          .default(300_000),
        /** The rule's state budget in cells (groups × aggregates, buffered records, kept values); over it the rule stops. */
        maxState: z.number().int().min(1000).max(50_000_000).default(1_000_000),
        /** llm() calls of this rule running at once (default 2). */
        llmConcurrency: z.number().int().positive().max(256).optional(),
        /** llm() tokens (prompt + completion) this rule may use per minute (default 20000). */
        llmTokensPerMinute: z.number().int().positive().max(100_000_000).optional(),
      })
      .strict()
      .default({ lateness: 0, latePolicy: 'drop', maxFutureSkew: 300_000, maxState: 1_000_000 }),
  })
  .strict();
export type RuleSpec = z.infer<typeof RuleSpec>;

/**
 * One egress grant: results named `stream` may leave the site — only the listed `fields` (all
 * when absent), only to the listed destinations (`cloud` for the uplink, or an http(s) URL prefix
 * for webhooks; default `[cloud]`). Raw device records (a rule that selects `*`) leave only
 * under a grant with `raw: true`.
 */
export const EgressGrant = z.union([
  ResultName,
  z
    .object({
      stream: ResultName,
      fields: z.array(z.string().min(1)).optional(),
      to: z.array(z.string().min(1)).min(1).optional(),
      raw: z.boolean().optional(),
    })
    .strict(),
]);
export type EgressGrant = z.infer<typeof EgressGrant>;

const Threshold = z.number().finite();
/**
 * A cascade: the endpoint's model answers first (at the edge); when the condition holds on its
 * result, the request escalates to the larger model `to` (on a site that serves it, or the
 * cloud-side runtime), placed by the same residency-first policy. See docs/router.md.
 */
export const CascadeSpec = z
  .object({
    to: Name,
    when: z.union([
      /** The largest value of a row (a class probability) is below the threshold. */
      z.object({ confidence: z.object({ output: z.string().min(1).optional(), below: Threshold }).strict() }).strict(),
      /** Top-1 minus top-2 of a row is below the threshold. */
      z.object({ margin: z.object({ output: z.string().min(1).optional(), below: Threshold }).strict() }).strict(),
      /** Any value of an output (an OCR line's score, an anomaly score) is below / above the threshold. */
      z
        .object({
          score: z
            .object({ output: z.string().min(1), below: Threshold.optional(), above: Threshold.optional() })
            .strict()
            .refine((x) => x.below !== undefined || x.above !== undefined, 'give below, above or both'),
        })
        .strict(),
      /** LLM endpoints: the answer's mean token log-probability is below the threshold. */
      z.object({ logprob: z.object({ below: Threshold }).strict() }).strict(),
      /** LLM endpoints: the answer is a refusal ("I can't help with that", …). */
      z.object({ refusal: z.literal(true) }).strict(),
    ]),
  })
  .strict();
export type CascadeSpec = z.infer<typeof CascadeSpec>;

export const EndpointSpec = z
  .object({
    name: Name,
    model: Name,
    /** Where the cloud's router may send a request when no eligible site answers in time: `cloud` (the cloud-side runtime) or `none` (default). */
    fallback: z.enum(['cloud', 'none']).optional(),
    cascade: CascadeSpec.optional(),
    /** chat (and completion) for language models over /v1, embedding for /v1/embeddings; tensor models need none. */
    kind: z.enum(['chat', 'completion', 'embedding']).optional(),
    /** Language-model endpoints: per-request token cap, timeout and requests in flight (defaults 512, 120000 ms, 16). */
    limits: z
      .object({
        maxTokens: z.number().int().positive().max(1_048_576),
        timeoutMs: z.number().int().positive().max(3_600_000),
        concurrency: z.number().int().positive().max(10_000),
      })
      .partial()
      .strict()
      .optional(),
  })
  .passthrough();

const Region = z.string().min(1).max(64);
/** What a data class allows: regions, specific sites, and whether the cloud may process it. */
export const ResidencyRuleSpec = z
  .object({
    regions: z.array(Region).max(256).optional(),
    sites: z.array(z.string().min(1).max(64)).max(10_000).optional(),
    cloud: z.boolean().optional(),
  })
  .strict();
/** Where requests to the app's endpoints may be processed (the router never sends them elsewhere). */
export const ResidencySpec = z
  .object({
    regions: z.array(Region).max(256).optional(),
    cloud: z.boolean().optional(),
    classes: z
      .record(z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'a data class name: lower-case letters, digits, "_", "-"'), ResidencyRuleSpec)
      .optional(),
  })
  .strict();

export const PolicySpec = z
  .object({
    egress: z
      .object({ allow: z.array(EgressGrant).default([]) })
      .strict()
      .optional(),
    residency: ResidencySpec.optional(),
    placement: z
      .object({ selector: z.record(z.string(), z.string()).default({}) })
      .passthrough()
      .optional(),
    /** What rules may write to machines (OPC UA nodes, Modbus registers and coils): each target, its range and rate. */
    writes: WritePolicy.optional(),
  })
  .passthrough();

export const AppManifest = z
  .object({
    apiVersion: z.literal('edgeweave/v1'),
    kind: z.literal('App'),
    metadata: z
      .object({
        name: Name,
        version: Version,
        description: z.string().max(2000).optional(),
        labels: z.record(z.string(), z.string()).optional(),
      })
      .strict(),
    spec: z
      .object({
        models: z.array(ModelSpec).default([]),
        streams: z.array(StreamSpec).default([]),
        rules: z.array(RuleSpec).default([]),
        endpoints: z.array(EndpointSpec).default([]),
        policy: PolicySpec.default({}),
      })
      .strict(),
  })
  .strict();
export type AppManifest = z.infer<typeof AppManifest>;

/** Validates a manifest object; the error names the first bad field's path. */
export function parseManifest(input: unknown): AppManifest {
  const r = AppManifest.safeParse(input);
  if (r.success) {
    const names = new Set<string>();
    r.data.spec.models.forEach((m, i) => {
      if (names.has(m.name))
        throw new EwError('INVALID_MANIFEST', `model name "${m.name}" is used twice; model names must be unique in an app`, {
          path: `spec.models[${i}].name`,
        });
      names.add(m.name);
    });
    r.data.spec.endpoints.forEach((e, i) => {
      if (!names.has(e.model))
        throw new EwError(
          'INVALID_MANIFEST',
          `endpoint ${e.name} names model "${e.model}", which the app does not declare (models: ${[...names].join(', ') || 'none'})`,
          { path: `spec.endpoints[${i}].model` },
        );
      if (e.cascade && !names.has(e.cascade.to))
        throw new EwError('INVALID_MANIFEST', `endpoint ${e.name} cascades to model "${e.cascade.to}", which the app does not declare`, {
          path: `spec.endpoints[${i}].cascade.to`,
        });
      if (e.cascade?.to === e.model)
        throw new EwError('INVALID_MANIFEST', `endpoint ${e.name} cascades to its own model; name a larger one`, {
          path: `spec.endpoints[${i}].cascade.to`,
        });
    });
    return r.data;
  }
  const issue = r.error.issues[0]!;
  const path = formatPath(issue.path);
  throw new EwError('INVALID_MANIFEST', `manifest field ${path || '(root)'}: ${issue.message}`, { path, detail: issue.message });
}
