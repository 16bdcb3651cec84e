import { randomUUID } from 'node:crypto';
import { decodeFrame, encodeFrame, SiteToCloud, WIRE_VERSION, type Frame } from '../../contracts/infer-wire.ts';
import { topics } from '../../contracts/topics.ts';
import { EwError } from '../../contracts/errors.ts';
import type { Hub } from '../hub/hub.ts';
import type { Clock } from '../../lib/clock.ts';

type Answer = Frame<SiteToCloud>;

interface Pending {
  siteId: string;
  /** Non-streamed: the one answer. Streamed: every chunk, then the end or an error. */
  onFrame(f: Answer): void;
  onFail(e: Error): void;
}

/**
 * Request/response to sites over the MQTT link with correlation ids (the request id is the
 * response topic's last level), deadlines and cancellation: when the deadline passes or the
 * caller aborts, the site gets a `cancel` frame and a late answer is dropped. Streams get
 * credit-based flow control: the site sends at most `window` chunks ahead of what the caller
 * consumed. At most `maxPending` requests wait at once (a bound; past it: QUEUE_FULL).
 */
export class Forwarder {
  private readonly pending = new Map<string, Pending>();
  /** Answers that did not parse (a site answering garbage), for metrics. */
  invalidAnswers = 0;

  /** `maxAnswerBytes`: the largest frame a site may send back on this link (the hub's packet limit), told to the site with each request. */
  constructor(
    private readonly hub: Hub,
    private readonly clock: Clock,
    private readonly maxPending = 10_000,
    private readonly maxAnswerBytes?: number,
  ) {}

  private limit(head: Record<string, unknown>): Record<string, unknown> {
    return this.maxAnswerBytes === undefined ? head : { ...head, maxAnswerBytes: this.maxAnswerBytes };
  }

  get size(): number {
    return this.pending.size;
  }

  /** The fleet hands every frame on `ew/{site}/rpc/res/{id}` here; false when nobody waits for it. */
  readonly onResponse = (siteId: string, id: string, payload: Buffer): boolean => {
    const p = this.pending.get(id);
    if (!p || p.siteId !== siteId) return false; // late, cancelled, or another site's id: dropped
    let f: Answer;
    try {
      f = decodeFrame(SiteToCloud, payload, `answer from site ${siteId}`);
      if (f.head.id !== id)
        throw new EwError('MQTT_PAYLOAD_INVALID', `answer from site ${siteId} names request ${f.head.id} on the topic of ${id}`);
    } catch (e) {
      this.invalidAnswers++;
      p.onFail(
        new EwError(
          'SITE_ANSWER_INVALID',
          `site ${siteId} answered with something that is not a valid inference answer: ${(e as Error).message}`,
        ),
      );
      return true;
    }
    p.onFrame(f);
    return true;
  };

  private register(siteId: string, p: Omit<Pending, 'siteId'>): string {
    if (this.pending.size >= this.maxPending)
      throw new EwError('QUEUE_FULL', `the cloud has ${this.pending.size} routed requests waiting on sites, its limit; retry shortly`);
    const id = randomUUID();
    this.pending.set(id, { siteId, ...p });
    return id;
  }

  private cancel(siteId: string, id: string): void {
    this.pending.delete(id);
    void this.hub
      .publish(topics.rpcRequest(siteId, randomUUID()), encodeFrame({ v: WIRE_VERSION, type: 'cancel', id }), { qos: 0 })
      .catch(() => {});
  }

  /**
   * One request, one answer (result, metadata-result, error or end). Rejects with
   * INFER_DEADLINE_EXCEEDED after `timeoutMs`, CLIENT_CLOSED when `signal` aborts.
   */
  call(siteId: string, head: Record<string, unknown>, body: readonly Buffer[], timeoutMs: number, signal?: AbortSignal): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      let id = '';
      let stopTimer = () => {};
      const finish = () => {
        stopTimer();
        signal?.removeEventListener('abort', onAbort);
        this.pending.delete(id);
      };
      const onAbort = () => {
        finish();
        this.cancel(siteId, id);
        reject(new EwError('CLIENT_CLOSED', 'the client went away; the site was told to cancel'));
      };
      try {
        id = this.register(siteId, {
          onFrame: (f) => {
            finish();
            resolve(f);
          },
          onFail: (e) => {
            finish();
            reject(e);
          },
        });
      } catch (e) {
        reject(e);
        return;
      }
      stopTimer = this.clock.setTimer(timeoutMs, () => {
        finish();
        this.cancel(siteId, id);
        reject(new EwError('INFER_DEADLINE_EXCEEDED', `site ${siteId} did not answer within ${timeoutMs} ms`));
      });
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.hub.publish(topics.rpcRequest(siteId, id), encodeFrame(this.limit({ ...head, id }), body), { qos: 0 }).catch((e: Error) => {
        finish();
        reject(new EwError('SITE_UNREACHABLE', `could not send to site ${siteId}: ${e.message}`));
      });
    });
  }

  /**
   * A streamed request: yields each chunk's bytes as the site sends them, then returns the end
   * frame. Credit is granted as the consumer pulls, so a slow client slows the site down
   * instead of filling the cloud's memory. Breaking out of the loop (client gone) cancels the
   * site's work. `idleMs` bounds the wait for each next chunk.
   */
  async *stream(
    siteId: string,
    head: Record<string, unknown>,
    body: Buffer,
    opts: { window: number; idleMs: number; signal?: AbortSignal },
  ): AsyncGenerator<Buffer, Answer> {
    const queue: Answer[] = [];
    let failure: Error | undefined;
    let wake: (() => void) | undefined;
    const id = this.register(siteId, {
      onFrame: (f) => {
        queue.push(f);
        wake?.();
      },
      onFail: (e) => {
        failure = e;
        wake?.();
      },
    });
    let done = false;
    const onAbort = () => {
      failure ??= new EwError('CLIENT_CLOSED', 'the client went away');
      wake?.();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await this.hub.publish(topics.rpcRequest(siteId, id), encodeFrame(this.limit({ ...head, id, window: opts.window }), body), {
        qos: 0,
      });
      let consumed = 0;
      let expected = 0;
      for (;;) {
        while (queue.length === 0 && !failure) {
          let timedOut = false;
          await new Promise<void>((resolve) => {
            wake = resolve;
            const stop = this.clock.setTimer(opts.idleMs, () => {
              timedOut = true;
              resolve();
            });
            const w = wake;
            wake = () => {
              stop();
              w();
            };
          });
          wake = undefined;
          if (timedOut && queue.length === 0 && !failure)
            failure = new EwError('INFER_DEADLINE_EXCEEDED', `site ${siteId} sent nothing for ${opts.idleMs} ms`);
        }
        if (queue.length === 0 && failure) throw failure;
        const f = queue.shift()!;
        if (f.head.type === 'chunk') {
          if (f.head.seq !== expected)
            throw new EwError('SITE_ANSWER_INVALID', `site ${siteId} sent chunk ${f.head.seq} where ${expected} was due`);
          expected++;
          yield f.body;
          // The consumer took it: let the site send one more.
          if (++consumed % Math.max(1, Math.floor(opts.window / 2)) === 0) {
            void this.hub
              .publish(
                topics.rpcRequest(siteId, randomUUID()),
                encodeFrame({ v: WIRE_VERSION, type: 'credit', id, n: Math.max(1, Math.floor(opts.window / 2)) }),
                { qos: 0 },
              )
              .catch(() => {});
          }
          continue;
        }
        done = true;
        return f;
      }
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (!done) this.cancel(siteId, id);
      this.pending.delete(id);
    }
  }
}
