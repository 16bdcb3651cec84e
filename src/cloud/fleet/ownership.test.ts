import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { Ownership, ownerOf } from './ownership.ts';
import { MAX_NEWS_BYTES, SiteStatuses, type LivenessNews } from './status.ts';
import { Fleet } from '../fleet.ts';
import type { Hub } from '../hub/hub.ts';
import type { Store } from '../store/store.ts';
import { ManualClock } from '../../lib/clock.ts';
import { silentLogger } from '../../lib/logger.ts';
import { ENVELOPE_VERSION } from '../../contracts/messages.ts';
import { heartbeatMessage, statusBody } from '../../../test/support/status.ts';

const sites = Array.from({ length: 10_000 }, (_, i) => `site-${i.toString(36)}-${(i * 7919) % 1000}`);

describe('heartbeat ownership (rendezvous hashing)', () => {
  it('every replica computes the same owner, and the sites split about evenly', () => {
    const members = ['r0', 'r1', 'r2'];
    const count = new Map<string, number>();
    for (const s of sites) {
      const o = ownerOf(s, members)!;
      assert.equal(ownerOf(s, [...members].reverse()), o, 'the order of members does not matter');
      count.set(o, (count.get(o) ?? 0) + 1);
    }
    for (const m of members) assert.ok(count.get(m)! > 3000 && count.get(m)! < 3700, `${m}: ${count.get(m)}`);
  });

  it('a member joining takes only its share; one leaving gives only its own', () => {
    const two = ['r0', 'r1'];
    const three = ['r0', 'r1', 'r2'];
    let moved = 0;
    for (const s of sites) {
      const before = ownerOf(s, two);
      const after = ownerOf(s, three);
      if (before !== after) {
        moved++;
        assert.equal(after, 'r2', 'a site moves only to the new member');
      }
    }
    assert.ok(moved > 2800 && moved < 3900, `about a third moved: ${moved}`);
  });

  it('each site has exactly one owner among the replicas, whoever asks', () => {
    const views = ['r0', 'r1'].map((self) => {
      const o = new Ownership(self);
      o.setMembers(['r0', 'r1']);
      return o;
    });
    for (const s of sites.slice(0, 2000)) assert.equal(views.filter((v) => v.owns(s)).length, 1, s);
    const alone = new Ownership('r0');
    assert.ok(alone.alone && sites.every((s) => alone.owns(s)), 'alone, a replica owns every site');
  });
});

const status = (bootId = 'b1') => heartbeatMessage(statusBody({ bootId }));
const will = (bootId = 'b1') => ({
  v: ENVELOPE_VERSION as 1,
  id: 'y',
  ts: 0,
  type: 'offline' as const,
  body: { bootId, reason: 'connection lost' },
});

/**
 * Two replicas' SiteStatuses on one manual clock, telling each other over an in-memory bus (what
 * the broker's liveness topic is between real replicas), each hearing every heartbeat the way
 * Ingest hands them on: dropped unread when another replica owns the site.
 */
function pair() {
  const clock = new ManualClock(1_000_000);
  const store = { updateSiteStatuses: async () => {} } as unknown as Store;
  const bus: LivenessNews[] = [];
  const mk = (self: string) => {
    const ownership = new Ownership(self);
    ownership.setMembers(['r0', 'r1']);
    const registry = new Registry();
    const st = new SiteStatuses({
      store,
      clock,
      log: silentLogger(),
      registry,
      missedHeartbeats: 3,
      ownership,
      tell: async (n) => {
        bus.push(n);
      },
    });
    return { ownership, st, registry };
  };
  const r = [mk('r0'), mk('r1')];
  const deliver = async () => {
    for (const x of r) await x.st.sweepNow();
    for (const n of bus.splice(0)) for (const x of r) x.st.onNews(n);
  };
  const heartbeat = (site: string, msg: ReturnType<typeof status> | ReturnType<typeof will>) => {
    for (const x of r) {
      if (x.st.owns(site)) x.st.onReported(site, msg as never);
      else x.st.notOwned();
    }
  };
  return { clock, r, deliver, heartbeat, bus };
}

