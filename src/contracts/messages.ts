import { z } from 'zod';
import { AppManifest } from './manifest.ts';
import { EwError, formatPath } from './errors.ts';

/**
 * Every cloud–edge MQTT message is one JSON envelope: a version, a unique id (dedup key),
 * a type, the sender's wall-clock time in ms, and a typed body. Parsing is strict so that a
 * malformed message is refused with a path, counted and logged, and never crashes a handler.
 * Build one with `envelope()`, never by hand.
 *
 * The contract version is `major.minor`: `v` carries the major, `minor` the minor (absent means
 * 0: version 1.0 agents and clouds sent no `minor`). The rule (docs/architecture.md):
 *  - a minor version only adds optional fields, messages or RPC methods, so every message of the
 *    same major is accepted whatever its minor (an older reader ignores what it does not know,
 *    a newer reader treats what is missing as absent);
 *  - a major from CONTRACT.minMajor to CONTRACT.major is accepted (the previous major is kept
 *    readable while sites are upgraded); anything newer, or older than minMajor, is refused
 *    with CONTRACT_VERSION_UNSUPPORTED, counted and logged — never half-read.
 * The same version travels in enrollment (`contractVersion`), where the same rule applies.
 */
export const CONTRACT = { major: 1, minor: 1, minMajor: 1 } as const;
export const CONTRACT_VERSION = `${CONTRACT.major}.${CONTRACT.minor}`;
/** The envelope's `v`: the contract's major version. */
export const ENVELOPE_VERSION = CONTRACT.major;

/** Parses `M` or `M.m` (absent minor = 0); undefined when it is neither. */
export function parseContractVersion(v: unknown): { major: number; minor: number } | undefined {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return { major: v, minor: 0 };
  if (typeof v !== 'string') return undefined;
  const m = /^(\d{1,6})(?:\.(\d{1,6}))?$/.exec(v);
  return m ? { major: Number(m[1]), minor: Number(m[2] ?? 0) } : undefined;
}

/**
 * Throws CONTRACT_VERSION_UNSUPPORTED unless a peer speaking `v` (a major number, or `M.m`) can be
 * understood by this build. `undefined` is version 1.0 (before versions were sent in enrollment).
 */
export function checkContractVersion(v: unknown, where: string): { major: number; minor: number } {
  const parsed = v === undefined ? { major: 1, minor: 0 } : parseContractVersion(v);
  if (!parsed)
    throw new EwError(
      'CONTRACT_VERSION_UNSUPPORTED',
      `${where}: contract version ${JSON.stringify(v)} is not a version (expected "major.minor")`,
      { path: 'v' },
    );
  if (parsed.major > CONTRACT.major || parsed.major < CONTRACT.minMajor) {
    const newer = parsed.major > CONTRACT.major;
    throw new EwError(
      'CONTRACT_VERSION_UNSUPPORTED',
      `${where}: contract version ${parsed.major}.${parsed.minor} is not supported here (this side speaks ${CONTRACT_VERSION}, and reads majors ${CONTRACT.minMajor} to ${CONTRACT.major}); ${newer ? 'upgrade this side first' : 'upgrade the other side'}`,
      { path: 'v' },
    );
  }
  return parsed;
}

/** C0 controls and DEL: a NUL made PostgreSQL refuse a whole shared insert batch. */
const CONTROL = /[\u0000-\u001f\u007f]/;
/** A bounded string without control characters: every identifier and label on the wire. */
export const safeString = (max: number) =>
  z
    .string()
    .max(max)
    .refine((v) => !CONTROL.test(v), 'must not contain control characters (U+0000–U+001F, U+007F)');
/** Free text (error messages, reasons): bounded, no NUL (stored as text), newlines and tabs allowed. */
const text = (max: number) =>
  z
    .string()
    .max(max)
    .refine((v) => !v.includes('\u0000'), 'must not contain NUL (U+0000)');
/** A finite, non-negative count or measure below 2^53. */
const count = () => z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const measure = () => z.number().nonnegative().max(Number.MAX_SAFE_INTEGER);
/** Unix ms: 0 up to the year 2200, so one bad clock cannot move anything to the far future. */
const epochMs = () => z.number().int().nonnegative().max(7_258_118_400_000);

/**
 * The most bytes an MQTT payload may have per topic class, checked by the cloud on receipt
 * (any hub) and by the site before it sends. A message over its class's bound is acknowledged
 * and dropped with a count — resending would not make it smaller. docs/operators.md lists them.
 */
