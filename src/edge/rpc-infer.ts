import {
  decodeFrame,
  encodeFrame,
  packTensors,
  unpackTensors,
  CloudToSite,
  WIRE_VERSION,
  type WireTensor,
} from '../contracts/infer-wire.ts';
import { topics } from '../contracts/topics.ts';
import { EwError, isEwError, ERROR_CODES, type ErrorCode } from '../contracts/errors.ts';
import type { ModelHost } from '../inference/host.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';

/**
 * The site's half of routed inference: requests the cloud forwards over the MQTT link (binary
 * frames, see contracts/infer-wire.ts) run on the same ModelHost as the local OIP API, and the
 * answer goes back on `ew/{site}/rpc/res/{id}`. A request past its deadline or cancelled by the
 * cloud is not answered (its batch may still run: ONNX Runtime cannot stop a batch midway); at
 * most `maxInFlight` routed requests run at once, the rest are refused at once with QUEUE_FULL
 * so the router retries elsewhere.
 *
 * Streamed requests (LLM chat) plug in through `streams`, which the LLM runtime provides.
 */
export interface RoutedStreams {
  /** Runs a /v1 request; `emit` is called per chunk and resolves when the cloud granted credit for it. */
  run(path: string, body: Buffer, emit: (chunk: Buffer) => Promise<void>, signal: AbortSignal): Promise<{ status: number; body?: Buffer }>;
}

export interface RoutedInferenceOptions {
  siteId: string;
  models: ModelHost;
  clock: Clock;
  log: Logger;
  /** QoS 0 publish on the cloud link. */
  publish: (topic: string, payload: Buffer) => Promise<void>;
  maxInFlight?: number;
  streams?: RoutedStreams;
}

/**
 * Streamed requests run on the site's own OpenAI-compatible routes, in process (fastify's
 * `inject`, no socket), so the cloud gets exactly what a local client would — SSE events as the
 * model produces them. `internalToken` marks these calls to the local API's auth hook: the cloud
 * authenticated them already (it holds the site's MQTT link).
 */