describe('liveness split between replicas', () => {
  const few = sites.slice(0, 40);

  it('each heartbeat is read by one replica; both agree which sites are online, through wills and timeouts', async () => {
    const { clock, r, deliver, heartbeat } = pair();
    for (const s of few) heartbeat(s, status());
    await deliver();
    const parsed = await Promise.all(
      r.map(async (x) => (await x.registry.getSingleMetric('ew_cloud_heartbeats_total')!.get()).values[0]!.value),
    );
    assert.equal(parsed[0]! + parsed[1]!, few.length, 'each heartbeat parsed once in all');
    assert.ok(parsed[0]! > 0 && parsed[1]! > 0, `both replicas parse some: ${parsed}`);
    for (const s of few)
      assert.deepEqual(
        r.map((x) => x.st.isOnline(s)),
        [true, true],
        s,
      );
    // A will, heard by both, applied by the owner, told to the other.
    heartbeat(few[0]!, will());
    await deliver();
    assert.deepEqual(
      r.map((x) => x.st.state(few[0]!)),
      ['offline', 'offline'],
    );
    // The rest keep heartbeating except few[1], which falls silent: its owner times it out.
    for (let t = 0; t < 4; t++) {
      clock.advance(1000);
      for (const s of few.slice(2)) heartbeat(s, status());
      await deliver();
    }
    assert.deepEqual(
      r.map((x) => x.st.state(few[1]!)),
      ['offline', 'offline'],
    );
    for (const s of few.slice(2))
      assert.deepEqual(
        r.map((x) => x.st.isOnline(s)),
        [true, true],
        s,
      );
    const gauge = await Promise.all(
      r.map(async (x) => (await x.registry.getSingleMetric('ew_cloud_sites_online')!.get()).values[0]!.value),
    );
    assert.deepEqual(gauge, [few.length - 2, few.length - 2], 'each replica counts the whole fleet');
  });

  it('a replica leaving: the other takes its sites over as they stood, and times out those that went silent', async () => {
    const { clock, r, deliver, heartbeat } = pair();
    for (const s of few) heartbeat(s, status());
    await deliver();
    const r1sites = few.filter((s) => r[1]!.st.owns(s));
    assert.ok(r1sites.length > 0);
    // r1 dies: r0 is alone and owns everything, taking r1's sites as r1 last told (online).
    r[0]!.ownership.setMembers(['r0']);
    r[0]!.st.ownershipChanged();
    for (const s of few) assert.equal(r[0]!.st.isOnline(s), true, s);
    // One of r1's sites went silent with it; the others keep heartbeating, now read by r0.
    const silent = r1sites[0]!;
    for (let t = 0; t < 4; t++) {
      clock.advance(1000);
      for (const s of few) if (s !== silent) r[0]!.st.onReported(s, status() as never);
      await r[0]!.st.sweepNow();
    }
    assert.equal(r[0]!.st.state(silent), 'offline');
    for (const s of few) if (s !== silent) assert.equal(r[0]!.st.isOnline(s), true, s);
  });

  it('a replica that missed news heals from the periodic snapshot', async () => {
    const { clock, r, deliver, heartbeat, bus } = pair();
    for (const s of few) heartbeat(s, status());
    await deliver();
    const r1own = few.find((s) => r[1]!.st.owns(s))!;
    assert.equal(r[0]!.st.isOnline(r1own), true);
    heartbeat(r1own, will());
    await r[1]!.st.sweepNow();
    assert.ok(bus.length > 0, 'the transition was told');
    bus.length = 0; // … and lost (a broker hiccup)
    assert.equal(r[0]!.st.isOnline(r1own), true, 'r0 still thinks it online');
    clock.advance(30_000);
    for (const s of few) if (s !== r1own) heartbeat(s, status());
    await deliver();
    assert.equal(r[0]!.st.state(r1own), 'offline', 'the snapshot told r0');
  });
});

describe('liveness news from other replicas: bounded and checked', () => {
  it('drops an oversized, malformed or ill-formed message, keeps serving, and takes a good one', async () => {
    const clock = new ManualClock(1_000_000);
    const ownership = new Ownership('r0');
    ownership.setMembers(['r0', 'r1']);
    const topic = 'ew/_cloud/x/liveness';
    const logged: string[] = [];
    const log = { ...silentLogger(), warn: (_o: unknown, m: string) => logged.push(m) } as never;
    const fleet = new Fleet({
      store: {} as Store,
      hub: { publish: async () => {} } as unknown as Hub,
      clock,
      log,
      registry: new Registry(),
      missedHeartbeats: 3,
      replicas: { ownership, livenessTopic: topic, revokedTopic: 'ew/_cloud/x/revoked', replicaId: 'r0' },
    });
    const theirs = sites.find((s) => !ownership.owns(s))!;
    const news = (over: object) => Buffer.from(JSON.stringify({ v: 1, from: 'r1', full: false, sites: [[theirs, 1, 1000, 'b']], ...over }));
    await fleet.handle(topic, Buffer.alloc(MAX_NEWS_BYTES + 1, 0x20));
    await fleet.handle(topic, Buffer.from('{"v":1,'));
    await fleet.handle(topic, news({ sites: [['NOT A SITE', 1, 1000, 'b']] }));
    await fleet.handle(topic, news({ sites: Array.from({ length: 5001 }, () => [theirs, 1, 1000, 'b']) }));
    assert.equal(fleet.isOnline(theirs), false, 'nothing taken from the bad ones');
    assert.deepEqual(logged.slice(0, 1), ['liveness news over its size bound; dropped']);
    assert.equal(logged.filter((m) => /malformed liveness news/.test(m)).length, 2);
    assert.equal(fleet.status.state('NOT A SITE'), 'offline');
    await fleet.handle(topic, news({}));
    assert.equal(fleet.isOnline(theirs), true, 'a good message is taken');
  });
});
