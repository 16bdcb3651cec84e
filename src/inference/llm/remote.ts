import { EwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import type { LoadedModel, ModelLoadSpec, ModelRuntime } from '../runtime.ts';
import { FairQueue } from './fair-queue.ts';
import type { GenerateEvent, GenerateInput, GenerateOptions, LlmHealth, LlmInfo, LlmModel } from './types.ts';

/**
 * Remote language models (`format: remote`): an OpenAI-compatible upstream — vLLM, a llama.cpp
 * server, Ollama, a hosted Qwen endpoint — per model, with its base URL, the upstream's model id
 * and a key read from a named secret (never in a manifest, never logged). Streaming is passed
 * through token by token. Connection failures, 429 and 5xx answers are retried with exponential
 * backoff until the first byte of an answer (never after: a half-streamed answer is not repeated);
 * `timeoutMs` bounds the wait for the upstream's answer to start.
 *
 * Loading does not contact the upstream: a site that is offline still starts its apps, and the
 * first request says what is wrong (UPSTREAM_FAILED, with the upstream's status and message).
 */
export interface Upstream {
  baseUrl: string;
  model: string;
  apiKey?: string;
  timeoutMs?: number;
  retries?: number;
  concurrency?: number;
}

export class RemoteRuntime implements ModelRuntime {
  readonly format = 'remote';
  constructor(private readonly d: { log: Logger; clock: Clock; fetch?: typeof fetch }) {}

  async load(spec: ModelLoadSpec): Promise<LoadedModel> {
    const up = spec.options?.upstream;
    if (!up?.baseUrl || !up.model)
      throw new EwError('MODEL_LOAD_FAILED', `model ${spec.name}: a remote model needs upstream.baseUrl and upstream.model`, {
        path: `models.${spec.name}.upstream`,
      });
    const llm = new RemoteLlm(spec.name, up, this.d);
    return {
      name: spec.name,
      format: 'remote',
      inputs: [],
      outputs: [],
      device: 'remote',
      llm,
      async run() {
        throw new EwError('INFER_INPUT_INVALID', `model ${spec.name} is a language model: call it through /v1/chat/completions or llm()`);
      },
      async close() {
        llm.closeNow();
      },
    };
  }
}

export class RemoteLlm implements LlmModel {
  readonly info: LlmInfo;
  private readonly queue: FairQueue;
  private readonly base: string;
  private closed = false;

  constructor(
    private readonly name: string,
    private readonly up: Upstream,
    private readonly d: { log: Logger; clock: Clock; fetch?: typeof fetch },
  ) {
    this.base = up.baseUrl.replace(/\/+$/, '');
    this.queue = new FairQueue(up.concurrency ?? 8);
    this.info = {
      contextSize: 0,
      slots: up.concurrency ?? 8,
      architecture: 'remote',
      modelName: up.model,
      embeddings: true,
      device: 'remote',
    };
  }

  health(): LlmHealth {
    return { state: this.closed ? 'failed' : 'ready', restarts: 0, ...this.queue.stats };
  }

  closeNow(): void {
    this.closed = true;
    this.queue.failAll(new EwError('MODEL_NOT_READY', `model ${this.name} was unloaded`));
  }

  /** POSTs with retries until an answer starts; the answer's body is the caller's. */
  private async post(path: string, body: unknown, signal?: AbortSignal): Promise<Response> {
    const retries = this.up.retries ?? 2;
    const timeoutMs = this.up.timeoutMs ?? 30_000;
    const f = this.d.fetch ?? fetch;
    let last = '';
    for (let attempt = 0; ; attempt++) {
      const ac = new AbortController();
      const onAbort = () => ac.abort(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      const stop = this.d.clock.setTimer(timeoutMs, () => ac.abort(new Error('timeout')));
      let res: Response | undefined;
      try {
        res = await f(`${this.base}${path}`, {
          method: 'POST',
          signal: ac.signal,
          body: JSON.stringify(body),
          headers: {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            ...(this.up.apiKey ? { authorization: `Bearer ${this.up.apiKey}` } : {}),
          },
        });
      } catch (e) {
        if (signal?.aborted) throw abortError();
        last = ac.signal.aborted ? `no answer within ${timeoutMs} ms` : `cannot reach the upstream: ${(e as Error).message}`;
      } finally {
        stop();
        signal?.removeEventListener('abort', onAbort);
      }
      if (res) {
        if (res.ok) return res;
        const detail = await upstreamMessage(res);
        last = `upstream answered ${res.status}${detail ? `: ${detail}` : ''}`;
        if (res.status !== 429 && res.status < 500) {
          if (/context_length|maximum context/i.test(detail))
            throw new EwError('CONTEXT_LENGTH_EXCEEDED', `model ${this.name}: ${last}`, { path: 'messages' });
          throw new EwError(res.status === 400 ? 'VALIDATION_FAILED' : 'UPSTREAM_FAILED', `model ${this.name}: ${last}`);
        }
      }
      if (attempt >= retries) throw new EwError('UPSTREAM_FAILED', `model ${this.name}: ${last} (after ${attempt + 1} attempts)`);
      const delay = Math.min(10_000, 200 * 2 ** attempt);
      this.d.log.warn({ model: this.name, attempt: attempt + 1, reason: last }, 'remote model upstream failed; retrying');
      await new Promise<void>((resolve, reject) => {
        const cancel = this.d.clock.setTimer(delay, () => {
          signal?.removeEventListener('abort', onAbortWait);
          resolve();
        });
        const onAbortWait = () => {
          cancel();
          reject(abortError());
        };
        signal?.addEventListener('abort', onAbortWait, { once: true });
      });
    }
  }

  async *generate(input: GenerateInput, opts: GenerateOptions & { client?: string }, signal?: AbortSignal): AsyncIterable<GenerateEvent> {
    if (this.closed) throw new EwError('MODEL_NOT_READY', `model ${this.name} was unloaded`);
    const release = await this.queue.acquire(opts.client ?? 'default', signal);
    try {
      const common = {
        model: this.up.model,
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: opts.maxTokens,
        ...(opts.stop ? { stop: opts.stop } : {}),
        ...(opts.temperature !== undefined ? { temperature: opts.temperature } : {}),
        ...(opts.topP !== undefined ? { top_p: opts.topP } : {}),
        ...(opts.seed !== undefined ? { seed: opts.seed } : {}),
      };
      const chat = input.kind === 'chat';
      const body = chat
        ? {
            ...common,
            messages: input.messages,
            ...(opts.jsonSchema
              ? { response_format: { type: 'json_schema', json_schema: { name: 'output', schema: opts.jsonSchema, strict: true } } }
              : {}),
          }
        : { ...common, prompt: input.prompt };
      const res = await this.post(chat ? '/chat/completions' : '/completions', body, signal);
      let text = '';
      let pieces = 0;
      let finish: 'stop' | 'length' = 'stop';
      let usage: { prompt_tokens?: number; completion_tokens?: number } | undefined;
      try {
        for await (const data of sse(res.body!, signal)) {
          if (data === '[DONE]') break;
          let msg: {
            choices?: { delta?: { content?: string | null }; text?: string; finish_reason?: string | null }[];
            usage?: typeof usage;
            error?: { message?: string };
          };
          try {
            msg = JSON.parse(data);
          } catch {
            throw new EwError('UPSTREAM_FAILED', `model ${this.name}: the upstream sent an event that is not JSON`);
          }
          if (msg.error)
            throw new EwError('UPSTREAM_FAILED', `model ${this.name}: upstream error mid-stream: ${msg.error.message ?? 'unknown'}`);
          if (msg.usage) usage = msg.usage;
          const c = msg.choices?.[0];
          if (!c) continue;
          const piece = chat ? (c.delta?.content ?? '') : (c.text ?? '');
          if (piece) {
            text += piece;
            pieces++;
            yield { type: 'text', text: piece, tokens: 1 };
          }
          if (c.finish_reason) finish = c.finish_reason === 'length' ? 'length' : 'stop';
        }
      } catch (e) {
        if (signal?.aborted) throw abortError();
        throw e;
      }
      // The caller went away: the upstream stream was cancelled, so the answer is not complete.
      if (signal?.aborted) throw abortError();
      // Upstreams that send no usage: each streamed piece is a token (as llama.cpp and vLLM stream them).
      yield {
        type: 'done',
        finishReason: finish,
        text,
        usage: { promptTokens: usage?.prompt_tokens ?? 0, completionTokens: usage?.completion_tokens ?? pieces },
      };
    } finally {
      release();
    }
  }

  async embed(texts: string[], signal?: AbortSignal): Promise<{ vectors: number[][]; tokens: number }> {
    const release = await this.queue.acquire('embeddings', signal);
    try {
      const res = await this.post('/embeddings', { model: this.up.model, input: texts, encoding_format: 'float' }, signal);
      const b = (await res.json()) as { data?: { index: number; embedding: number[] }[]; usage?: { prompt_tokens?: number } };
      if (!Array.isArray(b.data)) throw new EwError('UPSTREAM_FAILED', `model ${this.name}: the upstream's embeddings answer has no data`);
      return { vectors: [...b.data].sort((a, c) => a.index - c.index).map((x) => x.embedding), tokens: b.usage?.prompt_tokens ?? 0 };
    } finally {
      release();
    }
  }

  async close(): Promise<void> {
    this.closeNow();
  }
}

async function upstreamMessage(res: Response): Promise<string> {
  try {
    const t = (await res.text()).slice(0, 2000);
    try {
      const j = JSON.parse(t) as { error?: { message?: string } | string; message?: string };
      return (typeof j.error === 'string' ? j.error : j.error?.message) ?? j.message ?? t.slice(0, 300);
    } catch {
      return t.slice(0, 300);
    }
  } catch {
    return '';
  }
}

/** Server-sent events' `data:` payloads, one per event. Bounded: an event over 1 MiB is refused. */
export async function* sse(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = '';
  const reader = body.getReader();
  const cancel = () => {
    void reader.cancel().catch(() => {});
  };
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      if (buf.length > 1 << 20) throw new EwError('UPSTREAM_FAILED', 'the upstream sent an event over 1 MiB');
      let i: number;
      while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i).replace(/^\r?\n\r?\n/, '');
        const data = event
          .split(/\r?\n/)
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data) yield data;
      }
    }
  } finally {
    signal?.removeEventListener('abort', cancel);
    // Stopped early (the caller went away): close the upstream's stream so it stops generating.
    await reader.cancel().catch(() => {});
  }
}

function abortError(): Error {
  const e = new Error('the request was aborted');
  e.name = 'AbortError';
  return e;
}
