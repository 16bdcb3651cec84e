import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import OpenAI, { APIError } from 'openai';
import { RemoteRuntime } from '../src/inference/llm/remote.ts';
import { createLogger } from '../src/lib/logger.ts';
import { systemClock } from '../src/lib/clock.ts';
import { isEwError } from '../src/contracts/errors.ts';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';

/**
 * STAND-IN: a local OpenAI-compatible server standing in for a hosted model (vLLM, a hosted Qwen
 * endpoint), the one fake this project allows — a hosted model cannot run on this machine. It
 * speaks OpenAI's wire format (SSE chunks, usage, error bodies); each test scripts its answers.
 */
class StandInOpenAiServer {
  server!: Server;
  url = '';
  requests: { path: string; auth?: string; body: any }[] = [];
  /** Answers, one per request, in order; the default streams "Hello" " world". */
  script: ((req: IncomingMessage, res: ServerResponse, body: any) => void | Promise<void>)[] = [];
  closedEarly = 0;

  async start(): Promise<void> {
    this.server = createServer(async (req, res) => {
      let raw = '';
      for await (const c of req) raw += c;
      const body = raw ? JSON.parse(raw) : undefined;
      this.requests.push({ path: req.url!, auth: req.headers.authorization, body });
      res.on('close', () => {
        if (!res.writableFinished) this.closedEarly++;
      });
      const step = this.script.shift() ?? StandInOpenAiServer.stream(['Hello', ' world']);
      await step(req, res, body);
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as { port: number }).port}/v1`;
  }

  static stream(pieces: string[], opts: { hold?: Promise<void>; usage?: boolean } = {}) {
    return async (_req: IncomingMessage, res: ServerResponse, body: any) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const chat = !!body.messages;
      const ev = (o: unknown) => res.write(`data: ${JSON.stringify(o)}\n\n`);
      for (const [i, p] of pieces.entries()) {
        ev({
          id: 'x',
          object: 'chat.completion.chunk',
          choices: [chat ? { index: 0, delta: { content: p }, finish_reason: null } : { index: 0, text: p, finish_reason: null }],
        });
        if (i === 0 && opts.hold) await opts.hold;
        if (res.destroyed) return;
      }
      ev({ id: 'x', choices: [{ index: 0, delta: {}, finish_reason: 'length' }] });
      if (opts.usage !== false)
        ev({ id: 'x', choices: [], usage: { prompt_tokens: 9, completion_tokens: pieces.length, total_tokens: 9 + pieces.length } });
      res.end('data: [DONE]\n\n');
    };
  }

  static fail(status: number, message: string, code?: string) {
    return (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message, type: 'invalid_request_error', code: code ?? null, param: null } }));
    };
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

const KEY = 'sk-upstream-SECRET-4242-never-log-me';

describe('remote runtime against an OpenAI-compatible upstream (stand-in server)', () => {
  const up = new StandInOpenAiServer();
  const logs: string[] = [];
  const log = createLogger({
    name: 'test',
    level: 'debug',
    destination: new Writable({
      write(c, _e, cb) {
        logs.push(String(c));
        cb();
      },
    }),
  });
  before(() => up.start());
  after(() => up.stop());
  const model = (extra = {}) =>
    new RemoteRuntime({ log, clock: systemClock }).load({
      name: 'big-qwen',
      format: 'remote',
      file: '',
      options: { upstream: { baseUrl: up.url, model: 'Qwen/Qwen2.5-72B-Instruct', apiKey: KEY, retries: 2, ...extra } },
    });
  const run = async (m: Awaited<ReturnType<typeof model>>, signal?: AbortSignal) => {
    const evs: any[] = [];
    for await (const ev of m.llm!.generate(
      { kind: 'chat', messages: [{ role: 'user', content: 'hi' }] },
      { maxTokens: 20, temperature: 0.2 },
      signal,
    ))
      evs.push(ev);
    return evs;
  };

  it("streams the upstream's answer through with its usage, sending the key as a bearer token", async () => {
    const m = await model();
    up.requests = [];
    const evs = await run(m);
    assert.deepEqual(
      evs.map((e) => (e.type === 'text' ? e.text : e)),
      ['Hello', ' world', { type: 'done', finishReason: 'length', text: 'Hello world', usage: { promptTokens: 9, completionTokens: 2 } }],
    );
    assert.equal(up.requests[0]!.auth, `Bearer ${KEY}`);
    assert.equal(up.requests[0]!.path, '/v1/chat/completions');
    assert.deepEqual(
      [up.requests[0]!.body.model, up.requests[0]!.body.stream, up.requests[0]!.body.max_tokens, up.requests[0]!.body.temperature],
      ['Qwen/Qwen2.5-72B-Instruct', true, 20, 0.2],
    );
  });

  it('passes tokens on as they come (not after the upstream finishes)', async () => {
    const m = await model();
    let release!: () => void;
    up.script.push(
      StandInOpenAiServer.stream(['first', ' second'], {
        hold: new Promise<void>((r) => {
          release = r;
        }),
      }),
    );
    const it = m.llm!.generate({ kind: 'chat', messages: [{ role: 'user', content: 'x' }] }, { maxTokens: 5 })[Symbol.asyncIterator]();
    const first = await it.next(); // arrives while the upstream still holds the rest
    assert.deepEqual(first.value, { type: 'text', text: 'first', tokens: 1 });
    release();
    const rest: any[] = [];
    for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
    assert.equal(rest.at(-1).text, 'first second');
  });

  it('retries 503 and connection failures with backoff, then answers; gives UPSTREAM_FAILED after its retries', async () => {
    const m = await model();
    up.requests = [];
    up.script.push(StandInOpenAiServer.fail(503, 'overloaded'), (_q, res) => {
      res.destroy();
    });
    const evs = await run(m);
    assert.equal(evs.at(-1).text, 'Hello world');
    assert.equal(up.requests.length, 3);
    up.script.push(
      StandInOpenAiServer.fail(503, 'overloaded'),
      StandInOpenAiServer.fail(502, 'bad gateway'),
      StandInOpenAiServer.fail(500, 'boom'),
    );
    await assert.rejects(
      run(m),
      (e: unknown) => isEwError(e, 'UPSTREAM_FAILED') && /500: boom \(after 3 attempts\)/.test((e as Error).message),
    );
  });

  it('does not retry a request the upstream refuses, and maps its context-length error', async () => {
    const m = await model();
    up.requests = [];
    up.script.push(StandInOpenAiServer.fail(400, "This model's maximum context length is 32768 tokens", 'context_length_exceeded'));
    await assert.rejects(run(m), (e: unknown) => isEwError(e, 'CONTEXT_LENGTH_EXCEEDED'));
    up.script.push(StandInOpenAiServer.fail(401, 'Incorrect API key provided'));
    await assert.rejects(run(m), (e: unknown) => isEwError(e, 'UPSTREAM_FAILED') && /401: Incorrect API key/.test((e as Error).message));
    assert.equal(up.requests.length, 2);
  });

  it('times out an upstream that does not answer', async () => {
    const m = await model({ timeoutMs: 300, retries: 0 });
    let unblock!: () => void;
    up.script.push(async (_q, res) => {
      await new Promise<void>((r) => {
        unblock = r;
      });
      res.end();
    });
    await assert.rejects(run(m), (e: unknown) => isEwError(e, 'UPSTREAM_FAILED') && /no answer within 300 ms/.test((e as Error).message));
    unblock();
  });

  it('closes the upstream stream when its caller goes away', async () => {
    const m = await model();
    const before = up.closedEarly;
    let release!: () => void;
    up.script.push(
      StandInOpenAiServer.stream(['a', 'b', 'c'], {
        hold: new Promise<void>((r) => {
          release = r;
        }),
      }),
    );
    const ac = new AbortController();
    const it = m
      .llm!.generate({ kind: 'chat', messages: [{ role: 'user', content: 'x' }] }, { maxTokens: 5 }, ac.signal)
      [Symbol.asyncIterator]();
    await it.next();
    ac.abort();
    await assert.rejects(it.next(), (e: unknown) => (e as Error).name === 'AbortError');
    await waitFor('upstream connection closed', () => up.closedEarly > before);
    release();
  });

  it('never writes the key to a log', () => {
    assert.ok(logs.length > 0, 'the retries above were logged');
    assert.ok(!logs.some((l) => l.includes(KEY)));
  });
});

describe('a site serving a remote model: manifest upstream, key from a site secret, /v1 streaming through', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  const up = new StandInOpenAiServer();
  before(async () => {
    await up.start();
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { tier: 'cloud-llm' } });
    mkdirSync(join(edge.dataDir, 'secrets'), { recursive: true });
    writeFileSync(join(edge.dataDir, 'secrets', 'qwen-key'), KEY, { mode: 0o600 });
  });
  after(async () => {
    await edge?.stop();
    await cloud?.stop();
    await up.stop();
  });

  it("serves the upstream through the site's OpenAI API", async () => {
    const manifest = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'escalation', version: '1.0.0' },
      spec: {
        models: [
          { name: 'big', format: 'remote', upstream: { baseUrl: up.url, model: 'qwen2.5-72b', apiKeySecret: 'qwen-key', retries: 1 } },
        ],
        endpoints: [{ name: 'big-qwen', model: 'big', kind: 'chat', limits: { maxTokens: 100 } }],
      },
    };
    const pushed = await cloud.api('POST', '/api/v1/apps', { manifest });
    assert.equal(pushed.status, 201, JSON.stringify(pushed.body));
    await cloud.api('POST', '/api/v1/deployments', { app: 'escalation', version: '1.0.0', selector: { tier: 'cloud-llm' } });
    const client = new OpenAI({ baseURL: `${edge.handle.apiUrl}/v1`, apiKey: edge.apiKey, maxRetries: 0 });
    await waitFor('endpoint listed', async () => (await client.models.list()).data.some((m) => m.id === 'big-qwen'), 30_000);
    up.requests = [];
    const stream = await client.chat.completions.create({
      model: 'big-qwen',
      messages: [{ role: 'user', content: 'escalate' }],
      stream: true,
      max_tokens: 50,
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) {
      text += c.choices[0]?.delta?.content ?? '';
      if (c.usage) usage = c.usage;
    }
    assert.equal(text, 'Hello world');
    assert.deepEqual(usage, { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 });
    assert.equal(up.requests[0]!.auth, `Bearer ${KEY}`);
    assert.equal(up.requests[0]!.body.model, 'qwen2.5-72b');
    up.script.push(StandInOpenAiServer.fail(503, 'down'), StandInOpenAiServer.fail(503, 'down'));
    await assert.rejects(
      client.chat.completions.create({ model: 'big-qwen', messages: [{ role: 'user', content: 'x' }] }),
      (e: unknown) =>
        e instanceof APIError && e.status === 502 && (e.error as any).code === 'upstream_failed' && !JSON.stringify(e.error).includes(KEY),
    );
  });
});
