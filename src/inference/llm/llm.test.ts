import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FairQueue } from './fair-queue.ts';
import { RuleLlmCalls } from './rule-calls.ts';
import { checkJsonSchema } from './json-schema.ts';
import { sse } from './remote.ts';
import { ManualClock } from '../../lib/clock.ts';
import { isEwError } from '../../contracts/errors.ts';

const tick = () => new Promise((r) => setImmediate(r));
// Heap measured after a forced GC: refused requests' garbage is not growth.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapUsed = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
};

describe("FairQueue (a language model's slots)", () => {
  it('hands freed slots to waiting clients in round-robin order, not arrival order', async () => {
    const q = new FairQueue(1);
    const order: string[] = [];
    const first = await q.acquire('rule-a');
    const granted: (() => void)[] = [];
    const waits = ['rule-a', 'rule-a', 'rule-a', 'api-b', 'api-b', 'rule-c'].map((c, i) =>
      q.acquire(c).then((release) => {
        order.push(`${c}#${i}`);
        granted.push(release);
      }),
    );
    assert.deepEqual(q.stats, { busy: 1, queued: 6, slots: 1 });
    first();
    for (let i = 0; i < waits.length; i++) {
      await tick();
      assert.equal(granted.length, 1, 'one slot, one holder');
      granted.shift()!();
    }
    await Promise.all(waits);
    // a flooding client (rule-a) gets one turn in three while others wait
    assert.deepEqual(order, ['rule-a#0', 'api-b#3', 'rule-c#5', 'rule-a#1', 'api-b#4', 'rule-a#2']);
    assert.deepEqual(q.stats, { busy: 0, queued: 0, slots: 1 });
  });

  it('is bounded: past maxQueued a request is refused at once with QUEUE_FULL', async () => {
    const q = new FairQueue(2, 3);
    await q.acquire('x');
    await q.acquire('x');
    const waiting = [q.acquire('x'), q.acquire('y'), q.acquire('z')];
    await assert.rejects(q.acquire('w'), (e: unknown) => isEwError(e, 'QUEUE_FULL'));
    q.failAll(new Error('closing'));
    for (const w of waiting) await assert.rejects(w, /closing/);
  });

  it('drops a waiter whose client goes away, and a release frees exactly one slot once', async () => {
    const q = new FairQueue(1);
    const held = await q.acquire('a');
    const ac = new AbortController();
    const gone = q.acquire('b', ac.signal);
    const next = q.acquire('c');
    ac.abort(new Error('client left'));
    await assert.rejects(gone, /client left/);
    assert.equal(q.stats.queued, 1);
    held();
    held();
    const r = await next;
    assert.deepEqual(q.stats, { busy: 1, queued: 0, slots: 1 });
    r();
  });

  it('memory stays bounded under a flood of refused requests', async () => {
    const q = new FairQueue(1, 100);
    await q.acquire('hog');
    const kept = Array.from({ length: 100 }, () => q.acquire('hog').catch(() => {}));
    const before = heapUsed();
    let refused = 0;
    for (let i = 0; i < 50_000; i++)
      await q.acquire(`c${i}`).catch(() => {
        refused++;
      });
    assert.equal(refused, 50_000);
    assert.equal(q.stats.queued, 100);
    const grew = heapUsed() - before;
    assert.ok(grew < 2 * 2 ** 20, `no growth with refused requests (${(grew / 2 ** 20).toFixed(2)} MiB)`);
    q.failAll(new Error('end'));
    await Promise.all(kept);
  });
});

