import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { Fleet } from '../fleet.ts';
import { Ownership } from './ownership.ts';
import { MAX_REVOCATION_NEWS_BYTES } from './revocations.ts';
import type { Hub } from '../hub/hub.ts';
import type { Store } from '../store/store.ts';
import { openSqliteStore } from '../store/open.ts';
import { ManualClock } from '../../lib/clock.ts';
import { silentLogger } from '../../lib/logger.ts';
import { envelope } from '../../contracts/messages.ts';
import { topics } from '../../contracts/topics.ts';
import { addSite } from '../../../test/support/store.ts';

const T = 'ten';
const LIVENESS = 'ew/_cloud/x/liveness';
const REVOKED = 'ew/_cloud/x/revoked';

/**
 * Two replicas on one store (SQLite here; the store is the same code on PostgreSQL) and a bus in
 * place of the broker: what one publishes on the replica topics waits in `bus` until delivered.
 */
function replicas(store: Store, clock: ManualClock) {
  const bus: { topic: string; payload: Buffer }[] = [];
  const make = (id: string) => {
    const ownership = new Ownership(id);
    ownership.setMembers(['r0', 'r1']);
    const registry = new Registry();
    const hub = {
      kind: 'external',
      publish: async (topic: string, payload: string | Buffer) => {
        if (topic.startsWith('ew/_cloud/')) bus.push({ topic, payload: Buffer.from(payload) });
      },
      disconnectSite: () => {}, // an external broker's sessions are its own (ExternalHub)
      clearRetained: async () => 0,
    } as unknown as Hub;
    const fleet = new Fleet({
      store,
      hub,
      clock,
      log: silentLogger(),
      registry,
      missedHeartbeats: 3,
      replicas: { ownership, livenessTopic: LIVENESS, revokedTopic: REVOKED, replicaId: id },
    });
    return { fleet, registry };
  };
  const r = [make('r0'), make('r1')];
  /** Delivers what is on the bus to every replica (each ignores its own). */
  const deliver = async () => {
    for (const m of bus.splice(0)) for (const x of r) await x.fleet.handle(m.topic, m.payload);
  };
  let n = 0;
  /** A result from the site, handled by `at` (the shared subscription may hand it to any replica). */
  const result = async (at: number, siteId: string) => {
    const msg = envelope('uplink', { stream: 's', at: clock.now(), data: { n: ++n } }, clock);
    await r[at]!.fleet.handle(topics.up(siteId, 's'), Buffer.from(JSON.stringify(msg)));
    await r[at]!.fleet.uplink.drain();
  };
  const counter = async (at: number, name: string, labels: string) =>
    ((await r[at]!.registry.getSingleMetric(name)?.get())?.values ?? []).find((v) => JSON.stringify(v.labels) === labels)?.value ?? 0;
  return { r, bus, deliver, result, counter };
}

