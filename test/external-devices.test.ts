import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { mosquittoAvailable, MOSQUITTO_URL } from './support/mosquitto.ts';

const skip = await mosquittoAvailable();

describe('a site reading its devices from an existing broker (Mosquitto)', { skip }, () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  const root = `plant${randomBytes(3).toString('hex')}`;
  before(async () => {
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { plant: root }, deviceBroker: MOSQUITTO_URL });
  });
  after(async () => {
    await edge?.stop();
    await cloud?.stop();
  });

  it('runs a deployed rule on messages from the external broker and sends results to the cloud', async () => {
    const manifest = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'ext-devices', version: '1.0.0' },
      spec: {
        streams: [{ name: 'temp', topic: `${root}/+/temp`, schema: { sensor: 'string', c: 'float' } }],
        rules: [{ name: 'hot', sql: 'SELECT sensor, c FROM temp WHERE c > 80', sinks: [{ uplink: 'hot' }] }],
        policy: { egress: { allow: ['hot'] } },
      },
    };
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'ext-devices', version: '1.0.0', selector: { plant: root } });
    await waitFor('rule running', () => edge.handle.supervisor.running().length === 1);
    const dev = await mqtt.connectAsync(MOSQUITTO_URL, { reconnectPeriod: 0 });
    // The subscription is made when the rule starts; publish until the first result shows.
    const hot = await waitFor('a result at the cloud', async () => {
      await dev.publishAsync(`${root}/s1/temp`, JSON.stringify({ sensor: 's1', c: 90 }), { qos: 1 });
      await dev.publishAsync(`${root}/s2/temp`, JSON.stringify({ sensor: 's2', c: 20 }), { qos: 1 });
      const r = await cloud.api('GET', `/api/v1/results?site=${edge.handle.siteId}&stream=hot`);
      return r.body.items.length ? r.body.items : undefined;
    });
    assert.deepEqual(hot[0].data, { sensor: 's1', c: 90 });
    assert.ok(hot.every((x: any) => x.data.c > 80));
    await dev.endAsync();
  });
});
