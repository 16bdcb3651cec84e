import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestCloud, type TestCloud } from './support/harness.ts';
import { hashSecret, newSecret } from '../src/lib/secrets.ts';
import { topics } from '../src/contracts/topics.ts';
import { ENVELOPE_VERSION, LOG_LIMITS, boundLogLines } from '../src/contracts/messages.ts';
import { escapeControl } from '../src/lib/text.ts';
import { RESULTS_PAGE_BYTES } from '../src/cloud/api/routes.ts';

const app = (name: string, version: string, sha?: string) => ({
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name, version },
  spec: sha ? { models: [{ name: 'm', format: 'onnx', sha256: sha }] } : {},
});
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe("artifacts: a site downloads only what is deployed to it; a push references only its tenant's uploads", () => {
  let cloud: TestCloud;
  let otherKey: string;
  const file = randomBytes(4096);
  const put = async (key: string, body: Buffer) => ({
    status: (
      await cloud.handle.http.inject({
        method: 'PUT',
        url: `/api/v1/artifacts/${sha(body)}`,
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/octet-stream' },
        payload: body,
      })
    ).statusCode,
  });
  before(async () => {
    cloud = await startTestCloud();
    otherKey = newSecret('ewk');
    await cloud.handle.store.createTenant({ id: 'ten-other', name: 'other', createdAt: 1 });
    await cloud.handle.store.createApiKey({
      id: 'key-other',
      tenantId: 'ten-other',
      name: 'o',
      hash: hashSecret(otherKey),
      role: 'admin',
      createdAt: 1,
      revokedAt: null,
    });
    assert.equal((await put(cloud.adminKey, file)).status, 201);
  });
  after(async () => cloud?.stop());

  it('another tenant that only knows the sha256 can neither push it, read it, nor see it exists', async () => {
    const push = await cloud.api('POST', '/api/v1/apps', { manifest: app('thief', '1.0.0', sha(file)) }, otherKey);
    assert.equal(push.status, 404);
    assert.equal(push.body.code, 'ARTIFACT_NOT_FOUND');
    assert.equal(push.body.path, 'manifest.spec.models[0].sha256');
    assert.equal((await cloud.api('GET', `/api/v1/artifacts/${sha(file)}`, undefined, otherKey)).body.code, 'ARTIFACT_NOT_FOUND');
    assert.deepEqual((await cloud.api('GET', `/api/v1/artifacts/${sha(file)}/status`, undefined, otherKey)).body, {
      sha256: sha(file),
      complete: false,
      size: 0,
      received: 0,
    });
    // An empty PUT does not claim it: the bytes must come and hash right.
    const empty = await cloud.handle.http.inject({
      method: 'PUT',
      url: `/api/v1/artifacts/${sha(file)}`,
      headers: {
        authorization: `Bearer ${otherKey}`,
        'content-type': 'application/octet-stream',
        'content-range': `bytes 0-0/${file.length}`,
      },
      payload: Buffer.alloc(1),
    });
    assert.equal(empty.statusCode, 200);
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: app('thief', '1.0.0', sha(file)) }, otherKey)).status, 404);
  });

  it('a tenant that uploads the same bytes itself owns them too', async () => {
    const other = randomBytes(100);
    assert.equal((await put(otherKey, other)).status, 201);
    assert.equal((await put(cloud.adminKey, other)).status, 201, 'the second tenant sends and proves the bytes');
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: app('mine', '1.0.0', sha(other)) })).status, 201);
  });

  it('a site gets 403 for a file no deployment targeting it references, 200 once one does', async () => {
    const enroll = async (tier: string) =>
      (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token({ labels: { tier } }) }, '')).body as {
        siteId: string;
        mqtt: { password: string };
      };
    const a = await enroll('a');
    const b = await enroll('b');
    const get = (s: { siteId: string; mqtt: { password: string } }) =>
      fetch(`${cloud.url}/api/v1/artifacts/${sha(file)}`, {
        headers: { authorization: `Basic ${Buffer.from(`${s.siteId}:${s.mqtt.password}`).toString('base64')}` },
      });
    const before = await get(a);
    assert.equal(before.status, 403);
    assert.equal(((await before.json()) as { code: string }).code, 'ARTIFACT_NOT_ALLOWED');
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: app('model-app', '1.0.0', sha(file)) })).status, 201);
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'model-app', version: '1.0.0', selector: { tier: 'a' } })).status,
      201,
    );
    const ok = await get(a);
    assert.equal(ok.status, 200);
    assert.deepEqual(Buffer.from(await ok.arrayBuffer()), file);
    assert.equal((await get(b)).status, 403, 'the other pool is not targeted');
  });
});

