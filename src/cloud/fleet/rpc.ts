import { randomUUID } from 'node:crypto';
import { Counter, type Registry } from 'prom-client';
import type { Hub } from '../hub/hub.ts';
import { envelope, type RpcResponse } from '../../contracts/messages.ts';
import type { RpcMethod, RpcParams, RpcResult } from '../../contracts/rpc.ts';
import { readRpcAnswer } from './rpc-answer.ts';
import { topics } from '../../contracts/topics.ts';
import { EwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';

/**
 * Requests to sites over their MQTT link and their answers: JSON RPC answers are matched to the
 * waiting call (only from the site it asked), routed inference answers (binary frames) go to the
 * router's forwarder. Every call has a deadline, so the waiting map holds only calls in flight.
 */
export class SiteRpc {
  /** Routed inference answers (binary frames) go to the router's forwarder; false: nobody waits (late or cancelled). */
  onFrame?: (siteId: string, id: string, payload: Buffer) => boolean;
  private readonly waiting = new Map<string, { siteId: string; done: (r: RpcResponse | Error) => void }>();
  private readonly lateAnswers: Counter;

  constructor(private readonly o: { hub: Hub; clock: Clock; registry: Registry; isOnline: (siteId: string) => boolean }) {
    this.lateAnswers = new Counter({
      name: 'ew_cloud_routed_answers_dropped_total',
      help: 'Routed inference answers that arrived after their request ended (deadline, cancel)',
      registers: [o.registry],
    });
  }

  /**
   * Asks a site something over its MQTT link: SITE_UNREACHABLE when it does not answer in time;
   * its answer is read against the method's schema by readRpcAnswer (the site's own error code,
   * or SITE_ANSWER_INVALID) — the one place the cloud reads answers.
   */
  async call<M extends RpcMethod>(siteId: string, method: M, params: RpcParams<M>, timeoutMs = 10_000): Promise<RpcResult<M>> {
    if (!this.o.isOnline(siteId)) throw new EwError('SITE_UNREACHABLE', `site ${siteId} is offline; it cannot answer now`);
    const id = randomUUID();
    const req = envelope('rpc-request', { method, params }, this.o.clock, id);
    const res = await new Promise<RpcResponse | Error>((resolve) => {
      const cancel = this.o.clock.setTimer(timeoutMs, () => {
        this.waiting.delete(id);
        resolve(new EwError('SITE_UNREACHABLE', `site ${siteId} did not answer "${method}" within ${timeoutMs / 1000} s`));
      });
      this.waiting.set(id, {
        siteId,
        done: (r) => {
          cancel();
          resolve(r);
        },
      });
      this.o.hub.publish(topics.rpcRequest(siteId, id), JSON.stringify(req)).catch((e: Error) => {
        cancel();
        this.waiting.delete(id);
        resolve(e);
      });
    });
    if (res instanceof Error) throw res;
    return readRpcAnswer(siteId, method, res);
  }

  /** A JSON answer: settles the call waiting for it, if any and if it came from the site asked. */
  answer(siteId: string, id: string, res: RpcResponse): void {
    const w = this.waiting.get(id);
    if (w && w.siteId === siteId) {
      this.waiting.delete(id);
      w.done(res);
    }
  }

  /** A routed inference answer (binary frame). */
  frame(siteId: string, id: string, payload: Buffer): void {
    if (!this.onFrame?.(siteId, id, payload)) this.lateAnswers.inc();
  }
}
