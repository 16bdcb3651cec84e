import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { OffsetClock, startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { startEdge } from '../src/edge/main.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { isEwError } from '../src/contracts/errors.ts';

const manifest = (version: string) => ({
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name: 'traffic-watch', version },
  spec: { streams: [{ name: 'traffic', topic: 'city/+/traffic', format: 'json' }], policy: { egress: { allow: ['alerts'] } } },
});

describe('cloud + two agents over real MQTT on loopback', () => {
  let cloud: TestCloud;
  let city: TestEdge;
  let factory: TestEdge;
  const clock = new OffsetClock();

  before(async () => {
    cloud = await startTestCloud({ clock, missedHeartbeats: 3 });
    city = await startTestEdge(cloud, { labels: { city: 'hangzhou', kind: 'intersection' }, region: 'cn-east', uplinkAllow: ['alerts'] });
    factory = await startTestEdge(cloud, {
      labels: { industry: 'manufacturing' },
      region: 'eu-west',
      uplinkAllow: ['vibration', 'alerts'],
    });
  });
  after(async () => {
    await city?.stop().catch(() => {});
    await factory?.stop().catch(() => {});
    await cloud?.stop().catch(() => {});
  });

  it('shows both sites online with their status', async () => {
    const sites = await waitFor('two sites online', async () => {
      const r = await cloud.api('GET', '/api/v1/sites');
      return r.body.online === 2 && r.body.items.every((s: any) => s.status) ? r.body : undefined;
    });
    assert.equal(sites.total, 2);
    const c = sites.items.find((s: any) => s.id === city.handle.siteId);
    assert.deepEqual(c.labels, { city: 'hangzhou', kind: 'intersection' });
    assert.equal(c.region, 'cn-east');
    assert.equal(c.status.agentVersion, '0.1.0');
    assert.ok(c.status.system.cores >= 1);
    assert.ok(c.status.system.memoryTotalBytes > 0);
    assert.ok(c.status.system.diskTotalBytes > 0);
    assert.ok(Array.isArray(c.status.runtimes));
    assert.equal((await cloud.api('GET', '/api/v1/sites?state=online')).body.items.length, 2);
  });

  it('refuses a used, an unknown and an expired join token with clear codes', async () => {
    const token = await cloud.token();
    const ok = await cloud.api('POST', '/api/v1/enroll', { token }, '');
    assert.equal(ok.status, 201);
    const used = await cloud.api('POST', '/api/v1/enroll', { token }, '');
    assert.equal(used.status, 401);
    assert.equal(used.body.code, 'TOKEN_USED');
    const unknown = await cloud.api('POST', '/api/v1/enroll', { token: 'ewj_nope' }, '');
    assert.equal(unknown.body.code, 'TOKEN_INVALID');
    const soon = await cloud.api('POST', '/api/v1/tokens', { ttlSeconds: 60 });
    clock.offset = 61_000;
    try {
      const expired = await cloud.api('POST', '/api/v1/enroll', { token: soon.body.token }, '');
      assert.equal(expired.body.code, 'TOKEN_EXPIRED');
    } finally {
      clock.offset = 0;
    }
    // The agent's CLI path: a used token is an EwError with the code, so the CLI exits non-zero.
    await assert.rejects(
      startEdge({
        dataDir: (await import('./support/harness.ts')).tempDir('used'),
        cloudUrl: cloud.url,
        token,
        log: silentLogger(),
        apiPort: 0,
        devicePort: 0,
      }),
      (e: unknown) => isEwError(e, 'TOKEN_USED'),
    );
    // The extra enrolled site is revoked so that it does not count as an offline site below.
    await cloud.api('POST', `/api/v1/sites/${ok.body.siteId}/revoke`);
  });

  it('deploys an app to the pool its selector picks, and only there', async () => {
    const pushed = await cloud.api('POST', '/api/v1/apps', { manifest: manifest('1.0.0') });
    assert.equal(pushed.status, 201);
    const dep = await cloud.api('POST', '/api/v1/deployments', { app: 'traffic-watch', version: '1.0.0', selector: { city: 'hangzhou' } });
    assert.equal(dep.status, 201);
    assert.deepEqual(dep.body.sites, [city.handle.siteId]);
    await waitFor('city runs traffic-watch', () => city.handle.supervisor.running().some((a) => a.name === 'traffic-watch'));
    assert.deepEqual(factory.handle.supervisor.running(), []);
    const site = await waitFor('reported generation catches up', async () => {
      const s = (await cloud.api('GET', `/api/v1/sites/${city.handle.siteId}`)).body;
      return s.inSync && s.status?.apps?.length === 1 ? s : undefined;
    });
    assert.ok(site.desiredGeneration >= 2);
    assert.deepEqual(site.status.apps, [{ name: 'traffic-watch', version: '1.0.0' }]);
  });

  it('upgrades in place with a newer deployment, and moves an app when labels change', async () => {
    await cloud.api('POST', '/api/v1/apps', { manifest: manifest('1.1.0') });
    await cloud.api('POST', '/api/v1/deployments', { app: 'traffic-watch', version: '1.1.0', selector: { city: 'hangzhou' } });
    await waitFor('city runs 1.1.0', () => city.handle.supervisor.running().some((a) => a.version === '1.1.0'));
    const relabel = await cloud.api('PUT', `/api/v1/sites/${factory.handle.siteId}/labels`, {
      labels: { industry: 'manufacturing', city: 'hangzhou' },
    });
    assert.equal(relabel.status, 200);
    await waitFor('factory picks up the app after relabel', () => factory.handle.supervisor.running().some((a) => a.version === '1.1.0'));
    await cloud.api('PUT', `/api/v1/sites/${factory.handle.siteId}/labels`, { labels: { industry: 'manufacturing' } });
    await waitFor('factory drops the app again', () => factory.handle.supervisor.running().length === 0);
  });

  it('sends uplink results through the outbox, each stored once and readable by site and stream', async () => {
    const r = await city.uplink(
      'alerts',
      Array.from({ length: 250 }, (_, i) => ({ intersection: `i${i % 5}`, vehicles: i })),
    );
    assert.equal(r.status, 202);
    assert.equal(r.body.accepted, 250);
    await waitFor('250 results stored', async () => (await cloud.handle.store.countUplink(city.handle.siteId, 'alerts')) === 250);
    const page = await cloud.api('GET', `/api/v1/results?site=${city.handle.siteId}&stream=alerts&limit=100`);
    assert.equal(page.body.items.length, 100);
    assert.deepEqual(page.body.items[0].data, { intersection: 'i0', vehicles: 0 });
    assert.deepEqual(
      page.body.items.map((x: any) => x.data.vehicles),
      Array.from({ length: 100 }, (_, i) => i),
      'in order',
    );
    const next = await cloud.api('GET', `/api/v1/results?site=${city.handle.siteId}&stream=alerts&limit=200&after=${page.body.next}`);
    assert.equal(next.body.items.length, 150);
    assert.equal(next.body.next, null);
    // The cloud stores before it acknowledges: the outbox empties as the PUBACKs arrive.
    await waitFor('every result acknowledged', () => city.handle.outbox.pending === 0);
  });

  it('keeps results while the cloud is down and delivers them when it returns', async () => {
    const before = await cloud.handle.store.countUplink(factory.handle.siteId);
    await cloud.stop();
    await waitFor('factory sees the link drop', () => factory.handle.linkState() !== 'connected');
    const r = await factory.uplink(
      'vibration',
      Array.from({ length: 40 }, (_, i) => ({ machine: 'm1', rms: i / 10 })),
    );
    assert.equal(r.status, 202);
    assert.equal(factory.handle.outbox.pending, 40);
    await cloud.restart();
    await waitFor(
      '40 results after the cloud returns',
      async () => (await cloud.handle.store.countUplink(factory.handle.siteId)) === before + 40,
    );
    await waitFor('outbox drained', () => factory.handle.outbox.pending === 0);
  });

  it('restarts a site while the cloud is unreachable into its last desired state', async () => {
    const dataDir = city.dataDir;
    await city.stop();
    await cloud.stop();
    // The cloud is gone; the agent starts from its own SQLite.
    await city.restart();
    assert.deepEqual(city.handle.supervisor.running(), [{ name: 'traffic-watch', version: '1.1.0' }]);
    assert.notEqual(city.handle.linkState(), 'connected');
    assert.equal(city.dataDir, dataDir);
    await cloud.restart();
    await waitFor('city reconnects', () => city.handle.linkState() === 'connected');
  });

  it('marks a site offline when it stops, and online again when it returns', async () => {
    await waitFor('factory online', async () => (await cloud.api('GET', `/api/v1/sites/${factory.handle.siteId}`)).body.state === 'online');
    await factory.stop();
    await waitFor(
      'factory offline',
      async () => (await cloud.api('GET', `/api/v1/sites/${factory.handle.siteId}`)).body.state === 'offline',
    );
    await factory.restart();
    await waitFor(
      'factory online again',
      async () => (await cloud.api('GET', `/api/v1/sites/${factory.handle.siteId}`)).body.state === 'online',
    );
  });

  it('revokes a site: its connection is cut at once and its credentials stop working', async () => {
    const r = await cloud.api('POST', `/api/v1/sites/${factory.handle.siteId}/revoke`);
    assert.equal(r.status, 200);
    assert.equal(r.body.state, 'revoked');
    await waitFor('factory refused', () => factory.handle.linkState() === 'refused');
    // Still serving locally (autonomy), and the rest of the fleet is unaffected.
    const local = await factory.uplink('alerts', [{ x: 1 }]);
    assert.equal(local.status, 202);
    assert.equal((await cloud.api('GET', `/api/v1/sites/${city.handle.siteId}`)).body.state, 'online');
  });
});
