import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { SiteStatuses, statusDigest } from './status.ts';
import { openSqliteStore } from '../store/open.ts';
import type { SiteStatusUpdate } from '../store/store.ts';
import { ManualClock } from '../../lib/clock.ts';
import { silentLogger } from '../../lib/logger.ts';
import type { SiteStatusBody } from '../../contracts/messages.ts';
import { heartbeatMessage, statusBody } from '../../../test/support/status.ts';

const body = statusBody;
const hb = heartbeatMessage;

describe('status write-behind', () => {
  it('ignores figures that move with the clock alone', () => {
    assert.equal(statusDigest(body({ uptimeS: 5, system: { ...body().system, memoryFreeBytes: 7, loadAvg1: 3 } })), statusDigest(body()));
    assert.notEqual(statusDigest(body({ generation: 2 })), statusDigest(body()));
  });

  it('queues a heartbeat only when it says something new, on a liveness change, or every refresh interval', async () => {
    const store = openSqliteStore(':memory:');
    await store.migrate();
    const writes: SiteStatusUpdate[][] = [];
    const update = store.updateSiteStatuses.bind(store);
    store.updateSiteStatuses = async (u) => {
      writes.push(u);
      return update(u);
    };
    const clock = new ManualClock(0);
    const s = new SiteStatuses({ store, clock, log: silentLogger(), registry: new Registry(), missedHeartbeats: 3, refreshMs: 30_000 });
    const beat = async (b: SiteStatusBody) => {
      s.onReported('site-a', hb(b));
      await s.sweepNow();
      clock.advance(1000);
    };
    await beat(body());
    assert.equal(writes.length, 1, 'the first heartbeat (site comes online)');
    for (let i = 0; i < 10; i++) await beat(body({ uptimeS: 2 + i }));
    assert.equal(writes.length, 1, 'ten heartbeats that say nothing new: no write');
    await beat(body({ generation: 2 }));
    assert.equal(writes.length, 2, 'a new generation is written');
    for (let i = 0; i < 30; i++) await beat(body({ generation: 2, uptimeS: 20 + i }));
    assert.equal(writes.length, 3, 'one refresh in 30 s');
    clock.advance(10_000); // silent: offline after 3 missed heartbeats
    await s.sweepNow();
    assert.equal(writes.at(-1)?.[0]?.online, false);
    await beat(body({ generation: 2 }));
    assert.equal(writes.at(-1)?.[0]?.online, true, 'back online is written at once');
    await store.close();
  });
});
