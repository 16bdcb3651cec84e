import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ERROR_CODES, EwError, formatPath, isEwError, type ErrorCode } from '../contracts/errors.ts';
import type { ModelHost } from './host.ts';
import type { LlmService } from './llm/service.ts';
import { checkJsonSchema } from './llm/json-schema.ts';
import type { ChatMessage, GenerateEvent, GenerateInput } from './llm/types.ts';

/**
 * The OpenAI-compatible API of a site (https://platform.openai.com/docs/api-reference), for the
 * language-model endpoints its apps declare: `/v1/models`, `/v1/chat/completions` (streamed over
 * SSE or not), `/v1/completions`, `/v1/embeddings`. The model name is the endpoint's name.
 * Authenticated with the site's local API key like the rest of its API (`Authorization: Bearer`).
 * Errors are OpenAI's shape, `{error: {message, type, code, param}}`, where `code` is the
 * project's stable code in lower case (`context_length_exceeded`, `model_not_found`, …).
 * A client that goes away stops its generation at once and frees the model's sequence.
 */
const Content = z.union([z.string(), z.array(z.object({ type: z.literal('text'), text: z.string() }).passthrough()).min(1)]);
const Message = z
  .object({ role: z.enum(['system', 'developer', 'user', 'assistant']), content: Content.nullable().optional() })
  .passthrough();
const Stop = z
  .union([z.string().min(1), z.array(z.string().min(1)).max(4)])
  .nullable()
  .optional();
const Sampling = {
  max_tokens: z.number().int().min(1, 'max_tokens must be at least 1').nullable().optional(),
  max_completion_tokens: z.number().int().min(1, 'max_completion_tokens must be at least 1').nullable().optional(),
  stop: Stop,
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  seed: z.number().int().nullable().optional(),
  n: z.literal(1, 'only n = 1 is served').nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullable().optional(),
  user: z.string().max(256).optional(),
};
const ResponseFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }),
  z.object({ type: z.literal('json_object') }),
  z.object({
    type: z.literal('json_schema'),
    json_schema: z
      .object({
        name: z.string().min(1).max(64),
        schema: z.record(z.string(), z.unknown()),
        strict: z.boolean().nullable().optional(),
        description: z.string().optional(),
      })
      .passthrough(),
  }),
]);
const ChatBody = z
  .object({
    model: z.string().min(1),
    messages: z.array(Message).min(1).max(1024),
    response_format: ResponseFormat.optional(),
    ...Sampling,
  })
  .passthrough();
const CompletionBody = z
  .object({
    model: z.string().min(1),
    prompt: z.union([z.string(), z.array(z.string()).length(1, 'one prompt per request')]),
    echo: z.literal(false).optional(),
    suffix: z.null().optional(),
    ...Sampling,
  })
  .passthrough();
const EmbeddingBody = z
  .object({
    model: z.string().min(1),
    input: z.union([z.string(), z.array(z.string()).min(1).max(256)]),
    encoding_format: z.enum(['float', 'base64']).optional(),
    dimensions: z.number().int().positive().optional(),
    user: z.string().optional(),
  })
  .passthrough();

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const path = formatPath(issue.path);
  const code: ErrorCode = path.startsWith('response_format') ? 'RESPONSE_FORMAT_INVALID' : 'VALIDATION_FAILED';
  throw new EwError(code, `${path || 'body'}: ${issue.message}`, { path: path || undefined });
}

/** OpenAI's error body for any error. */
export function openAiError(
  e: unknown,
  requestId: string,
): { status: number; body: { error: { message: string; type: string; code: string; param: string | null } } } {
  let code: ErrorCode;
  let message: string;
  let param: string | null = null;
  const f = e as { code?: string; statusCode?: number; message?: string };
  if (isEwError(e)) {
    code = e.code;
    message = e.message;
    param = e.path ?? null;
  } else if (
    f.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
    f.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ||
    (f.statusCode === 400 && /JSON/.test(f.message ?? ''))
  ) {
    code = 'INVALID_JSON';
    message = `the request body is not valid JSON: ${f.message}`;
  } else if (f.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    code = 'PAYLOAD_TOO_LARGE';
    message = 'the request body is too large';
  } else if (f.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    code = 'UNSUPPORTED_MEDIA_TYPE';
    message = 'send the body as application/json';
  } else {
    code = 'INTERNAL';
    message = `internal error (request id ${requestId})`;
  }
  const status = ERROR_CODES[code].status;
  const type =
    status === 401
      ? 'authentication_error'
      : status === 403
        ? 'permission_error'
        : status === 404
          ? 'not_found_error'
          : status === 429
            ? 'rate_limit_error'
            : status < 500
              ? 'invalid_request_error'
              : 'server_error';
  return { status, body: { error: { message, type, code: code.toLowerCase(), param } } };
}

