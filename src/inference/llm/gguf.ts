import { fork, type ChildProcess } from 'node:child_process';
import { availableParallelism, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { EwError, type ErrorCode } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import type { LoadedModel, ModelLoadSpec, ModelRuntime } from '../runtime.ts';
import { FairQueue } from './fair-queue.ts';
import type { FromChild, LoadParams, ToChild } from './protocol.ts';
import type { GenerateEvent, GenerateInput, GenerateOptions, LlmHealth, LlmInfo, LlmModel } from './types.ts';
import { Channel } from './channel.ts';

/**
 * GGUF language models on node-llama-cpp (llama.cpp), each in its own child process that the agent
 * supervises: llama.cpp aborts the process on some malformed files, and that must never take the
 * site down. Before a child is started the file's header is read here (node-llama-cpp's GGUF
 * reader, plain JavaScript): a file that is not GGUF, of an architecture llama.cpp does not know,
 * or that would not fit the memory granted to the model is refused with the figures. A child that
 * dies is restarted with exponential backoff; requests in flight on it fail with 503
 * LLM_RUNTIME_CRASHED and the site's status reports the restarts.
 *
 * Settings (manifest `models[].runtime`): threads (default: the site's cores minus one, at least
 * 1 — llama.cpp's default of 4 on a 2-core machine is hundreds of times slower), contextSize per
 * sequence (default 2048, at most the model's training context), parallel sequences (default 2),
 * gpuLayers (default 0 on cpu, all with executionProvider cuda/vulkan), memoryLimitMB (default 75 %
 * of the site's memory).
 */
export interface GgufOptions {
  threads?: number;
  contextSize?: number;
  parallel?: number;
  gpuLayers?: number;
  memoryLimitMB?: number;
  executionProvider?: 'cpu' | 'cuda' | 'vulkan';
  /** Requests that may wait for a slot (default 256). */
  maxQueued?: number;
}

export interface GgufRuntimeDeps {
  log: Logger;
  clock: Clock;
  /** Restart backoff: first delay and cap, ms (default 500 ms → 30 s). */
  backoff?: { baseMs: number; maxMs: number };
}

/**
 * node-llama-cpp (a large tree of packages) is loaded here only when a GGUF model is checked,
 * not when the agent starts: an agent with no language model never loads it (bench:agent).
 * The model itself runs in a child process (worker.ts).
 */
let nlcModule: Promise<typeof import('node-llama-cpp')> | undefined;
const llamaCpp = () => (nlcModule ??= import('node-llama-cpp'));

/** What the header says, checked before any child is started. */
export async function checkGguf(
  name: string,
  file: string,
  want: { contextSize: number; sequences: number; memoryLimitBytes: number; gpuLayers: number },
): Promise<{ architecture: string; trainContext?: number; estimatedBytes: number }> {
  const nlc = await llamaCpp();
  const ARCHITECTURES = new Set(Object.values((nlc as unknown as { GgufArchitectureType: Record<string, string> }).GgufArchitectureType));
  let info: Awaited<ReturnType<typeof nlc.readGgufFileInfo>>;
  try {
    info = await nlc.readGgufFileInfo(file, { readTensorInfo: true });
  } catch (e) {
    throw new EwError(
      'MODEL_LOAD_FAILED',
      `model ${name}: ${file} is not a valid GGUF file (${(e as Error).message}); export it again with llama.cpp's convert_hf_to_gguf.py or download a .gguf file`,
      { path: `models.${name}` },
    );
  }
  const arch = String((info.metadata as { general?: { architecture?: string } }).general?.architecture ?? '');
  if (!ARCHITECTURES.has(arch)) {
    throw new EwError(
      'MODEL_UNSUPPORTED',
      `model ${name}: architecture "${arch || '(none)'}" is not one llama.cpp (node-llama-cpp 3.21.1) runs; Qwen models are qwen2, qwen3, qwen2moe or qwen3moe`,
      { path: `models.${name}.format` },
    );
  }
  const insights = await nlc.GgufInsights.from(info);
  const m = insights.estimateModelResourceRequirements({ gpuLayers: want.gpuLayers });
  const c = insights.estimateContextResourceRequirements({
    contextSize: want.contextSize,
    modelGpuLayers: want.gpuLayers,
    sequences: want.sequences,
  });
  const estimatedBytes = m.cpuRam + c.cpuRam;
  if (estimatedBytes > want.memoryLimitBytes) {
    const mb = (b: number) => `${Math.ceil(b / 2 ** 20)} MB`;
    throw new EwError(
      'MODEL_TOO_LARGE',
      `model ${name} needs about ${mb(estimatedBytes)} of memory (weights ${mb(m.cpuRam)}, context ${mb(c.cpuRam)} for ${want.sequences} × ${want.contextSize} tokens) but ${mb(want.memoryLimitBytes)} is granted; lower runtime.contextSize or runtime.parallel, use a smaller quantisation, or raise runtime.memoryLimitMB`,
      { path: `models.${name}.runtime` },
    );
  }
  return { architecture: arch, trainContext: insights.trainContextSize, estimatedBytes };
}

export class GgufRuntime implements ModelRuntime {
  readonly format = 'gguf';
  constructor(private readonly d: GgufRuntimeDeps) {}

  async load(spec: ModelLoadSpec): Promise<LoadedModel> {
    const o = (spec.options ?? {}) as GgufOptions;
    const gpu = o.executionProvider === 'cuda' || o.executionProvider === 'vulkan';
    const gpuLayers = o.gpuLayers ?? (gpu ? 'auto' : 0);
    const sequences = o.parallel ?? 2;
    let contextSize = o.contextSize ?? 2048;
    const header = await checkGguf(spec.name, spec.file, {
      contextSize,
      sequences,
      gpuLayers: typeof gpuLayers === 'number' ? gpuLayers : 0,
      memoryLimitBytes: (o.memoryLimitMB ?? Math.floor((totalmem() * 0.75) / 2 ** 20)) * 2 ** 20,
    });
    if (header.trainContext && contextSize > header.trainContext) contextSize = header.trainContext;
    const params: LoadParams = {
      file: spec.file,
      contextSize,
      sequences,
      gpuLayers,
      gpu: gpu ? 'auto' : false,
      threads: o.threads ?? Math.max(1, availableParallelism() - 1),
    };
    const llm = new SupervisedLlm(spec.name, params, o.maxQueued ?? 256, this.d);
    await llm.start();
    return {
      name: spec.name,
      format: 'gguf',
      inputs: [],
      outputs: [],
      device: llm.info.device,
      llm,
      async run() {
        throw new EwError(
          'INFER_INPUT_INVALID',
          `model ${spec.name} is a language model: call it through the site's OpenAI-compatible API (/v1/chat/completions) or llm() in a rule`,
        );
      },
      close: () => llm.close(),
    };
  }
}

interface Pending {
  channel?: Channel<GenerateEvent>;
  embed?: { resolve: (v: { vectors: number[][]; tokens: number }) => void; reject: (e: unknown) => void };
  release: () => void;
}

const WORKER = (() => {
  const self = fileURLToPath(import.meta.url);
  const ts = self.endsWith('.ts');
  return { file: self.replace(/gguf\.(ts|js)$/, ts ? 'worker.ts' : 'worker.js'), execArgv: ts ? ['--import', 'tsx'] : [] };
})();

/** A model in a child process: started, restarted with backoff, asked over IPC. */
export class SupervisedLlm implements LlmModel {
  info!: LlmInfo;
  private child?: ChildProcess;
  private state: LlmHealth['state'] = 'starting';
  private restarts = 0;
  private failuresInRow = 0;
  private lastExit?: string;
  private stderrTail = '';
  private closed = false;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly queue: FairQueue;
  private cancelRestart?: () => void;

  constructor(
    private readonly name: string,
    private readonly params: LoadParams,
    maxQueued: number,
    private readonly d: GgufRuntimeDeps,
  ) {
    this.queue = new FairQueue(params.sequences, maxQueued);
  }

  health(): LlmHealth {
    return {
      state: this.state,
      restarts: this.restarts,
      ...(this.lastExit ? { lastExit: this.lastExit } : {}),
      ...(this.child?.pid ? { pid: this.child.pid } : {}),
      ...this.queue.stats,
    };
  }

  /** The child's process id (tests kill it to prove the site survives). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    this.info = await this.spawn();
    this.state = 'ready';
  }

  private spawn(): Promise<LlmInfo> {
    this.stderrTail = '';
    const child = fork(WORKER.file, [], { execArgv: WORKER.execArgv, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'json' });
    this.child = child;
    child.stderr!.on('data', (b: Buffer) => {
      this.stderrTail = (this.stderrTail + b.toString('utf8')).slice(-4096);
    });
    return new Promise<LlmInfo>((resolve, reject) => {
      let loaded = false;
      child.on('message', (msg: FromChild) => {
        const m = msg.op === 'batch' && msg.items.length === 1 ? msg.items[0]! : msg;
        if (m.op === 'loaded') {
          loaded = true;
          resolve(m.info);
          return;
        }
        if (m.op === 'load-error') {
          reject(
            new EwError(m.code, `model ${this.name}: llama.cpp could not load ${this.params.file}: ${m.message}`, {
              path: `models.${this.name}`,
            }),
          );
          child.kill();
          return;
        }
        this.onMessage(m);
      });
      child.on('exit', (code, signal) => {
        const how = signal ? `signal ${signal}` : `exit code ${code}`;
        if (!loaded) {
          const tail = this.stderrTail.trim().split('\n').slice(-3).join(' | ');
          reject(
            new EwError(
              'MODEL_LOAD_FAILED',
              `model ${this.name}: the runtime process died while loading ${this.params.file} (${how})${tail ? `: ${tail}` : ''}`,
              { path: `models.${this.name}` },
            ),
          );
          return;
        }
        this.onExit(how);
      });
      child.send({ op: 'load', params: this.params } satisfies ToChild);
    });
  }

  private onMessage(m: FromChild): void {
    if (m.op === 'batch') {
      for (const x of m.items) this.onMessage(x);
      return;
    }
    if (!('id' in m)) return;
    const p = this.pending.get(m.id);
    if (!p) return;
    switch (m.op) {
      case 'text':
        p.channel?.push({ type: 'text', text: m.text, tokens: m.tokens });
        return;
      case 'done':
        p.channel?.push({ type: 'done', finishReason: m.finishReason, usage: m.usage, text: m.text });
        p.channel?.end();
        break;
      case 'embedded':
        p.embed?.resolve({ vectors: m.vectors, tokens: m.tokens });
        break;
      case 'error': {
        const code = (m.code in KNOWN ? m.code : 'INTERNAL') as ErrorCode;
        const e = new EwError(code, m.message, { path: m.param });
        p.channel?.fail(e);
        p.embed?.reject(e);
        break;
      }
      case 'aborted':
        p.channel?.fail(abortError());
        break;
    }
    this.pending.delete(m.id);
    p.release();
  }

  private onExit(how: string): void {
    this.child = undefined;
    this.lastExit = `${how} at ${new Date(this.d.clock.now()).toISOString()}`;
    const err = new EwError('LLM_RUNTIME_CRASHED', `model ${this.name}: its runtime process stopped (${how}); it is being restarted`);
    for (const [id, p] of this.pending) {
      p.channel?.fail(err);
      p.embed?.reject(err);
      this.pending.delete(id);
      p.release();
    }
    if (this.closed) return;
    this.state = 'restarting';
    this.d.log.error({ model: this.name, exit: how, stderr: this.stderrTail.slice(-500) }, 'LLM runtime process died; restarting');
    const b = this.d.backoff ?? { baseMs: 500, maxMs: 30_000 };
    const delay = Math.min(b.maxMs, b.baseMs * 2 ** this.failuresInRow);
    this.failuresInRow++;
    this.cancelRestart = this.d.clock.setTimer(delay, () => {
      this.cancelRestart = undefined;
      if (this.closed) return;
      this.restarts++;
      this.spawn().then(
        (info) => {
          this.info = info;
          this.state = 'ready';
          this.failuresInRow = 0;
          this.d.log.info({ model: this.name, restarts: this.restarts }, 'LLM runtime process restarted');
        },
        (e: Error) => {
          // A file that loaded before and fails now (disk, memory): keep trying, more slowly.
          this.d.log.error({ model: this.name, err: e.message }, 'LLM runtime restart failed');
          this.onExit('restart failed');
        },
      );
    });
  }

  private send(m: ToChild): void {
    this.child?.send(m);
  }

  private ready(): void {
    if (this.closed) throw new EwError('MODEL_NOT_READY', `model ${this.name} was unloaded`);
    if (this.state !== 'ready' || !this.child)
      throw new EwError(
        'LLM_RUNTIME_CRASHED',
        `model ${this.name}: its runtime process is ${this.state} (${this.lastExit ?? 'starting'}); retry shortly`,
      );
  }

  async *generate(input: GenerateInput, opts: GenerateOptions & { client?: string }, signal?: AbortSignal): AsyncIterable<GenerateEvent> {
    this.ready();
    const release = await this.queue.acquire(opts.client ?? 'default', signal);
    try {
      this.ready();
    } catch (e) {
      release();
      throw e;
    }
    const id = this.nextId++;
    const channel = new Channel<GenerateEvent>();
    this.pending.set(id, { channel, release });
    const { client: _c, ...o } = opts;
    this.send({ op: 'generate', id, input, opts: o });
    const cancel = () => this.send({ op: 'cancel', id });
    signal?.addEventListener('abort', cancel, { once: true });
    let finished = false;
    try {
      for await (const ev of channel) {
        yield ev;
        if (ev.type === 'done') finished = true;
      }
    } finally {
      signal?.removeEventListener('abort', cancel);
      // The consumer stopped early (a client went away): the child stops and frees the sequence;
      // the slot is released when it confirms, so the next request finds the sequence free.
      if (!finished && this.pending.has(id)) cancel();
    }
  }

  async embed(texts: string[], signal?: AbortSignal): Promise<{ vectors: number[][]; tokens: number }> {
    this.ready();
    const release = await this.queue.acquire('embeddings', signal);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { embed: { resolve, reject }, release });
      this.send({ op: 'embed', id, texts });
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.cancelRestart?.();
    this.queue.failAll(new EwError('MODEL_NOT_READY', `model ${this.name} was unloaded`));
    const child = this.child;
    if (!child) return;
    await new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    });
  }
}

const KNOWN: Record<string, true> = {
  CONTEXT_LENGTH_EXCEEDED: true,
  RESPONSE_FORMAT_INVALID: true,
  QUEUE_FULL: true,
  INTERNAL: true,
  MODEL_NOT_READY: true,
};

function abortError(): Error {
  const e = new Error('the request was aborted');
  e.name = 'AbortError';
  return e;
}
