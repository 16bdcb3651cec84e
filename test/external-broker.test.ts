import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { mosquittoAvailable, MOSQUITTO_URL } from './support/mosquitto.ts';
import { topics } from '../src/contracts/topics.ts';

const skip = await mosquittoAvailable();

describe('the cloud on an external broker (Mosquitto)', { skip }, () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  before(async () => {
    // Its own installation (share group): the broker is shared with other runs (issue #17.6).
    const tag = randomBytes(4).toString('hex');
    cloud = await startTestCloud({ broker: MOSQUITTO_URL, installationId: `t-${tag}` });
    edge = await startTestEdge(cloud, { labels: { tier: 'edge' }, uplinkAllow: ['alerts'] });
  });
  after(async () => {
    const siteId = edge?.handle.siteId;
    await edge?.stop().catch(() => {});
    if (siteId) await cloud.handle.hub.publish(topics.desired(siteId), '', { retain: true }).catch(() => {});
    await cloud?.stop().catch(() => {});
  });

  it('enrolls an agent that speaks MQTT 5 to the broker and shows it online', async () => {
    const info = await cloud.api('GET', '/api/v1/info');
    assert.equal(info.body.hub, 'external');
    assert.equal(info.body.agentMqttUrl, MOSQUITTO_URL);
    await waitFor('site online', async () => (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`)).body.state === 'online');
  });

  it('delivers desired state and stores uplink results once', async () => {
    await cloud.api('POST', '/api/v1/apps', {
      manifest: { apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name: 'ext-app', version: '1.0.0' }, spec: {} },
    });
    await cloud.api('POST', '/api/v1/deployments', { app: 'ext-app', version: '1.0.0', selector: { tier: 'edge' } });
    await waitFor('app running', () => edge.handle.supervisor.running().some((a) => a.name === 'ext-app'));
    await edge.uplink(
      'alerts',
      Array.from({ length: 100 }, (_, i) => ({ i })),
    );
    await waitFor('100 stored', async () => (await cloud.handle.store.countUplink(edge.handle.siteId)) === 100);
    // The broker's PUBACK deletes nothing here: the cloud's store acknowledgement empties the outbox.
    await waitFor('outbox emptied by store acknowledgements', () => edge.handle.outbox.pending === 0);
    assert.match((await cloud.api('GET', '/metrics')).body, /ew_cloud_uplink_store_acks_total [1-9]/);
  });
});

describe('two installations on one broker, kept apart by installation id and topic prefix', { skip }, () => {
  const tag = randomBytes(4).toString('hex');
  let a: TestCloud;
  let b: TestCloud;
  let ea: TestEdge;
  let eb: TestEdge;
  let spy: mqtt.MqttClient;
  const seen: string[] = [];
  before(async () => {
    spy = await mqtt.connectAsync(MOSQUITTO_URL, { clientId: `ew-spy-${tag}`, protocolVersion: 5, clean: true });
    spy.on('message', (t) => {
      if (seen.length < 10_000) seen.push(t);
    });
    await spy.subscribeAsync([`ew/#`, `a-${tag}/#`, `b-${tag}/#`], { qos: 0 });
    a = await startTestCloud({ broker: MOSQUITTO_URL, installationId: `a-${tag}`, topicPrefix: `a-${tag}` });
    b = await startTestCloud({ broker: MOSQUITTO_URL, installationId: `b-${tag}`, topicPrefix: `b-${tag}` });
    ea = await startTestEdge(a, { uplinkAllow: ['alerts'] });
    eb = await startTestEdge(b, { uplinkAllow: ['alerts'] });
  });
  after(async () => {
    for (const [e, c] of [
      [ea, a],
      [eb, b],
    ] as const) {
      const siteId = e?.handle.siteId;
      await e?.stop().catch(() => {});
      if (siteId) await c.handle.hub.publish(topics.desired(siteId), '', { retain: true }).catch(() => {});
      await c?.stop().catch(() => {});
    }
    await spy?.endAsync();
  });

  it("each cloud stores only its own sites' results, all on its own topic tree", async () => {
    await ea.uplink(
      'alerts',
      Array.from({ length: 20 }, (_, i) => ({ i })),
    );
    await eb.uplink(
      'alerts',
      Array.from({ length: 30 }, (_, i) => ({ i })),
    );
    await waitFor('A stored 20', async () => (await a.handle.store.countUplink(ea.handle.siteId)) === 20);
    await waitFor('B stored 30', async () => (await b.handle.store.countUplink(eb.handle.siteId)) === 30);
    await waitFor(
      "both outboxes emptied by their own cloud's acknowledgements",
      () => ea.handle.outbox.pending === 0 && eb.handle.outbox.pending === 0,
    );
    assert.equal(await a.handle.store.countUplink(eb.handle.siteId), 0);
    assert.equal(await b.handle.store.countUplink(ea.handle.siteId), 0);
    const ours = (site: string) => seen.filter((t) => t.includes(`/${site}/`));
    assert.ok(
      ours(ea.handle.siteId).length > 0 && ours(ea.handle.siteId).every((t) => t.startsWith(`a-${tag}/ew/`)),
      "A's site only under a-…/ew/",
    );
    assert.ok(
      ours(eb.handle.siteId).every((t) => t.startsWith(`b-${tag}/ew/`)),
      "B's site only under b-…/ew/",
    );
    assert.equal((await a.api('GET', `/api/v1/sites/${ea.handle.siteId}`)).body.state, 'online');
  });
});
