import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { startTestCloud, startTestEdge, type TestCloud, type TestEdge } from './support/harness.ts';
import { ERROR_CODES } from '../src/contracts/errors.ts';
import { hashSecret, newSecret } from '../src/lib/secrets.ts';

/** Sends raw bytes (optionally trickled one byte at a time) and reads the answer until the server closes. */
function rawHttp(
  url: string,
  head: string,
  o: { trickle?: string; everyMs?: number } = {},
): Promise<{ status: number; headers: string; body: any; bytesTrickled: number }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname);
    let data = '';
    let trickled = 0;
    let timer: NodeJS.Timeout | undefined;
    s.on('data', (d) => {
      data += d.toString('utf8');
    });
    s.on('error', () => {});
    s.once('connect', () => {
      s.write(head);
      if (o.trickle) {
        // A slow client: one byte at a time, for as long as the server keeps the connection.
        timer = setInterval(() => {
          if (s.destroyed || !s.writable) return;
          s.write(o.trickle![trickled % o.trickle!.length]!);
          trickled++;
        }, o.everyMs ?? 50);
      }
    });
    s.once('close', () => {
      clearInterval(timer);
      const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
      if (!m) return reject(new Error(`no HTTP answer: ${JSON.stringify(data.slice(0, 200))}`));
      const [headers, body = ''] = data.split('\r\n\r\n');
      let parsed: unknown = body;
      try {
        parsed = JSON.parse(body);
      } catch {
        /* not JSON */
      }
      resolve({ status: Number(m[1]), headers: headers!, body: parsed, bytesTrickled: trickled });
    });
  });
}

/** The one error shape of docs/errors.md: a known code whose status is the one answered. */
function assertErrorShape(r: { status: number; body: any }, code: string): void {
  assert.equal(typeof r.body, 'object', `a JSON body, got ${JSON.stringify(r.body)}`);
  assert.deepEqual(
    Object.keys(r.body).filter((k) => !['code', 'message', 'path'].includes(k)),
    [],
    `only code, message, path: ${JSON.stringify(r.body)}`,
  );
  assert.equal(r.body.code, code, JSON.stringify(r.body));
  assert.equal(typeof r.body.message, 'string');
  assert.equal(r.status, ERROR_CODES[code as keyof typeof ERROR_CODES].status);
}

const timeouts = { headersTimeoutMs: 400, requestTimeoutMs: 1000 };

