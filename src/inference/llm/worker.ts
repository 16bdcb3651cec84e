/**
 * The GGUF runtime's child process: loads one model with node-llama-cpp and serves generations on
 * the context's sequences. Spawned and supervised by `gguf.ts`; speaks `protocol.ts` over IPC.
 * Everything that can abort the process (llama.cpp's loader, the sampler, the grammar) runs here.
 */
import {
  getLlama,
  JinjaTemplateChatWrapper,
  LlamaCompletion,
  LlamaLogLevel,
  resolveChatWrapper,
  type ChatWrapper,
  type LlamaText,
  type Token,
  type ChatHistoryItem,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaEmbeddingContext,
  type LlamaGrammar,
  type LlamaModel,
} from 'node-llama-cpp';
import type { FromChild, LoadParams, ToChild } from './protocol.ts';
import type { GenerateInput, GenerateOptions } from './types.ts';

/**
 * Messages go out in batches, flushed once per event-loop turn: tokens of parallel sequences come
 * from one llama.cpp decode, so one IPC message carries them all (fewer wake-ups of the agent).
 */
let outbox: FromChild[] = [];
const flush = (): void => {
  const batch = outbox;
  outbox = [];
  if (batch.length === 1) process.send?.(batch[0]);
  else if (batch.length) process.send?.({ op: 'batch', items: batch });
};
const send = (m: FromChild): void => {
  if (outbox.push(m) === 1) setImmediate(flush);
};
/** llama.cpp's own recent log lines: a load failure reports them (bounded ring). */
const logLines: string[] = [];
const remember = (level: LlamaLogLevel, line: string): void => {
  const l = line.trim();
  if (!l) return;
  logLines.push(`${level}: ${l}`);
  if (logLines.length > 50) logLines.shift();
};

let llama: Llama;
let model: LlamaModel;
let context: LlamaContext;
let embedding: Promise<LlamaEmbeddingContext> | undefined;
let params: LoadParams;
let chatWrapper: ChatWrapper;
const free: LlamaContextSequence[] = [];
const running = new Map<number, AbortController>();

async function load(p: LoadParams): Promise<void> {
  params = p;
  try {
    llama = await getLlama({
      gpu: p.gpu,
      build: 'never',
      maxThreads: p.threads,
      logLevel: LlamaLogLevel.warn,
      logger: remember,
      progressLogs: false,
    });
    model = await llama.loadModel({ modelPath: p.file, gpuLayers: p.gpuLayers === 'auto' ? 'auto' : p.gpuLayers });
    context = await model.createContext({ contextSize: p.contextSize, sequences: p.sequences, threads: p.threads });
    for (let i = 0; i < p.sequences; i++) free.push(context.getSequence());
    // The chat template from the GGUF itself, rendered as written (Qwen's ChatML adds no BOS, which
    // node-llama-cpp's built-in ChatML wrapper would); a file without one, or with a template its
    // Jinja engine cannot run, gets the wrapper node-llama-cpp resolves for the model.
    const template = (model.fileInfo.metadata as { tokenizer?: { chat_template?: string } }).tokenizer?.chat_template;
    let jinja: ChatWrapper | undefined;
    if (template) {
      try {
        jinja = new JinjaTemplateChatWrapper({ template, tokenizer: model.tokenizer });
        jinja.generateContextState({
          chatHistory: [
            { type: 'user', text: 'x' },
            { type: 'model', response: [] },
          ],
        });
      } catch (e) {
        remember(
          LlamaLogLevel.warn,
          `chat template not usable as Jinja (${(e as Error).message}); using node-llama-cpp's resolved wrapper`,
        );
        jinja = undefined;
      }
    }
    chatWrapper = jinja ?? resolveChatWrapper(model);
  } catch (e) {
    const own = logLines
      .filter((l) => /^(error|warn)/.test(l))
      .slice(-5)
      .join(' | ');
    const message = `${(e as Error).message}${own ? ` (llama.cpp: ${own})` : ''}`;
    send({ op: 'load-error', code: /memory|allocate/i.test(message) ? 'MODEL_TOO_LARGE' : 'MODEL_LOAD_FAILED', message });
    return;
  }
  const meta = model.fileInfo.metadata as { general?: { architecture?: string; name?: string } };
  send({
    op: 'loaded',
    info: {
      contextSize: context.contextSize,
      slots: p.sequences,
      architecture: meta.general?.architecture ?? 'unknown',
      modelName: meta.general?.name ?? 'unknown',
      embeddings: true,
      device: llama.gpu === false ? 'cpu' : llama.gpu,
    },
  });
}

class RequestError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly param?: string,
  ) {
    super(message);
  }
}

function history(input: Extract<GenerateInput, { kind: 'chat' }>): ChatHistoryItem[] {
  return input.messages.map(
    (m): ChatHistoryItem => (m.role === 'assistant' ? { type: 'model', response: [m.content] } : { type: m.role, text: m.content }),
  );
}

