import { z } from 'zod';
import { AppManifest } from './manifest.ts';
import { EwError, formatPath } from './errors.ts';

/**
 * Every cloud–edge MQTT message is one JSON envelope: a version, a unique id (dedup key),
 * a type, the sender's wall-clock time in ms, and a typed body. Parsing is strict so that a
 * malformed message is refused with a path, counted and logged, and never crashes a handler.
 */
export const ENVELOPE_VERSION = 1;

const base = {
  v: z.literal(ENVELOPE_VERSION),
  id: z.string().min(1).max(128),
  ts: z.number().int().nonnegative(),
};

export const SiteStatusBody = z.object({
  agentVersion: z.string().max(64),
  bootId: z.string().max(64),
  uptimeS: z.number().nonnegative(),
  heartbeatIntervalS: z.number().positive(),
  generation: z.number().int().nonnegative(),
  applyError: z.string().max(2000).optional(),
  apps: z.array(z.object({ name: z.string(), version: z.string() })).max(1000),
  system: z.object({
    hostname: z.string().max(255),
    platform: z.string().max(32),
    arch: z.string().max(32),
    cores: z.number().int().nonnegative(),
    memoryTotalBytes: z.number().nonnegative(),
    memoryFreeBytes: z.number().nonnegative(),
    diskTotalBytes: z.number().nonnegative(),
    diskFreeBytes: z.number().nonnegative(),
    loadAvg1: z.number().nonnegative(),
  }),
  runtimes: z.array(z.string().max(32)).max(32),
  accelerators: z.array(z.string().max(64)).max(32),
  outbox: z.object({ pending: z.number().int().nonnegative(), dropped: z.number().int().nonnegative() }),
  devices: z.object({ connected: z.number().int().nonnegative(), messagesIn: z.number().int().nonnegative() }),
  rules: z.array(z.object({
    app: z.string(), rule: z.string(), state: z.enum(['running', 'failed']), error: z.string().max(2000).optional(),
    in: z.number(), out: z.number(), filtered: z.number(), late: z.number(), errors: z.number(), dropped: z.number(), sinkErrors: z.number(), lastOutputAt: z.number().nullable(),
    // Results a full outbox refused, and why results are refused or waiting now (older agents send neither).
    sinkDropped: z.number().optional(), blocked: z.string().max(2000).optional(),
    warnings: z.array(z.string().max(500)).max(20).optional(),
  })).max(1000).optional(),
  deadLetters: z.number().int().nonnegative().optional(),
  models: z.array(z.object({
    app: z.string(), name: z.string(), version: z.string(), state: z.enum(['fetching', 'loading', 'ready', 'failed']), device: z.string().max(32).optional(), error: z.string().max(2000).optional(),
    download: z.object({ received: z.number(), total: z.number() }).optional(),
    stats: z.object({ requests: z.number(), errors: z.number(), p95Ms: z.number().nullable(), outputMean: z.number().nullable() }).optional(),
  })).max(1000).optional(),
});
export type SiteStatusBody = z.infer<typeof SiteStatusBody>;

export const StatusMessage = z.object({ ...base, type: z.literal('status'), body: SiteStatusBody });
/** The MQTT last will: published by the broker when the agent's connection dies uncleanly. */
export const OfflineMessage = z.object({ ...base, type: z.literal('offline'), body: z.object({ bootId: z.string(), reason: z.string().max(200) }) });
export const ReportedMessage = z.discriminatedUnion('type', [StatusMessage, OfflineMessage]);
export type ReportedMessage = z.infer<typeof ReportedMessage>;

export const DesiredApp = z.object({
  name: z.string(),
  version: z.string(),
  deploymentId: z.string(),
  manifest: AppManifest,
});
export type DesiredApp = z.infer<typeof DesiredApp>;

export const DesiredState = z.object({
  ...base,
  type: z.literal('desired'),
  body: z.object({
    siteId: z.string(),
    generation: z.number().int().positive(),
    apps: z.array(DesiredApp),
  }),
});
export type DesiredState = z.infer<typeof DesiredState>;

export const UplinkMessage = z.object({
  ...base,
  type: z.literal('uplink'),
  body: z.object({
    stream: z.string(),
    /** Site wall-clock time the record was produced (ms). */
    at: z.number().int().nonnegative(),
    /** The app and rule that produced it, when a rule did. */
    app: z.string().max(64).optional(),
    rule: z.string().max(64).optional(),
    data: z.unknown(),
  }),
});
export type UplinkMessage = z.infer<typeof UplinkMessage>;

/** cloud → site: a request (`ew/{site}/rpc/req/{id}`); the site answers on `ew/{site}/rpc/res/{id}`. */
export const RpcRequest = z.object({ ...base, type: z.literal('rpc-request'), body: z.object({ method: z.string().max(64), params: z.record(z.string(), z.unknown()).default({}) }) });
export type RpcRequest = z.infer<typeof RpcRequest>;
export const RpcResponse = z.object({
  ...base, type: z.literal('rpc-response'),
  body: z.object({ ok: z.boolean(), result: z.unknown().optional(), error: z.object({ code: z.string(), message: z.string() }).optional() }),
});
export type RpcResponse = z.infer<typeof RpcResponse>;

/** Decodes an MQTT payload against a schema; throws MQTT_PAYLOAD_INVALID with the field path. */
export function decodePayload<T extends z.ZodType>(schema: T, payload: Buffer | string, topic: string): z.infer<T> {
  let json: unknown;
  try {
    json = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
  } catch (e) {
    throw new EwError('MQTT_PAYLOAD_INVALID', `payload on ${topic} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const path = formatPath(issue.path);
    throw new EwError('MQTT_PAYLOAD_INVALID', `payload on ${topic} does not match its schema at ${path || '(root)'}: ${issue.message}`, { path });
  }
  return r.data;
}
