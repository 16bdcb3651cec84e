import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { removeDirs, tempDir } from './support/harness.ts';
import { addSite } from './support/store.ts';
import { SiteStatuses } from '../src/cloud/fleet/status.ts';
import { openSqliteStore } from '../src/cloud/store/open.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { ENVELOPE_VERSION, type ReportedMessage, type SiteStatusBody } from '../src/contracts/messages.ts';
import type { Store } from '../src/cloud/store/store.ts';

/**
 * The fleet's status part alone (src/cloud/fleet/status.ts), on a real SQLite store and a fake
 * clock: heartbeats make a site online at once in memory, the store's copy is written behind on
 * the sweep, and missed heartbeats or a last will take it offline.
 */
describe('fleet status: liveness and status write-behind', () => {
  let dir: string;
  let store: Store;
  const clock = new ManualClock(1_000_000);
  const body: SiteStatusBody = {
    agentVersion: '1',
    bootId: 'boot-1',
    uptimeS: 1,
    heartbeatIntervalS: 10,
    generation: 3,
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
  };
  const status = (): ReportedMessage => ({ v: ENVELOPE_VERSION, id: randomUUID(), ts: clock.now(), type: 'status', body });
  const will = (): ReportedMessage => ({
    v: ENVELOPE_VERSION,
    id: randomUUID(),
    ts: clock.now(),
    type: 'offline',
    body: { bootId: 'boot-1', reason: 'connection lost' },
  });

  before(async () => {
    dir = tempDir('fleet-status');
    store = openSqliteStore(join(dir, 'cloud.db'));
    await store.migrate();
    await store.createTenant({ id: 'ten', name: 'ten', createdAt: 1 });
    for (const id of ['site-a', 'site-b']) {
      await addSite(store, 'ten', id, 2);
    }
  });
  after(async () => {
    await store?.close();
    removeDirs(dir);
  });

  it('a heartbeat: online in memory at once, in the store after the sweep; missed heartbeats: offline', async () => {
    const s = new SiteStatuses({ store, clock, log: silentLogger(), registry: new Registry(), missedHeartbeats: 3 });
    assert.equal(s.state('site-a'), 'offline', 'never heard from');
    s.onReported('site-a', status());
    assert.equal(s.isOnline('site-a'), true);
    assert.equal(s.statuses.get('site-a')?.generation, 3);
    assert.equal((await store.getSiteById('site-a'))!.online, false, 'written behind, not per heartbeat');
    await s.sweepNow();
    const row = (await store.getSiteById('site-a'))!;
    assert.deepEqual([row.online, row.lastSeenAt, row.reportedGeneration, row.status?.bootId], [true, 1_000_000, 3, 'boot-1']);
    clock.advance(29_000);
    await s.sweepNow();
    assert.equal(s.isOnline('site-a'), true, 'within three intervals');
    clock.advance(2_000);
    await s.sweepNow();
    assert.equal(s.isOnline('site-a'), false, 'three heartbeats missed');
    assert.equal((await store.getSiteById('site-a'))!.online, false);
  });

  it('a last will takes the site offline at once; forgetting it (revocation) drops its status from memory', async () => {
    const s = new SiteStatuses({ store, clock, log: silentLogger(), registry: new Registry(), missedHeartbeats: 3 });
    s.onReported('site-b', status());
    await s.sweepNow();
    assert.equal((await store.getSiteById('site-b'))!.online, true);
    s.onReported('site-b', will());
    assert.equal(s.isOnline('site-b'), false);
    await s.sweepNow();
    assert.equal((await store.getSiteById('site-b'))!.online, false);
    s.forget('site-b');
    assert.equal(s.statuses.has('site-b'), false);
    assert.equal(s.isOnline('site-b'), false);
  });
});
