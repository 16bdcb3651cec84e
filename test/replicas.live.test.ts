import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import mqtt from 'mqtt';
import { startTestEdge, tempDir, removeDirs, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { spawnCli, type CliProcess } from './support/proc.ts';
import { freshSchema, pgAvailable, PG_URL } from './support/pg.ts';
import { mosquittoAvailable, MOSQUITTO_URL } from './support/mosquitto.ts';
import { natsAvailable, startNats, type NatsServer } from './support/nats.ts';
import { newSecret } from '../src/lib/secrets.ts';
import { envelope } from '../src/contracts/messages.ts';
import { topics } from '../src/contracts/topics.ts';

/**
 * Several `edgeweave cloud` processes — real child processes, sharing nothing but PostgreSQL,
 * the broker and an artifacts directory — with real agents, on Mosquitto and on NATS's MQTT
 * server (issue #17.1, #17.2). A replica is killed with SIGKILL mid-rollout and mid-upload and
 * never restarted: results are stored exactly once, the sites stay online on every survivor,
 * the rollout finishes on another replica, a retried API call is answered once.
 */
const skip = (await pgAvailable()) ?? (await mosquittoAvailable());

interface Replica {
  name: string;
  url: string;
  proc: CliProcess;
  api<T = any>(
    method: string,
    path: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: T; headers: Headers }>;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

interface Cluster {
  replicas: Replica[];
  adminKey: string;
  db: pg.Client;
  cleanup(): Promise<void>;
}

async function startCluster(n: number, broker: string, extra: string[] = []): Promise<Cluster> {
  const { schema, drop } = await freshSchema();
  const u = new URL(PG_URL);
  u.searchParams.set('options', `-c search_path=${schema}`);
  const dbUrl = u.toString();
  const shared = tempDir('artifacts');
  const adminKey = newSecret('ewk');
  const keyFile = join(shared, '..', `ew-admin-${randomBytes(4).toString('hex')}.key`);
  writeFileSync(keyFile, adminKey, { mode: 0o600 });
  const installation = `t-${randomBytes(4).toString('hex')}`;
  const dirs: string[] = [shared, keyFile];
  const start = async (i: number): Promise<Replica> => {
    const dataDir = tempDir(`replica${i}`);
    dirs.push(dataDir);
    const name = `replica-${i}`;
    const proc = spawnCli([
      'cloud',
      '--data-dir',
      dataDir,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--db',
      dbUrl,
      '--broker',
      broker,
      '--installation-id',
      installation,
      '--replica-id',
      name,
      '--admin-key-file',
      keyFile,
      '--no-console',
      '--heartbeat-interval',
      '1',
      '--rate-limit',
      'off',
      '--artifacts-dir',
      shared,
      ...extra,
    ]);
    const ready = await proc.ready;
    const url = ready.url as string;
    return {
      name,
      url,
      proc,
      async api(method, path, body, headers = {}) {
        const res = await fetch(new URL(path, url), {
          method,
          headers: {
            authorization: `Bearer ${adminKey}`,
            ...(body !== undefined && !(body instanceof Uint8Array) ? { 'content-type': 'application/json' } : {}),
            ...headers,
          },
          body: body === undefined ? undefined : body instanceof Uint8Array ? (body as unknown as BodyInit) : JSON.stringify(body),
        });
        const buf = Buffer.from(await res.arrayBuffer());
        let parsed: unknown = buf;
        try {
          parsed = JSON.parse(buf.toString('utf8'));
        } catch {
          /* binary */
        }
        return { status: res.status, body: parsed as any, headers: res.headers };
      },
      async kill() {
        proc.child.kill('SIGKILL');
        await proc.exited;
      },
      async stop() {
        if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
        proc.child.kill('SIGTERM');
        await proc.exited;
      },
    };
  };
  // The first one creates the tenant and the admin key; then the others join it.
  const replicas = [await start(0)];
  replicas.push(...(await Promise.all(Array.from({ length: n - 1 }, (_, i) => start(i + 1)))));
  const db = new pg.Client({ connectionString: dbUrl });
  await db.connect();
  return {
    replicas,
    adminKey,
    db,
    async cleanup() {
      await Promise.all(replicas.map((r) => r.stop()));
      await db.end().catch(() => {});
      await drop();
      removeDirs(...dirs);
    },
  };
}

/** An agent enrolled through `via`; the harness only needs the cloud's URL and a join token. */
async function enroll(via: Replica, labels: Record<string, string>): Promise<TestEdge> {
  const cloud = {
    url: via.url,
    async token(o: { labels?: Record<string, string> } = {}) {
      const r = await via.api('POST', '/api/v1/tokens', { labels: o.labels ?? {}, region: 'test', ttlSeconds: 600 });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return r.body.token as string;
    },
  } as unknown as TestCloud;
  return startTestEdge(cloud, { labels, uplinkAllow: ['live'] });
}

async function allOnline(replicas: readonly Replica[], siteIds: readonly string[]): Promise<boolean> {
  for (const r of replicas) {
    for (const id of siteIds) {
      if ((await r.api('GET', `/api/v1/sites/${id}`)).body.state !== 'online') return false;
    }
  }
  return true;
}

/** Sends `total` records in batches, pausing on the event loop between them; resolves with the count. */
function stream(edge: TestEdge, total: number, batch: number, onBatch?: (sent: number) => void): Promise<number> {
  return (async () => {
    let sent = 0;
    while (sent < total) {
      const n = Math.min(batch, total - sent);
      const r = await edge.uplink(
        'live',
        Array.from({ length: n }, (_, k) => ({ i: sent + k })),
      );
      assert.equal(r.status, 202, JSON.stringify(r.body));
      sent += n;
      onBatch?.(sent);
      await new Promise((res) => setTimeout(res, 20));
    }
    return sent;
  })();
}

/** Every record 0..total-1 of the site stored exactly once. */
async function assertStoredOnce(db: pg.Client, siteId: string, total: number): Promise<void> {
  const rows = (await db.query('select data from uplink where site_id = $1', [siteId])).rows as { data: string }[];
  const seen = new Map<number, number>();
  for (const r of rows) {
    const i = (typeof r.data === 'string' ? JSON.parse(r.data) : r.data).i as number;
    seen.set(i, (seen.get(i) ?? 0) + 1);
  }
  const missing = Array.from({ length: total }, (_, i) => i).filter((i) => !seen.has(i));
  const twice = [...seen].filter(([, c]) => c > 1).map(([i]) => i);
  assert.deepEqual(
    { rows: rows.length, missing: missing.slice(0, 10), twice: twice.slice(0, 10) },
    { rows: total, missing: [], twice: [] },
  );
}

async function storedCount(db: pg.Client, siteId: string): Promise<number> {
  return Number((await db.query('select count(*) as n from uplink where site_id = $1', [siteId])).rows[0].n);
}

describe('three cloud replicas on PostgreSQL and Mosquitto', { skip, timeout: 240_000 }, () => {
  let c: Cluster;
  let edges: TestEdge[] = [];
  before(async () => {
    c = await startCluster(3, MOSQUITTO_URL);
    edges = [await enroll(c.replicas[0]!, { tier: 'live' }), await enroll(c.replicas[1]!, { tier: 'live' })];
  });
  after(async () => {
    for (const e of edges) await e.stop().catch(() => {});
    await c?.cleanup();
  });

  it('every replica sees every site online, whichever replica it enrolled through', async () => {
    await waitFor(
      'both sites online on all three replicas',
      () =>
        allOnline(
          c.replicas,
          edges.map((e) => e.handle.siteId),
        ),
      20_000,
      200,
    );
  });

  it("splits heartbeats: each is parsed by its site's owner only, the other replicas drop it unread", async () => {
    const counts = async () =>
      Promise.all(
        c.replicas.map(async (r) => {
          const text = (await r.api('GET', '/metrics')).body.toString('utf8') as string;
          const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
          return { parsed: value('ew_cloud_heartbeats_total'), dropped: value('ew_cloud_heartbeats_not_owned_total') };
        }),
      );
    const sum = (xs: { parsed: number; dropped: number }[]) => ({
      parsed: xs.reduce((a, b) => a + b.parsed, 0),
      dropped: xs.reduce((a, b) => a + b.dropped, 0),
    });
    // Counted from here, not from start-up: a replica that started before the others knew of it
    // owned every site until its next membership renewal (a second).
    const base = sum(await counts());
    // Heartbeats every second from two sites: wait for ten or more.
    const d = await waitFor(
      'ten heartbeats parsed',
      async () => {
        const now = sum(await counts());
        const delta = { parsed: now.parsed - base.parsed, dropped: now.dropped - base.dropped };
        return delta.parsed >= 10 ? delta : undefined;
      },
      20_000,
      250,
    );
    // Three replicas: each heartbeat parsed once and dropped unread twice — give or take the
    // heartbeats in flight while the three metrics were read (were every replica to parse every
    // heartbeat, none would be dropped).
    assert.ok(d.dropped >= 1.2 * d.parsed && d.dropped <= 2.8 * d.parsed, `parsed ${d.parsed}, dropped unread ${d.dropped}`);
  });

  it('kill -9 of the rollout-lease holder mid-rollout and mid-upload: rollout finishes elsewhere, results stored once, sites stay online, retried call answered once', async () => {
    const [r0, r1] = c.replicas;
    const manifest = (v: string) => ({ apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name: 'live-app', version: v }, spec: {} });
    assert.equal((await r1!.api('POST', '/api/v1/apps', { manifest: manifest('1.0.0') })).status, 201);
    // A canary with a bake: long enough that the kill lands while it is running.
    const dep = await r0!.api('POST', '/api/v1/deployments', {
      app: 'live-app',
      version: '1.0.0',
      selector: { tier: 'live' },
      strategy: { type: 'canary', canary: 1, bakeTimeS: 3, then: 'all' },
    });
    assert.equal(dep.status, 201, JSON.stringify(dep.body));
    const holder = await waitFor(
      'a lease holder',
      async () => (await c.db.query(`select holder from leases where name = 'rollout-controller'`)).rows[0]?.holder as string | undefined,
    );
    const victim = c.replicas.find((r) => holder.startsWith(`${r.name}-`))!;
    assert.ok(victim, `the lease holder ${holder} is one of ours`);
    const survivors = c.replicas.filter((r) => r !== victim);

    // An API call answered by the victim, whose answer the client "lost": retried on a survivor.
    const key = randomUUID();
    const first = await victim.api('POST', '/api/v1/apps', { manifest: manifest('2.0.0') }, { 'idempotency-key': key });
    assert.equal(first.status, 201);

    const total = 1500;
    let killed: Promise<void> | undefined;
    const sending = edges.map((e, k) =>
      stream(e, total, 50, (sent) => {
        if (k === 0 && sent >= total / 3 && !killed) killed = victim.kill();
      }),
    );
    await Promise.all(sending);
    await killed;
    assert.ok(victim.proc.child.signalCode === 'SIGKILL');

    const retried = await survivors[0]!.api('POST', '/api/v1/apps', { manifest: manifest('2.0.0') }, { 'idempotency-key': key });
    assert.equal(retried.status, 201, JSON.stringify(retried.body));
    assert.equal(retried.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(retried.body, first.body);
    assert.equal((await c.db.query(`select count(*) as n from apps where name = 'live-app' and version = '2.0.0'`)).rows[0].n, '1');

    // The lease moves and the rollout ends.
    const done = await waitFor(
      'rollout succeeded on a survivor',
      async () => {
        const r = (await survivors[1]!.api('GET', `/api/v1/rollouts/${dep.body.id}`)).body;
        return r.phase === 'succeeded' ? r : undefined;
      },
      60_000,
      250,
    );
    assert.equal(done.phase, 'succeeded');
    const newHolder = (await c.db.query(`select holder from leases where name = 'rollout-controller'`)).rows[0].holder as string;
    assert.ok(!newHolder.startsWith(`${victim.name}-`), `the lease moved off the dead replica (${newHolder})`);

    // Whatever the victim had taken and not stored came again from the sites' outboxes.
    for (const e of edges) {
      await waitFor(
        `all ${total} of ${e.handle.siteId} stored`,
        async () => (await storedCount(c.db, e.handle.siteId)) >= total,
        60_000,
        250,
      );
      await waitFor('outbox emptied by store acknowledgements', () => e.handle.outbox.pending === 0, 30_000, 100);
      await assertStoredOnce(c.db, e.handle.siteId, total);
    }
    await waitFor(
      'both sites online on both survivors',
      () =>
        allOnline(
          survivors,
          edges.map((e) => e.handle.siteId),
        ),
      20_000,
      200,
    );
  });

  it('a site that stops is offline on every replica, as its owner tells them', async () => {
    const alive = c.replicas.filter((r) => r.proc.child.signalCode === null && r.proc.child.exitCode === null);
    const gone = edges.pop()!;
    await gone.stop();
    await waitFor(
      'offline on every live replica',
      async () => {
        for (const r of alive) if ((await r.api('GET', `/api/v1/sites/${gone.handle.siteId}`)).body.state !== 'offline') return false;
        return true;
      },
      20_000,
      200,
    );
    assert.ok(await allOnline(alive, [edges[0]!.handle.siteId]), 'the other site stays online everywhere');
  });

  it('serves an artifact from any replica (one shared directory)', async () => {
    const alive = c.replicas.filter((r) => r.proc.child.signalCode === null && r.proc.child.exitCode === null);
    const bytes = randomBytes(64 * 1024);
    const sha = createHash('sha256').update(bytes).digest('hex');
    const put = await alive[0]!.api('PUT', `/api/v1/artifacts/${sha}`, new Uint8Array(bytes), {
      'content-type': 'application/octet-stream',
    });
    assert.equal(put.status, 201, JSON.stringify(put.body));
    const got = await alive[1]!.api('GET', `/api/v1/artifacts/${sha}`);
    assert.equal(got.status, 200);
    assert.ok(Buffer.compare(got.body as Buffer, bytes) === 0, 'the other replica serves the same bytes');
  });

  it('a site revoked through one replica is ignored by every replica: none stores what it still sends', async () => {
    const alive = c.replicas.filter((r) => r.proc.child.signalCode === null && r.proc.child.exitCode === null);
    assert.ok(alive.length >= 2);
    const site = edges[0]!;
    const siteId = site.handle.siteId;
    const metric = async (r: Replica, name: string) =>
      Number(
        new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec((await r.api('GET', '/metrics')).body.toString('utf8'))?.[1] ?? 0,
      );
    const revoked = await alive[0]!.api('POST', `/api/v1/sites/${siteId}/revoke`);
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    for (const r of alive.slice(1))
      await waitFor(
        `${r.name} heard of the revocation`,
        async () => (await metric(r, 'ew_cloud_revocation_news_total{outcome="applied"}')) >= 1,
        20_000,
        100,
      );
    // The broker was not told (operators delete the site's client there; docs/operators.md), so
    // the site could go on sending: here as a plain client on the open test broker.
    await site.stop();
    edges.pop();
    const stored = await storedCount(c.db, siteId);
    const ignored = async () =>
      (await Promise.all(alive.map((r) => metric(r, 'ew_cloud_site_messages_ignored_total{reason="revoked"}')))).reduce((a, b) => a + b, 0);
    const base = await ignored();
    const client = await mqtt.connectAsync(MOSQUITTO_URL, { protocolVersion: 5, reconnectPeriod: 0 });
    try {
      // Six results: the shared subscription hands them out in turn, so every replica gets some.
      for (let i = 0; i < 6; i++) {
        const msg = envelope('uplink', { stream: 'live', at: Date.now(), data: { i: 100_000 + i } }, { now: () => Date.now() });
        await client.publishAsync(topics.up(siteId, 'live'), JSON.stringify(msg), { qos: 1 });
      }
    } finally {
      await client.endAsync();
    }
    await waitFor('all six ignored', async () => (await ignored()) - base >= 6, 20_000, 100);
    assert.equal(await storedCount(c.db, siteId), stored, 'nothing stored for the revoked site');
  });
});

describe("two cloud replicas on PostgreSQL and NATS's MQTT server", { skip: skip ?? natsAvailable(), timeout: 180_000 }, () => {
  let nats: NatsServer;
  let c: Cluster;
  let edge: TestEdge;
  before(async () => {
    nats = await startNats();
    // NATS speaks MQTT 3.1.1 and has no shared subscriptions: every replica reads all uplink.
    c = await startCluster(2, nats.mqttUrl, ['--broker-mqtt-version', '4', '--no-broker-share-uplink']);
    edge = await enroll(c.replicas[1]!, { tier: 'nats' });
  });
  after(async () => {
    await edge?.stop().catch(() => {});
    await c?.cleanup();
    await nats?.stop();
  });

  it('both replicas see the site online; a replica killed mid-upload loses nothing and duplicates nothing', async () => {
    const ids = [edge.handle.siteId];
    await waitFor('online on both replicas', () => allOnline(c.replicas, ids), 20_000, 200);
    const [victim, survivor] = c.replicas;
    const total = 1000;
    let killed: Promise<void> | undefined;
    await stream(edge, total, 50, (sent) => {
      if (sent >= total / 2 && !killed) killed = victim!.kill();
    });
    await killed;
    await waitFor(`all ${total} stored`, async () => (await storedCount(c.db, edge.handle.siteId)) >= total, 60_000, 250);
    await waitFor('outbox emptied by store acknowledgements', () => edge.handle.outbox.pending === 0, 30_000, 100);
    await assertStoredOnce(c.db, edge.handle.siteId, total);
    await waitFor('online on the survivor', () => allOnline([survivor!], ids), 20_000, 200);
  });
});
