import { EwError, formatPath } from '../contracts/errors.ts';
import { boundLogLines, LOG_LIMITS } from '../contracts/messages.ts';
import { isRpcMethod, RPC, type RpcMethod, type RpcResult } from '../contracts/rpc.ts';
import { clipText } from '../contracts/bounds.ts';
import type { z } from 'zod';
import type { LogRing, Logger } from '../lib/logger.ts';
import type { DeadLetters } from './record-router.ts';
import type { WriteAudit } from './writes.ts';
import { addDevice, registryOf, revokeDevice, type DeviceAdmin } from './device-api.ts';

/**
 * The agent's answers to the cloud's requests (`ew/{site}/rpc/req/{id}`): one handler per method
 * of the contract (src/contracts/rpc.ts). `answerRpc` parses the params with the method's schema
 * before the handler runs and checks the result against it before it leaves, so the site never
 * sends what the cloud would refuse; a refusal is an EwError whose code the cloud passes on.
 */
export interface RpcDeps {
  /** The ring the agent's own logger feeds (the log sink's results never enter it: see sinks.ts). */
  ring: LogRing;
  dead: DeadLetters;
  writeAudit: WriteAudit;
  devices: DeviceAdmin;
  log: Logger;
}

type Handlers = { [M in RpcMethod]: (params: z.output<(typeof RPC)[M]['params']>) => RpcResult<M> | Promise<RpcResult<M>> };

export function rpcHandlers(d: RpcDeps): Handlers {
  return {
    logs: (p) => ({ lines: boundLogLines({ lines: d.ring.since(p.since ?? 0, LOG_LIMITS.lines) }, p.limit ?? 200) }),
    // Raw device data stays on the site: the cloud gets why a record was refused and its size,
    // never its content (`detail` may quote it too; the site's local API shows both on the site).
    'dead-letters': (p) => ({
      total: d.dead.total,
      items: d.dead.list({ app: p.app, stream: p.stream, limit: p.limit ?? 100 }).map(({ payload, detail: _detail, reason, ...rest }) => ({
        ...rest,
        reason: clipText(reason, 2000),
        payloadBytes: Buffer.byteLength(payload),
      })),
    }),
    writes: (p) => ({
      items: d.writeAudit.list({ app: p.app, limit: p.limit ?? 100 }).map((w) => ({
        ...w,
        target: clipText(w.target, 1000),
        value: clipText(w.value, 10_000),
        detail: w.detail === null ? null : clipText(w.detail, 2000),
      })),
    }),
    // A page: the answer must fit the cloud's bound on RPC answers (DEVICE_PAGE).
    'devices.list': (p) => {
      const page = registryOf(d.devices).list({ after: p.after, limit: p.limit });
      return { items: page.items.map(plainGrants), next: page.next };
    },
    'devices.add': (p) => plainGrants(addDevice(d.devices, p)),
    'devices.revoke': (p) => {
      revokeDevice(d.devices, p.id);
      return { revoked: p.id };
    },
  };
}

/** The registry's read-only grant lists as the plain arrays the contract's types have. */
function plainGrants<T extends { publish: readonly string[]; subscribe: readonly string[] }>(
  x: T,
): Omit<T, 'publish' | 'subscribe'> & { publish: string[]; subscribe: string[] } {
  return { ...x, publish: [...x.publish], subscribe: [...x.subscribe] };
}

/** Answers one request: NOT_FOUND for a method this agent lacks, VALIDATION_FAILED for bad params. */
export function createRpc(d: RpcDeps): (method: string, params: unknown) => Promise<unknown> {
  const handlers = rpcHandlers(d);
  return async (method, params) => {
    if (!isRpcMethod(method))
      throw new EwError('NOT_FOUND', `the agent has no request "${method}" (it speaks ${Object.keys(RPC).join(', ')})`, { path: 'method' });
    return answerRpc(method, handlers[method] as (p: unknown) => unknown, params, d.log);
  };
}

async function answerRpc(method: RpcMethod, handler: (p: unknown) => unknown, params: unknown, log: Logger): Promise<unknown> {
  const spec = RPC[method];
  const p = spec.params.safeParse(params ?? {});
  if (!p.success) {
    const issue = p.error.issues[0]!;
    const path = formatPath(['params', ...issue.path]);
    throw new EwError('VALIDATION_FAILED', `"${method}": ${path} ${issue.message}`, { path });
  }
  const result = await handler(p.data);
  const r = spec.result.safeParse(result);
  if (!r.success) {
    // Our own bug, not the cloud's: said as INTERNAL with where, and logged here in full.
    const issue = r.error.issues[0]!;
    log.error(
      { method, path: formatPath(issue.path), issue: issue.message },
      'an answer to the cloud does not match its contract; not sent',
    );
    throw new EwError('INTERNAL', `the agent's answer to "${method}" does not match the contract at ${formatPath(issue.path) || '(root)'}`);
  }
  return r.data;
}
