import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { startTestCloud, startTestEdge, waitFor, removeDirs, type TestCloud, type TestEdge } from './support/harness.ts';
import { freshSchema, pgAvailable, PG_URL } from './support/pg.ts';

/**
 * A replica that loses its database (issue #17, "Bad input"): PostgreSQL behind a TCP proxy that
 * the test cuts. The cloud keeps serving what needs no database, refuses the rest with
 * STORE_UNAVAILABLE (503) and changes nothing; the site keeps its results and sends them again,
 * and once the database is back every one is stored exactly once.
 */
const skip = await pgAvailable();

/** A TCP proxy to PostgreSQL that can be cut (every connection reset) and restored on the same port. */
class PgProxy {
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  port = 0;
  constructor(private readonly target: { host: string; port: number }) {}
  async up(): Promise<void> {
    this.server = createServer((client) => {
      const upstream = createConnection(this.target);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {});
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => this.server!.listen(this.port, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
  }
  async cut(): Promise<void> {
    const closed = new Promise((r) => this.server?.close(r));
    for (const s of this.sockets) s.destroy();
    await closed;
  }
}

describe('a cloud that loses its database', { skip, timeout: 120_000 }, () => {
  let proxy: PgProxy;
  let cloud: TestCloud;
  let edge: TestEdge;
  let drop: () => Promise<void>;
  before(async () => {
    const s = await freshSchema();
    drop = s.drop;
    const pg = new URL(PG_URL);
    proxy = new PgProxy({ host: pg.hostname, port: Number(pg.port || 5432) });
    await proxy.up();
    const u = new URL(PG_URL);
    u.port = String(proxy.port);
    u.hostname = '127.0.0.1';
    u.searchParams.set('options', `-c search_path=${s.schema}`);
    cloud = await startTestCloud({ db: u.toString() });
    edge = await startTestEdge(cloud, { uplinkAllow: ['loss'] });
    await waitFor('site online', async () => (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`)).body.state === 'online');
  });
  after(async () => {
    await edge?.stop().catch(() => {});
    await cloud?.stop().catch(() => {});
    await proxy?.cut().catch(() => {});
    await drop?.();
    removeDirs(cloud.dataDir, edge.dataDir);
  });

  it('refuses writes with STORE_UNAVAILABLE, keeps serving what needs no database, and stores the backlog once when it returns', async () => {
    assert.equal(
      (
        await edge.uplink(
          'loss',
          Array.from({ length: 50 }, (_, i) => ({ i })),
        )
      ).status,
      202,
    );
    await waitFor('first 50 stored', async () => (await cloud.handle.store.countUplink(edge.handle.siteId)) === 50);

    await proxy.cut();
    const manifest = { apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name: 'loss', version: '1.0.0' }, spec: {} };
    const refused = await cloud.api('POST', '/api/v1/apps', { manifest });
    assert.equal(refused.status, 503);
    assert.equal(refused.body.code, 'STORE_UNAVAILABLE');
    assert.equal((await cloud.api('GET', '/healthz')).status, 200, 'the process keeps serving');
    assert.equal((await cloud.api('GET', '/api/v1/schemas/app-manifest.json')).status, 200, 'and answers what needs no database');
    // Results made during the outage wait in the site's outbox.
    assert.equal(
      (
        await edge.uplink(
          'loss',
          Array.from({ length: 50 }, (_, i) => ({ i: 50 + i })),
        )
      ).status,
      202,
    );
    await waitFor('the site holds them', () => edge.handle.outbox.pending > 0);

    await proxy.up();
    await waitFor(
      'all 100 stored after the database returned',
      async () => (await cloud.handle.store.countUplink(edge.handle.siteId)) === 100,
      60_000,
      200,
    );
    const tenantId = (await cloud.handle.store.getSiteById(edge.handle.siteId))!.tenantId;
    const rows = await cloud.handle.store.queryUplink(tenantId, { siteId: edge.handle.siteId, limit: 1000 });
    assert.deepEqual(
      rows.map((r) => (r.data as { i: number }).i).sort((a, b) => a - b),
      Array.from({ length: 100 }, (_, i) => i),
      'each once',
    );
    const created = await cloud.api('POST', '/api/v1/apps', { manifest });
    assert.equal(created.status, 201, 'writes work again');
  });
});
