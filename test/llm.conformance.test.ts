import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Fastify, { type FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import type { LlmModel } from '../src/inference/llm/types.ts';
import type { LoadedModel } from '../src/inference/runtime.ts';
import { GgufRuntime } from '../src/inference/llm/gguf.ts';
import { RemoteRuntime } from '../src/inference/llm/remote.ts';
import { LlmService } from '../src/inference/llm/service.ts';
import { ModelHost } from '../src/inference/host.ts';
import { RuntimeRegistry } from '../src/inference/runtime.ts';
import { registerOpenAi } from '../src/inference/openai.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import { ensureTinyQwen } from '../src/inference/gguf/tiny-qwen.ts';
import { systemClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';

/**
 * One suite for every language-model runtime (the LlmModel ability of a loaded model): GGUF in
 * its supervised child process, and remote — here pointed at a real OpenAI-compatible server, the
 * site's own /v1 implementation serving the tiny Qwen (so no stand-in is needed for this suite).
 */
interface Fixture {
  load(): Promise<{ model: LlmModel; close(): Promise<void> }>;
  hiddenSize: number;
}

function runLlmConformance(name: string, fx: Fixture): void {
  describe(`LlmModel conformance: ${name}`, () => {
    let m: LlmModel;
    let close: () => Promise<void>;
    before(async () => {
      ({ model: m, close } = await fx.load());
    });
    after(() => close?.());
    const collect = async (it: AsyncIterable<any>) => {
      const out: any[] = [];
      for await (const e of it) out.push(e);
      return out;
    };

    it('streams text, then one done whose text and token counts add up', async () => {
      const evs = await collect(
        m.generate({ kind: 'chat', messages: [{ role: 'user', content: 'Explain the alarm.' }] }, { maxTokens: 6, temperature: 0 }),
      );
      const done = evs.at(-1);
      assert.equal(done.type, 'done');
      assert.equal(evs.filter((e) => e.type === 'done').length, 1);
      assert.equal(
        evs
          .filter((e) => e.type === 'text')
          .map((e) => e.text)
          .join(''),
        done.text,
      );
      assert.equal(done.finishReason, 'length');
      assert.equal(done.usage.completionTokens, 6);
      assert.ok(done.usage.promptTokens > 5);
    });

    it('is deterministic at temperature 0 and for a fixed seed', async () => {
      const run = async (o: object) =>
        (await collect(m.generate({ kind: 'completion', prompt: 'Shift report:' }, { maxTokens: 5, ...o }))).at(-1).text;
      assert.equal(await run({ temperature: 0 }), await run({ temperature: 0 }));
      assert.equal(await run({ temperature: 0.9, seed: 11 }), await run({ temperature: 0.9, seed: 11 }));
    });

    it('keeps output to a JSON schema', async () => {
      const done = (
        await collect(
          m.generate(
            { kind: 'chat', messages: [{ role: 'user', content: 'triage' }] },
            { maxTokens: 40, seed: 3, jsonSchema: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] } },
          ),
        )
      ).at(-1);
      assert.equal(typeof JSON.parse(done.text).ok, 'boolean');
    });

    it('stops when its caller aborts, and serves the next request', async () => {
      const ac = new AbortController();
      let n = 0;
      await assert.rejects(
        (async () => {
          for await (const e of m.generate({ kind: 'completion', prompt: 'long' }, { maxTokens: 500 }, ac.signal))
            if (e.type === 'text' && ++n === 2) ac.abort();
        })(),
        (e: unknown) => (e as Error).name === 'AbortError',
      );
      const done = (await collect(m.generate({ kind: 'completion', prompt: 'next' }, { maxTokens: 3 }))).at(-1);
      assert.equal(done.usage.completionTokens, 3);
    });

    it('embeds texts', async () => {
      const r = await m.embed(['a', 'b c']);
      assert.equal(r.vectors.length, 2);
      assert.equal(r.vectors[0]!.length, fx.hiddenSize);
      assert.ok(r.tokens >= 3);
    });
  });
}

const tiny = ensureTinyQwen();
const gguf = new GgufRuntime({ log: silentLogger(), clock: systemClock });

runLlmConformance('gguf (node-llama-cpp in a child process)', {
  hiddenSize: 16,
  async load() {
    const lm: LoadedModel = await gguf.load({
      name: 'tiny',
      format: 'gguf',
      file: tiny,
      options: { threads: 1, contextSize: 512, parallel: 1 },
    });
    return { model: lm.llm!, close: () => lm.close() };
  },
});

runLlmConformance("remote (OpenAI-compatible upstream: the site's own /v1 serving the tiny Qwen)", {
  hiddenSize: 16,
  async load() {
    const registry = new Registry();
    const host = new ModelHost({
      runtimes: new RuntimeRegistry().register(gguf),
      fetchModel: async () => tiny,
      clock: systemClock,
      log: silentLogger(),
      registry,
    });
    await host.start({
      name: 'upstream',
      version: '1.0.0',
      deploymentId: 'd',
      manifest: parseManifest({
        apiVersion: 'edgeweave/v1',
        kind: 'App',
        metadata: { name: 'upstream', version: '1.0.0' },
        spec: {
          models: [{ name: 'q', format: 'gguf', sha256: 'a'.repeat(64), runtime: { threads: 1, contextSize: 512, parallel: 1 } }],
          endpoints: [{ name: 'qwen', model: 'q', kind: 'chat' }],
        },
      }),
    });
    const app: FastifyInstance = Fastify();
    registerOpenAi(app, { host, llm: new LlmService(host, registry, systemClock), log: silentLogger() });
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const lm = await new RemoteRuntime({ log: silentLogger(), clock: systemClock }).load({
      name: 'r',
      format: 'remote',
      file: '',
      options: { upstream: { baseUrl: `${url}/v1`, model: 'qwen' } },
    });
    return {
      model: lm.llm!,
      async close() {
        await lm.close();
        await app.close();
        await host.close();
      },
    };
  },
});
