import { once } from 'node:events';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_CODES, EwError, isEwError, type ErrorCode } from '../../contracts/errors.ts';
import { checkChatCascade } from '../router/cascade.ts';
import { WIRE_VERSION } from '../../contracts/infer-wire.ts';
import { openAiError } from '../../inference/openai.ts';
import { InferenceRouter, targetName, type RouteContext, type RouteTrace } from '../router/router.ts';
import type { EndpointInfo } from '../router/catalog.ts';
import type { Target } from '../router/policy.ts';
import { limitHook, routeHeaders, routeOptions, type InferenceDeps } from './inference.ts';

/**
 * The OpenAI-compatible API of the cloud for the tenant's language-model endpoints:
 * `/v1/models`, `/v1/chat/completions` (streamed or not), `/v1/completions`, `/v1/embeddings`.
 * The model name is the endpoint's name. Each request is placed by the router like an OIP one
 * (residency first, same headers) and forwarded to the chosen site's own /v1 over the MQTT link;
 * a stream comes back chunk by chunk with credit-based flow control, so a slow client slows the
 * site instead of filling the cloud's memory, and a client that goes away cancels the site's
 * generation. Retries to the next site happen only before the first token reached the client.
 * Errors in OpenAI's shape (`{error: {message, type, code, param}}`), Retry-After on 429/503.
 */
const LLM_KINDS = new Set(['chat', 'completion', 'embedding']);
/** Chunks a site may send ahead of what the client read. */
const WINDOW = 16;

type Answer = { kind: 'whole'; status: number; body: Buffer } | { kind: 'stream'; first: Buffer; rest: AsyncGenerator<Buffer, unknown> };

/** A site's OpenAI error body becomes our error, its code kept where we know it (so the router can tell retryable from not). */
function siteError(status: number, body: Buffer, siteId: string): EwError {
  let code: ErrorCode = status >= 500 ? 'INTERNAL' : 'VALIDATION_FAILED';
  let message = `site ${siteId} answered HTTP ${status}`;
  let param: string | undefined;
  try {
    const e = (JSON.parse(body.toString('utf8')) as { error?: { code?: string; message?: string; param?: string | null } }).error;
    const upper = e?.code?.toUpperCase();
    if (upper && upper in ERROR_CODES) code = upper as ErrorCode;
    if (e?.message) message = e.message;
    param = e?.param ?? undefined;
  } catch {
    /* not JSON: keep the generic message */
  }
  return new EwError(code, message, { path: param });
}

