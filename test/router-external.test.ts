import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { startTestCloud, startTestEdge, waitFor, removeDirs, type TestCloud, type TestEdge } from './support/harness.ts';
import { mosquittoAvailable, MOSQUITTO_URL } from './support/mosquitto.ts';
import { topics } from '../src/contracts/topics.ts';

const skip = await mosquittoAvailable();
const bytes = readFileSync(new URL('../models/vibration-ae.onnx', import.meta.url));
const sha = createHash('sha256').update(bytes).digest('hex');

/** Routed inference through an operator's broker (Mosquitto, MQTT 5 agents) instead of the embedded hub. */
describe('routed inference over an external broker (Mosquitto)', { skip }, () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  before(async () => {
    cloud = await startTestCloud({ broker: MOSQUITTO_URL, installationId: `t-${randomBytes(4).toString('hex')}` });
    const label = `router-${randomBytes(3).toString('hex')}`;
    edge = await startTestEdge(cloud, { labels: { pool: label } });
    await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(bytes),
    });
    const manifest = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'ext-router', version: '1.0.0' },
      spec: { models: [{ name: 'vib-ae', format: 'onnx', path: 'm.onnx', sha256: sha }], endpoints: [{ name: 'score', model: 'vib-ae' }] },
    };
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'ext-router', version: '1.0.0', selector: { pool: label } });
    await waitFor(
      'model ready at the cloud',
      async () => (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`)).body.status?.models?.[0]?.state === 'ready',
      30_000,
    );
  });
  after(async () => {
    const siteId = edge?.handle.siteId;
    await edge?.stop().catch(() => {});
    if (siteId) await cloud.handle.hub.publish(topics.desired(siteId), '', { retain: true }).catch(() => {});
    await cloud?.stop().catch(() => {});
    removeDirs(cloud.dataDir, edge.dataDir);
  });

  it('answers through the broker with binary frames, as on the embedded hub', async () => {
    const res = await fetch(`${cloud.url}/v2/models/score/infer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 3], data: [1, 3, 120, 1.6, 9, 150] }] }),
    });
    const body = (await res.json()) as any;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.parameters.edgeweave.site, edge.handle.siteId);
    assert.ok(body.outputs[0].data[0] < 0.5 && body.outputs[0].data[1] > 0.9);
  });
});
