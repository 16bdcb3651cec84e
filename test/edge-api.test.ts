import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { topics } from '../src/contracts/topics.ts';

describe('edge: local API, device broker and bad input', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  before(async () => {
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, {
      outboxMax: 5,
      outboxOverflow: 'reject-new',
      uplinkAllow: ['alerts', { stream: 'scores', fields: ['machineId', 'score'] }],
    });
    await waitFor('connected', () => edge.handle.linkState() === 'connected');
  });
  after(async () => {
    await edge.stop();
    await cloud.stop();
  });

  const call = async (path: string, init: RequestInit & { key?: string } = {}) => {
    const res = await fetch(`${edge.handle.apiUrl}${path}`, {
      ...init,
      headers: {
        ...(init.key !== '' ? { authorization: `Bearer ${init.key ?? edge.apiKey}` } : {}),
        ...(init.body ? { 'content-type': 'application/json' } : {}),
      },
    });
    const text = await res.text();
    try {
      return { status: res.status, body: JSON.parse(text) };
    } catch {
      return { status: res.status, body: text };
    }
  };

  it('authenticates everything but /healthz', async () => {
    assert.equal((await call('/healthz', { key: '' })).body.link, 'connected');
    assert.equal((await call('/api/v1/status', { key: '' })).body.code, 'UNAUTHENTICATED');
    assert.equal((await call('/api/v1/status', { key: 'ewl_wrong' })).status, 401);
    assert.equal((await call('/metrics', { key: '' })).status, 401);
    const status = (await call('/api/v1/status')).body;
    assert.equal(status.siteId, edge.handle.siteId);
    assert.equal(status.outbox.pending, 0);
  });

  it('answers bad uplink requests with codes and paths', async () => {
    const bad = await call('/api/v1/uplink/alerts', { method: 'POST', body: JSON.stringify({ records: [] }) });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, 'VALIDATION_FAILED');
    assert.equal(bad.body.path, 'records');
    assert.equal((await call('/api/v1/uplink/bad%20name', { method: 'POST', body: JSON.stringify({ records: [1] }) })).body.path, 'stream');
    assert.equal((await call('/api/v1/uplink/alerts', { method: 'POST', body: '{"records":' })).body.code, 'INVALID_JSON');
  });

  it('refuses uplink the egress policy does not grant, and the reserved _ streams (forged audit rows)', async () => {
    const post = (stream: string, records: unknown[]) =>
      call(`/api/v1/uplink/${stream}`, { method: 'POST', body: JSON.stringify({ records }) });
    const forged = await post('_egress-audit', [
      { minute: 0, app: 'x', rule: 'y', stream: 'alerts', destination: 'cloud', records: 0, bytes: 0 },
    ]);
    assert.equal(forged.status, 403);
    assert.equal(forged.body.code, 'STREAM_RESERVED');
    assert.equal(forged.body.path, 'stream');
    assert.equal((await post('_anything', [1])).body.code, 'STREAM_RESERVED');
    const ungranted = await post('card-numbers', [{ card: '4111111111111111' }]);
    assert.equal(ungranted.status, 400);
    assert.equal(ungranted.body.code, 'EGRESS_DENIED');
    assert.match(ungranted.body.message, /--uplink-allow card-numbers/);
    const extraField = await post('scores', [
      { machineId: 'm1', score: 0.9 },
      { machineId: 'm2', score: 0.1, card: '4111111111111111' },
    ]);
    assert.equal(extraField.body.code, 'EGRESS_DENIED');
    assert.equal(extraField.body.path, 'records[1].card');
    assert.equal(edge.handle.outbox.pending, 0, 'nothing refused reached the outbox');
    // What is granted goes, and is audited like a rule's uplink.
    assert.equal((await post('scores', [{ machineId: 'm1', score: 0.9 }])).status, 202);
    const audit = (await call('/api/v1/egress')).body.items;
    assert.deepEqual(
      audit.map((r: any) => [r.app, r.rule, r.stream, r.destination, r.records]),
      [['(operator)', 'local-api', 'scores', 'cloud', 1]],
    );
    await waitFor('sent', () => edge.handle.outbox.pending === 0);
    // No forged audit row reached the cloud's egress view.
    const cloudAudit = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/egress`);
    assert.ok(cloudAudit.body.items.every((r: any) => r.app !== 'x'));
  });

  it('refuses writes past the bound under reject-new, keeping what it had', async () => {
    await cloud.stop();
    await waitFor('link down', () => edge.handle.linkState() !== 'connected');
    assert.equal((await call('/api/v1/uplink/alerts', { method: 'POST', body: JSON.stringify({ records: [1, 2, 3, 4] }) })).status, 202);
    const full = await call('/api/v1/uplink/alerts', { method: 'POST', body: JSON.stringify({ records: [5, 6] }) });
    assert.equal(full.status, 503);
    assert.equal(full.body.code, 'OUTBOX_FULL');
    assert.equal(edge.handle.outbox.pending, 4);
    await cloud.restart();
    await waitFor('the four arrive', async () => (await cloud.handle.store.countUplink(edge.handle.siteId, 'alerts')) === 4);
  });

  it('counts a malformed desired-state message and keeps running', async () => {
    await waitFor('connected again', () => edge.handle.linkState() === 'connected');
    const gen = edge.handle.supervisor.generation;
    await cloud.handle.hub.publish(topics.desired(edge.handle.siteId), '{"v":1,"type":"desired","body":{}}', { retain: false });
    await waitFor('counted', async () => /^ew_edge_desired_invalid_total 1$/m.test((await call('/metrics')).body));
    assert.equal(edge.handle.supervisor.generation, gen);
    assert.equal(edge.handle.linkState(), 'connected');
  });

  it('lets devices in with the device password only, and keeps them out of ew/', async () => {
    await assert.rejects(mqtt.connectAsync(edge.handle.deviceUrl, { username: 'device', password: 'wrong', reconnectPeriod: 0 }));
    await assert.rejects(mqtt.connectAsync(edge.handle.deviceUrl, { reconnectPeriod: 0 }));
    const dev = await mqtt.connectAsync(edge.handle.deviceUrl, { username: 'device', password: edge.devicePassword, reconnectPeriod: 0 });
    const listener = await mqtt.connectAsync(edge.handle.deviceUrl, {
      username: 'device',
      password: edge.devicePassword,
      reconnectPeriod: 0,
    });
    const seen: string[] = [];
    listener.on('message', (t) => seen.push(t));
    await listener.subscribeAsync('#');
    const before = edge.handle.devices.stats.messagesIn;
    await dev.publishAsync('factory/m1/vibration', JSON.stringify({ rms: 1 }), { qos: 1 });
    await waitFor('device message seen', () => seen.includes('factory/m1/vibration'));
    assert.equal(edge.handle.devices.stats.messagesIn, before + 1);
    const closed = new Promise<void>((r) => dev.once('close', () => r()));
    dev.publish('ew/x/up/alerts', 'forged', { qos: 1 });
    await closed;
    assert.ok(!seen.includes('ew/x/up/alerts'));
    await listener.endAsync();
    dev.end(true);
  });
});
