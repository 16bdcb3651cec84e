import type { GenerateInput, GenerateOptions, LlmInfo, Usage, FinishReason } from './types.ts';

/**
 * Messages between the agent and a GGUF runtime child process (Node IPC, JSON). One child serves
 * one model: llama.cpp aborts the whole process on some malformed files and some internal
 * failures, so it never shares a process with the agent or with another model.
 */
export interface LoadParams {
  file: string;
  contextSize: number;
  sequences: number;
  threads: number;
  gpuLayers: number | 'auto';
  gpu: 'auto' | false;
}

export type ToChild =
  | { op: 'load'; params: LoadParams }
  | { op: 'generate'; id: number; input: GenerateInput; opts: GenerateOptions }
  | { op: 'embed'; id: number; texts: string[] }
  | { op: 'cancel'; id: number };

export type FromChild =
  | { op: 'loaded'; info: LlmInfo }
  | { op: 'load-error'; message: string; code: 'MODEL_LOAD_FAILED' | 'MODEL_TOO_LARGE' }
  | { op: 'text'; id: number; text: string; tokens: number }
  | { op: 'done'; id: number; finishReason: FinishReason; usage: Usage; text: string }
  | { op: 'embedded'; id: number; vectors: number[][]; tokens: number }
  | { op: 'error'; id: number; code: string; message: string; param?: string }
  | { op: 'aborted'; id: number }
  | { op: 'batch'; items: FromChild[] };