async function grammarFor(schema: Record<string, unknown> | undefined, param: string): Promise<LlamaGrammar | undefined> {
  if (!schema) return undefined;
  try {
    return await llama.createGrammarForJsonSchema(schema as never);
  } catch (e) {
    throw new RequestError('RESPONSE_FORMAT_INVALID', `the JSON schema cannot be used to constrain output: ${(e as Error).message}`, param);
  }
}

async function generate(id: number, input: GenerateInput, o: GenerateOptions): Promise<void> {
  const seq = free.pop();
  if (!seq) throw new RequestError('QUEUE_FULL', 'no free sequence (the agent schedules at most one request per sequence)');
  const ac = new AbortController();
  running.set(id, ac);
  let tokens = 0;
  let pending = 0;
  let text = '';
  try {
    const grammar = await grammarFor(o.jsonSchema, 'response_format.json_schema');
    // Chat: the GGUF's template renders the messages into tokens, which are then completed as
    // they are. (LlamaChat holds back and re-counts tokens around its trigger detection, so its
    // maxTokens and the tokens it generated can differ; this way usage is exactly what ran.)
    let prompt: Token[];
    const stops: (string | LlamaText)[] = [...(o.stop ?? [])];
    if (input.kind === 'chat') {
      const state = chatWrapper.generateContextState({ chatHistory: [...history(input), { type: 'model', response: [] }] });
      prompt = state.contextText.tokenize(model.tokenizer);
      stops.push(...state.stopGenerationTriggers);
    } else {
      prompt = model.tokenize(input.prompt, false);
    }
    const promptTokens = prompt.length;
    const room = context.contextSize - promptTokens;
    if (room < 1)
      throw new RequestError(
        'CONTEXT_LENGTH_EXCEEDED',
        `the prompt is ${promptTokens} tokens but the model's context holds ${context.contextSize}; shorten it`,
        input.kind === 'chat' ? 'messages' : 'prompt',
      );
    const maxTokens = Math.min(o.maxTokens, room);
    const r = await new LlamaCompletion({ contextSequence: seq }).generateCompletionWithMeta(prompt, {
      maxTokens,
      temperature: o.temperature ?? 0.7,
      topP: o.topP,
      seed: o.seed,
      grammar,
      signal: ac.signal,
      stopOnAbortSignal: false,
      customStopTriggers: stops.length ? stops : undefined,
      onToken: (t) => {
        tokens += t.length;
        pending += t.length;
      },
      onTextChunk: (chunk) => {
        if (!chunk && !pending) return;
        text += chunk;
        send({ op: 'text', id, text: chunk, tokens: pending });
        pending = 0;
      },
    });
    const stopReason = r.metadata.stopReason;
    if (pending) send({ op: 'text', id, text: '', tokens: pending });
    send({
      op: 'done',
      id,
      finishReason: stopReason === 'maxTokens' ? 'length' : 'stop',
      usage: { promptTokens, completionTokens: tokens },
      text,
    });
  } catch (e) {
    if (ac.signal.aborted) send({ op: 'aborted', id });
    else throw e;
  } finally {
    running.delete(id);
    free.push(seq);
  }
}

async function embed(id: number, texts: string[]): Promise<void> {
  const embeddingContextSize = Math.min(context.contextSize, 2048);
  embedding ??= model.createEmbeddingContext({ contextSize: embeddingContextSize, threads: params.threads });
  const ctx = await embedding;
  const vectors: number[][] = [];
  let tokens = 0;
  for (const t of texts) {
    const n = model.tokenize(t).length;
    if (n > embeddingContextSize)
      throw new RequestError(
        'CONTEXT_LENGTH_EXCEEDED',
        `input of ${n} tokens is longer than the embedding context (${embeddingContextSize})`,
        'input',
      );
    tokens += n;
    vectors.push([...(await ctx.getEmbeddingFor(t)).vector]);
  }
  send({ op: 'embedded', id, vectors, tokens });
}

process.on('message', (m: ToChild) => {
  const fail = (id: number) => (e: unknown) => {
    const r = e instanceof RequestError ? e : undefined;
    send({ op: 'error', id, code: r?.code ?? 'INTERNAL', message: (e as Error).message, ...(r?.param ? { param: r.param } : {}) });
  };
  switch (m.op) {
    case 'load':
      void load(m.params);
      break;
    case 'generate':
      generate(m.id, m.input, m.opts).catch(fail(m.id));
      break;
    case 'embed':
      embed(m.id, m.texts).catch(fail(m.id));
      break;
    case 'cancel':
      running.get(m.id)?.abort();
      break;
  }
});
// The agent went away: so do we (no orphaned model holding memory).
process.on('disconnect', () => process.exit(0));
