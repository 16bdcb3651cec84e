import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { createLogger, LogRing } from '../src/lib/logger.ts';
import { spawnCli } from './support/proc.ts';
import mqtt from 'mqtt';

/** An operator reads a site's recent logs through the cloud; they leave the site only when asked. */
describe('site logs on request', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  const ring = new LogRing(100);
  const siteLines: string[] = [];
  before(async () => {
    cloud = await startTestCloud();
    const devNull = new Writable({
      write(_c, _e, cb) {
        cb();
      },
    });
    // The site's own output (where the log sink writes), kept here to show the results stay on the site.
    const siteOut = new Writable({
      write(c, _e, cb) {
        siteLines.push(String(c));
        cb();
      },
    });
    edge = await startTestEdge(cloud, {
      log: createLogger({ name: 'edge', level: 'info', destination: devNull, ring }),
      logRing: ring,
      siteLog: createLogger({ name: 'edge', level: 'info', destination: siteOut }),
    });
    await waitFor('online', async () => (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`)).body.state === 'online');
  });
  after(async () => {
    await edge?.stop().catch(() => {});
    await cloud?.stop();
  });

  it("answers with the site's recent lines, redacted JSON, newer than `since`", async () => {
    const r = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/logs`);
    assert.equal(r.status, 200);
    const msgs = r.body.lines.map((l: any) => JSON.parse(l.line).msg);
    assert.ok(msgs.includes('connected to cloud'), msgs.join(' | '));
    const last = r.body.lines.at(-1).time;
    const none = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/logs?since=${last}`);
    assert.deepEqual(none.body.lines, []);
  });

  it("never sends the lines of a rule's log sink (they may hold raw device data)", async () => {
    const manifest = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'raw-logger', version: '1.0.0' },
      spec: { streams: [{ name: 's', topic: 'raw/+' }], rules: [{ name: 'all', sql: 'SELECT * FROM s', sinks: [{ log: true }] }] },
    };
    await cloud.api('POST', '/api/v1/apps', { manifest });
    await cloud.api('POST', '/api/v1/deployments', { app: 'raw-logger', version: '1.0.0', selector: {} });
    await waitFor('app running', () => edge.handle.supervisor.running().some((a) => a.name === 'raw-logger'));
    const dev = await mqtt.connectAsync(edge.handle.deviceUrl, { username: 'device', password: edge.devicePassword, reconnectPeriod: 0 });
    await dev.publishAsync('raw/x', JSON.stringify({ secretReading: 42 }), { qos: 1 });
    await dev.endAsync();
    await waitFor('logged on the site', () => siteLines.some((l) => l.includes('secretReading')));
    // By construction: the log sink's logger does not feed the ring the cloud reads at all.
    assert.ok(!ring.since(0, 1000).some((l) => l.line.includes('secretReading')), 'never in the ring');
    const r = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/logs?limit=2000`);
    assert.ok(r.body.lines.length > 0);
    assert.ok(!r.body.lines.some((l: any) => l.line.includes('secretReading')), 'the result stayed on the site');
  });

  it('works from the CLI', async () => {
    const p = spawnCli(['logs', edge.handle.siteId, '--limit', '5'], {
      EW_CLOUD: cloud.url,
      EW_API_KEY: cloud.adminKey,
      EDGEWEAVE_CONFIG: '/nonexistent/config.json',
    });
    assert.equal(await p.exited, 0, p.stderr());
    assert.ok(p.stdoutLines.length >= 1 && p.stdoutLines.length <= 5);
    assert.ok(p.stdoutLines.every((l) => l.name === 'edge'));
  });

  it('says SITE_UNREACHABLE when the site is offline', async () => {
    await edge.stop();
    await waitFor('offline', async () => (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`)).body.state === 'offline');
    const r = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/logs`);
    assert.equal(r.status, 504);
    assert.equal(r.body.code, 'SITE_UNREACHABLE');
  });
});
