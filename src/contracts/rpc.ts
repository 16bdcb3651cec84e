import { z } from 'zod';
import { LOG_LIMITS, safeString } from './messages.ts';
import { DEVICE_PAGE, MAX_GRANTS } from './devices.ts';

/**
 * The requests the cloud asks a site over its link (`ew/{site}/rpc/req/{id}`), one schema pair per
 * method. The agent parses `params` with them before its handler runs (src/edge/rpc.ts) and checks
 * its `result` before it sends; the cloud parses every answer with them in one place
 * (`Fleet.rpc`), so a malformed answer is an RPC_ANSWER_INVALID error, never a crash or a cast.
 *
 * Compatibility: params objects are not strict (an older agent ignores a field a newer cloud adds);
 * a method added later is answered NOT_FOUND by an agent that lacks it.
 */

const count = () => z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const epochMs = () => z.number().int().nonnegative().max(7_258_118_400_000);

/**
 * One line of a site's log ring, as sent to the cloud. The site cuts lines to LOG_LIMITS; the
 * cloud does not refuse a longer one but cuts it again (boundLogLines): a site is not trusted to
 * size its own answer, and the answer's payload bound (512 KiB) already caps the whole.
 */
export const RpcLogLine = z.object({ time: z.number(), line: z.string() });

/** A dead letter as it leaves the site: why and how big, never its content. */
export const RpcDeadLetter = z.object({
  id: count(),
  at: epochMs(),
  app: safeString(64),
  stream: safeString(128),
  reason: z.string().max(2000),
  payloadBytes: count(),
});

/** One row of the site's write audit. `result` is open (a newer agent may add kinds); the site's own filter knows the closed set. */
export const RpcWriteRow = z.object({
  id: count(),
  at: epochMs(),
  app: safeString(64),
  rule: safeString(128),
  target: z.string().max(1000),
  value: z.string().max(10_000),
  result: safeString(32),
  detail: z.string().max(2000).nullable(),
});

/** A device on the site's broker, as listed (no secret). */
export const RpcDevice = z.object({
  id: safeString(64),
  publish: z.array(z.string().max(256)).max(MAX_GRANTS),
  subscribe: z.array(z.string().max(256)).max(MAX_GRANTS),
  createdAt: epochMs(),
  description: z.string().max(200).optional(),
});

const limit = (max: number) => z.number().int().min(1).max(max).optional();

export const RPC = {
  /** Recent lines of the agent's log ring (the log sink's lines never enter it). */
  logs: {
    params: z.object({ since: z.number().int().optional(), limit: limit(LOG_LIMITS.lines) }),
    result: z.object({ lines: z.array(RpcLogLine) }),
  },
  /** Records the site could not use: reasons and sizes, never the raw content. */
  'dead-letters': {
    params: z.object({ app: z.string().max(64).optional(), stream: z.string().max(128).optional(), limit: limit(1000) }),
    result: z.object({ total: count(), items: z.array(RpcDeadLetter).max(1000) }),
  },
  /** The write audit (rules acting on machines), newest first. */
  writes: {
    params: z.object({ app: z.string().max(64).optional(), limit: limit(1000) }),
    result: z.object({ items: z.array(RpcWriteRow).max(1000) }),
  },
  /** A page of the device registry in id order. */
  'devices.list': {
    params: z.object({ after: z.string().max(64).optional(), limit: limit(DEVICE_PAGE.maxItems) }),
    result: z.object({ items: z.array(RpcDevice).max(DEVICE_PAGE.maxItems), next: safeString(64).nullable() }),
  },
  /** Registers a device; the answer carries its secret, once. The site checks the grants (contracts/devices.ts). */
  'devices.add': {
    params: z.object({
      id: z.string().max(64),
      publish: z.array(z.string()).max(MAX_GRANTS).optional(),
      subscribe: z.array(z.string()).max(MAX_GRANTS).optional(),
      description: z.string().max(200).optional(),
    }),
    result: RpcDevice.extend({ secret: safeString(128), username: safeString(64), clientId: safeString(64) }),
  },
  /** Revokes a device and cuts its live connection. */
  'devices.revoke': {
    params: z.object({ id: z.string().max(64) }),
    result: z.object({ revoked: safeString(64) }),
  },
} as const satisfies Record<string, { params: z.ZodType; result: z.ZodType }>;

export type RpcMethod = keyof typeof RPC;
export type RpcParams<M extends RpcMethod> = z.input<(typeof RPC)[M]['params']>;
export type RpcResult<M extends RpcMethod> = z.infer<(typeof RPC)[M]['result']>;

export function isRpcMethod(m: string): m is RpcMethod {
  return Object.hasOwn(RPC, m);
}
