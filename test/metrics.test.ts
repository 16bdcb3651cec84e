import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { promtoolCheck } from './support/promtool.ts';

const T0 = Date.UTC(2026, 10, 29, 10, 0, 0);

/** The value of one sample in Prometheus text, or undefined. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ').pop()) : undefined;
}

describe('metrics: Prometheus names and types, HTTP histograms, per-rule counters', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  let device: MqttClient;
  before(async () => {
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { metrics: 'yes' } });
    device = await mqtt.connectAsync(edge.handle.deviceUrl, { username: 'device', password: edge.devicePassword, reconnectPeriod: 0 });
    const manifest = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'meter', version: '1.0.0' },
      spec: {
        streams: [{ name: 'power', topic: 'm/+/power', timestamp: 'ts', schema: { id: 'string', kw: 'float', ts: 'timestamp' } }],
        rules: [{ name: 'high', sql: 'SELECT id, kw FROM power WHERE kw > 10', sinks: [{ memory: 'metrics_high' }] }],
      },
    };
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'meter', version: '1.0.0', selector: { metrics: 'yes' } });
    await waitFor('rule running', () => edge.handle.supervisor.running().length === 1);
  });
  after(async () => {
    await device?.endAsync();
    await edge?.stop();
    await cloud?.stop();
  });

  const edgeMetrics = async () =>
    (await fetch(`${edge.handle.apiUrl}/metrics`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).text();
  const cloudMetrics = async () => (await fetch(`${cloud.url}/metrics`, { headers: { authorization: `Bearer ${cloud.adminKey}` } })).text();

  it('counts records in, out and failed per rule, and dead letters as a counter', async () => {
    for (const [i, kw] of [5, 12, 20].entries())
      await device.publishAsync(`m/d${i}/power`, JSON.stringify({ id: `d${i}`, kw, ts: T0 + i }), { qos: 1 });
    await device.publishAsync('m/d9/power', 'not json', { qos: 1 });
    const text = await waitFor('rule counters', async () => {
      const t = await edgeMetrics();
      return sample(t, 'ew_edge_rule_records_in_total', 'app="meter",rule="high"') === 3 ? t : undefined;
    });
    assert.equal(sample(text, 'ew_edge_rule_records_out_total', 'app="meter",rule="high"'), 2);
    assert.equal(sample(text, 'ew_edge_rule_errors_total', 'app="meter",rule="high"'), 0);
    assert.equal(sample(text, 'ew_edge_dead_letters_total'), 1);
    assert.match(text, /# TYPE ew_edge_dead_letters_total counter/);
    assert.match(text, /# TYPE ew_edge_outbox_dropped_total counter/);
  });

  it('times HTTP requests by route template and status, on the site and the cloud', async () => {
    await fetch(`${edge.handle.apiUrl}/api/v1/status`, { headers: { authorization: `Bearer ${edge.apiKey}` } });
    await fetch(`${edge.handle.apiUrl}/api/v1/status`);
    await fetch(`${edge.handle.apiUrl}/api/v1/no-such-route/12345`, { headers: { authorization: `Bearer ${edge.apiKey}` } });
    const e = await edgeMetrics();
    assert.ok(sample(e, 'ew_edge_http_request_duration_seconds_count', 'method="GET",route="/api/v1/status",status="200"')! >= 1);
    assert.ok(sample(e, 'ew_edge_http_request_duration_seconds_count', 'method="GET",route="/api/v1/status",status="401"')! >= 1);
    assert.ok(sample(e, 'ew_edge_http_request_duration_seconds_count', 'method="GET",route="unmatched",status="404"')! >= 1);
    assert.doesNotMatch(e, /12345/, 'raw URLs never become labels');
    await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`);
    await cloud.api('GET', '/api/v1/sites/no-such-site');
    const c = await cloudMetrics();
    assert.ok(sample(c, 'ew_cloud_http_request_duration_seconds_count', 'method="GET",route="/api/v1/sites/:id",status="200"')! >= 1);
    assert.ok(sample(c, 'ew_cloud_http_request_duration_seconds_count', 'method="GET",route="/api/v1/sites/:id",status="404"')! >= 1);
  });

  it('passes promtool check metrics on both processes', async () => {
    for (const [who, text] of [
      ['site', await edgeMetrics()],
      ['cloud', await cloudMetrics()],
    ] as const) {
      const r = promtoolCheck(text);
      assert.equal(r.output, '', `${who}: promtool found problems:\n${r.output}`);
      assert.equal(r.status, 0);
    }
  });
});

describe('counters fed from figures kept elsewhere', () => {
  it('only go up: a figure that resets (a rule restarted) adds all of its new value', async () => {
    const { Registry } = await import('prom-client');
    const { counterFrom } = await import('../src/lib/metrics.ts');
    const registry = new Registry();
    let figure = 5;
    counterFrom(registry, 'x_records_total', 'test', ['rule'], () => [{ labels: { rule: 'r' }, value: figure }]);
    const value = async () => sample(await registry.metrics(), 'x_records_total', 'rule="r"');
    assert.equal(await value(), 5);
    figure = 3; // restarted: 3 new records
    assert.equal(await value(), 8);
    figure = 10;
    assert.equal(await value(), 15);
    assert.equal(await value(), 15, 'a scrape without news adds nothing');
  });
});
