/**
 * What a language model offers a site, whatever runs it: a GGUF file in a supervised child process
 * (`gguf.ts`) or an OpenAI-compatible upstream (`remote.ts`). A loaded model of either format
 * carries one of these as `LoadedModel.llm` (an optional ability of the runtime interface); the
 * site's OpenAI routes and `llm()` in rules reach every model through it.
 */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface GenerateOptions {
  /** Tokens to generate at most (already capped by the endpoint's limit). */
  maxTokens: number;
  stop?: string[];
  temperature?: number;
  topP?: number;
  seed?: number;
  /** Constrain the output to this JSON schema (llama.cpp grammar from the schema). */
  jsonSchema?: Record<string, unknown>;
}

export type GenerateInput = { kind: 'chat'; messages: ChatMessage[] } | { kind: 'completion'; prompt: string };

export type FinishReason = 'stop' | 'length';

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

/** What a generation streams: text pieces, then exactly one `done`. */
export type GenerateEvent =
  | { type: 'text'; text: string; tokens: number }
  | { type: 'done'; finishReason: FinishReason; usage: Usage; text: string };

export interface LlmInfo {
  /** Tokens one sequence can hold (prompt + completion). */
  contextSize: number;
  /** Sequences that generate at once. */
  slots: number;
  /** Architecture and name from the file (or the upstream's model id). */
  architecture: string;
  modelName: string;
  embeddings: boolean;
  /** Where it runs: cpu, cuda, vulkan, remote. */
  device: string;
}

export interface LlmModel {
  readonly info: LlmInfo;
  /**
   * Generates; the iterable ends after `done`. Aborting `signal` stops the generation at once
   * and frees its sequence (the iterable then throws an AbortError).
   */
  generate(input: GenerateInput, opts: GenerateOptions, signal?: AbortSignal): AsyncIterable<GenerateEvent>;
  /** Embedding vectors and the tokens they took. Throws when the model has none. */
  embed(texts: string[], signal?: AbortSignal): Promise<{ vectors: number[][]; tokens: number }>;
  /** Runtime health as the site's status reports it. */
  health(): LlmHealth;
  close(): Promise<void>;
}

export interface LlmHealth {
  state: 'starting' | 'ready' | 'restarting' | 'failed';
  restarts: number;
  lastExit?: string;
  pid?: number;
}
