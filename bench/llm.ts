/**
 * bench:llm — a GGUF language model through the site's OpenAI-compatible endpoint against direct
 * node-llama-cpp on the same model, in the same run.
 *
 *  1. Tokens/s (all streams together) and time to first token, at 1 and 4 concurrent streams:
 *     through the site's path (HTTP /v1/completions streamed over SSE → LlmService → fair slot
 *     queue → IPC → the supervised runtime child → llama.cpp) against the same prompts generated
 *     in this process with node-llama-cpp directly (same thread count, same sequences). Aim: site
 *     ≥ 0.95 × direct tokens/s.
 *  2. The agent's RSS with the LLM loaded against without (and the runtime child's own RSS).
 *
 * The model is the project's tiny TEST Qwen (Qwen's tokenizer, random weights), so tokens are
 * cheap and the per-token overhead of the site's path shows at its largest; a real 0.5B–7B model
 * spends far more per token in llama.cpp and the ratio moves toward 1. BENCH_TOKENS (default 256)
 * tokens per stream, BENCH_ROUNDS (default 5) interleaved rounds per figure (medians printed),
 * BENCH_THREADS (default 1), BENCH_MODEL (a GGUF path; default the tiny test Qwen).
 */
import { readFileSync } from 'node:fs';
import Fastify from 'fastify';
import { Registry } from 'prom-client';
import { getLlama, LlamaCompletion, LlamaLogLevel } from 'node-llama-cpp';
import { GgufRuntime } from '../src/inference/llm/gguf.ts';
import { LlmService } from '../src/inference/llm/service.ts';
import { ModelHost } from '../src/inference/host.ts';
import { RuntimeRegistry } from '../src/inference/runtime.ts';
import { registerOpenAi } from '../src/inference/openai.ts';
import { ensureTinyQwen } from '../src/inference/gguf/tiny-qwen.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import { systemClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';

const TOKENS = Number(process.env.BENCH_TOKENS ?? 256);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const THREADS = Number(process.env.BENCH_THREADS ?? 1);
const SLOTS = 4;
const CTX = 1024;
const file = process.env.BENCH_MODEL ?? ensureTinyQwen();
const prompts = ['Pump 7 vibration report:', 'Shift summary for line 2:', 'Bearing temperature trend:', 'Conveyor 3 stalled because'];

