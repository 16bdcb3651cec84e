import { z } from 'zod';
import { ERROR_CODES, EwError, formatPath, type ErrorCode } from '../../contracts/errors.ts';
import type { RpcResponse } from '../../contracts/messages.ts';
import { RPC, type RpcMethod, type RpcResult } from '../../contracts/rpc.ts';

/** How a 1.0 agent refused a `devices.*` request: an ok answer whose result is `{error}`. */
const LegacyRefusal = z.object({
  error: z.object({ code: z.string().max(64), message: z.string().max(2000), path: z.string().max(500).optional() }),
});

/**
 * The cloud's one reading of a site's answer (Fleet.rpc calls it for every request): the site's
 * refusal becomes an EwError with the site's own code (SITE_REFUSED for one this cloud does not
 * know), and a result is parsed with its method's schema — one that does not match is
 * SITE_ANSWER_INVALID with the field, never a cast or a crash further on.
 */
export function readRpcAnswer<M extends RpcMethod>(siteId: string, method: M, res: RpcResponse): RpcResult<M> {
  const refusal = !res.body.ok
    ? (res.body.error ?? { code: 'INTERNAL', message: 'no reason given' })
    : // Previous version (1.0): devices.* refusals came as results.
      method.startsWith('devices.')
      ? legacyRefusal(res.body.result)
      : undefined;
  if (refusal) {
    const known = Object.hasOwn(ERROR_CODES, refusal.code) ? (refusal.code as ErrorCode) : undefined;
    throw new EwError(
      known ?? 'SITE_REFUSED',
      `site ${siteId} refused "${method}"${known ? '' : ` with ${refusal.code}`}: ${refusal.message}`,
      refusal.path ? { path: refusal.path } : {},
    );
  }
  const r = RPC[method].result.safeParse(res.body.result);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const path = formatPath(issue.path);
    throw new EwError(
      'SITE_ANSWER_INVALID',
      `site ${siteId} answered "${method}" with something that does not match the contract at ${path || '(root)'}: ${issue.message}; is the agent of another version?`,
    );
  }
  return r.data as RpcResult<M>;
}

function legacyRefusal(result: unknown): z.infer<typeof LegacyRefusal>['error'] | undefined {
  const r = LegacyRefusal.safeParse(result);
  return r.success ? r.data.error : undefined;
}