describe('smaller points of issue 8', () => {
  let cloud: TestCloud;
  before(async () => {
    cloud = await startTestCloud();
  });
  after(async () => cloud?.stop());

  it('a key cannot revoke the last admin key of its tenant', async () => {
    const keys = (await cloud.api('GET', '/api/v1/keys')).body.items as { id: string }[];
    assert.equal(keys.length, 1);
    const r = await cloud.api('DELETE', `/api/v1/keys/${keys[0]!.id}`);
    assert.equal(r.status, 409);
    assert.equal(r.body.code, 'LAST_ADMIN_KEY');
    assert.equal((await cloud.api('GET', '/api/v1/keys')).status, 200, 'still in');
    const second = (await cloud.api('POST', '/api/v1/keys', { name: 'ci' })).body as { id: string; key: string };
    assert.equal((await cloud.api('DELETE', `/api/v1/keys/${second.id}`)).status, 204, 'not the last one: revoked');
    assert.equal((await cloud.api('DELETE', `/api/v1/keys/${keys[0]!.id}`, undefined, second.key)).status, 401, 'revoked at once');
    assert.equal((await cloud.api('DELETE', `/api/v1/keys/${keys[0]!.id}`)).body.code, 'LAST_ADMIN_KEY', 'the last one again');
  });

  it('identical deployment submissions are idempotent, concurrent ones included; a changed one is new', async () => {
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: app('idem', '1.0.0') })).status, 201);
    const body = { app: 'idem', version: '1.0.0', selector: { tier: 'x' }, strategy: { type: 'rolling', maxUnavailable: 2 } };
    const all = await Promise.all([1, 2, 3].map(() => cloud.api('POST', '/api/v1/deployments', body)));
    assert.deepEqual(all.map((r) => r.status).sort(), [200, 200, 201]);
    assert.equal(new Set(all.map((r) => r.body.id)).size, 1, 'one deployment');
    assert.equal((await cloud.api('GET', '/api/v1/deployments')).body.items.filter((d: { app: string }) => d.app === 'idem').length, 1);
    assert.equal(
      (await cloud.api('GET', '/api/v1/rollouts')).body.items.filter((r: { app: string }) => r.app === 'idem').length,
      1,
      'one rollout',
    );
    const changed = await cloud.api('POST', '/api/v1/deployments', { ...body, strategy: { type: 'all' } });
    assert.equal(changed.status, 201);
    assert.notEqual(changed.body.id, all[0]!.body.id);
  });

  it("bounds a site's logs answer and keeps it printable", async () => {
    // The cloud asks; this raw site answers with too many, too long lines full of terminal escapes.
    const en = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
    const c: MqttClient = await mqtt.connectAsync(en.mqtt.url, {
      clientId: en.mqtt.clientId,
      username: en.mqtt.username,
      password: en.mqtt.password,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    try {
      await c.publishAsync(
        topics.reported(en.siteId),
        JSON.stringify({
          v: ENVELOPE_VERSION,
          id: randomUUID(),
          ts: 1,
          type: 'status',
          body: {
            agentVersion: '1',
            bootId: 'b',
            uptimeS: 1,
            heartbeatIntervalS: 60,
            generation: 0,
            apps: [],
            system: {
              hostname: 'h',
              platform: 'linux',
              arch: 'x64',
              cores: 1,
              memoryTotalBytes: 1,
              memoryFreeBytes: 1,
              diskTotalBytes: 1,
              diskFreeBytes: 1,
              loadAvg1: 0,
            },
            runtimes: [],
            accelerators: [],
            outbox: { pending: 0, dropped: 0 },
            devices: { connected: 0, messagesIn: 0 },
          },
        }),
        { qos: 1 },
      );
      await c.subscribeAsync(topics.rpcRequests(en.siteId), { qos: 1 });
      c.on('message', (topic, payload) => {
        const req = JSON.parse(payload.toString());
        const lines = Array.from({ length: 40 }, (_, i) => ({ time: i, line: `\u001b]0;pwned\u0007\u001b[2J${'x'.repeat(10_000)}` }));
        void c
          .publishAsync(
            topics.rpcResponse(en.siteId, topic.split('/').at(-1)!),
            JSON.stringify({ v: ENVELOPE_VERSION, id: req.id, ts: 1, type: 'rpc-response', body: { ok: true, result: { lines } } }),
            { qos: 1 },
          )
          .catch(() => {});
      });
      const r = await cloud.api('GET', `/api/v1/sites/${en.siteId}/logs?limit=10`);
      assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
      assert.equal(r.body.lines.length, 10);
      for (const l of r.body.lines) assert.ok(l.line.length <= LOG_LIMITS.lineChars + 40, `line of ${l.line.length} chars`);
      const printed = escapeControl(r.body.lines[0].line);
      assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(printed), 'nothing the terminal would act on');
      assert.ok(printed.startsWith('\\x1b]0;pwned\\x07\\x1b[2J'));
    } finally {
      c.end(true);
    }
  });

  it('pages results by bytes too: forty 250 KB results never come back in one answer', async () => {
    const en = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
    const blob = 'z'.repeat(250_000);
    await cloud.handle.store.insertUplink(
      Array.from({ length: 40 }, (_, i) => ({ siteId: en.siteId, msgId: `m${i}`, stream: 'big', at: i, receivedAt: i, data: { i, blob } })),
    );
    const seen: number[] = [];
    let after: number | undefined;
    let pages = 0;
    for (;;) {
      const r = await cloud.api('GET', `/api/v1/results?site=${en.siteId}&limit=100${after !== undefined ? `&after=${after}` : ''}`);
      assert.equal(r.status, 200);
      assert.ok(JSON.stringify(r.body).length <= RESULTS_PAGE_BYTES + 64 * 1024, 'one page stays within the byte bound');
      seen.push(...r.body.items.map((x: { data: { i: number } }) => x.data.i));
      pages++;
      if (r.body.next === null) break;
      after = r.body.next;
    }
    assert.ok(pages >= 2, `${pages} page(s)`);
    assert.deepEqual(
      seen,
      Array.from({ length: 40 }, (_, i) => i),
      'every result once, in order',
    );
  });

  it('boundLogLines keeps the newest lines within the byte bound', () => {
    const lines = Array.from({ length: 5000 }, (_, i) => ({ time: i, line: 'y'.repeat(1000) }));
    const out = boundLogLines({ lines });
    assert.ok(out.length < 5000 && out.length > 100);
    assert.equal(out.at(-1)!.time, 4999, 'the newest line is kept');
    assert.ok(JSON.stringify(out).length <= LOG_LIMITS.totalBytes);
    assert.throws(() => boundLogLines({ lines: 'nope' }), /malformed/);
  });
});
