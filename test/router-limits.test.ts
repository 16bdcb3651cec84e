import { it } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { APIError } from 'openai';
import { startTestCloud, removeDirs } from './support/harness.ts';

/** Per-key limits on the cloud's inference endpoints: 429 with Retry-After, in each protocol's error shape. */
it("limits each API key's inference rate, answers 429 with Retry-After, and leaves other keys and the control plane alone", async () => {
  const cloud = await startTestCloud({ inferRate: 0.5, inferBurst: 2, inferConcurrency: 10 });
  try {
    const post = (key: string) =>
      fetch(`${cloud.url}/v2/models/none/infer`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1], data: [1] }] }),
      });
    const first = await post(cloud.adminKey);
    assert.equal(first.status, 404, 'within the burst: the request is served (no such endpoint)');
    assert.equal((await post(cloud.adminKey)).status, 404);
    const limited = await post(cloud.adminKey);
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('retry-after'), '2');
    const body = (await limited.json()) as any;
    assert.equal(body.code, 'RATE_LIMITED');
    assert.match(body.error, /0\.5 inference requests per second \(bursts of 2\)/);
    // OpenAI's shape on /v1; the official client sees a RateLimitError.
    const client = new OpenAI({ baseURL: `${cloud.url}/v1`, apiKey: cloud.adminKey, maxRetries: 0 });
    const e = await client.chat.completions.create({ model: 'none', messages: [{ role: 'user', content: 'x' }] }).catch((x) => x);
    assert.ok(e instanceof APIError && e.status === 429);
    assert.deepEqual([(e.error as any).code, (e.error as any).type], ['rate_limited', 'rate_limit_error']);
    // Another key has its own bucket; the control-plane API is not limited by this.
    const other = (await cloud.api('POST', '/api/v1/keys', { name: 'other' })).body.key as string;
    assert.equal((await post(other)).status, 404);
    assert.equal((await cloud.api('GET', '/api/v1/sites')).status, 200);
  } finally {
    await cloud.stop();
    removeDirs(cloud.dataDir);
  }
});
