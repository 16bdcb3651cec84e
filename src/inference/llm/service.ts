import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { EwError, isEwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import type { ModelHost } from '../host.ts';
import { checkJsonSchema } from './json-schema.ts';
import type { GenerateEvent, GenerateInput, GenerateOptions, Usage } from './types.ts';

/**
 * Language-model requests of a site, from its OpenAI-compatible API and from llm() in rules, all
 * through one place: the endpoint's limits (max tokens, timeout, requests in flight), accounting
 * (tokens in and out per app and endpoint, time to first token, tokens/s as Prometheus metrics),
 * and the model's fair slot queue (the `client` names who asks: a rule, an API caller).
 *
 * Endpoint limits in the manifest: `endpoints: [{ name, model, kind: chat, limits: { maxTokens,
 * timeoutMs, concurrency } }]` — defaults 512 tokens, 120 s, 16 requests in flight.
 */
export interface EndpointLimits {
  maxTokens: number;
  timeoutMs: number;
  concurrency: number;
}
export const DEFAULT_LIMITS: EndpointLimits = { maxTokens: 512, timeoutMs: 120_000, concurrency: 16 };

export function endpointLimits(spec: Record<string, unknown>): EndpointLimits {
  const l = (spec.limits ?? {}) as Partial<EndpointLimits>;
  return {
    maxTokens: l.maxTokens ?? DEFAULT_LIMITS.maxTokens,
    timeoutMs: l.timeoutMs ?? DEFAULT_LIMITS.timeoutMs,
    concurrency: l.concurrency ?? DEFAULT_LIMITS.concurrency,
  };
}

export interface LlmCall {
  endpoint: string;
  /** Only endpoints of this app (llm() in a rule); absent: any (the site's API). */
  app?: string;
  input: GenerateInput;
  /** Tokens asked for; absent: the endpoint's limit. More than the limit is refused. */
  maxTokens?: number;
  opts?: Omit<GenerateOptions, 'maxTokens'>;
  client: string;
  signal?: AbortSignal;
}

export class LlmService {
  private readonly inflight = new Map<string, number>();
  private readonly m;

  constructor(
    private readonly host: ModelHost,
    registry: Registry,
    private readonly clock: Clock,
  ) {
    const labelNames = ['app', 'endpoint'] as const;
    this.m = {
      requests: new Counter({
        name: 'ew_llm_requests_total',
        help: 'Language-model requests by app, endpoint and outcome',
        labelNames: [...labelNames, 'outcome'],
        registers: [registry],
      }),
      tokens: new Counter({
        name: 'ew_llm_tokens_total',
        help: 'Tokens by app, endpoint and direction (prompt: in, completion: out)',
        labelNames: [...labelNames, 'direction'],
        registers: [registry],
      }),
      ttft: new Histogram({
        name: 'ew_llm_time_to_first_token_seconds',
        help: 'Time from request to the first generated token',
        labelNames,
        buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
        registers: [registry],
      }),
      tps: new Histogram({
        name: 'ew_llm_tokens_per_second',
        help: 'Generation speed of a request after its first token',
        labelNames,
        buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
        registers: [registry],
      }),
      active: new Gauge({
        name: 'ew_llm_requests_in_flight',
        help: 'Language-model requests running or waiting for a slot',
        labelNames,
        registers: [registry],
      }),
    };
  }

  /**
   * Runs a generation with the endpoint's limits. Streams the model's events; the last is `done`.
   * Throws (before or while streaming) EwErrors with stable codes.
   */
  async *generate(call: LlmCall): AsyncGenerator<GenerateEvent> {
    const ep = this.host.llmEndpoint(call.endpoint, call.app);
    const labels = { app: ep.app, endpoint: ep.endpoint };
    const limits = endpointLimits(ep.spec);
    if (call.maxTokens !== undefined && call.maxTokens > limits.maxTokens) {
      this.m.requests.inc({ ...labels, outcome: 'bad_request' });
      throw new EwError(
        'VALIDATION_FAILED',
        `max_tokens ${call.maxTokens} is more than endpoint ${ep.endpoint} allows (${limits.maxTokens}); ask for fewer or raise its limits.maxTokens`,
        { path: 'max_tokens' },
      );
    }
    if (call.opts?.jsonSchema) checkJsonSchema(call.opts.jsonSchema, 'json_schema');
    const key = `${ep.app}/${ep.endpoint}`;
    const n = this.inflight.get(key) ?? 0;
    if (n >= limits.concurrency) {
      this.m.requests.inc({ ...labels, outcome: 'busy' });
      throw new EwError(
        'QUEUE_FULL',
        `endpoint ${ep.endpoint} already has ${n} requests in flight (limits.concurrency ${limits.concurrency}); retry shortly`,
      );
    }
    this.inflight.set(key, n + 1);
    this.m.active.inc(labels);
    const ac = new AbortController();
    const onAbort = () => ac.abort(call.signal?.reason);
    call.signal?.addEventListener('abort', onAbort, { once: true });
    if (call.signal?.aborted) ac.abort(call.signal.reason);
    let timedOut = false;
    const cancelTimer = this.clock.setTimer(limits.timeoutMs, () => {
      timedOut = true;
      ac.abort();
    });
    const t0 = this.clock.now();
    let first: number | undefined;
    let outcome = 'error';
    try {
      for await (const ev of ep.llm.generate(
        call.input,
        { ...call.opts, maxTokens: call.maxTokens ?? limits.maxTokens, client: call.client } as GenerateOptions,
        ac.signal,
      )) {
        if (ev.type === 'text' && ev.tokens > 0 && first === undefined) {
          first = this.clock.now();
          this.m.ttft.observe(labels, (first - t0) / 1000);
        }
        if (ev.type === 'done') {
          this.account(labels, ev.usage, first);
          outcome = 'ok';
        }
        yield ev;
      }
    } catch (e) {
      if (timedOut) {
        outcome = 'timeout';
        throw new EwError(
          'LLM_TIMEOUT',
          `endpoint ${ep.endpoint}: the request ran past its ${limits.timeoutMs} ms timeout and was stopped`,
        );
      }
      outcome = call.signal?.aborted ? 'cancelled' : isEwError(e) ? e.code.toLowerCase() : 'error';
      throw e;
    } finally {
      if (outcome === 'error' && call.signal?.aborted) outcome = 'cancelled';
      cancelTimer();
      call.signal?.removeEventListener('abort', onAbort);
      // A consumer that stops early (client gone) ends the model's generation too.
      if (outcome !== 'ok') ac.abort();
      this.inflight.set(key, (this.inflight.get(key) ?? 1) - 1);
      this.m.active.dec(labels);
      this.m.requests.inc({ ...labels, outcome });
    }
  }

  /** A whole generation: its text and usage (llm() in rules, non-streamed API calls). */
  async complete(call: LlmCall): Promise<{ text: string; usage: Usage; finishReason: 'stop' | 'length' }> {
    for await (const ev of this.generate(call))
      if (ev.type === 'done') return { text: ev.text, usage: ev.usage, finishReason: ev.finishReason };
    throw new EwError('INTERNAL', 'the model ended without a result');
  }

  async embed(endpoint: string, texts: string[], signal?: AbortSignal): Promise<{ vectors: number[][]; tokens: number; model: string }> {
    const ep = this.host.llmEndpoint(endpoint);
    const labels = { app: ep.app, endpoint: ep.endpoint };
    try {
      const r = await ep.llm.embed(texts, signal);
      this.m.tokens.inc({ ...labels, direction: 'prompt' }, r.tokens);
      this.m.requests.inc({ ...labels, outcome: 'ok' });
      return { ...r, model: ep.endpoint };
    } catch (e) {
      this.m.requests.inc({ ...labels, outcome: isEwError(e) ? e.code.toLowerCase() : 'error' });
      throw e;
    }
  }

  private account(labels: { app: string; endpoint: string }, u: Usage, first: number | undefined): void {
    this.m.tokens.inc({ ...labels, direction: 'prompt' }, u.promptTokens);
    this.m.tokens.inc({ ...labels, direction: 'completion' }, u.completionTokens);
    if (first !== undefined && u.completionTokens > 1) {
      const s = (this.clock.now() - first) / 1000;
      if (s > 0) this.m.tps.observe(labels, (u.completionTokens - 1) / s);
    }
  }
}