export const PAYLOAD_LIMITS = {
  /** `ew/{site}/reported`: status heartbeats and the last will. */
  reported: 64 * 1024,
  /** `ew/{site}/up/{stream}`: one result record with its envelope. */
  up: 256 * 1024,
  /** `ew/{site}/rpc/res/{id}`: JSON answers to the cloud's requests (logs, dead letters); routed inference frames have MAX_FRAME_BYTES (infer-wire.ts). */
  'rpc-res': 512 * 1024,
} as const;

/** Heartbeat interval bounds (s): a site claiming 10^12 s would stay "online" for ever. */
export const HEARTBEAT_INTERVAL_S = { min: 1, max: 3600 } as const;

const base = {
  // decodePayload checks the version first (CONTRACT_VERSION_UNSUPPORTED); this keeps the type.
  v: z.number().int().min(CONTRACT.minMajor).max(CONTRACT.major),
  minor: z.number().int().nonnegative().max(999_999).optional(),
  id: safeString(128).pipe(z.string().min(1)),
  ts: epochMs(),
};

/** One app's failure to apply (start, update, stop) in one component (rules, models, sources…). */
export const AppError = z.object({
  app: safeString(64),
  version: safeString(64),
  component: safeString(32),
  code: safeString(64),
  message: text(2000),
});
export type AppError = z.infer<typeof AppError>;

/** What the site and the cloud show of a rule (edge/rules.ts reports it). */
export const RuleStatus = z.object({
  app: safeString(64),
  rule: safeString(128),
  state: z.enum(['running', 'failed']),
  error: text(2000).optional(),
  in: count(),
  out: count(),
  filtered: count(),
  late: count(),
  errors: count(),
  /** Records that reached the rule and were lost to it: failed, or late under `drop`. */
  dropped: count(),
  sinkErrors: count(),
  lastOutputAt: epochMs().nullable(),
  /** Referenced fields no record carried (schemaless streams), and similar hints. */
  warnings: z.array(text(500)).max(20).optional(),
  // Results a full outbox refused and lost, and why results are refused or waiting now (older agents send neither).
  sinkDropped: count().optional(),
  blocked: text(2000).optional(),
});
export type RuleStatus = z.infer<typeof RuleStatus>;

