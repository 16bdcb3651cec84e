import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnCli } from './support/proc.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, waitFor, removeDirs } from './support/harness.ts';

describe('end to end: `edgeweave demo`', () => {
  const dir = tempDir('demo');
  const demo = spawnCli(['demo', '--data-dir', dir, '--port', '0']);
  after(() => {
    demo.child.kill('SIGKILL');
    removeDirs(dir);
  });

  it('brings up a cloud and three sites in different regions, fed by simulators, then stops cleanly', async () => {
    const ready = await demo.ready;
    assert.match(ready.adminKey, /^ewk_/);
    assert.equal(ready.sites.length, 3);
    assert.equal(new Set(ready.sites.map((s: any) => s.region)).size, 3);
    const get = async () =>
      (await fetch(`${ready.url}/api/v1/sites`, { headers: { authorization: `Bearer ${ready.adminKey}` } })).json() as Promise<any>;
    const sites = await waitFor(
      'three sites online, each receiving device data and running its app',
      async () => {
        const s = await get();
        return s.online === 3 &&
          s.items.every((x: any) => x.status?.devices.messagesIn > 0 && x.status.apps.length === (x.labels.plant ? 2 : 1) && x.inSync)
          ? s
          : undefined;
      },
      60_000,
      250,
    );
    assert.deepEqual(sites.items.flatMap((s: any) => s.status.apps.map((a: any) => a.name)).sort(), [
      'cell-kpi-watch',
      'traffic-watch',
      'vibration-guard',
      'vibration-guard-plc',
    ]);
    // The city's traffic rule and the factory's vibration rule send their results to the cloud.
    const byName = Object.fromEntries(ready.sites.map((s: any) => [s.name, s.siteId]));
    const results = async (site: string, stream: string) =>
      (
        (await (
          await fetch(`${ready.url}/api/v1/results?site=${site}&stream=${stream}`, {
            headers: { authorization: `Bearer ${ready.adminKey}` },
          })
        ).json()) as any
      ).items;
    const traffic = await waitFor(
      'traffic stats from the city',
      async () => {
        const r = await results(byName['city-hangzhou-01'], 'traffic-stats');
        return r.length ? r : undefined;
      },
      60_000,
      500,
    );
    assert.equal(traffic[0].rule, 'intersection-stats');
    assert.ok(typeof traffic[0].data.vehicles === 'number' && typeof traffic[0].data.speed === 'number');
    const health = await waitFor(
      'machine health from the factory',
      async () => {
        const r = await results(byName['factory-ningbo-02'], 'machine-health');
        return r.length ? r : undefined;
      },
      60_000,
      500,
    );
    assert.ok(['press-01', 'press-02', 'cnc-07', 'pump-12'].includes(health[0].data.machineId));
    // The factory serves its vibration model over the Open Inference Protocol.
    const factory = ready.sites.find((s: any) => s.name === 'factory-ningbo-02');
    const key = readFileSync(join(dir, 'sites', 'factory-ningbo-02', 'api.key'), 'utf8').trim();
    const res = await waitFor(
      'the vibration model answers',
      async () => {
        const r = await fetch(`${factory.apiUrl}/v2/models/vibration-score/infer`, {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1.0, 3.0, 120] }] }),
        });
        return r.status === 200 ? ((await r.json()) as any) : undefined;
      },
      30_000,
      250,
    );
    assert.ok(res.outputs[0].data[0] < 0.5, 'a healthy reading scores low');
    // The factory's PLC (OPC UA and Modbus simulators) feeds the template's PLC variant.
    const plc = await waitFor(
      'the PLC sources connected and delivering',
      async () => {
        const s = ((await (await fetch(`${factory.apiUrl}/api/v1/sources`, { headers: { authorization: `Bearer ${key}` } })).json()) as any)
          .items;
        return s.length === 2 && s.every((x: any) => x.state === 'connected' && x.values > 0) ? s : undefined;
      },
      60_000,
      500,
    );
    assert.deepEqual(plc.map((x: any) => x.protocol).sort(), ['modbus', 'opcua']);
    demo.child.kill('SIGINT');
    assert.equal(await demo.exited, 0, `clean exit; stderr:\n${demo.stderr().slice(-2000)}`);
    assert.match(demo.stderr(), /demo stopped/);
    // Every child is gone: the cloud's port no longer answers.
    await assert.rejects(fetch(`${ready.url}/healthz`));
  });
});
