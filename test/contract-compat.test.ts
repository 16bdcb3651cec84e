import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestCloud, waitFor, type TestCloud } from './support/harness.ts';
import { topics } from '../src/contracts/topics.ts';
import { CONTRACT, CONTRACT_VERSION } from '../src/contracts/messages.ts';

/**
 * A cloud of this version against an agent that speaks the previous contract version (1.0): it
 * enrolled without a `contractVersion`, sends envelopes with `v: 1` and no `minor`, refused
 * `devices.*` requests with an `{error}` result, and reads desired state with its own (1.0)
 * check: `v === 1`. Written by hand here, as such an agent wrote them.
 */
const v10 = (type: string, body: unknown) => JSON.stringify({ v: 1, id: randomUUID(), ts: Date.now(), type, body });
const statusBody = {
  agentVersion: '0.9.0',
  bootId: 'b1',
  uptimeS: 1,
  heartbeatIntervalS: 60,
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
};

describe('contract version: this cloud with a 1.0 agent', () => {
  let cloud: TestCloud;
  let site: { siteId: string; mqtt: { url: string; clientId: string; username: string; password: string }; contractVersion?: string };
  let c: MqttClient;
  /** What the old agent answers to each request method (set per test). */
  const answers = new Map<string, (params: Record<string, unknown>) => unknown>();
  const desired: unknown[] = [];

  before(async () => {
    cloud = await startTestCloud();
    const r = await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '');
    assert.equal(r.status, 201, JSON.stringify(r.body));
    site = r.body;
    c = await mqtt.connectAsync(site.mqtt.url, {
      clientId: site.mqtt.clientId,
      username: site.mqtt.username,
      password: site.mqtt.password,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    c.on('message', (topic, payload) => {
      if (topic === topics.desired(site.siteId)) {
        const m = JSON.parse(payload.toString());
        // The 1.0 agent's check was `v: z.literal(1)` on a non-strict object: `minor` is ignored.
        if (m.v === 1 && m.type === 'desired') desired.push(m);
        return;
      }
      const req = JSON.parse(payload.toString());
      const answer = answers.get(req.body.method);
      const body = answer
        ? answer(req.body.params)
        : { ok: false, error: { code: 'NOT_FOUND', message: `the agent has no request "${req.body.method}"` } };
      c.publishAsync(topics.rpcResponse(site.siteId, topic.split('/').at(-1)!), v10('rpc-response', body), { qos: 1 }).catch(() => {}); // the cloud may stop first
    });
    await c.subscribeAsync({ [topics.desired(site.siteId)]: { qos: 1 }, [topics.rpcRequests(site.siteId)]: { qos: 1 } });
    await c.publishAsync(topics.reported(site.siteId), v10('status', statusBody), { qos: 1 });
    await waitFor('online', async () => (await cloud.api('GET', `/api/v1/sites/${site.siteId}`)).body.state === 'online');
  });
  after(async () => {
    await c?.endAsync(true);
    await cloud?.stop();
  });

  it("enrolls without a contract version, and is told the cloud's", () => {
    assert.equal(site.contractVersion, CONTRACT_VERSION);
  });

  it('an enrollment of a newer major is refused with CONTRACT_VERSION_UNSUPPORTED, and the token is not spent', async () => {
    const token = await cloud.token();
    const r = await cloud.api('POST', '/api/v1/enroll', { token, contractVersion: `${CONTRACT.major + 1}.0` }, '');
    assert.equal(r.status, 400);
    assert.equal(r.body.code, 'CONTRACT_VERSION_UNSUPPORTED');
    assert.equal(
      (await cloud.api('POST', '/api/v1/enroll', { token, contractVersion: '1.0' }, '')).status,
      201,
      'the same token still enrolls',
    );
  });

  it('its heartbeats keep it online with its status read; its desired state is readable by a 1.0 agent', async () => {
    const s = await cloud.api('GET', `/api/v1/sites/${site.siteId}`);
    assert.equal(s.body.state, 'online');
    await waitFor('desired state', () => desired.length > 0);
  });

  it('its uplink envelopes (no minor) are stored; one of a newer major is refused and counted, not stored', async () => {
    await c.publishAsync(topics.up(site.siteId, 'old'), v10('uplink', { stream: 'old', at: 5, data: { from: '1.0' } }), { qos: 1 });
    await c.publishAsync(
      topics.up(site.siteId, 'old'),
      JSON.stringify({
        v: CONTRACT.major + 1,
        id: 'future-1',
        ts: 1,
        type: 'uplink',
        body: { stream: 'old', at: 6, data: { from: 'future' } },
      }),
      { qos: 1 },
    );
    const got = await waitFor('stored', async () => {
      const r = await cloud.api('GET', `/api/v1/results?site=${site.siteId}&stream=old`);
      return r.body.items.length > 0 ? r.body.items : undefined;
    });
    assert.deepEqual(
      got.map((x: { data: unknown }) => x.data),
      [{ from: '1.0' }],
    );
    const metrics = await (await fetch(`${cloud.url}/metrics`, { headers: { authorization: `Bearer ${cloud.adminKey}` } })).text();
    assert.match(metrics, /ew_cloud_mqtt_payload_invalid_total\{kind="up"\} [1-9]/);
  });

  it('its answers are read with the schemas; its devices refusal (an {error} result) keeps its own code', async () => {
    answers.set('logs', () => ({ ok: true, result: { lines: [{ time: 1, line: '{"msg":"old agent"}' }] } }));
    const logs = await cloud.api('GET', `/api/v1/sites/${site.siteId}/logs`);
    assert.equal(logs.status, 200);
    assert.deepEqual(logs.body.lines, [{ time: 1, line: '{"msg":"old agent"}' }]);
    answers.set('devices.add', () => ({
      ok: true,
      result: { error: { code: 'DEVICE_EXISTS', message: 'device "cam" is already registered on this site', path: 'id' } },
    }));
    const dup = await cloud.api('POST', `/api/v1/sites/${site.siteId}/devices`, { id: 'cam', subscribe: ['a/#'] });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.code, 'DEVICE_EXISTS');
  });

  it('a malformed answer is 502 SITE_ANSWER_INVALID naming the field; an unknown refusal code is SITE_REFUSED; the cloud keeps serving', async () => {
    answers.set('dead-letters', () => ({ ok: true, result: { total: 'many', items: [] } }));
    const bad = await cloud.api('GET', `/api/v1/sites/${site.siteId}/dead-letters`);
    assert.equal(bad.status, 502);
    assert.equal(bad.body.code, 'SITE_ANSWER_INVALID');
    assert.match(bad.body.message, /total/);
    answers.set('writes', () => ({ ok: false, error: { code: 'FLUX_CAPACITOR', message: 'not today' } }));
    const refused = await cloud.api('GET', `/api/v1/sites/${site.siteId}/writes`);
    assert.equal(refused.status, 502);
    assert.equal(refused.body.code, 'SITE_REFUSED');
    assert.match(refused.body.message, /FLUX_CAPACITOR.*not today/);
    assert.equal((await cloud.api('GET', `/api/v1/sites/${site.siteId}`)).status, 200);
  });
});
