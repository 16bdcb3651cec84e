/**
 * Builds the tiny Qwen test GGUF (random weights, Qwen's real tokenizer) into .cache/models/ and
 * prints its path. Tests build it on demand too.
 *   npm run models:llm
 */
import { statSync } from 'node:fs';
import { ensureTinyQwen } from '../src/inference/gguf/tiny-qwen.ts';

const t0 = performance.now();
const file = ensureTinyQwen();
console.log(`${file}: ${statSync(file).size} bytes (TEST MODEL: its text is noise), ${((performance.now() - t0) / 1000).toFixed(1)} s`);
