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
  format: z.enum(['onnx', 'gguf', 'remote']),
  path: z.string().min(1).optional(),
  sha256: z.string().regex(/^[a-f0-9]{64}$/, 'a lower-case hex sha256').optional(),
  batching: z.object({ maxBatchSize: z.number().int().positive().max(4096), maxQueueDelayMs: z.number().nonnegative().max(10_000) }).partial().optional(),
}).passthrough();

export const StreamSpec = z.object({
  name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'an identifier: letters, digits, "_"'),
  topic: z.string().min(1),
  format: z.enum(['json']).default('json'),
  timestamp: z.string().optional(),
  schema: z.record(z.string(), z.string()).optional(),
}).passthrough();

export const RuleSpec = z.object({
  name: Name,
  sql: z.string().min(1),
  sinks: z.array(z.record(z.string(), z.unknown())).default([]),
}).passthrough();

export const EndpointSpec = z.object({ name: Name, model: Name }).passthrough();

export const PolicySpec = z.object({
  egress: z.object({ allow: z.array(z.string()).default([]) }).passthrough().optional(),
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