describe('revocation between replicas (fleet/revocations.ts)', () => {
  let dir: string;
  let store: Store;
  const clock = new ManualClock(1_000_000);
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ew-revocations-'));
    store = openSqliteStore(join(dir, 'cloud.db'));
    await store.migrate();
    await store.createTenant({ id: T, name: T, createdAt: 1 });
    for (const id of ['site-a', 'site-b', 'site-c', 'site-d']) await addSite(store, T, id, clock.now());
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a site revoked on one replica is forgotten by the other, which stops storing its results; a forged message changes nothing', async () => {
    const { r, bus, deliver, result, counter } = replicas(store, clock);
    await result(1, 'site-a');
    assert.equal(await store.countUplink('site-a'), 1, 'r1 knows site-a as live');
    await store.revokeSite(T, 'site-a', clock.now());
    await r[0]!.fleet.revoked('site-a');
    assert.deepEqual(
      bus.map((m) => m.topic),
      [REVOKED],
      'r0 told the others',
    );
    await deliver();
    assert.equal(r[1]!.fleet.sites.isRevoked('site-a'), true);
    await result(1, 'site-a');
    assert.equal(await store.countUplink('site-a'), 1, 'nothing more stored for the revoked site');
    assert.equal(await counter(1, 'ew_cloud_site_messages_ignored_total', '{"reason":"revoked"}'), 1);
    assert.equal(await counter(1, 'ew_cloud_revocation_news_total', '{"outcome":"applied"}'), 1);

    // A read that began before the revocation and ends after it does not bring the site back.
    r[1]!.fleet.sites.note({ id: 'site-a', tenantId: T, revokedAt: null });
    assert.equal(r[1]!.fleet.sites.isRevoked('site-a'), true);

    // Anyone on an open broker could publish there: a live site is checked against the store.
    await result(1, 'site-b');
    await r[1]!.fleet.handle(REVOKED, Buffer.from(JSON.stringify({ v: 1, from: 'r0', sites: ['site-b'] })));
    assert.equal(await counter(1, 'ew_cloud_revocation_news_total', '{"outcome":"ignored"}'), 1);
    await result(1, 'site-b');
    assert.equal(await store.countUplink('site-b'), 2, 'site-b is still served');
    // … and made-up ids cost no query and are not held: the directory does not grow.
    const held = r[1]!.fleet.sites.size;
    const madeUp = Array.from({ length: 1000 }, (_, i) => `forged-${i}`);
    await r[1]!.fleet.handle(REVOKED, Buffer.from(JSON.stringify({ v: 1, from: 'r0', sites: madeUp })));
    assert.equal(r[1]!.fleet.sites.size, held);
    assert.equal(await counter(1, 'ew_cloud_revocation_news_total', '{"outcome":"not-held"}'), 1000);
  });

  it('drops oversized, malformed and ill-formed revocation news, and keeps serving', async () => {
    const { r, result, counter } = replicas(store, clock);
    const bad = [
      Buffer.alloc(MAX_REVOCATION_NEWS_BYTES + 1, 0x20),
      Buffer.from('{"v":1,'),
      Buffer.from(JSON.stringify({ v: 1, from: 'r0', sites: [] })),
      Buffer.from(JSON.stringify({ v: 1, from: 'r0', sites: Array.from({ length: 1001 }, () => 'site-c') })),
      Buffer.from(JSON.stringify({ v: 1, from: 'r0', sites: ['NOT A SITE'] })),
    ];
    for (const b of bad) await r[1]!.fleet.handle(REVOKED, b);
    assert.equal(await counter(1, 'ew_cloud_revocation_news_total', '{"outcome":"dropped"}'), bad.length);
    assert.equal(r[1]!.fleet.sites.isRevoked('site-c'), false);
    await result(1, 'site-c');
    assert.equal(await store.countUplink('site-c'), 1);
  });

  it('a lost message is made good by the store: the minute check, and the read after a reconnect', async () => {
    const { r, bus, result } = replicas(store, clock);
    await result(1, 'site-c');
    const stored = await store.countUplink('site-c');
    await store.revokeSite(T, 'site-c', clock.now());
    await r[0]!.fleet.revoked('site-c');
    bus.length = 0; // lost (the revoking replica died before it left, say)
    await result(1, 'site-c');
    assert.equal(await store.countUplink('site-c'), stored + 1, 'r1 has not heard yet');
    clock.advance(60_000);
    assert.ok((await r[1]!.fleet.revocations!.check()) >= 1, 'the check finds it (and site-a, revoked earlier)');
    assert.equal(r[1]!.fleet.sites.isRevoked('site-c'), true);
    assert.equal(await r[1]!.fleet.revocations!.check(), 0, 'each only once');
    await result(1, 'site-c');
    assert.equal(await store.countUplink('site-c'), stored + 1);

    // A deleted tenant's sites (rows gone, nothing revoked) are found by the check too.
    await store.createTenant({ id: 'gone', name: 'gone', createdAt: 1 });
    await addSite(store, 'gone', 'site-g', clock.now());
    await result(1, 'site-g');
    assert.equal(r[1]!.fleet.sites.isLive('site-g'), true);
    await store.deleteTenant('gone');
    assert.ok((await r[1]!.fleet.revocations!.check()) >= 1);
    assert.equal(r[1]!.fleet.sites.isLive('site-g'), false, 'unknown from now on');
    await result(1, 'site-g');
    assert.equal(await store.countUplink('site-g'), 0, 'nothing stored for a site that no longer exists');

    // After a reconnect the whole directory is read again.
    await result(0, 'site-d');
    await store.revokeSite(T, 'site-d', clock.now());
    await r[1]!.fleet.revoked('site-d');
    bus.length = 0;
    await r[0]!.fleet.revocations!.resync();
    assert.equal(r[0]!.fleet.sites.isRevoked('site-d'), true);
    const before = await store.countUplink('site-d');
    await result(0, 'site-d');
    assert.equal(await store.countUplink('site-d'), before);
  });
});