export function registerOpenAiRouting(app: FastifyInstance, d: InferenceDeps): void {
  const defaultTimeoutMs = d.defaultTimeoutMs ?? 30_000;
  const maxTimeoutMs = d.maxTimeoutMs ?? 600_000;

  void app.register(
    async (v1) => {
      v1.setErrorHandler((err, req, reply) => {
        const { status, body } = openAiError(err, String(req.id));
        if (status === 500 && body.error.code === 'internal') req.log.error({ err }, 'unhandled error on /v1');
        const code = body.error.code.toUpperCase();
        if ((code === 'NO_SITE_AVAILABLE' || code === 'QUEUE_FULL') && !reply.hasHeader('retry-after'))
          void reply.header('retry-after', '1');
        routeHeaders(reply, (err as { trace?: RouteTrace }).trace);
        void reply.status(status).send(body);
      });
      v1.setNotFoundHandler((req, reply) => {
        void reply.status(404).send({
          error: { message: `no route ${req.method} ${req.url.split('?')[0]}`, type: 'not_found_error', code: 'not_found', param: null },
        });
      });

      const llmEndpoints = async (tenantId: string) =>
        [...(await d.router.o.catalog.endpointsOf(tenantId)).values()].filter((e) => LLM_KINDS.has(e.kind));
      const view = (e: EndpointInfo) => ({ id: e.name, object: 'model', created: 0, owned_by: `${e.app}@${e.versions[0]!.version}` });
      v1.get('/models', async (req) => ({ object: 'list', data: (await llmEndpoints(req.tenantId)).map(view) }));
      v1.get<{ Params: { id: string } }>('/models/:id', async (req) => {
        const e = (await llmEndpoints(req.tenantId)).find((x) => x.name === req.params.id);
        if (!e)
          throw new EwError('MODEL_NOT_FOUND', `no language-model endpoint "${req.params.id}" is deployed; GET /v1/models lists them`, {
            path: 'model',
          });
        return view(e);
      });

      for (const path of ['/chat/completions', '/completions', '/embeddings']) {
        v1.post(path, { onRequest: limitHook(d.limiter) }, async (req, reply) => forward(req, reply, `/v1${path}`));
      }
    },
    { prefix: '/v1' },
  );

  async function forward(req: FastifyRequest, reply: FastifyReply, path: string): Promise<unknown> {
    const b = req.body as { model?: unknown; stream?: unknown } | null;
    if (!b || typeof b !== 'object' || Array.isArray(b))
      throw new EwError('VALIDATION_FAILED', 'the body must be a JSON object', { path: 'body' });
    if (typeof b.model !== 'string' || !b.model)
      throw new EwError('VALIDATION_FAILED', "model: the endpoint's name is required", { path: 'model' });
    const ep = await d.router.endpoint(req.tenantId, b.model);
    if (!LLM_KINDS.has(ep.kind))
      throw new EwError('MODEL_NOT_FOUND', `endpoint ${ep.name} serves tensors: use POST /v2/models/${ep.name}/infer`, { path: 'model' });
    const streamed = b.stream === true;
    const opts = routeOptions(req, d.clock, defaultTimeoutMs, maxTimeoutMs);
    const abort = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });
    opts.signal = abort.signal;
    const ctx: RouteContext = { tenantId: req.tenantId, keyId: req.apiKeyId, requestId: String(req.id), protocol: 'openai' };
    const body = Buffer.from(JSON.stringify(b));
    const models = ep.versions.map((v) => ({ app: ep.app, name: ep.model, version: v.version }));
    const manifestFor = (v: string) => (ep.versions.find((x) => x.version === v) ?? ep.versions[0]!).manifest;

    const fromCloud = async (modelName: string): Promise<Answer> => {
      const a = await d.cloudRuntime!.openai(
        req.tenantId,
        manifestFor(models[0]!.version),
        modelName,
        ep.name,
        path,
        b as Record<string, unknown>,
        abort.signal,
      );
      const it = a.stream[Symbol.asyncIterator]();
      if (!a.streamed) {
        const parts: Buffer[] = [];
        for (let r = await it.next(); !r.done; r = await it.next()) parts.push(r.value);
        const whole = a.rename(Buffer.concat(parts));
        if (a.status >= 400) throw siteError(a.status, whole, 'cloud');
        return { kind: 'whole', status: a.status, body: whole };
      }
      const first = await it.next();
      if (first.done) throw new EwError('SITE_ANSWER_INVALID', 'the cloud-side runtime ended the stream before its first event');
      const rest = (async function* () {
        for (let r = await it.next(); !r.done; r = await it.next()) yield a.rename(r.value);
      })();
      return { kind: 'stream', first: a.rename(first.value), rest };
    };

    const attempt =
      (modelName: string, sitesToo: boolean) =>
      async (target: Target, timeoutMs: number): Promise<Answer> => {
        if (target.kind === 'cloud') return fromCloud(modelName);
        // A cascade's larger model has no endpoint on the sites (it is `tier: cloud`): only the cloud can run it.
        if (!sitesToo) throw new EwError('MODEL_NOT_FOUND', `site ${target.siteId} serves no endpoint for model ${modelName}`);
        // The site may generate for the whole remaining deadline; this attempt waits `timeoutMs` for the first bytes.
        const head = { v: WIRE_VERSION, type: 'stream', path, timeoutMs: Math.max(1, opts.deadline - d.clock.now()), window: WINDOW };
        if (!streamed) {
          const f = await d.forwarder.call(target.siteId, head, [body], timeoutMs, abort.signal);
          if (f.head.type === 'error') throw siteError(500, Buffer.from(JSON.stringify({ error: f.head })), target.siteId);
          if (f.head.type !== 'end')
            throw new EwError('SITE_ANSWER_INVALID', `site ${target.siteId} answered a /v1 request with "${f.head.type}"`);
          if (f.head.status >= 400) throw siteError(f.head.status, f.body, target.siteId);
          return { kind: 'whole', status: f.head.status, body: f.body };
        }
        const it = d.forwarder.stream(target.siteId, head, body, { window: WINDOW, idleMs: timeoutMs, signal: abort.signal });
        const first = await it.next();
        if (first.done) {
          const f = first.value as { head: { type: string; status?: number }; body: Buffer };
          if (f.head.type === 'error') throw siteError(500, Buffer.from(JSON.stringify({ error: f.head })), target.siteId);
          if ((f.head.status ?? 500) >= 400) throw siteError(f.head.status ?? 500, f.body, target.siteId);
          return { kind: 'whole', status: f.head.status ?? 200, body: f.body };
        }
        return { kind: 'stream', first: first.value, rest: it };
      };

    let routed = await d.router.route<Answer>(ctx, ep, opts, models, manifestFor, attempt(ep.model, true));
    // A cascade on an unstreamed chat answer: escalate a refusal (or low log-probability) to the larger model.
    let cascade: Record<string, unknown> | undefined;
    const first = routed.value;
    if (ep.cascade && first.kind === 'whole' && path === '/v1/chat/completions') {
      d.router.m.cascaded.inc({ endpoint: ep.name });
      const answer = JSON.parse(first.body.toString('utf8')) as {
        choices?: { message?: { content?: string | null }; logprobs?: { content?: { logprob: number }[] } | null }[];
      };
      const c0 = answer.choices?.[0];
      const verdict = checkChatCascade(
        ep.cascade.when,
        c0?.message?.content ?? '',
        c0?.logprobs?.content?.map((x) => x.logprob),
      );
      cascade = { escalated: verdict.escalate, why: verdict.why, first: { target: targetName(routed.target), model: ep.model } };
      if (verdict.escalate) {
        d.router.m.escalations.inc({ endpoint: ep.name });
        const t0 = d.clock.now();
        try {
          routed = await d.router.route<Answer>(
            ctx,
            ep,
            opts,
            ep.versions.map((v) => ({ app: ep.app, name: ep.cascade!.to, version: v.version })),
            manifestFor,
            attempt(ep.cascade.to, false),
            true,
          );
          d.router.m.cascadeAdded.observe({ endpoint: ep.name }, (d.clock.now() - t0) / 1000);
        } catch (e) {
          if (!isEwError(e) || e.code === 'CLIENT_CLOSED') throw e;
          cascade.escalated = false;
          cascade.blocked = { code: e.code, message: e.message };
        }
      }
    }

    const answered = { target: targetName(routed.target), model: cascade?.escalated ? ep.cascade!.to : ep.model };
    routeHeaders(reply, routed.trace, answered);
    const a = routed.value;
    if (a.kind === 'whole') {
      let json: Record<string, unknown>;
      try {
        json = JSON.parse(a.body.toString('utf8')) as Record<string, unknown>;
      } catch {
        throw new EwError('SITE_ANSWER_INVALID', `site ${answered.target} answered with a body that is not JSON`);
      }
      // Who answered, beside OpenAI's fields (clients ignore fields they do not know).
      json.edgeweave = {
        site: answered.target,
        region: routed.target.region,
        model: answered.model,
        ...(cascade ? { cascade } : {}),
        ...(opts.explain ? { explain: InferenceRouter.explain(routed.trace) } : {}),
      };
      void reply.status(a.status);
      return json;
    }
    // The stream: relayed as the site's SSE events, with backpressure both ways.
    reply.hijack();
    const res = reply.raw;
    const headers: Record<string, string> = {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    };
    for (const h of ['x-edgeweave-site', 'x-edgeweave-model', 'x-edgeweave-route']) {
      const v = reply.getHeader(h);
      if (v !== undefined) headers[h] = String(v);
    }
    res.writeHead(200, headers);
    try {
      if (!res.write(a.first)) await once(res, 'drain');
      for await (const chunk of { [Symbol.asyncIterator]: () => a.rest }) {
        // Not pulling the next chunk until the client took this one is what withholds the site's credit.
        if (!res.write(chunk)) await once(res, 'drain');
      }
    } catch (e) {
      if (!abort.signal.aborted && !res.destroyed) {
        const { body: errBody } = openAiError(e, String(req.id));
        res.write(`data: ${JSON.stringify(errBody)}\n\n`);
      }
    } finally {
      res.end();
    }
    return reply;
  }
}
