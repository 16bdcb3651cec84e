import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { startTestCloud, tempDir, removeDirs, type TestCloud } from './support/harness.ts';
import { spawnCli } from './support/proc.ts';
import { startCloud } from '../src/cloud/main.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { isEwError } from '../src/contracts/errors.ts';

const manifest = { apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name: 'idem', version: '1.0.0' }, spec: {} };

describe('idempotency keys on mutating API calls', () => {
  let cloud: TestCloud;
  before(async () => {
    cloud = await startTestCloud();
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
  });
  after(async () => {
    await cloud?.stop();
    removeDirs(cloud.dataDir);
  });

  async function call(key: string | undefined, body: unknown) {
    const res = await fetch(new URL('/api/v1/deployments', cloud.url), {
      method: 'POST',
      headers: {
        authorization: `Bearer ${cloud.adminKey}`,
        'content-type': 'application/json',
        ...(key ? { 'idempotency-key': key } : {}),
      },
      body: JSON.stringify(body),
    });
    return { status: res.status, replayed: res.headers.get('idempotent-replayed'), body: (await res.json()) as any };
  }

  it('answers a retried request with the first answer and writes once', async () => {
    const key = randomUUID();
    const body = { app: 'idem', version: '1.0.0', selector: { tier: 'a' } };
    const first = await call(key, body);
    assert.equal(first.status, 201);
    const again = await call(key, body);
    assert.equal(again.status, 201);
    assert.equal(again.replayed, 'true');
    assert.deepEqual(again.body, first.body);
    const list = (await cloud.api('GET', '/api/v1/deployments')).body;
    assert.equal(
      (list.items ?? list).filter((d: { selector: unknown }) => JSON.stringify(d.selector) === JSON.stringify({ tier: 'a' })).length,
      1,
    );
  });

  it('refuses a key reused for another request, and a malformed key', async () => {
    const key = randomUUID();
    assert.equal((await call(key, { app: 'idem', version: '1.0.0', selector: { tier: 'b' } })).status, 201);
    const other = await call(key, { app: 'idem', version: '1.0.0', selector: { tier: 'c' } });
    assert.equal(other.status, 422);
    assert.equal(other.body.code, 'IDEMPOTENCY_KEY_REUSED');
    const bad = await call('has space', { app: 'idem', version: '1.0.0', selector: { tier: 'd' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.path, 'headers.idempotency-key');
  });

  it('replays a client error (4xx) as the answer to that request', async () => {
    const key = randomUUID();
    const missing = await call(key, { app: 'nope', version: '9.9.9', selector: { tier: 'e' } });
    assert.equal(missing.status, 404);
    // A 4xx is the answer to that request, replayed as such.
    const again = await call(key, { app: 'nope', version: '9.9.9', selector: { tier: 'e' } });
    assert.equal(again.status, 404);
    assert.equal(again.replayed, 'true');
  });

  it("a claim in progress is another holder's until it goes stale; only its holder completes it", async () => {
    const store = cloud.handle.store;
    const key = randomUUID();
    const base = { scope: 's', key, fingerprint: 'f', staleMs: 30_000 };
    assert.deepEqual(await store.claimIdempotencyKey({ ...base, holder: 'a', now: 1_000 }), { claimed: true });
    const busy = await store.claimIdempotencyKey({ ...base, holder: 'b', now: 2_000 });
    assert.equal(busy.claimed, false);
    assert.deepEqual(
      await store.claimIdempotencyKey({ ...base, holder: 'b', now: 40_000 }),
      { claimed: true },
      'holder a died: b takes over',
    );
    await store.completeIdempotencyKey('s', key, 'a', { status: 201, body: '{}', at: 41_000 });
    const rec = await store.claimIdempotencyKey({ ...base, holder: 'c', now: 42_000 });
    assert.ok(!rec.claimed && rec.record.status === null, 'the old holder cannot complete a claim it lost');
    await store.completeIdempotencyKey('s', key, 'b', { status: 201, body: '{"ok":1}', at: 43_000 });
    const done = await store.claimIdempotencyKey({ ...base, holder: 'c', now: 44_000 });
    assert.ok(!done.claimed && done.record.status === 201 && done.record.body === '{"ok":1}');
    assert.equal(await store.pruneIdempotencyKeys(1_000_000), 1, "only keys created before the bound go (the API's own are from now)");
  });
});

describe('a database migrated by a newer version', () => {
  it('is refused with STORE_SCHEMA_NEWER in process, and `edgeweave cloud` exits 2', async () => {
    const dataDir = tempDir('newer');
    const c = await startCloud({
      dataDir,
      httpHost: '127.0.0.1',
      httpPort: 0,
      mqttHost: '127.0.0.1',
      mqttPort: 0,
      log: silentLogger(),
      rateLimits: false,
    });
    await c.close();
    const db = new Database(join(dataDir, 'cloud.db'));
    db.prepare('INSERT INTO kysely_migration (name, timestamp) VALUES (?, ?)').run('9999_from_the_future', new Date().toISOString());
    db.close();
    await assert.rejects(
      startCloud({
        dataDir,
        httpHost: '127.0.0.1',
        httpPort: 0,
        mqttHost: '127.0.0.1',
        mqttPort: 0,
        log: silentLogger(),
        rateLimits: false,
      }),
      (e) => isEwError(e, 'STORE_SCHEMA_NEWER') && /9999_from_the_future/.test(e.message),
    );
    const p = spawnCli([
      'cloud',
      '--data-dir',
      dataDir,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--mqtt-host',
      '127.0.0.1',
      '--mqtt-port',
      '0',
      '--no-console',
    ]);
    assert.equal(await p.exited, 2);
    assert.match(p.stderr(), /STORE_SCHEMA_NEWER/);
    removeDirs(dataDir);
  });
});
