import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestCloud, startTestEdge, waitFor, type TestCloud } from './support/harness.ts';
import { mosquittoAvailable, MOSQUITTO_URL } from './support/mosquitto.ts';
import { PG_URL, freshSchema, pgAvailable } from './support/pg.ts';
import { topics } from '../src/contracts/topics.ts';
import { ENVELOPE_VERSION, PAYLOAD_LIMITS } from '../src/contracts/messages.ts';
import type { EmbeddedHub } from '../src/cloud/hub/embedded.ts';
import type { UplinkRecord } from '../src/cloud/store/store.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const memory = () => {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
};
const MB = 1024 * 1024;

interface Enrolled {
  siteId: string;
  mqtt: { url: string; username: string; password: string; clientId: string };
}

const uplink = (over: Record<string, unknown> = {}, body: Record<string, unknown> = {}) =>
  JSON.stringify({
    v: ENVELOPE_VERSION,
    id: randomUUID(),
    ts: 1,
    type: 'uplink',
    ...over,
    body: { stream: 's', at: 1, data: { ok: true }, ...body },
  });
const status = (heartbeatIntervalS: number) =>
  JSON.stringify({
    v: ENVELOPE_VERSION,
    id: randomUUID(),
    ts: 1,
    type: 'status',
    body: {
      agentVersion: '1',
      bootId: 'b',
      uptimeS: 1,
      heartbeatIntervalS,
      generation: 0,
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
    },
  });