export const SiteStatusBody = z.object({
  agentVersion: safeString(64),
  bootId: safeString(64),
  uptimeS: measure(),
  heartbeatIntervalS: z.number().min(HEARTBEAT_INTERVAL_S.min).max(HEARTBEAT_INTERVAL_S.max),
  generation: count(),
  /** The apply errors as one text: what a 1.0 cloud reads. A 1.1 cloud reads `applyErrors`. */
  applyError: text(2000).optional(),
  /** (1.1) The last apply's failures, one per app and component, as data. */
  applyErrors: z.array(AppError).max(1000).optional(),
  apps: z.array(z.object({ name: safeString(64), version: safeString(64) })).max(1000),
  system: z.object({
    hostname: safeString(255),
    platform: safeString(32),
    arch: safeString(32),
    cores: z.number().int().nonnegative().max(65_536),
    memoryTotalBytes: measure(),
    memoryFreeBytes: measure(),
    diskTotalBytes: measure(),
    diskFreeBytes: measure(),
    loadAvg1: measure(),
  }),
  runtimes: z.array(safeString(32)).max(32),
  accelerators: z.array(safeString(64)).max(32),
  outbox: z.object({ pending: count(), dropped: count() }),
  devices: z.object({ connected: count(), messagesIn: count() }),
  rules: z.array(RuleStatus).max(1000).optional(),
  deadLetters: count().optional(),
  /** Industrial sources (OPC UA, Modbus): connection state, last value time, errors. */
  sources: z
    .array(
      z.object({
        app: safeString(64),
        stream: safeString(128),
        protocol: z.enum(['opcua', 'modbus']),
        endpoint: safeString(500),
        state: z.enum(['connecting', 'connected', 'disconnected', 'closed']),
        lastValueAt: epochMs().nullable(),
        values: count(),
        records: count(),
        errors: count(),
        reconnects: count(),
        lastError: z.object({ code: safeString(64), message: text(2000), at: epochMs() }).optional(),
      }),
    )
    .max(1000)
    .optional(),
  /** Write-back sinks (rules acting on machines): counts by result, last write, last error. */
  writes: z
    .array(
      z.object({
        app: safeString(64),
        rule: safeString(128),
        protocol: z.enum(['opcua', 'modbus']),
        target: safeString(1000),
        dryRun: z.boolean(),
        written: count(),
        refused: count(),
        failed: count(),
        dryRuns: count(),
        superseded: count(),
        lastWriteAt: epochMs().nullable(),
        lastError: z.object({ code: safeString(64), message: text(2000), at: epochMs() }).optional(),
        lastRefusal: z.object({ reason: text(2000), at: epochMs() }).optional(),
      }),
    )
    .max(1000)
    .optional(),
  models: z
    .array(
      z.object({
        app: safeString(64),
        name: safeString(64),
        version: safeString(64),
        state: z.enum(['fetching', 'loading', 'ready', 'failed']),
        device: safeString(32).optional(),
        error: text(2000).optional(),
        download: z.object({ received: measure(), total: measure() }).optional(),
        /** Language models: their runtime process (restarts, last exit) and slots. */
        runtime: z
          .object({
            state: z.enum(['starting', 'ready', 'restarting', 'failed']),
            restarts: count(),
            lastExit: text(500).optional(),
            pid: count().optional(),
            busy: count().optional(),
            queued: count().optional(),
            slots: count().optional(),
          })
          .optional(),
        stats: z
          .object({
            requests: count(),
            errors: count(),
            p95Ms: measure().nullable(),
            outputMean: z.number().min(-Number.MAX_VALUE).max(Number.MAX_VALUE).nullable(),
          })
          .optional(),
        /** Requests waiting in the model's batcher queue (the router's load signal). */
        queued: count().optional(),
      }),
    )
    .max(1000)
    .optional(),
  /** Inference routed to this site by the cloud: in flight now, and totals since start. */
  routed: z
    .object({ inFlight: z.number().int().nonnegative(), requests: z.number().int().nonnegative(), errors: z.number().int().nonnegative() })
    .optional(),
  /** What the site can accelerate inference with (see src/edge/accelerators.ts). */
  acceleratorInfo: z
    .object({
      cpu: z.object({
        model: z.string().max(256),
        arch: z.string().max(32),
        cores: z.number().int().nonnegative(),
        features: z.array(z.string().max(32)).max(64),
      }),
      gpus: z
        .array(
          z.object({
            vendor: z.enum(['nvidia', 'amd', 'intel', 'apple', 'other']),
            index: z.number().int().nonnegative(),
            name: z.string().max(256),
            memoryBytes: z.number().nonnegative().optional(),
            driver: z.string().max(64).optional(),
            /** Which runtimes could use it here (onnxruntime: cuda provider present; llama.cpp: cuda/vulkan/metal builds). */
            usableBy: z.array(z.string().max(64)).max(16),
          }),
        )
        .max(32),
      /** ONNX Runtime execution providers this agent's build has. */
      onnxProviders: z.array(z.string().max(32)).max(16),
    })
    .optional(),
});
export type SiteStatusBody = z.infer<typeof SiteStatusBody>;

export const StatusMessage = z.object({ ...base, type: z.literal('status'), body: SiteStatusBody });
/** The MQTT last will: published by the broker when the agent's connection dies uncleanly. */
export const OfflineMessage = z.object({
  ...base,
  type: z.literal('offline'),
  body: z.object({ bootId: safeString(64), reason: text(200) }),
});
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
    /**
     * The cloud acknowledges stored uplink on `ew/{site}/ack` (UplinkAck): the site then keeps
     * each result until that acknowledgement, not just the broker's PUBACK. Absent (older clouds,
     * the embedded hub whose PUBACK already follows the commit): PUBACK deletes.
     */
    uplinkAck: z.boolean().optional(),
  }),
});
export type DesiredState = z.infer<typeof DesiredState>;

export const UplinkMessage = z.object({
  ...base,
  type: z.literal('uplink'),
  body: z.object({
    stream: safeString(128),
    /** Site wall-clock time the record was produced (ms). */
    at: epochMs(),
    /** The app and rule that produced it, when a rule did. */
    app: safeString(64).optional(),
    rule: safeString(64).optional(),
    data: z.unknown(),
  }),
});
export type UplinkMessage = z.infer<typeof UplinkMessage>;

/** Most ids in one UplinkAck: a stored batch is acknowledged in as many messages as it needs. */
export const UPLINK_ACK_MAX_IDS = 500;

/** cloud → site on `ew/{site}/ack`: these uplink message ids are stored (or were already). */
export const UplinkAck = z.object({
  ...base,
  type: z.literal('uplink-ack'),
  body: z.object({ ids: z.array(safeString(128)).max(UPLINK_ACK_MAX_IDS) }),
});
export type UplinkAck = z.infer<typeof UplinkAck>;