describe('llm() calls of a rule', () => {
  it('parses JSON answers, runs at most `concurrency` at once, and enforces the token budget per minute', async () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1, 10, 0, 0));
    let running = 0;
    let peak = 0;
    const gates: (() => void)[] = [];
    const calls = new RuleLlmCalls(clock, async (c) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise<void>((r) => gates.push(r));
      running--;
      return { text: c.opts.jsonSchema ? '{"severity":"high"}' : `echo ${c.prompt}`, usage: { promptTokens: 10, completionTokens: 5 } };
    });
    const limits = { concurrency: 2, tokensPerMinute: 40 };
    const p = [
      calls.call('app', 'r', limits, 'ep', ['a']),
      calls.call('app', 'r', limits, 'ep', ['b', '{"json_schema": {"type": "object"}}']),
      calls.call('app', 'r', limits, 'ep', ['c']),
    ];
    await tick();
    assert.equal(running, 2);
    while (gates.length || running) {
      gates.shift()?.();
      await tick();
    }
    assert.deepEqual(await Promise.all(p), ['echo a', { severity: 'high' }, 'echo c']);
    assert.equal(peak, 2);
    // 45 tokens used of 40: the next call this minute is refused; next minute it runs again.
    await assert.rejects(
      calls.call('app', 'r', limits, 'ep', ['d']),
      (e: unknown) => isEwError(e, 'TOKEN_BUDGET_EXHAUSTED') && /rule r used its llm\(\) budget of 40 tokens/.test((e as Error).message),
    );
    clock.advance(60_000);
    const again = calls.call('app', 'r', limits, 'ep', ['e']);
    await tick();
    gates.shift()!();
    assert.equal(await again, 'echo e');
  });

  it('refuses a null prompt and an answer cut before its JSON closed', async () => {
    const calls = new RuleLlmCalls(new ManualClock(0), async () => ({
      text: '{"severity": "hi',
      usage: { promptTokens: 1, completionTokens: 1 },
    }));
    await assert.rejects(calls.call('a', 'r', {}, 'ep', [null]), /prompt is null/);
    await assert.rejects(calls.call('a', 'r', {}, 'ep', ['x', '{"json_schema": {"type": "object"}}']), /cut at max_tokens/);
  });
});

describe('JSON schemas for constrained output', () => {
  it('accepts what the grammar builder supports', () => {
    checkJsonSchema(
      {
        type: 'object',
        properties: {
          a: { enum: ['x', 'y'] },
          b: { type: 'array', items: { type: 'integer' }, maxItems: 3 },
          c: { type: ['string', 'null'], maxLength: 80 },
        },
        required: ['a'],
        additionalProperties: false,
      },
      'schema',
    );
  });
  it('refuses what it cannot enforce, with the path of the bad part', () => {
    for (const [schema, path] of [
      [{ type: 'object', properties: { a: { type: 'text' } } }, 'schema.properties.a.type'],
      [{ type: 'string', pattern: '^[a-z]+$' }, 'schema.pattern'],
      [{ type: 'string', format: 'email' }, 'schema.format'],
      [{ anyOf: [] }, 'schema.anyOf'],
      ['object', 'schema'],
    ] as const) {
      assert.throws(
        () => checkJsonSchema(schema, 'schema'),
        (e: unknown) => isEwError(e, 'RESPONSE_FORMAT_INVALID') && e.path === path,
        JSON.stringify(schema),
      );
    }
  });
});

describe('server-sent events from an upstream', () => {
  it("splits events across chunk boundaries, joins multi-line data, and bounds an event's size", async () => {
    const body = (parts: string[]) =>
      new ReadableStream<Uint8Array>({
        start(c) {
          for (const p of parts) c.enqueue(new TextEncoder().encode(p));
          c.close();
        },
      });
    const got: string[] = [];
    for await (const d of sse(body(['data: {"a"', ':1}\n\nda', 'ta: x\r\ndata: y\r\n\r\n: comment\n\ndata: [DONE]\n\n']))) got.push(d);
    assert.deepEqual(got, ['{"a":1}', 'x\ny', '[DONE]']);
    await assert.rejects(
      (async () => {
        for await (const _ of sse(body([`data: ${'x'.repeat(1.5 * 2 ** 20)}`]))) {
          /* */
        }
      })(),
      (e: unknown) => isEwError(e, 'UPSTREAM_FAILED'),
    );
  });
});
