import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestCloud, waitFor, type TestCloud } from './support/harness.ts';
import { topics } from '../src/contracts/topics.ts';
import { ENVELOPE_VERSION } from '../src/contracts/messages.ts';
import { mayPublish, maySubscribe } from '../src/cloud/hub/embedded.ts';

interface Creds {
  siteId: string;
  mqtt: { url: string; username: string; password: string; clientId: string };
}

function connect(c: Creds, over: Partial<mqtt.IClientOptions> = {}): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(c.mqtt.url, {
      clientId: c.mqtt.clientId,
      username: c.mqtt.username,
      password: c.mqtt.password,
      protocolVersion: 4,
      reconnectPeriod: 0,
      ...over,
    });
    client.once('connect', () => resolve(client));
    client.once('error', (e) => {
      client.end(true);
      reject(e);
    });
  });
}

/** The granted QoS, or the SUBACK failure code (128): mqtt.js rejects on a refusal. */
async function subscribeCode(c: MqttClient, filter: string): Promise<number> {
  try {
    return (await c.subscribeAsync(filter, { qos: 1 }))[0]!.qos;
  } catch (e) {
    const granted = (e as { packet?: { granted?: number[] } }).packet?.granted;
    if (granted) return granted[0]!;
    throw e;
  }
}

const uplink = (id: string) =>
  JSON.stringify({ v: ENVELOPE_VERSION, id, ts: 1, type: 'uplink', body: { stream: 's', at: 1, data: { id } } });

describe('the embedded hub confines each site to ew/{siteId}/#', () => {
  let cloud: TestCloud;
  let a: Creds;
  let b: Creds;
  const clients: MqttClient[] = [];
  before(async () => {
    cloud = await startTestCloud();
    a = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
    b = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
  });
  after(async () => {
    for (const c of clients) c.end(true);
    await cloud.stop();
  });

  it('pure ACL: own topics only, no wildcards', () => {
    assert.equal(mayPublish('s1', 'ew/s1/up/alerts'), true);
    assert.equal(mayPublish('s1', 'ew/s1/reported'), true);
    assert.equal(mayPublish('s1', 'ew/s1/desired'), false, 'only the cloud writes desired state');
    assert.equal(mayPublish('s1', 'ew/s2/up/alerts'), false);
    assert.equal(mayPublish('s1', 'ew/s1/up/a/b'), false);
    assert.equal(mayPublish('s1', 'other/topic'), false);
    assert.equal(maySubscribe('s1', 'ew/s1/desired'), true);
    assert.equal(maySubscribe('s1', 'ew/s1/#'), false);
    assert.equal(maySubscribe('s1', 'ew/+/desired'), false);
    assert.equal(maySubscribe('s1', 'ew/s2/desired'), false);
    assert.equal(maySubscribe('s1', '#'), false);
  });

  it("refuses to subscribe to another site's topics, and to wildcards", async () => {
    const ca = await connect(a);
    clients.push(ca);
    for (const filter of [topics.desired(b.siteId), `ew/${b.siteId}/#`, 'ew/#', '#', `ew/+/desired`]) {
      assert.equal(await subscribeCode(ca, filter), 128, `${filter} must be refused`);
    }
    assert.equal(await subscribeCode(ca, topics.desired(a.siteId)), 1);
  });

  it("cannot read another site's desired state", async () => {
    const ca = await connect(a);
    clients.push(ca);
    const seen: string[] = [];
    ca.on('message', (t) => seen.push(t));
    assert.equal(await subscribeCode(ca, topics.desired(a.siteId)), 1);
    assert.equal(await subscribeCode(ca, topics.desired(b.siteId)), 128);
    await waitFor('own retained desired state', () => seen.includes(topics.desired(a.siteId)));
    // A marker published after the other site's topic proves delivery order has passed it.
    await cloud.handle.hub.publish(topics.desired(b.siteId), '{"probe":1}', { retain: false });
    await cloud.handle.hub.publish(topics.desired(a.siteId), '{"marker":1}', { retain: false });
    await waitFor('marker', () => seen.filter((t) => t === topics.desired(a.siteId)).length >= 2);
    assert.ok(!seen.includes(topics.desired(b.siteId)));
  });

  it("cannot write another site's topics: the publish is dropped and the connection closed", async () => {
    const ca = await connect(a);
    clients.push(ca);
    const closed = new Promise<void>((r) => ca.once('close', () => r()));
    ca.publish(topics.up(b.siteId, 's'), uplink('forged'), { qos: 1 });
    await closed;
    // Our own publish through a fresh connection arrives; the forged one never does.
    const ca2 = await connect(a);
    clients.push(ca2);
    await ca2.publishAsync(topics.up(a.siteId, 's'), uplink('genuine'), { qos: 1 });
    assert.equal(await cloud.handle.store.countUplink(a.siteId), 1);
    assert.equal(await cloud.handle.store.countUplink(b.siteId), 0);
  });

  it('refuses a wrong password, a borrowed client id and a revoked site', async () => {
    await assert.rejects(connect({ ...a, mqtt: { ...a.mqtt, password: 'ews_wrong' } }), /Bad username or password|Not authorized/i);
    await assert.rejects(connect({ ...a, mqtt: { ...a.mqtt, clientId: b.siteId } }), /Bad username or password|Not authorized|Identifier/i);
    const live = await connect(b);
    clients.push(live);
    const cut = new Promise<void>((r) => live.once('close', () => r()));
    await cloud.api('POST', `/api/v1/sites/${b.siteId}/revoke`);
    await cut;
    await assert.rejects(connect(b), /Not authorized|Bad username or password/i);
  });
});
