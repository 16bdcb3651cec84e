import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';

const T0 = Date.UTC(2026, 10, 29, 8, 0, 0);

function app(version: string, rules: unknown[], extra: { egress?: unknown[] } = {}) {
  return {
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'vibration-guard', version },
    spec: {
      streams: [
        {
          name: 'vibration',
          topic: 'factory/+/vibration',
          format: 'json',
          timestamp: 'ts',
          schema: { machineId: 'string', rms: 'float', kurtosis: 'float', ts: 'timestamp' },
        },
      ],
      rules,
      policy: { egress: { allow: extra.egress ?? ['alerts', { stream: 'hooked', to: ['http://127.0.0.1'] }] } },
    },
  };
}

const alertsRule = {
  name: 'anomalies',
  sql: 'SELECT machineId, avg(rms) AS rms, max(kurtosis) AS kurtosis, count(*) AS n FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 10) HAVING max(kurtosis) > 5',
  sinks: [{ uplink: 'alerts' }, { mqtt: 'factory/alerts' }],
};

describe('streaming rules at a site: device MQTT → rule → outbox → cloud', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  let device: MqttClient;
  let hook: Server;
  let hookUrl = '';
  const hooked: any[] = [];
  let hookFailures = 1;

  before(async () => {
    hook = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => {
        body += c;
      });
      req.on('end', () => {
        if (hookFailures > 0) {
          hookFailures--;
          res.statusCode = 503;
          res.end();
          return;
        }
        hooked.push(JSON.parse(body));
        res.end('ok');
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', () => r()));
    hookUrl = `http://127.0.0.1:${(hook.address() as { port: number }).port}/hook`;
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { industry: 'manufacturing' } });
    device = await mqtt.connectAsync(edge.handle.deviceUrl, { username: 'device', password: edge.devicePassword, reconnectPeriod: 0 });
  });
  after(async () => {
    await device?.endAsync();
    await edge?.stop();
    await cloud?.stop();
    hook?.close();
  });

  const send = async (machineId: string, rms: number, kurtosis: number, ts: number) =>
    device.publishAsync(`factory/${machineId}/vibration`, JSON.stringify({ machineId, rms, kurtosis, ts }), { qos: 1 });

  it('refuses at push a rule that would send what the egress policy does not grant', async () => {
    const leaky = { name: 'leak', sql: 'SELECT * FROM vibration', sinks: [{ uplink: 'alerts' }] };
    const r1 = await cloud.api('POST', '/api/v1/apps', { manifest: app('0.0.1', [leaky]) });
    assert.equal(r1.status, 400);
    assert.equal(r1.body.code, 'EGRESS_DENIED');
    assert.equal(r1.body.path, 'manifest.spec.rules[0].sinks[0].uplink');
    assert.match(r1.body.message, /raw device records.*spec\.policy\.egress\.allow\[0\]/);
    const unlisted = { name: 'other', sql: 'SELECT machineId FROM vibration', sinks: [{ uplink: 'secret-stream' }] };
    const r2 = await cloud.api('POST', '/api/v1/apps', { manifest: app('0.0.2', [unlisted]) });
    assert.equal(r2.body.code, 'EGRESS_DENIED');
    assert.match(r2.body.message, /no grant for "secret-stream"/);
    const fields = { name: 'f', sql: 'SELECT machineId, rms FROM vibration', sinks: [{ uplink: 'alerts' }] };
    const r3 = await cloud.api('POST', '/api/v1/apps', {
      manifest: app('0.0.3', [fields], { egress: [{ stream: 'alerts', fields: ['machineId'] }] }),
    });
    assert.equal(r3.body.code, 'EGRESS_DENIED');
    assert.match(r3.body.message, /field "rms".*lets out only machineId/);
    const badSql = {
      name: 'typo',
      sql: 'SELECT machineId, avg(rsm) AS r FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 10)',
      sinks: [{ log: true }],
    };
    const r4 = await cloud.api('POST', '/api/v1/apps', { manifest: app('0.0.4', [badSql]) });
    assert.equal(r4.body.code, 'SQL_INVALID');
    assert.equal(r4.body.path, 'manifest.spec.rules[0].sql');
    assert.deepEqual(r4.body.pos, { line: 1, col: 23 });
    assert.match(r4.body.message, /did you mean rms\?/);
  });

  it('runs a deployed rule on device data and delivers its results to the cloud, readable by app and rule', async () => {
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: app('1.0.0', [alertsRule]) })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'vibration-guard', version: '1.0.0', selector: { industry: 'manufacturing' } });
    await waitFor('rule running', () => edge.handle.supervisor.running().length === 1);
    const local: any[] = [];
    const listener = await mqtt.connectAsync(edge.handle.deviceUrl, {
      username: 'device',
      password: edge.devicePassword,
      reconnectPeriod: 0,
    });
    listener.on('message', (_t, m) => local.push(JSON.parse(m.toString())));
    await listener.subscribeAsync('factory/alerts');
    await send('press-01', 1.0, 3, T0 + 1000);
    await send('press-02', 2.0, 9, T0 + 2000);
    await send('press-02', 4.0, 7, T0 + 3000);
    await send('press-01', 1.2, 3.5, T0 + 4000);
    await send('press-01', 1.1, 3, T0 + 11_000); // closes the first window
    const results = await waitFor('alert at the cloud', async () => {
      const r = await cloud.api('GET', `/api/v1/results?site=${edge.handle.siteId}&app=vibration-guard&rule=anomalies&stream=alerts`);
      return r.body.items.length ? r.body.items : undefined;
    });
    assert.deepEqual(
      results.map((x: any) => x.data),
      [{ machineId: 'press-02', rms: 3, kurtosis: 9, n: 2 }],
    );
    assert.equal(results[0].app, 'vibration-guard');
    assert.equal(results[0].rule, 'anomalies');
    await waitFor('local mqtt sink', () => local.length === 1);
    assert.deepEqual(local[0], { machineId: 'press-02', rms: 3, kurtosis: 9, n: 2 });
    await listener.endAsync();
  });

  it('sends a record that fails the schema to the dead letters, never its content to the cloud, and keeps the rule running', async () => {
    // The attack: device content that must not leave the site, inside records that do not fit.
    await device.publishAsync('factory/press-09/vibration', '{"machineId": "press-09", "rms": "CARD 4111111111111111", "ts": 1}', {
      qos: 1,
    });
    await device.publishAsync('factory/press-09/vibration', 'CARD 4111 1111 1111 1111 exp 12/29', { qos: 1 });
    await device.publishAsync('factory/press-09/vibration', JSON.stringify({ machineId: 'press-09', rms: 1 }), { qos: 1 });
    const dl = await waitFor('three dead letters', async () => {
      const res = await fetch(`${edge.handle.apiUrl}/api/v1/dead-letters?stream=vibration`, {
        headers: { authorization: `Bearer ${edge.apiKey}` },
      });
      const b = (await res.json()) as any;
      return b.items.length >= 3 ? b.items : undefined;
    });
    const reasons = dl.map((x: any) => x.reason).join('\n');
    // On the site, the local API shows the content and what was wrong with it.
    assert.ok(
      dl.some((x: any) => x.payload.includes('4111 1111') && /JSON/.test(x.detail)),
      "the site keeps the payload and the parser's detail",
    );
    assert.ok(dl.some((x: any) => /rms = "CARD 4111/.test(x.detail ?? '')));
    // The same, asked of the site from the cloud: reasons with field, expected type and sizes — no content.
    const remote = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/dead-letters?stream=vibration`);
    assert.equal(remote.status, 200);
    assert.ok(remote.body.total >= 3 && remote.body.items.length >= 3);
    assert.ok(
      remote.body.items.every((x: any) => !('payload' in x) && !('detail' in x) && x.payloadBytes > 0),
      'raw device data stays on the site',
    );
    const wire = JSON.stringify(remote.body);
    assert.doesNotMatch(wire, /4111|CARD|press-09/, 'no device content reaches the cloud');
    assert.match(wire, /field \\"rms\\" should be float but is a string of 23 bytes/);
    assert.match(wire, /not JSON \(34 bytes\)/);
    assert.match(reasons, /event-time field "ts" is missing/);
    await send('press-03', 1, 8, T0 + 12_000);
    const status = (await (
      await fetch(`${edge.handle.apiUrl}/api/v1/rules`, { headers: { authorization: `Bearer ${edge.apiKey}` } })
    ).json()) as any;
    const rule = status.items.find((x: any) => x.rule === 'anomalies');
    assert.equal(rule.state, 'running');
    assert.equal(rule.in, 6, 'only the valid records reached the rule');
  });

  it('shows per-rule status at the cloud', async () => {
    const r = await waitFor('rules in the site status', async () => {
      const b = (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/rules`)).body;
      return b.items.find((x: any) => x.rule === 'anomalies' && x.in >= 6) ? b : undefined;
    });
    const rule = r.items.find((x: any) => x.rule === 'anomalies');
    assert.equal(rule.state, 'running');
    assert.equal(rule.out, 1);
    assert.ok(rule.lastOutputAt > 0);
  });

  it('updates a changed rule in place and starts a new one (webhook sink with retries, HTTP push source, egress audit)', async () => {
    const v2rules = [
      { ...alertsRule, sql: alertsRule.sql.replace('> 5', '> 100') },
      {
        name: 'to-hook',
        sql: 'SELECT machineId, rms FROM vibration WHERE rms > 10',
        sinks: [{ webhook: { url: hookUrl, stream: 'hooked', maxRetries: 3 } }],
      },
    ];
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: app('2.0.0', v2rules) })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'vibration-guard', version: '2.0.0', selector: { industry: 'manufacturing' } });
    await waitFor('v2 running', () => edge.handle.supervisor.running()[0]?.version === '2.0.0');
    // The HTTP push source feeds the same stream.
    const push = await fetch(`${edge.handle.apiUrl}/api/v1/streams/vibration-guard/vibration`, {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        records: [
          { machineId: 'press-07', rms: 12.5, kurtosis: 3, ts: T0 + 20_000 },
          { machineId: 'bad', rms: 'x', ts: T0 },
        ],
      }),
    });
    assert.equal(push.status, 202);
    const pushed = (await push.json()) as any;
    assert.equal(pushed.accepted, 1);
    assert.match(pushed.rejected[0].reason, /should be float/);
    // The first POST fails with 503; the sink retries and delivers.
    await waitFor('webhook delivery after a retry', () => hooked.length === 1, 10_000);
    assert.deepEqual(hooked[0].results, [{ machineId: 'press-07', rms: 12.5 }]);
    assert.equal(hooked[0].stream, 'hooked');
    const egress = (await (
      await fetch(`${edge.handle.apiUrl}/api/v1/egress`, { headers: { authorization: `Bearer ${edge.apiKey}` } })
    ).json()) as any;
    const dests = new Set(egress.items.map((x: any) => x.destination));
    assert.ok(dests.has('cloud') && dests.has(new URL(hookUrl).origin), `egress audit per destination: ${JSON.stringify(egress.items)}`);
    const metrics = await (await fetch(`${edge.handle.apiUrl}/metrics`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).text();
    assert.match(metrics, /ew_edge_egress_records_total\{destination="cloud",stream="alerts"\} 1/);
  });
  it("lets local programs send up only what a running app's egress policy grants, audited like a rule", async () => {
    const post = (path: string, records: unknown[]) =>
      fetch(`${edge.handle.apiUrl}${path}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ records }),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));
    const ok = await post('/api/v1/uplink/alerts', [{ machineId: 'press-05', rms: 9 }]);
    assert.equal(ok.status, 202, JSON.stringify(ok.body));
    const other = await post('/api/v1/uplink/alerts?app=no-such-app', [{ machineId: 'x' }]);
    assert.equal(other.body.code, 'EGRESS_DENIED');
    const secret = await post('/api/v1/uplink/raw-vibration', [{ machineId: 'press-05', rms: 9 }]);
    assert.equal(secret.status, 400);
    assert.equal(secret.body.code, 'EGRESS_DENIED');
    // Granted to a webhook only (not the cloud): refused on the uplink.
    assert.equal((await post('/api/v1/uplink/hooked', [{ machineId: 'x' }])).body.code, 'EGRESS_DENIED');
    const audit = (await (
      await fetch(`${edge.handle.apiUrl}/api/v1/egress`, { headers: { authorization: `Bearer ${edge.apiKey}` } })
    ).json()) as any;
    assert.ok(
      audit.items.some((r: any) => r.app === 'vibration-guard' && r.rule === 'local-api' && r.stream === 'alerts' && r.records === 1),
    );
    const results = await waitFor('local result at the cloud', async () => {
      const r = await cloud.api('GET', `/api/v1/results?site=${edge.handle.siteId}&app=vibration-guard&rule=local-api&stream=alerts`);
      return r.body.items.length ? r.body.items : undefined;
    });
    assert.deepEqual(results[0].data, { machineId: 'press-05', rms: 9 });
  });
});