export function injectStreams(app: { inject: (o: object) => Promise<unknown> }, internalToken: string): RoutedStreams {
  return {
    async run(path, body, emit, signal) {
      const res = (await app.inject({
        method: 'POST',
        url: path,
        payload: body,
        payloadAsStream: true,
        signal,
        headers: { 'content-type': 'application/json', 'x-edgeweave-internal': internalToken },
      })) as {
        statusCode: number;
        headers: Record<string, string | string[] | undefined>;
        stream(): NodeJS.ReadableStream;
        raw: { res: { destroy(): void } };
      };
      const stream = res.stream();
      // The cloud's client went away: closing the response is what the /v1 routes listen for to stop generating.
      const stop = () => res.raw.res.destroy();
      signal.addEventListener('abort', stop, { once: true });
      try {
        if (String(res.headers['content-type'] ?? '').startsWith('text/event-stream')) {
          for await (const chunk of stream) await emit(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
          return { status: res.statusCode };
        }
        const parts: Buffer[] = [];
        let size = 0;
        for await (const chunk of stream) {
          const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
          size += b.length;
          if (size > 32 * 1024 * 1024) throw new EwError('PAYLOAD_TOO_LARGE', 'the answer is larger than 32 MiB');
          parts.push(b);
        }
        return { status: res.statusCode, body: Buffer.concat(parts) };
      } finally {
        signal.removeEventListener('abort', stop);
      }
    },
  };
}

interface Running {
  abort: AbortController;
  cancelTimer: () => void;
  credit?: { n: number; wake?: () => void };
  maxAnswerBytes?: number;
}

export class RoutedInference {
  private readonly running = new Map<string, Running>();
  private readonly maxInFlight: number;
  /** Counters for the site's status and /metrics. */
  readonly stats = { requests: 0, errors: 0, cancelled: 0, expired: 0, refused: 0 };

  constructor(private readonly o: RoutedInferenceOptions) {
    this.maxInFlight = o.maxInFlight ?? 256;
  }

  /** The local API exists after the link: its streams are plugged in once it does. */
  setStreams(streams: RoutedStreams): void {
    this.o.streams = streams;
  }

  get inFlight(): number {
    return this.running.size;
  }

  /** Called by the link for each frame on `ew/{site}/rpc/req/…`. Never throws. */
  readonly onFrame = (payload: Buffer): void => {
    let frame: ReturnType<typeof decodeFrame<typeof CloudToSite>>;
    try {
      frame = decodeFrame(CloudToSite, payload, 'routed request');
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, 'routed request refused');
      return; // no id we can trust to answer on
    }
    const h = frame.head;
    if (h.type === 'cancel') {
      const r = this.running.get(h.id);
      if (r) {
        this.stats.cancelled++;
        r.abort.abort(new EwError('INTERNAL', 'cancelled by the cloud'));
      }
      return;
    }
    if (h.type === 'credit') {
      const r = this.running.get(h.id);
      if (r?.credit) {
        r.credit.n += h.n;
        r.credit.wake?.();
      }
      return;
    }
    if (this.running.size >= this.maxInFlight) {
      this.stats.refused++;
      void this.reply(
        h.id,
        encodeFrame({
          v: WIRE_VERSION,
          type: 'error',
          id: h.id,
          code: 'QUEUE_FULL',
          message: `site ${this.o.siteId} runs ${this.running.size} routed requests, its limit`,
          status: 503,
        }),
      );
      return;
    }
    const abort = new AbortController();
    const cancelTimer = this.o.clock.setTimer(h.timeoutMs, () => {
      this.stats.expired++;
      abort.abort(new EwError('INTERNAL', 'deadline passed'));
    });
    const r: Running = {
      abort,
      cancelTimer,
      maxAnswerBytes: h.maxAnswerBytes,
      ...(h.type === 'stream' ? { credit: { n: h.window } } : {}),
    };
    this.running.set(h.id, r);
    this.stats.requests++;
    const t0 = this.o.clock.now();
    const work = async (): Promise<Buffer | undefined> => {
      if (h.type === 'metadata') {
        return encodeFrame({ v: WIRE_VERSION, type: 'metadata-result', id: h.id, metadata: this.o.models.metadata(h.endpoint, h.version) });
      }
      if (h.type === 'stream') return this.runStream(h.id, h.path, frame.body, r);
      const inputs = unpackTensors(h.inputs, frame.body, `request ${h.id}`);
      const out = await this.o.models.infer(h.endpoint, h.version, {
        id: h.requestId,
        inputs,
        outputs: h.outputs?.map((name) => ({ name })),
      });
      if (abort.signal.aborted) return undefined;
      const packed = packTensors(out.outputs as WireTensor[], 'outputs');
      return encodeFrame(
        {
          v: WIRE_VERSION,
          type: 'result',
          id: h.id,
          model_name: out.model_name,
          model_version: out.model_version,
          outputs: packed.heads,
          siteMs: this.o.clock.now() - t0,
          load: { inFlight: this.running.size, queued: 0 },
        },
        packed.body,
      );
    };
    void work()
      .then(
        (res) => {
          if (!res || abort.signal.aborted) return;
          if (r.maxAnswerBytes !== undefined && res.length > r.maxAnswerBytes) {
            // Sent as it is, the broker would cut the link; say why instead.
            this.stats.errors++;
            return this.reply(
              h.id,
              encodeFrame({
                v: WIRE_VERSION,
                type: 'error',
                id: h.id,
                code: 'PAYLOAD_TOO_LARGE',
                status: 413,
                message: `the answer is ${res.length} bytes; the cloud's link takes at most ${r.maxAnswerBytes} (its broker's maxPacketBytes): ask for fewer outputs or rows, or raise the limit`,
              }),
            );
          }
          return this.reply(h.id, res);
        },
        (e: unknown) => {
          if (abort.signal.aborted) return;
          this.stats.errors++;
          const code: ErrorCode = isEwError(e) ? e.code : 'INTERNAL';
          if (!isEwError(e)) this.o.log.error({ err: e, id: h.id }, 'routed request failed');
          const err = {
            v: WIRE_VERSION,
            type: 'error',
            id: h.id,
            code,
            message: (e as Error).message.slice(0, 4000),
            status: ERROR_CODES[code].status,
            ...(isEwError(e) && e.path ? { path: e.path } : {}),
          };
          return this.reply(h.id, encodeFrame(err));
        },
      )
      .finally(() => {
        cancelTimer();
        this.running.delete(h.id);
      });
  };

  private async runStream(id: string, path: string, body: Buffer, r: Running): Promise<Buffer | undefined> {
    if (!this.o.streams) throw new EwError('MODEL_NOT_FOUND', `site ${this.o.siteId} serves no ${path} (no LLM runtime on this agent)`);
    let seq = 0;
    const emit = async (chunk: Buffer): Promise<void> => {
      // Backpressure: wait for credit from the cloud, which grants it as its client reads.
      while (r.credit!.n <= 0) {
        if (r.abort.signal.aborted) throw r.abort.signal.reason;
        await new Promise<void>((resolve) => {
          r.credit!.wake = resolve;
          r.abort.signal.addEventListener('abort', () => resolve(), { once: true });
        });
        r.credit!.wake = undefined;
      }
      if (r.abort.signal.aborted) throw r.abort.signal.reason;
      r.credit!.n--;
      const frame = encodeFrame({ v: WIRE_VERSION, type: 'chunk', id, seq: seq++ }, chunk);
      if (r.maxAnswerBytes !== undefined && frame.length > r.maxAnswerBytes)
        throw new EwError('PAYLOAD_TOO_LARGE', `a streamed piece of ${frame.length} bytes exceeds the cloud link's ${r.maxAnswerBytes}`);
      await this.reply(id, frame);
    };
    const res = await this.o.streams.run(path, body, emit, r.abort.signal);
    if (r.abort.signal.aborted) return undefined;
    return encodeFrame({ v: WIRE_VERSION, type: 'end', id, seq, status: res.status }, res.body ?? Buffer.alloc(0));
  }

  private reply(id: string, payload: Buffer): Promise<void> {
    return this.o.publish(topics.rpcResponse(this.o.siteId, id), payload).catch((e: Error) => {
      this.o.log.debug({ id, err: e.message }, 'routed answer not sent (link down); the cloud retries elsewhere');
    });
  }

  /** Stops everything in flight (agent shutdown). */
  close(): void {
    for (const r of this.running.values()) {
      r.cancelTimer();
      r.abort.abort(new EwError('INTERNAL', 'agent stopping'));
    }
    this.running.clear();
  }
}
