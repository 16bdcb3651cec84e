import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBundle, pushBundle } from '../src/cli/bundle.ts';
import { ApiClient } from '../src/cli/client.ts';
import { ModbusMachineSim, OpcuaMachineSim, OPCUA_NODES, pointAtSimulators } from '../src/sim/industrial.ts';
import { startTestCloud, startTestEdge, tempDir, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';

const templates = fileURLToPath(new URL('../templates/', import.meta.url));

/**
 * The predictive-maintenance template's PLC variant end to end: pushed to a real cloud (the
 * write policy checked at push), deployed to a real agent, reading a real OPC UA server and a
 * real Modbus TCP server; a worn machine's anomaly score stays high, and the rule lowers the
 * spindle setpoint on the OPC UA server, through the guard, into the site's write audit.
 */
describe('predictive maintenance on a PLC: OPC UA + Modbus → rule with infer() → guarded setpoint write', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  let opc: OpcuaMachineSim;
  let mb: ModbusMachineSim;
  const dir = tempDir('plc-fleet');

  before(async () => {
    opc = new OpcuaMachineSim({ pkiDir: join(dir, 'pki'), tickMs: 100 });
    mb = new ModbusMachineSim({ tickMs: 100 });
    opc.model.wear = 0.8; // a worn bearing: the score is high at full speed
    await Promise.all([opc.start(), mb.start()]);
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { industry: 'manufacturing' } });
  });
  after(async () => {
    await edge?.stop();
    await cloud?.stop();
    await opc?.stop();
    await mb?.stop();
  });

  it('refuses at push a variant whose write the policy does not grant', async () => {
    const b = await loadBundle(join(templates, 'predictive-maintenance'), { manifest: 'edgeweave.plc.yaml' });
    const raw = structuredClone(b.raw) as any;
    raw.metadata.name = 'ungranted';
    raw.spec.policy.writes.allow = [];
    const r = await cloud.api('POST', '/api/v1/apps', { manifest: raw });
    assert.equal(r.status, 400);
    assert.equal(r.body.code, 'WRITE_DENIED');
    assert.equal(r.body.path, 'manifest.spec.rules[0].sinks[0].opcua');
  });

  it('lowers the setpoint when the anomaly score stays high, and shows sources and writes', async () => {
    const b = await loadBundle(join(templates, 'predictive-maintenance'), { manifest: 'edgeweave.plc.yaml' });
    b.raw = pointAtSimulators(b.raw, { opcua: opc.endpoint, modbus: mb.endpoint });
    await pushBundle(new ApiClient({ cloud: cloud.url, apiKey: cloud.adminKey }), b);
    assert.equal(
      (
        await cloud.api('POST', '/api/v1/deployments', {
          app: 'vibration-guard-plc',
          version: '1.0.0',
          selector: { industry: 'manufacturing' },
        })
      ).status,
      201,
    );

    const w = await waitFor('a setpoint write at the OPC UA server', () => opc.writes[0], 120_000, 200);
    assert.equal(w.node, OPCUA_NODES.setpoint);
    assert.equal(w.value, 1100, 'one step of 100 rpm down from 1,200');

    const api = async (path: string) =>
      (await fetch(`${edge.handle.apiUrl}${path}`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).json() as Promise<any>;
    const writes = (await api('/api/v1/writes?app=vibration-guard-plc')).items;
    assert.equal(writes.at(-1).result, 'written');
    assert.equal(writes.at(-1).rule, 'slow-down');
    const sources = (await api('/api/v1/sources')).items as any[];
    assert.deepEqual(sources.map((s) => [s.stream, s.protocol, s.state]).sort(), [
      ['drive', 'modbus', 'connected'],
      ['machine', 'opcua', 'connected'],
    ]);
    // The cloud sees the sources in the site's status, and the alert through the egress policy.
    const site = await waitFor('sources in the cloud', async () => {
      const r = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`);
      return r.body.status?.sources?.length === 2 ? r.body : undefined;
    });
    assert.ok(site.status.sources.every((s: any) => s.values > 0));
    // (a heartbeat may predate the write: wait for one that has it)
    const sink = await waitFor("the write in the sink's status", async () =>
      (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`)).body.status?.writes?.find((w: any) => w.written >= 1),
    );
    assert.deepEqual(
      { rule: sink.rule, protocol: sink.protocol, dryRun: sink.dryRun },
      { rule: 'slow-down', protocol: 'opcua', dryRun: false },
    );
    assert.ok(sink.lastWriteAt > 0);
    // The write audit, asked of the site by the cloud.
    const audit = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/writes?app=vibration-guard-plc`);
    assert.equal(audit.status, 200);
    assert.ok(audit.body.items.some((x: any) => x.result === 'written' && x.value === '1100' && x.target.endsWith(OPCUA_NODES.setpoint)));
  });
});