interface Run {
  tokS: number;
  ttftMs: number;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rssMb = (pid?: number): number => {
  if (pid === undefined) return process.memoryUsage().rss / 2 ** 20;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
};

/** n streams at once; each counts its tokens and its first token's time. */
async function concurrent(n: number, one: (prompt: string, onToken: () => void) => Promise<number>): Promise<Run> {
  const t0 = performance.now();
  const ttfts: number[] = [];
  const counts = await Promise.all(
    Array.from({ length: n }, (_, i) => {
      let first = true;
      return one(prompts[i % prompts.length]!, () => {
        if (first) {
          first = false;
          ttfts.push(performance.now() - t0);
        }
      });
    }),
  );
  const s = (performance.now() - t0) / 1000;
  return { tokS: counts.reduce((a, b) => a + b, 0) / s, ttftMs: ttfts.reduce((a, b) => a + b, 0) / ttfts.length };
}

async function main(): Promise<void> {
  console.log(
    `bench:llm — ${process.env.BENCH_MODEL ? file : 'tiny TEST Qwen (qwen2, Qwen tokenizer)'} (${(readFileSync(file).length / 2 ** 20).toFixed(1)} MB), ${TOKENS} tokens per stream, ${THREADS} thread(s), median of ${ROUNDS} rounds`,
  );
  // --- the site's path -------------------------------------------------------------------------
  const app = Fastify();
  const registry = new Registry();
  const rssBefore = rssMb();
  const host = new ModelHost({
    runtimes: new RuntimeRegistry().register(new GgufRuntime({ log: silentLogger(), clock: systemClock })),
    fetchModel: async () => file,
    clock: systemClock,
    log: silentLogger(),
    registry,
  });
  await host.start({
    name: 'bench',
    version: '1.0.0',
    deploymentId: 'd',
    manifest: parseManifest({
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'bench', version: '1.0.0' },
      spec: {
        models: [{ name: 'q', format: 'gguf', sha256: '0'.repeat(64), runtime: { threads: THREADS, contextSize: CTX, parallel: SLOTS } }],
        endpoints: [{ name: 'qwen', model: 'q', kind: 'chat', limits: { maxTokens: TOKENS } }],
      },
    }),
  });
  registerOpenAi(app, { host, llm: new LlmService(host, registry, systemClock), log: silentLogger() });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const llm = host.llmEndpoint('qwen').llm;
  const childPid = llm.health().pid;
  const rssAfter = rssMb();
  const viaSite = (prompt: string, onToken: () => void) =>
    (async () => {
      const res = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'qwen', prompt, max_tokens: TOKENS, temperature: 0.8, seed: 1, stream: true }),
      });
      const dec = new TextDecoder();
      let buf = '';
      let tokens = 0;
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += dec.decode(chunk, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
          const m = JSON.parse(ev.slice(6));
          if (m.usage) tokens = m.usage.completion_tokens;
          else if (m.choices?.[0]?.text) onToken();
        }
      }
      return tokens;
    })();

  // --- direct node-llama-cpp, same model and settings, this process --------------------------------
  const llama = await getLlama({ gpu: false, build: 'never', maxThreads: THREADS, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath: file });
  const ctx = await model.createContext({ contextSize: CTX, sequences: SLOTS, threads: THREADS });
  const free = Array.from({ length: SLOTS }, () => ctx.getSequence());
  const direct = async (prompt: string, onToken: () => void) => {
    const seq = free.pop()!;
    let tokens = 0;
    try {
      await new LlamaCompletion({ contextSequence: seq }).generateCompletion(prompt, {
        maxTokens: TOKENS,
        temperature: 0.8,
        seed: 1,
        onToken: (t) => {
          tokens += t.length;
          onToken();
        },
      });
    } finally {
      free.push(seq);
    }
    return tokens;
  };

  // Warm both paths once.
  await concurrent(1, direct);
  await concurrent(1, viaSite);
  const rows: string[] = [];
  for (const n of [1, 4]) {
    // Rounds interleave the two paths (alternating which goes first), and the ratio is the median
    // of the per-round ratios: the machine's load drifts, and both paths then see the same drift.
    const ds: Run[] = [];
    const ss: Run[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 2 === 0) {
        ds.push(await concurrent(n, direct));
        ss.push(await concurrent(n, viaSite));
      } else {
        ss.push(await concurrent(n, viaSite));
        ds.push(await concurrent(n, direct));
      }
    }
    const d = { tokS: median(ds.map((x) => x.tokS)), ttftMs: median(ds.map((x) => x.ttftMs)) };
    const s = { tokS: median(ss.map((x) => x.tokS)), ttftMs: median(ss.map((x) => x.ttftMs)) };
    const ratio = median(ss.map((x, i) => x.tokS / ds[i]!.tokS));
    rows.push(
      `| ${n} | ${d.tokS.toFixed(0)} | ${s.tokS.toFixed(0)} | **${ratio.toFixed(2)}** | ${d.ttftMs.toFixed(1)} | ${s.ttftMs.toFixed(1)} | +${(s.ttftMs - d.ttftMs).toFixed(1)} |`,
    );
  }
  console.log(
    '\n| streams | direct tok/s | site tok/s | site / direct (median of rounds) | direct TTFT ms | site TTFT ms | TTFT overhead ms |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
  console.log(
    `\nagent RSS: ${rssBefore.toFixed(0)} MB without the LLM, ${rssAfter.toFixed(0)} MB with it loaded (×${(rssAfter / rssBefore).toFixed(2)}; the weights live in the runtime child, ${rssMb(childPid).toFixed(0)} MB RSS)`,
  );
  await ctx.dispose();
  await model.dispose();
  await app.close();
  await host.close();
}

await main();
