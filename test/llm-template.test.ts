import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBundle, pushBundle } from '../src/cli/bundle.ts';
import { ApiClient } from '../src/cli/client.ts';
import { ensureTemplateAssistant } from '../src/inference/gguf/tiny-qwen.ts';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';

/**
 * The predictive-maintenance template's operator assistant: an anomaly window goes up as an alert
 * carrying the site's Qwen's explanation (JSON by schema), on the tiny TEST Qwen (noise text, real
 * structure). Pushed the way `edgeweave app push` does.
 */
describe("predictive-maintenance template: alerts carry the operator assistant's explanation", () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  before(async () => {
    ensureTemplateAssistant();
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { industry: 'manufacturing' } });
  });
  after(async () => {
    await edge?.stop();
    await cloud?.stop();
  });

  it('explains an anomaly window to the operator, as JSON, with the alert', async () => {
    const bundle = await loadBundle(join(fileURLToPath(new URL('../templates/', import.meta.url)), 'predictive-maintenance'));
    await pushBundle(new ApiClient({ cloud: cloud.url, apiKey: cloud.adminKey }), bundle);
    await cloud.api('POST', '/api/v1/deployments', { app: 'vibration-guard', version: '1.0.0', selector: { industry: 'manufacturing' } });
    const status = async () =>
      ((await (await fetch(`${edge.handle.apiUrl}/api/v1/status`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).json()) as any)
        .models;
    await waitFor(
      'models ready',
      async () => {
        const m = await status();
        return m?.length === 2 && m.every((x: any) => x.state === 'ready');
      },
      120_000,
      200,
    );
    // Rules start after the models load: wait for the rule too, or the records could arrive first.
    const rules = async () =>
      ((await (await fetch(`${edge.handle.apiUrl}/api/v1/rules`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).json()) as any)
        .items;
    await waitFor(
      'anomalies rule running',
      async () => (await rules()).some((r: any) => r.rule === 'anomalies' && r.state === 'running'),
      60_000,
      100,
    );
    // Event time in the recent past (sites refuse records far ahead of their clock), on a 10 s boundary.
    const T0 = Math.floor(Date.now() / 10_000) * 10_000 - 120_000;
    const rec = (machineId: string, rms: number, kurtosis: number, peakHz: number, s: number) => ({
      machineId,
      rms,
      kurtosis,
      peakHz,
      temperature: 71.5,
      ts: T0 + s * 1000,
    });
    const res = await fetch(`${edge.handle.apiUrl}/api/v1/streams/vibration-guard/vibration`, {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
      // press-9 has a failing bearing; press-1 is healthy; the last record closes the window (lateness 1 s).
      body: JSON.stringify({
        records: [
          rec('press-9', 1.6, 9, 150, 1),
          rec('press-1', 1.0, 3, 120, 2),
          rec('press-9', 1.6, 9, 151, 3),
          rec('press-1', 1.0, 3, 120, 25),
        ],
      }),
    });
    assert.equal(res.status, 202);
    const alerts = await waitFor(
      'alert at the cloud',
      async () => {
        const r = await cloud.api('GET', `/api/v1/results?site=${edge.handle.siteId}&app=vibration-guard&rule=anomalies&stream=alerts`);
        return r.body.items?.length ? r.body.items : undefined;
      },
      120_000,
      250,
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}; rules: ${JSON.stringify(await rules())}`);
    });
    assert.equal(alerts.length, 1, 'only the failing machine');
    const a = alerts[0].data;
    assert.equal(a.machineId, 'press-9');
    assert.ok(a.score > 0.8, JSON.stringify(a));
    assert.equal(typeof a.assistant.explanation, 'string');
    assert.ok([...a.assistant.explanation].length <= 240, JSON.stringify(a.assistant)); // code points, as the grammar counts
    assert.ok(['inspect', 'schedule-maintenance', 'stop-machine', 'monitor'].includes(a.assistant.action), JSON.stringify(a.assistant));
  });
});
