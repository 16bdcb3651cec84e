import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';
import { startTestCloud, startTestEdge, tempDir, waitFor, removeDirs } from './support/harness.ts';
import { durableRuleHost } from './support/rule-host.ts';
import { Intake } from '../src/edge/journal.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import { silentLogger } from '../src/lib/logger.ts';

const manifest = (name: string) => ({
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name, version: '1.0.0' },
  spec: {
    streams: [{ name: 'recs', topic: 'bp/+/rec', format: 'json', schema: { dev: 'string', n: 'int' } }],
    rules: [{ name: 'pass', sql: 'SELECT dev, n FROM recs', sinks: [{ uplink: 'out' }] }],
    policy: { egress: { allow: ['out'] } },
  },
});

describe('overflow is never silent: a full reject-new outbox slows the device', () => {
  const dirs: string[] = [];
  after(() => removeDirs(...dirs));

  it('withholds PUBACKs while the outbox is full, counts them by reason, and acknowledges once there is room — nothing lost, nothing doubled', async () => {
    const cloud = await startTestCloud();
    const edge = await startTestEdge(cloud, { labels: { bp: 'yes' }, outboxMax: 30, outboxOverflow: 'reject-new' });
    dirs.push(cloud.dataDir, edge.dataDir);
    try {
      assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: manifest('bp') })).status, 201);
      assert.equal((await cloud.api('POST', '/api/v1/deployments', { app: 'bp', version: '1.0.0', selector: { bp: 'yes' } })).status, 201);
      await waitFor('the rule running', () => edge.handle.supervisor.running().some((a) => a.name === 'bp'), 30_000);
      const siteId = edge.handle.siteId;
      const tenantId = (await cloud.handle.store.getSiteById(siteId))!.tenantId;
      await cloud.stop(); // nothing leaves the outbox now

      const device = await mqtt.connectAsync(edge.handle.deviceUrl, {
        username: 'device',
        password: edge.devicePassword,
        reconnectPeriod: 0,
      });
      const acked = new Set<number>();
      for (let n = 0; n < 60; n++)
        device.publish(`bp/d${n % 3}/rec`, JSON.stringify({ dev: `d${n % 3}`, n }), { qos: 1 }, (err) => {
          if (!err) acked.add(n);
        });
      const metrics = async () =>
        (await fetch(`${edge.handle.apiUrl}/metrics`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).text();
      await waitFor(
        'acknowledgements withheld for a full outbox',
        async () => /ew_edge_device_acks_withheld_total\{reason="outbox_full"\} [1-9]/.test(await metrics()),
        15_000,
        25,
      );
      await waitFor('the outbox full', () => edge.handle.outbox.pending === 30, 15_000);
      await waitFor('the PUBACKs of what fits', () => acked.size >= 30, 15_000);
      // Exactly what fits was acknowledged; the rest waits unacknowledged at the device.
      assert.equal(acked.size, 30);
      assert.deepEqual(
        [...acked].sort((a, b) => a - b),
        Array.from({ length: 30 }, (_, i) => i),
      );
      const rules = (await (
        await fetch(`${edge.handle.apiUrl}/api/v1/rules`, { headers: { authorization: `Bearer ${edge.apiKey}` } })
      ).json()) as { items: { sinkDropped: number; sinkErrors: number }[] };
      assert.equal(rules.items[0]!.sinkDropped, 0, 'no result refused: the device was slowed instead');
      assert.equal(edge.handle.outbox.dropped, 0);

      // A record no stream reads is acknowledged and counted by topic, never dropped silently.
      // (Another device: aedes reads nothing more from one whose publishes wait for their PUBACK.)
      const other = await mqtt.connectAsync(edge.handle.deviceUrl, {
        username: 'device',
        password: edge.devicePassword,
        reconnectPeriod: 0,
      });
      await other.publishAsync('nobody/reads/this', '{"x":1}', { qos: 1 });
      await other.endAsync();
      assert.match(await metrics(), /ew_edge_records_unrouted_total\{topic="nobody\/reads\/this"\} 1\b/);

      await cloud.restart(); // the outbox drains, the withheld records go through
      await waitFor('all 60 acknowledged', () => acked.size === 60, 30_000);
      await waitFor('all 60 at the cloud', async () => (await cloud.handle.store.countUplink(siteId, 'out')) >= 60, 30_000, 50);
      const ns = (await cloud.handle.store.queryUplink(tenantId, { siteId, stream: 'out', limit: 1000 }))
        .map((r) => (r.data as { n: number }).n)
        .sort((a, b) => a - b);
      assert.deepEqual(
        ns,
        Array.from({ length: 60 }, (_, i) => i),
      );
      await device.endAsync();
    } finally {
      await edge.stop();
      await cloud.stop();
    }
  });

  it('counts every result a full outbox refuses in the rule status and the outbox drop total', async () => {
    const dir = tempDir('bp-unit');
    dirs.push(dir);
    const { db, outbox, journal, host, feed } = durableRuleHost(dir, { outbox: { maxMessages: 5, overflow: 'reject-new' } });
    await host.start({ name: 'bp', version: '1.0.0', deploymentId: 'd', manifest: parseManifest(manifest('bp')) });
    const recs = Array.from({ length: 8 }, (_, n) => ({ topic: 'bp/d/rec', payload: Buffer.from(JSON.stringify({ dev: 'd', n })) }));
    feed(recs);
    host.commit();
    const st = host.statuses()[0]!;
    assert.equal(st.sinkDropped, 8);
    assert.equal(st.sinkErrors, 8);
    assert.match(st.blocked ?? '', /outbox full \(reject-new\): 8 results refused/);
    assert.equal(outbox.pending, 0, 'nothing partial written');
    assert.equal(outbox.dropped, 8, 'ew_edge_outbox_dropped_total counts them');
    // The records are done with (counted), so they leave the journal.
    assert.equal(journal.pending, 0);
    host.close();
    db.close();
  });

  it('admits a record only when every result it can lead to fits: rules × uplink sinks × windows, and open windows reserved — reject-new never over-admits', async () => {
    const dir = tempDir('bp-room');
    dirs.push(dir);
    const { db, clock, outbox, journal, router, host } = durableRuleHost(dir, { outbox: { maxMessages: 20, overflow: 'reject-new' } });
    // Per record: `pass` writes one result, `twice` two (two uplink sinks), `win` one per group
    // and 2 s window of a 4 s hopping window (two windows per record): five rows in all.
    const m = manifest('room');
    const app = {
      ...m,
      spec: {
        ...m.spec,
        rules: [
          ...m.spec.rules,
          { name: 'twice', sql: 'SELECT n FROM recs', sinks: [{ uplink: 'out' }, { uplink: 'copy' }] },
          { name: 'win', sql: 'SELECT dev, count(*) AS c FROM recs GROUP BY dev, HOPPINGWINDOW(ss, 4, 2)', sinks: [{ uplink: 'wins' }] },
        ],
        policy: { egress: { allow: ['out', 'copy', 'wins'] } },
      },
    };
    await host.start({ name: 'room', version: '1.0.0', deploymentId: 'd', manifest: parseManifest(app) });
    assert.equal(host.cost('bp/d0/rec'), 5);
    assert.equal(host.cost('other/topic'), 0);
    const ticks: (() => void)[] = [];
    const intake = new Intake({
      journal,
      clock,
      log: silentLogger(),
      routes: (t) => router.routes(t),
      deliver: (seq, topic, payload, props) => {
        router.onMessage(topic, payload, props, seq);
        host.delivered(seq);
      },
      gate: () => undefined,
      room: () => outbox.room - host.reserved(),
      cost: (t) => host.cost(t),
      onUnrouted: () => {},
      onWithheld: () => {},
      defer: (fn) => ticks.push(fn),
    });
    const acked = new Set<number>();
    for (let n = 0; n < 40; n++)
      void intake.accept(`bp/d${n % 2}/rec`, Buffer.from(JSON.stringify({ dev: `d${n % 2}`, n })), undefined).then(() => acked.add(n));
    const settle = async () => {
      while (ticks.length) ticks.shift()!();
      host.commit();
      await new Promise((r) => setImmediate(r));
    };
    const refused = () => host.statuses().reduce((a, s) => a + (s.sinkDropped ?? 0), 0);
    await settle();
    // 20 rows of room at 5 a record: 4 records, not 20.
    assert.equal(acked.size, 4);
    assert.equal(intake.withholding, 'outbox_full');
    // 4 + 8 rows written now; the hopping windows hold the rest of what those 4 records owe.
    assert.equal(outbox.pending, 12);
    assert.ok(host.reserved() >= 4, `open windows reserved (${host.reserved()})`);
    // The windows close: their rows fit, none refused.
    clock.advance(10_000);
    await settle();
    assert.equal(refused(), 0, 'no result refused');
    assert.equal(outbox.dropped, 0);
    assert.ok(outbox.pending <= 20);
    // The cloud takes what is there; the rest of the records come in as room frees, never past it.
    for (let round = 0; round < 40 && acked.size < 40; round++) {
      outbox.ack(outbox.peek(0, 1000).map((r) => r.seq));
      intake.wake();
      await settle();
      clock.advance(10_000);
      await settle();
      assert.equal(refused(), 0, `no result refused (round ${round})`);
      assert.ok(outbox.pending <= 20);
    }
    assert.equal(acked.size, 40, 'every record acknowledged in the end');
    assert.equal(outbox.dropped, 0);
    intake.close();
    host.close();
    db.close();
  });
});