/** cloud → site: a request (`ew/{site}/rpc/req/{id}`); the site answers on `ew/{site}/rpc/res/{id}`. */
export const RpcRequest = z.object({
  ...base,
  type: z.literal('rpc-request'),
  body: z.object({ method: z.string().max(64), params: z.record(z.string(), z.unknown()).default({}) }),
});
export type RpcRequest = z.infer<typeof RpcRequest>;
export const RpcResponse = z.object({
  ...base,
  type: z.literal('rpc-response'),
  // `path` (1.1): the field the site refused; a 1.0 cloud ignores it.
  body: z.object({
    ok: z.boolean(),
    result: z.unknown().optional(),
    error: z.object({ code: safeString(64), message: text(2000), path: safeString(500).optional() }).optional(),
  }),
});
export type RpcResponse = z.infer<typeof RpcResponse>;

/** Every envelope by its type: what `envelope()` builds and each end decodes. */
export interface Envelopes {
  status: z.infer<typeof StatusMessage>;
  offline: z.infer<typeof OfflineMessage>;
  desired: DesiredState;
  uplink: UplinkMessage;
  'rpc-request': RpcRequest;
  'rpc-response': RpcResponse;
  'uplink-ack': UplinkAck;
}
export type EnvelopeType = keyof Envelopes;

/**
 * The one way an envelope is built, cloud and edge alike: this build's contract version, a fresh
 * id (or `id`, when the sender needs a deterministic one: a replayed window result), the clock's
 * time. Typed by `type`, so a body that does not fit its message does not compile.
 */
export function envelope<T extends EnvelopeType>(
  type: T,
  body: z.input<(typeof SCHEMAS)[T]>['body'],
  clock: { now(): number },
  id: string = globalThis.crypto.randomUUID(),
): Envelopes[T] {
  return { v: CONTRACT.major, minor: CONTRACT.minor, id, ts: clock.now(), type, body } as Envelopes[T];
}

/** The schema of each envelope type (the receiving end's check, and the tests' round trips). */
export const SCHEMAS = {
  status: StatusMessage,
  offline: OfflineMessage,
  desired: DesiredState,
  uplink: UplinkMessage,
  'rpc-request': RpcRequest,
  'rpc-response': RpcResponse,
  'uplink-ack': UplinkAck,
} as const;

/** Decodes an MQTT payload against a schema; throws MQTT_PAYLOAD_INVALID with the field path. */
export function decodePayload<T extends z.ZodType>(schema: T, payload: Buffer | string, topic: string): z.infer<T> {
  let json: unknown;
  try {
    json = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
  } catch (e) {
    throw new EwError('MQTT_PAYLOAD_INVALID', `payload on ${topic} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  // The version before the shape: a newer major's message is refused as such, not as malformed.
  if (json !== null && typeof json === 'object' && 'v' in json) checkContractVersion((json as { v: unknown }).v, `payload on ${topic}`);
  const r = schema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const path = formatPath(issue.path);
    throw new EwError('MQTT_PAYLOAD_INVALID', `payload on ${topic} does not match its schema at ${path || '(root)'}: ${issue.message}`, {
      path,
    });
  }
  return r.data;
}

/** Bounds of a site's answer to `logs` (docs/operators.md): enforced by the site and by the cloud. */
export const LOG_LIMITS = { lines: 2000, lineChars: 4096, totalBytes: 384 * 1024 } as const;

export interface LogLine {
  time: number;
  line: string;
}

/**
 * The newest lines that fit LOG_LIMITS, each cut to `lineChars` (marked with `…[cut N chars]`).
 * Throws MQTT_PAYLOAD_INVALID when `value` is not a `{lines: [{time, line}]}` answer.
 */
export function boundLogLines(value: unknown, limit: number = LOG_LIMITS.lines): LogLine[] {
  const parsed = z.object({ lines: z.array(z.object({ time: z.number(), line: z.string() })) }).safeParse(value);
  if (!parsed.success)
    throw new EwError(
      'MQTT_PAYLOAD_INVALID',
      `the site's logs answer is malformed at ${formatPath(parsed.error.issues[0]!.path) || '(root)'}`,
    );
  const out: LogLine[] = [];
  let bytes = 0;
  const src = parsed.data.lines;
  for (let i = src.length - 1; i >= 0 && out.length < Math.min(limit, LOG_LIMITS.lines); i--) {
    const l = src[i]!;
    const line =
      l.line.length > LOG_LIMITS.lineChars
        ? `${l.line.slice(0, LOG_LIMITS.lineChars)}…[cut ${l.line.length - LOG_LIMITS.lineChars} chars]`
        : l.line;
    bytes += Buffer.byteLength(line) + 32;
    if (bytes > LOG_LIMITS.totalBytes) break;
    out.push({ time: l.time, line });
  }
  return out.reverse();
}