async function metric(cloud: TestCloud, name: string): Promise<number> {
  const text = (await cloud.api('GET', '/metrics')).body as string;
  const line = text.split('\n').find((l) => l.startsWith(name));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

/** What every hub must do with site messages: bounds per topic class, strict envelopes, isolation. */
function runSiteMessageSuite(
  name: string,
  o: { startCloud: () => Promise<TestCloud>; connect: (e: Enrolled) => Promise<MqttClient>; skip?: string },
): void {
  describe(`site messages on ${name}`, { skip: o.skip }, () => {
    let cloud: TestCloud;
    let a: Enrolled;
    let b: Enrolled;
    const clients: MqttClient[] = [];
    before(async () => {
      cloud = await o.startCloud();
      a = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
      b = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
    });
    after(async () => {
      for (const c of clients) c.end(true);
      await cloud?.stop();
    });
    const connect = async (e: Enrolled) => {
      const c = await o.connect(e);
      clients.push(c);
      return c;
    };

    it('acknowledges and drops a result over its topic class bound (resending would not shrink it); the next one is stored', async () => {
      const c = await connect(a);
      const before = await metric(cloud, 'ew_cloud_mqtt_payload_oversized_total{kind="up"}');
      const big = uplink({}, { data: { blob: 'x'.repeat(PAYLOAD_LIMITS.up) } });
      await c.publishAsync(topics.up(a.siteId, 'big'), big, { qos: 1 });
      await c.publishAsync(topics.up(a.siteId, 'big'), uplink(), { qos: 1 });
      await waitFor('small one stored', async () => (await cloud.handle.store.countUplink(a.siteId, 'big')) === 1);
      assert.equal(await metric(cloud, 'ew_cloud_mqtt_payload_oversized_total{kind="up"}'), before + 1);
      await c.publishAsync(topics.reported(a.siteId), Buffer.alloc(PAYLOAD_LIMITS.reported + 1, 0x20), { qos: 1 });
      await waitFor(
        'oversized status counted',
        async () => (await metric(cloud, 'ew_cloud_mqtt_payload_oversized_total{kind="reported"}')) === 1,
      );
    });

    it("refuses envelope strings with control characters or over their bound, without failing another site's messages", async () => {
      const ca = await connect(a);
      const cb = await connect(b);
      const poison = [
        uplink({ id: 'bad\u0000id' }),
        uplink({}, { app: 'app\u0000' }),
        uplink({}, { rule: 'r\u001b[2J' }),
        uplink({ id: 'x'.repeat(129) }),
        uplink({}, { at: 8.64e15 }),
      ];
      const invalidBefore = await metric(cloud, 'ew_cloud_mqtt_payload_invalid_total{kind="up"}');
      await Promise.all([
        ...poison.map((p) => ca.publishAsync(topics.up(a.siteId, 'p'), p, { qos: 1 })),
        ...Array.from({ length: 20 }, () => cb.publishAsync(topics.up(b.siteId, 'p'), uplink(), { qos: 1 })),
      ]);
      await waitFor("b's 20 stored", async () => (await cloud.handle.store.countUplink(b.siteId, 'p')) === 20);
      assert.equal(await cloud.handle.store.countUplink(a.siteId, 'p'), 0);
      await waitFor(
        'every poisonous message counted',
        async () => (await metric(cloud, 'ew_cloud_mqtt_payload_invalid_total{kind="up"}')) === invalidBefore + poison.length,
      );
      assert.ok(ca.connected && cb.connected, 'both sites stay connected: a refused message is acknowledged, not resent for ever');
    });

    it('refuses a heartbeat interval out of range: the site does not turn online for ever', async () => {
      const c = await connect(b);
      await c.publishAsync(topics.reported(b.siteId), status(1e12), { qos: 1 });
      await c.publishAsync(topics.reported(b.siteId), status(0.001), { qos: 1 });
      await waitFor('both refused', async () => (await metric(cloud, 'ew_cloud_mqtt_payload_invalid_total{kind="reported"}')) === 2);
      assert.equal(cloud.handle.fleet.isOnline(b.siteId), false);
      await c.publishAsync(topics.reported(b.siteId), status(5), { qos: 1 });
      await waitFor('a valid heartbeat counts', () => cloud.handle.fleet.isOnline(b.siteId));
    });
  });
}

const embeddedConnect = (e: Enrolled) =>
  mqtt.connectAsync(e.mqtt.url, {
    clientId: e.mqtt.clientId,
    username: e.mqtt.username,
    password: e.mqtt.password,
    protocolVersion: 4,
    reconnectPeriod: 0,
  });
runSiteMessageSuite('the embedded hub', { startCloud: () => startTestCloud(), connect: embeddedConnect });

const mosquittoSkip = await mosquittoAvailable();
runSiteMessageSuite('Mosquitto (external hub)', {
  skip: mosquittoSkip,
  // Its own share group: other test runs' clouds on the shared Mosquitto must not take our messages.
  startCloud: () => {
    const tag = randomBytes(4).toString('hex');
    return startTestCloud({ broker: MOSQUITTO_URL, installationId: `t-${tag}` });
  },
  // The shared Mosquitto is anonymous; in production its ACL confines each site (docs/operators.md).
  connect: (e) => mqtt.connectAsync(MOSQUITTO_URL, { clientId: e.siteId, username: e.siteId, protocolVersion: 5, reconnectPeriod: 0 }),
});

describe('retained messages from sites on the embedded hub', () => {
  let cloud: TestCloud;
  let a: Enrolled;
  let c: MqttClient;
  before(async () => {
    cloud = await startTestCloud();
    a = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
    c = await embeddedConnect(a);
  });
  after(async () => {
    c?.end(true);
    await cloud?.stop();
  });

  it('120 retained 200 KB publishes pin nothing: the flag is dropped, memory stays flat', async () => {
    const hub = cloud.handle.hub as EmbeddedHub;
    const held = hub.retainedStats();
    const before = memory();
    const junk = Buffer.alloc(200 * 1024, 0x41); // not JSON: refused as a payload, but acknowledged
    for (let i = 0; i < 120; i++) await c.publishAsync(topics.up(a.siteId, `s${i}`), junk, { qos: 1, retain: true });
    await c.publishAsync(topics.reported(a.siteId), junk.subarray(0, 1000), { qos: 1, retain: true });
    const grown = memory() - before;
    assert.deepEqual(hub.retainedStats(), held, 'no retained message was stored');
    assert.ok(grown < 8 * MB, `memory grew by ${(grown / MB).toFixed(1)} MB (24 MB were sent)`);
  });

  it("counts the guard's refusals in /metrics: a client whose first packet is not CONNECT is cut", async () => {
    const { connect: tcp } = await import('node:net');
    const url = new URL(cloud.handle.mqttUrl);
    const s = tcp(Number(url.port), url.hostname);
    s.on('error', () => {});
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(Buffer.from([0x30, 5, 0, 1, 0x61, 0x62, 0x63])); // a PUBLISH before any CONNECT
    await new Promise<void>((r) => s.once('close', () => r()));
    assert.equal(await metric(cloud, 'ew_cloud_mqtt_guard_refused_total{reason="not-connect"}'), 1);
  });

  it('lets a routed inference answer frame past the JSON answer bound, not a JSON answer', async () => {
    const before = await metric(cloud, 'ew_cloud_mqtt_payload_oversized_total{kind="rpc-res"}');
    const frame = Buffer.concat([Buffer.from('EWF1'), Buffer.alloc(2 * MB)]);
    await c.publishAsync(topics.rpcResponse(a.siteId, 'r1'), frame, { qos: 1 });
    assert.equal(await metric(cloud, 'ew_cloud_mqtt_payload_oversized_total{kind="rpc-res"}'), before, 'a 2 MiB frame is within its bound');
    await c.publishAsync(topics.rpcResponse(a.siteId, 'r2'), Buffer.from(JSON.stringify({ pad: 'x'.repeat(600 * 1024) })), { qos: 1 });
    assert.equal(await metric(cloud, 'ew_cloud_mqtt_payload_oversized_total{kind="rpc-res"}'), before + 1);
    assert.ok(c.connected);
  });

  it('revoking a site clears whatever is retained under its topics', async () => {
    const hub = cloud.handle.hub as EmbeddedHub;
    await hub.publish(`ew/${a.siteId}/rpc/req/left-over`, '{"x":1}', { retain: true });
    const held = hub.retainedStats().messages;
    assert.ok(held >= 2, 'its desired state and the left-over are held');
    await cloud.api('POST', `/api/v1/sites/${a.siteId}/revoke`);
    assert.equal(hub.retainedStats().messages, held - 2);
  });
});

const pgSkip = await pgAvailable();
for (const [engine, skip] of [
  ['SQLite', undefined],
  ['PostgreSQL', pgSkip],
] as const) {
  describe(`one message the store refuses never fails another site's batch (${engine})`, { skip }, () => {
    let cloud: TestCloud;
    let drop: (() => Promise<void>) | undefined;
    before(async () => {
      let db: string | undefined;
      if (engine === 'PostgreSQL') {
        const s = await freshSchema();
        drop = s.drop;
        db = `${PG_URL}?options=${encodeURIComponent(`-c search_path=${s.schema}`)}`;
      }
      cloud = await startTestCloud({ db });
    });
    after(async () => {
      await cloud?.stop();
      await drop?.();
    });

    it('stores the good messages of a shared batch and acknowledges and counts the poisonous one', async () => {
      const ids = await Promise.all(
        [1, 2, 3].map(async () => (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body.siteId as string),
      );
      // The envelope check stops a NUL first (the suite above); this reaches past it, to the
      // store's own refusal, to prove the batch isolation behind it.
      const { uplink } = cloud.handle.fleet;
      const msg = (id: string) =>
        ({ v: 1, id, ts: 1, type: 'uplink', body: { stream: 's', at: 1, data: { n: 1 } } }) as Parameters<typeof uplink.store>[2];
      const results = await Promise.allSettled([
        uplink.store(ids[0]!, 's', msg('good-1')),
        uplink.store(ids[1]!, 's', msg('poison\u0000')),
        uplink.store(ids[2]!, 's', msg('good-2')),
      ]);
      assert.deepEqual(
        results.map((r) => r.status),
        ['fulfilled', 'fulfilled', 'fulfilled'],
        'all acknowledged: nobody is disconnected',
      );
      assert.equal(await cloud.handle.store.countUplink(ids[0]!), 1);
      assert.equal(await cloud.handle.store.countUplink(ids[1]!), 0);
      assert.equal(await cloud.handle.store.countUplink(ids[2]!), 1);
      assert.equal(await metric(cloud, 'ew_cloud_uplink_refused_total'), 1);
    });

    it('answers a NUL in any API input with 400 VALIDATION_FAILED and its path, never 503', async () => {
      const cases: [string, string, unknown, string][] = [
        ['GET', '/api/v1/results?stream=a%00b', undefined, 'querystring.stream'],
        ['GET', '/api/v1/sites/site%00x', undefined, 'params.id'],
        ['POST', '/api/v1/tokens', { description: 'a\u0000b' }, 'description'],
        ['POST', '/api/v1/keys', { name: 'k\u0000' }, 'name'],
        ['POST', '/api/v1/enroll', { token: 'ewj_\u0000' }, 'token'],
        ['PUT', '/api/v1/sites/x/labels', { labels: { 'a\u0000': 'b' } }, 'labels.a\u0000'],
      ];
      for (const [method, path, body, at] of cases) {
        const r = await cloud.api(method, path, body);
        assert.equal(r.status, 400, `${method} ${path}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.code, 'VALIDATION_FAILED');
        assert.equal(r.body.path, at);
      }
    });
  });
}

describe('the site checks a result before it enters its outbox', () => {
  it('refuses a record over the uplink bound with VALIDATION_FAILED and its index, keeping nothing of the batch', async () => {
    const cloud = await startTestCloud();
    const edge = await startTestEdge(cloud, { uplinkAllow: ['big'] });
    try {
      const before = edge.handle.outbox.pending;
      const r = await edge.uplink('big', [{ ok: 1 }, { blob: 'x'.repeat(PAYLOAD_LIMITS.up) }]);
      assert.equal(r.status, 400);
      assert.equal(r.body.code, 'VALIDATION_FAILED');
      assert.equal(r.body.path, 'records[1]');
      assert.equal(edge.handle.outbox.pending, before, 'nothing enqueued');
      assert.equal((await edge.uplink('big', [{ ok: 1 }])).status, 202);
    } finally {
      await edge.stop();
      await cloud.stop();
    }
  });
});

/** Retained topics under `filter`, read with a marker published after the SUBACK (no timer). */
async function retainedUnder(url: string, filter: string, marker: string): Promise<string[]> {
  const c = await mqtt.connectAsync(url, { clientId: `probe-${randomBytes(4).toString('hex')}`, protocolVersion: 5, reconnectPeriod: 0 });
  try {
    const found: string[] = [];
    const done = new Promise<void>((r) =>
      c.on('message', (t, p, pkt) => {
        if (t === marker) r();
        else if (pkt.retain && p.length) found.push(t);
      }),
    );
    await c.subscribeAsync(filter, { qos: 0 });
    await c.publishAsync(marker, 'm', { qos: 0 });
    await done;
    return found.sort();
  } finally {
    await c.endAsync(true);
  }
}

describe('revoking a site clears its retained messages on Mosquitto (external hub)', { skip: mosquittoSkip }, () => {
  it('what a site left retained under its topics is gone after revocation', async () => {
    const tag = randomBytes(4).toString('hex');
    const cloud = await startTestCloud({ broker: MOSQUITTO_URL, installationId: `t-${tag}` });
    try {
      const e: Enrolled = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
      const c = await mqtt.connectAsync(MOSQUITTO_URL, { clientId: e.siteId, username: e.siteId, protocolVersion: 5, reconnectPeriod: 0 });
      // Mosquitto's ACLs cannot refuse retain per client: the site manages to retain these.
      await c.publishAsync(topics.up(e.siteId, 'pinned'), uplink(), { qos: 1, retain: true });
      await c.publishAsync(topics.reported(e.siteId), status(5), { qos: 1, retain: true });
      await c.endAsync(true);
      const marker = `ew/${e.siteId}/rpc/req/probe-${tag}`;
      assert.deepEqual(
        await retainedUnder(MOSQUITTO_URL, `ew/${e.siteId}/#`, marker),
        [topics.desired(e.siteId), topics.reported(e.siteId), topics.up(e.siteId, 'pinned')].sort(),
      );
      assert.equal((await cloud.api('POST', `/api/v1/sites/${e.siteId}/revoke`)).status, 200);
      assert.deepEqual(await retainedUnder(MOSQUITTO_URL, `ew/${e.siteId}/#`, marker), []);
    } finally {
      await cloud.stop();
    }
  });
});