function text(c: z.infer<typeof Content> | null | undefined): string {
  if (c == null) return '';
  return typeof c === 'string' ? c : c.map((p) => p.text).join('');
}

function stops(s: z.infer<typeof Stop>): string[] | undefined {
  return s == null ? undefined : typeof s === 'string' ? [s] : s;
}

/** Aborts when the client closes the connection before the answer is complete. */
function clientGone(req: FastifyRequest, reply: FastifyReply): { signal: AbortSignal; done: () => void } {
  const ac = new AbortController();
  let finished = false;
  const onClose = () => {
    if (!finished) ac.abort(new Error('the client closed the connection'));
  };
  reply.raw.on('close', onClose);
  req.raw.on('aborted', onClose);
  return {
    signal: ac.signal,
    done: () => {
      finished = true;
      reply.raw.off('close', onClose);
    },
  };
}

export function registerOpenAi(
  app: FastifyInstance,
  d: { host: ModelHost; llm: LlmService; log: { warn(o: object, m: string): void } },
): void {
  void app.register(
    async (v1) => {
      v1.setErrorHandler((err, req, reply) => {
        const { status, body } = openAiError(err, req.id);
        if (status >= 500 && body.error.code === 'internal') req.log.error({ err }, 'unhandled error on /v1');
        void reply.status(status).send(body);
      });
      v1.setNotFoundHandler((req, reply) => {
        void reply.status(404).send({
          error: { message: `no route ${req.method} ${req.url.split('?')[0]}`, type: 'not_found_error', code: 'not_found', param: null },
        });
      });

      v1.get('/models', async () => ({
        object: 'list',
        data: d.host.llmEndpoints().map((e) => ({ id: e.endpoint, object: 'model', created: 0, owned_by: `${e.app}@${e.version}` })),
      }));
      v1.get<{ Params: { id: string } }>('/models/:id', async (req) => {
        const e = d.host.llmEndpoints().find((x) => x.endpoint === req.params.id);
        if (!e)
          throw new EwError('MODEL_NOT_FOUND', `no language-model endpoint "${req.params.id}" is served here; GET /v1/models lists them`, {
            path: 'model',
          });
        return { id: e.endpoint, object: 'model', created: 0, owned_by: `${e.app}@${e.version}` };
      });

      v1.post('/chat/completions', async (req, reply) => {
        const b = parse(ChatBody, req.body);
        const messages: ChatMessage[] = b.messages.map((m) => ({
          role: m.role === 'developer' ? 'system' : m.role,
          content: text(m.content),
        }));
        let jsonSchema: Record<string, unknown> | undefined;
        if (b.response_format?.type === 'json_schema')
          jsonSchema = checkJsonSchema(b.response_format.json_schema.schema, 'response_format.json_schema.schema');
        else if (b.response_format?.type === 'json_object') jsonSchema = { type: 'object' };
        return serve(req, reply, b, { kind: 'chat', messages }, jsonSchema, 'chat');
      });

      v1.post('/completions', async (req, reply) => {
        const b = parse(CompletionBody, req.body);
        return serve(
          req,
          reply,
          b,
          { kind: 'completion', prompt: typeof b.prompt === 'string' ? b.prompt : b.prompt[0]! },
          undefined,
          'text',
        );
      });

      v1.post('/embeddings', async (req, reply) => {
        const b = parse(EmbeddingBody, req.body);
        const inputs = typeof b.input === 'string' ? [b.input] : b.input;
        const gone = clientGone(req, reply);
        const r = await d.llm.embed(b.model, inputs, gone.signal);
        gone.done();
        return {
          object: 'list',
          model: r.model,
          data: r.vectors.map((v, index) => ({
            object: 'embedding',
            index,
            // The official client asks for base64 (little-endian float32) by default.
            embedding: b.encoding_format === 'base64' ? Buffer.from(Float32Array.from(v).buffer).toString('base64') : v,
          })),
          usage: { prompt_tokens: r.tokens, total_tokens: r.tokens },
        };
      });
    },
    { prefix: '/v1' },
  );

  async function serve(
    req: FastifyRequest,
    reply: FastifyReply,
    b: z.infer<typeof ChatBody> | z.infer<typeof CompletionBody>,
    input: GenerateInput,
    jsonSchema: Record<string, unknown> | undefined,
    shape: 'chat' | 'text',
  ): Promise<unknown> {
    const id = `${shape === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const gone = clientGone(req, reply);
    const events = d.llm.generate({
      endpoint: b.model,
      input,
      maxTokens: b.max_completion_tokens ?? b.max_tokens ?? undefined,
      opts: {
        stop: stops(b.stop),
        temperature: b.temperature ?? undefined,
        topP: b.top_p ?? undefined,
        seed: b.seed ?? undefined,
        jsonSchema,
      },
      client: `api:${b.user ?? req.ip}`,
      signal: gone.signal,
    });
    const object = shape === 'chat' ? 'chat.completion' : 'text_completion';
    if (!b.stream) {
      try {
        for await (const ev of events) {
          if (ev.type !== 'done') continue;
          const usage = {
            prompt_tokens: ev.usage.promptTokens,
            completion_tokens: ev.usage.completionTokens,
            total_tokens: ev.usage.promptTokens + ev.usage.completionTokens,
          };
          const choice =
            shape === 'chat'
              ? {
                  index: 0,
                  message: { role: 'assistant', content: ev.text, refusal: null },
                  finish_reason: ev.finishReason,
                  logprobs: null,
                }
              : { index: 0, text: ev.text, finish_reason: ev.finishReason, logprobs: null };
          return { id, object, created, model: b.model, choices: [choice], usage, system_fingerprint: null };
        }
        throw new EwError('INTERNAL', 'the model ended without a result');
      } finally {
        gone.done();
      }
    }
    // Streamed: the first event decides between an error status and a 200 event stream, so a bad
    // request (unknown model, too long a prompt) still gets its HTTP error.
    const it = events[Symbol.asyncIterator]();
    let head: IteratorResult<GenerateEvent>;
    try {
      head = await it.next();
    } catch (e) {
      gone.done();
      throw e;
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    const write = (o: unknown) => res.write(`data: ${JSON.stringify(o)}\n\n`);
    const object2 = shape === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (delta: string | null, finish: string | null) =>
      shape === 'chat'
        ? {
            id,
            object: object2,
            created,
            model: b.model,
            choices: [{ index: 0, delta: delta === null ? {} : { content: delta }, finish_reason: finish, logprobs: null }],
          }
        : {
            id,
            object: object2,
            created,
            model: b.model,
            choices: [{ index: 0, text: delta ?? '', finish_reason: finish, logprobs: null }],
          };
    if (shape === 'chat')
      write({
        id,
        object: object2,
        created,
        model: b.model,
        choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null, logprobs: null }],
      });
    try {
      for (let r = head; !r.done; r = await it.next()) {
        const ev = r.value;
        if (ev.type === 'text') {
          if (ev.text) write(chunk(ev.text, null));
          continue;
        }
        write(chunk(null, ev.finishReason));
        // Usage in every response: a last chunk with no choices, as OpenAI sends with include_usage.
        write({
          id,
          object: object2,
          created,
          model: b.model,
          choices: [],
          usage: {
            prompt_tokens: ev.usage.promptTokens,
            completion_tokens: ev.usage.completionTokens,
            total_tokens: ev.usage.promptTokens + ev.usage.completionTokens,
          },
        });
      }
      res.write('data: [DONE]\n\n');
    } catch (e) {
      // Mid-stream failure: an error event (OpenAI's shape), then the stream ends.
      if (!gone.signal.aborted) {
        const { body } = openAiError(e, req.id);
        res.write(`data: ${JSON.stringify(body)}\n\n`);
      }
    } finally {
      gone.done();
      res.end();
    }
    return reply;
  }
}
