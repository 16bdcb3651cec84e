import type { Tensor, TensorSpec } from './tensor.ts';
import { EwError } from '../contracts/errors.ts';
import type { LlmModel } from './llm/types.ts';

/**
 * A model runtime loads model files of one format and runs them. ONNX (onnxruntime-node) is the
 * first; GGUF (node-llama-cpp) and remote (OpenAI-compatible / OIP upstreams) runtimes plug into
 * the same registry by format. Each loaded model states its inputs and outputs, which is what
 * the batcher, the HTTP protocol and `infer()` in SQL check requests against.
 *
 * Lifecycle: registry.load(spec) → model.run(…)* → model.close().
 */
export interface ModelLoadSpec {
  name: string;
  format: string;
  /** Local file (already verified by sha256 by the artifact cache). */
  file: string;
  /** Runtime settings: threads, graph optimisation level, execution provider. */
  options?: {
    threads?: number;
    graphOptimization?: 'disabled' | 'basic' | 'extended' | 'all';
    executionProvider?: 'cpu' | 'cuda' | 'vulkan';
    /** Language models (gguf): context per sequence, parallel sequences, GPU layers, memory granted. */
    contextSize?: number;
    parallel?: number;
    gpuLayers?: number;
    memoryLimitMB?: number;
    maxQueued?: number;
    /** Remote models: the upstream (the key is resolved from a secret, never passed in the manifest). */
    upstream?: { baseUrl: string; model: string; apiKey?: string; timeoutMs?: number; retries?: number; concurrency?: number };
  };
}

export interface LoadedModel {
  readonly name: string;
  readonly format: string;
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
  /** Where it runs: cpu, cuda, … (what the runtime actually got, not what was asked for). */
  readonly device: string;
  /** Language models (gguf, remote) have this ability; tensor models do not. */
  readonly llm?: LlmModel;
  /** Runs one batch; tensors' first dimension is the batch when the model has one. */
  run(inputs: Record<string, Tensor>): Promise<Record<string, Tensor>>;
  close(): Promise<void>;
}

export interface ModelRuntime {
  readonly format: string;
  load(spec: ModelLoadSpec): Promise<LoadedModel>;
}

export class RuntimeRegistry {
  private readonly byFormat = new Map<string, ModelRuntime>();
  register(r: ModelRuntime): this {
    this.byFormat.set(r.format, r);
    return this;
  }
  formats(): string[] {
    return [...this.byFormat.keys()];
  }
  async load(spec: ModelLoadSpec): Promise<LoadedModel> {
    const r = this.byFormat.get(spec.format);
    if (!r)
      throw new EwError(
        'MODEL_LOAD_FAILED',
        `no runtime for format "${spec.format}" on this site (it has ${this.formats().join(', ') || 'none'})`,
        { path: `models.${spec.name}.format` },
      );
    return r.load(spec);
  }
}