describe('HTTP time limits and error shapes', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const file = randomBytes(1000);
  before(async () => {
    cloud = await startTestCloud({ httpTimeouts: timeouts });
    edge = await startTestEdge(cloud, { httpTimeouts: timeouts });
    const up = await fetch(`${cloud.url}/api/v1/artifacts/${sha(file)}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: file,
    });
    assert.equal(up.status, 201);
  });
  after(async () => {
    await edge?.stop();
    await cloud?.stop();
  });

  for (const [who, url] of [
    ['cloud', () => cloud.url],
    ['site', () => edge.handle.apiUrl],
  ] as const) {
    it(`${who}: a client trickling its headers is cut with 408 REQUEST_TIMEOUT`, async () => {
      const r = await rawHttp(url(), 'POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nX-Slow: ', { trickle: 'a' });
      assertErrorShape(r, 'REQUEST_TIMEOUT');
      assert.match(r.headers, /connection: close/i);
    });

    it(`${who}: a client trickling its body is cut with 408 REQUEST_TIMEOUT`, async () => {
      const target =
        who === 'cloud'
          ? 'POST /api/v1/enroll'
          : `POST /api/v1/uplink/s HTTP/1.1\r\nAuthorization: Bearer ${edge.apiKey}`.replace(' HTTP/1.1', '');
      const [line, ...extra] = target.split('\r\n');
      const r = await rawHttp(
        url(),
        `${line} HTTP/1.1\r\nHost: x\r\n${extra.map((h) => `${h}\r\n`).join('')}Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"records":["`,
        { trickle: 'a' },
      );
      assertErrorShape(r, 'REQUEST_TIMEOUT');
    });

    it(`${who}: fastify's and Node's own errors follow docs/errors.md`, async () => {
      assertErrorShape(await rawHttp(url(), 'GET /api/v1/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 'MALFORMED_REQUEST');
      const longParam = who === 'cloud' ? `GET /api/v1/sites/${'a'.repeat(300)}` : `POST /api/v1/streams/${'a'.repeat(300)}/s`;
      assertErrorShape(await rawHttp(url(), `${longParam} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`), 'URI_TOO_LONG');
      assertErrorShape(
        await rawHttp(url(), `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`),
        'HEADERS_TOO_LARGE',
      );
      assertErrorShape(await rawHttp(url(), 'HELLO THERE\r\n\r\n'), 'MALFORMED_REQUEST');
      assertErrorShape(
        await rawHttp(url(), 'POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc'),
        'MALFORMED_REQUEST',
      );
    });
  }

  it('answers an impossible Range on an artifact with 416 RANGE_NOT_SATISFIABLE and the size', async () => {
    for (const range of ['bytes=100-2', 'bytes=5000-', 'bytes=abc', 'bytes=0-1,5-6']) {
      const res = await fetch(`${cloud.url}/api/v1/artifacts/${sha(file)}`, {
        headers: { authorization: `Bearer ${cloud.adminKey}`, range },
      });
      assertErrorShape({ status: res.status, body: await res.json() }, 'RANGE_NOT_SATISFIABLE');
      assert.equal(res.headers.get('content-range'), `bytes */${file.length}`, range);
    }
    const ok = await fetch(`${cloud.url}/api/v1/artifacts/${sha(file)}`, {
      headers: { authorization: `Bearer ${cloud.adminKey}`, range: 'bytes=10-19' },
    });
    assert.equal(ok.status, 206);
    assert.deepEqual(Buffer.from(await ok.arrayBuffer()), file.subarray(10, 20));
    const suffix = await fetch(`${cloud.url}/api/v1/artifacts/${sha(file)}`, {
      headers: { authorization: `Bearer ${cloud.adminKey}`, range: 'bytes=-5' },
    });
    assert.deepEqual(Buffer.from(await suffix.arrayBuffer()), file.subarray(995));
  });
});

describe('cloud API rate limits (429 with Retry-After)', () => {
  let cloud: TestCloud;
  before(async () => {
    // Nearly no refill, so what the test counts is exactly what it spent.
    cloud = await startTestCloud({
      rateLimits: {
        key: { burst: 5, perSecond: 0.001 },
        address: { burst: 40, perSecond: 0.001 },
        anonymous: { burst: 3, perSecond: 0.001 },
      },
    });
  });
  after(async () => cloud?.stop());

  async function newKey(): Promise<string> {
    const key = newSecret('ewk');
    const tenant = (await cloud.handle.store.listTenants())[0]!;
    await cloud.handle.store.createApiKey({
      id: `key-${randomBytes(4).toString('hex')}`,
      tenantId: tenant.id,
      name: 't',
      hash: hashSecret(key),
      role: 'admin',
      createdAt: 1,
      revokedAt: null,
    });
    return key;
  }

  it('per key: the sixth call of a burst of five is 429 with Retry-After; another key still works', async () => {
    const k1 = await newKey();
    const k2 = await newKey();
    for (let i = 0; i < 5; i++) assert.equal((await cloud.overHttp('GET', '/api/v1/sites', undefined, k1)).status, 200);
    const res = await fetch(`${cloud.url}/api/v1/sites`, { headers: { authorization: `Bearer ${k1}` } });
    assertErrorShape({ status: res.status, body: await res.json() }, 'RATE_LIMITED');
    assert.ok(Number(res.headers.get('retry-after')) >= 1, `Retry-After: ${res.headers.get('retry-after')}`);
    assert.equal((await cloud.overHttp('GET', '/api/v1/sites', undefined, k2)).status, 200);
  });

  it('per address without valid credentials: enrollment with bad tokens stops at 429 before any token is checked', async () => {
    for (let i = 0; i < 2; i++) assert.equal((await cloud.overHttp('POST', '/api/v1/enroll', { token: `ewj_wrong${i}` }, '')).status, 401);
    assert.equal((await cloud.overHttp('GET', '/api/v1/keys', undefined, 'ewk_bad')).status, 401, 'a failed login spends it too');
    const r = await cloud.overHttp('POST', '/api/v1/enroll', { token: 'ewj_wrong' }, '');
    assertErrorShape(r, 'RATE_LIMITED');
    // Failed logins spend the same budget; a request with a key is still checked (clients behind
    // one NAT keep working), within the address limit.
    assert.equal((await cloud.overHttp('GET', '/api/v1/sites', undefined, 'ewk_guess')).status, 401);
    assert.equal((await cloud.overHttp('GET', '/api/v1/sites')).status, 200);
    assert.equal((await fetch(`${cloud.url}/openapi.json`)).status, 200, 'public reads are not anonymous writes');
  });

  it('per address: every request counts, whatever the key', async () => {
    let status = 200;
    let n = 0;
    while (status !== 429 && n < 100) {
      status = (await cloud.overHttp('GET', '/api/v1/sites', undefined, await newKey())).status;
      n++;
    }
    assert.equal(status, 429);
    assert.ok(n < 40, `the address was limited after ${n} more calls (40 in all)`);
    assert.equal((await fetch(`${cloud.url}/healthz`)).status, 200, 'health probes are not limited');
  });
});

describe('the CLI and the agent honour Retry-After', () => {
  it('an agent enrolling behind a busy address waits and enrolls', async () => {
    const { enroll } = await import('../src/edge/enroll.ts');
    const { tempDir } = await import('./support/harness.ts');
    const cloud = await startTestCloud({ rateLimits: { anonymous: { burst: 1, perSecond: 1 } } });
    try {
      const token = await cloud.token();
      assert.equal((await cloud.overHttp('POST', '/api/v1/enroll', { token: 'ewj_wrong' }, '')).status, 401); // spends the address's budget
      const creds = await enroll({ cloudUrl: cloud.url, token, dataDir: tempDir('enroll') });
      assert.match(creds.siteId, /^[a-z0-9-]+$/);
    } finally {
      await cloud.stop();
    }
  });

  it('waits as told and retries a rate-limited call', async () => {
    const { ApiClient } = await import('../src/cli/client.ts');
    const cloud = await startTestCloud({ rateLimits: { key: { burst: 1, perSecond: 1 } } });
    try {
      const c = new ApiClient({ cloud: cloud.url, apiKey: cloud.adminKey });
      await c.api('GET /api/v1/sites');
      const r = await c.api('GET /api/v1/sites'); // 429 first, then served
      assert.deepEqual(r.items, []);
    } finally {
      await cloud.stop();
    }
  });
});
