import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt from 'mqtt';
import { startTestCloud, type TestCloud } from './support/harness.ts';
import { topics } from '../src/contracts/topics.ts';
import { ENVELOPE_VERSION } from '../src/contracts/messages.ts';

describe('cloud HTTP API: authentication, OpenAPI and errors', () => {
  let cloud: TestCloud;
  before(async () => {
    cloud = await startTestCloud();
  });
  after(async () => {
    await cloud.stop();
  });

  const expectError = async (p: Promise<{ status: number; body: any }>, status: number, code: string, path?: string) => {
    const r = await p;
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(r.body.code, code);
    assert.equal(typeof r.body.message, 'string');
    assert.ok(r.body.message.length > 10, 'a message that says something');
    if (path !== undefined) assert.equal(r.body.path, path);
    return r.body;
  };

  it('serves health and the OpenAPI document without a key, and nothing else', async () => {
    assert.equal((await cloud.api('GET', '/healthz', undefined, '')).body.ok, true);
    const doc = (await cloud.api('GET', '/openapi.json', undefined, '')).body;
    assert.equal(doc.openapi, '3.0.3');
    for (const p of ['/api/v1/sites', '/api/v1/tokens', '/api/v1/enroll', '/api/v1/apps', '/api/v1/deployments', '/api/v1/results'])
      assert.ok(doc.paths[p], p);
    assert.ok(doc.paths['/api/v1/tokens'].post.requestBody, 'request schemas are published');
    await expectError(cloud.api('GET', '/api/v1/sites', undefined, ''), 401, 'UNAUTHENTICATED');
    await expectError(cloud.api('GET', '/api/v1/sites', undefined, 'ewk_not_a_real_key_at_all_000000000000'), 401, 'UNAUTHENTICATED');
    await expectError(cloud.api('GET', '/metrics', undefined, ''), 401, 'UNAUTHENTICATED');
    assert.match((await cloud.api('GET', '/metrics')).body, /ew_cloud_sites_online/);
  });

  it('answers bad bodies with a code and the field path', async () => {
    await expectError(cloud.api('POST', '/api/v1/tokens', '{"labels": '), 400, 'INVALID_JSON');
    await expectError(cloud.api('POST', '/api/v1/tokens', { ttlSeconds: 5 }), 400, 'VALIDATION_FAILED', 'ttlSeconds');
    await expectError(cloud.api('POST', '/api/v1/tokens', { labels: { city: 42 } }), 400, 'VALIDATION_FAILED', 'labels.city');
    await expectError(cloud.api('POST', '/api/v1/tokens', { labels: { 'bad key!': 'x' } }), 400, 'INVALID_SELECTOR', 'labels.bad key!');
    await expectError(cloud.api('GET', '/api/v1/results?limit=0'), 400, 'VALIDATION_FAILED', 'querystring.limit');
  });

  it('validates manifests and keeps versions immutable', async () => {
    const manifest = { apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name: 'demo', version: '1.0.0' }, spec: {} };
    await expectError(
      cloud.api('POST', '/api/v1/apps', { manifest: { ...manifest, metadata: { name: 'demo', version: 'one' } } }),
      400,
      'INVALID_MANIFEST',
      'manifest.metadata.version',
    );
    await expectError(
      cloud.api('POST', '/api/v1/apps', { manifest: { ...manifest, spec: { models: [{ name: 'm', format: 'tflite' }] } } }),
      400,
      'INVALID_MANIFEST',
      'manifest.spec.models[0].format',
    );
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
    const dup = await expectError(
      cloud.api('POST', '/api/v1/apps', { manifest: { ...manifest, metadata: { ...manifest.metadata, description: 'changed' } } }),
      409,
      'APP_VERSION_EXISTS',
      'manifest.metadata.version',
    );
    assert.match(dup.message, /different content/);
    assert.equal(
      (await cloud.api('GET', '/api/v1/apps/demo/versions/1.0.0')).body.manifest.metadata.description,
      undefined,
      'the stored version is unchanged',
    );
  });

  it('names missing resources', async () => {
    await expectError(cloud.api('GET', '/api/v1/sites/site-nope'), 404, 'SITE_NOT_FOUND');
    await expectError(cloud.api('GET', '/api/v1/apps/nope/versions/1.0.0'), 404, 'APP_NOT_FOUND');
    await expectError(
      cloud.api('POST', '/api/v1/deployments', { app: 'nope', version: '1.0.0', selector: {} }),
      404,
      'APP_NOT_FOUND',
      'version',
    );
    await expectError(cloud.api('DELETE', '/api/v1/deployments/dep-nope'), 404, 'DEPLOYMENT_NOT_FOUND');
    await expectError(cloud.api('DELETE', '/api/v1/tokens/tok-nope'), 404, 'TOKEN_NOT_FOUND');
    await expectError(cloud.api('GET', '/api/v1/nothing-here'), 404, 'NOT_FOUND');
  });

  it('rotates API keys: a new key works at once, a revoked one stops at once, secrets never listed', async () => {
    const created = await cloud.api('POST', '/api/v1/keys', { name: 'ci' });
    assert.equal(created.status, 201);
    assert.match(created.body.key, /^ewk_/);
    assert.equal((await cloud.api('GET', '/api/v1/sites', undefined, created.body.key)).status, 200);
    const list = (await cloud.api('GET', '/api/v1/keys')).body.items;
    assert.ok(list.some((k: any) => k.id === created.body.id && !('key' in k) && !('hash' in k)));
    assert.equal((await cloud.api('DELETE', `/api/v1/keys/${created.body.id}`)).status, 204);
    await expectError(cloud.api('GET', '/api/v1/sites', undefined, created.body.key), 401, 'UNAUTHENTICATED');
    await expectError(cloud.api('DELETE', `/api/v1/keys/${created.body.id}`), 404, 'KEY_NOT_FOUND');
  });

  it('deletes an unused join token so it cannot enroll', async () => {
    const t = await cloud.api('POST', '/api/v1/tokens', {});
    assert.equal(
      (await cloud.api('GET', '/api/v1/tokens')).body.items.some((x: any) => x.id === t.body.id && !('token' in x)),
      true,
      'listed, never with its secret',
    );
    assert.equal((await cloud.api('DELETE', `/api/v1/tokens/${t.body.id}`)).status, 204);
    await expectError(cloud.api('POST', '/api/v1/enroll', { token: t.body.token }, ''), 401, 'TOKEN_INVALID');
  });

  it("reads a site's egress audit and rule status", async () => {
    const site = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
    await cloud.handle.store.insertUplink([
      {
        siteId: site.siteId,
        msgId: 'a1',
        stream: '_egress-audit',
        at: 60_000,
        receivedAt: 61_000,
        data: { minute: 0, app: 'vib', rule: 'r', stream: 'alerts', destination: 'cloud', records: 3, bytes: 120 },
      },
      { siteId: site.siteId, msgId: 'x1', stream: 'alerts', at: 60_000, receivedAt: 61_000, data: { not: 'audit' } },
    ]);
    const audit = await cloud.api('GET', `/api/v1/sites/${site.siteId}/egress`);
    assert.deepEqual(audit.body.items, [
      { minute: 0, app: 'vib', rule: 'r', stream: 'alerts', destination: 'cloud', records: 3, bytes: 120 },
    ]);
    const rules = await cloud.api('GET', `/api/v1/sites/${site.siteId}/rules`);
    assert.deepEqual(rules.body.items, [], 'no status yet');
    await expectError(cloud.api('GET', '/api/v1/sites/site-nope/egress'), 404, 'SITE_NOT_FOUND');
  });

  it('counts a malformed MQTT payload, drops it, and keeps serving the site', async () => {
    const site = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token() }, '')).body;
    const c = await mqtt.connectAsync(site.mqtt.url, {
      clientId: site.siteId,
      username: site.siteId,
      password: site.mqtt.password,
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    try {
      await c.publishAsync(topics.reported(site.siteId), '{not json', { qos: 1 });
      await c.publishAsync(
        topics.up(site.siteId, 'x'),
        JSON.stringify({ v: ENVELOPE_VERSION, id: 'a', ts: 1, type: 'uplink', body: { stream: 'x' } }),
        { qos: 1 },
      );
      await c.publishAsync(
        topics.up(site.siteId, 'x'),
        JSON.stringify({ v: ENVELOPE_VERSION, id: 'ok-1', ts: 1, type: 'uplink', body: { stream: 'x', at: 5, data: { fine: true } } }),
        { qos: 1 },
      );
      assert.equal(c.connected, true, 'the connection stays up');
      assert.equal(await cloud.handle.store.countUplink(site.siteId), 1);
      const metrics = (await cloud.api('GET', '/metrics')).body as string;
      assert.match(metrics, /ew_cloud_mqtt_payload_invalid_total\{kind="reported"\} 1/);
      assert.match(metrics, /ew_cloud_mqtt_payload_invalid_total\{kind="up"\} 1/);
    } finally {
      await c.endAsync();
    }
    assert.equal((await cloud.api('GET', '/healthz')).body.ok, true);
  });
});
