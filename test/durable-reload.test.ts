import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestCloud, startTestEdge, waitFor, removeDirs } from './support/harness.ts';
const step = (what: string) => {
  if (process.env.EW_TEST_DEBUG) console.error(new Date().toISOString(), what);
};
import { GraphBuilder, int, ints } from '../src/inference/train/onnx-build.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import { EwError } from '../src/contracts/errors.ts';
import { tempDir } from './support/harness.ts';
import { durableRuleHost } from './support/rule-host.ts';

/**
 * Every model load holds its rules' input in the journal, not just the first: an app update
 * reloads its models, and a new version's model that fails to load (the cloud's copy is damaged)
 * is retried (and the rollout may roll the site back: another reload). Meanwhile a device publishes QoS 1 records without a pause. The rule calling the
 * model pauses (what it made is committed with its cursor), its input waits in the journal (the
 * device's records are still acknowledged: they are durable), and once the model loads on a retry
 * the rule replays them — none dead-lettered, none lost, none doubled.
 */
function model(weight: number): Buffer {
  // features [batch, 3] · W [3, 4] → mean: a small model whose output depends on `weight`.
  const g = new GraphBuilder('m');
  const x = g.input('features', ['batch', 3]);
  const m = g.op(
    'ReduceMean',
    [g.op('MatMul', [x, g.const(new Float32Array(12).fill(weight), [3, 4], 'W')])],
    [ints('axes', [1]), int('keepdims', 0)],
  );
  g.output(m, 'score', ['batch']);
  return Buffer.from(g.encode(`a model of weight ${weight}`));
}

const manifest = (version: string, sha: string) => ({
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name: 'reload', version },
  spec: {
    models: [{ name: 'm', format: 'onnx', path: 'models/m.onnx', sha256: sha }],
    streams: [{ name: 'recs', topic: 'rl/+/rec', format: 'json', schema: { n: 'int', a: 'float' } }],
    rules: [{ name: 'score', sql: "SELECT n, infer('m', a, a, a) AS s FROM recs", sinks: [{ uplink: 'scored' }] }],
    policy: { egress: { allow: ['scored'] } },
  },
});

describe("a model reloading (app update, retried load) holds its rule's input in the journal", () => {
  const dirs: string[] = [];
  after(() => removeDirs(...dirs));

  it('an update whose model loads only on a retry, under a steady QoS 1 stream: 0 dead-lettered, 0 lost, 0 doubled', async () => {
    const cloud = await startTestCloud();
    const edge = await startTestEdge(cloud, { labels: { reload: 'yes' }, modelRetry: { initialMs: 100, maxMs: 200 } });
    dirs.push(cloud.dataDir, edge.dataDir);
    let device: MqttClient | undefined;
    try {
      const put = async (bytes: Buffer) => {
        const sha = createHash('sha256').update(bytes).digest('hex');
        const r = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
          body: new Uint8Array(bytes),
        });
        assert.ok(r.ok);
        return sha;
      };
      const v1 = await put(model(1));
      assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: manifest('1.0.0', v1) })).status, 201);
      assert.equal(
        (await cloud.api('POST', '/api/v1/deployments', { app: 'reload', version: '1.0.0', selector: { reload: 'yes' } })).status,
        201,
      );
      const local = async (path: string) =>
        (await (await fetch(`${edge.handle.apiUrl}${path}`, { headers: { authorization: `Bearer ${edge.apiKey}` } })).json()) as any;
      step('v1 scoring');
      await waitFor(
        'v1 scoring',
        async () =>
          (await local('/api/v1/rules')).items.some(
            (r: { rule: string; state: string; blocked?: string }) => r.rule === 'score' && r.state === 'running' && !r.blocked,
          ),
        30_000,
      );
      const siteId = edge.handle.siteId;
      const tenantId = (await cloud.handle.store.getSiteById(siteId))!.tenantId;

      // A steady QoS 1 stream: 20 in flight, each record published once, every PUBACK recorded.
      device = await mqtt.connectAsync(edge.handle.deviceUrl, { username: 'device', password: edge.devicePassword, reconnectPeriod: 0 });
      const acked = new Set<number>();
      let next = 0;
      let inFlight = 0;
      let stop = false;
      let limit = Infinity;
      const errors: string[] = [];
      device.on('close', () => {
        stop = true;
      });
      const pump = () => {
        while (!stop && inFlight < 20 && next < limit) {
          const n = next++;
          inFlight++;
          device!.publish(`rl/d${n % 3}/rec`, JSON.stringify({ n, a: n % 10 }), { qos: 1 }, (err) => {
            inFlight--;
            if (err) {
              errors.push(err.message);
              stop = true;
              return;
            }
            acked.add(n);
            setImmediate(pump);
          });
        }
      };
      pump();
      step('records flowing');
      await waitFor('records flowing', () => acked.size >= 100, 30_000);

      // v1.1: a new model whose stored copy is damaged: the update reloads, the load fails and is retried.
      const v2bytes = model(2);
      const v2 = await put(v2bytes);
      writeFileSync(join(cloud.dataDir, 'artifacts', v2), Buffer.alloc(v2bytes.length, 7));
      assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: manifest('1.1.0', v2) })).status, 201);
      assert.equal(
        (await cloud.api('POST', '/api/v1/deployments', { app: 'reload', version: '1.1.0', selector: { reload: 'yes' } })).status,
        201,
      );
      step('the rule waiting for its model');
      await waitFor(
        'the rule waiting for its model',
        async () =>
          (await local('/api/v1/rules')).items.some(
            (r: { rule: string; blocked?: string }) => r.rule === 'score' && /waiting for model m/.test(r.blocked ?? ''),
          ),
        30_000,
      );
      // The device is still acknowledged meanwhile: its records are durable in the journal.
      assert.deepEqual(errors, []);
      const during = acked.size;
      step('records acknowledged while the model is not there');
      await waitFor('records acknowledged while the model is not there', () => acked.size >= during + 200, 30_000);
      // (The failed load is retried; the rollout may also roll the site back to 1.0.0: one more reload.)

      // The cloud's copy is fixed: the next retry loads it and the rule replays what waited.
      writeFileSync(join(cloud.dataDir, 'artifacts', v2), v2bytes);
      step('scoring again');
      await waitFor(
        'v1.1 scoring',
        async () => (await local('/api/v1/rules')).items.some((r: { rule: string; blocked?: string }) => r.rule === 'score' && !r.blocked),
        30_000,
      );
      const after = acked.size;
      step('more records after the reload');
      await waitFor('more records after the reload', () => acked.size >= after + 100, 30_000);
      stop = true;
      limit = next;
      step('the last PUBACKs');
      await waitFor('the last PUBACKs', () => inFlight === 0, 15_000);

      step('every acknowledged record at the cloud');
      await waitFor(
        'every acknowledged record at the cloud',
        async () => (await cloud.handle.store.countUplink(siteId, 'scored')) >= acked.size,
        60_000,
        50,
      );
      const rows = (await cloud.handle.store.queryUplink(tenantId, { siteId, stream: 'scored', limit: 100_000 })).map(
        (r) => r.data as { n: number; s: number },
      );
      const ns = rows.map((r) => r.n);
      assert.equal(ns.length, new Set(ns).size, 'none doubled');
      assert.deepEqual(
        [...acked].filter((n) => !ns.includes(n)),
        [],
        'none lost',
      );
      assert.ok(
        rows.every((r) => typeof r.s === 'number'),
        'every record scored by a model',
      );
      const dl = await local('/api/v1/dead-letters');
      assert.equal(dl.total, 0, `none dead-lettered: ${JSON.stringify(dl.items?.slice(0, 3))}`);
    } finally {
      await device?.endAsync();
      await edge.stop();
      await cloud.stop();
    }
  });

  it("the rule host: an update pauses the model rules, holds their input, drops a removed rule's hold, and replays once the model is ready", async () => {
    const dir = tempDir('reload-unit');
    dirs.push(dir);
    let state: 'ready' | 'waiting' = 'ready';
    const {
      db,
      outbox,
      journal,
      dead,
      router,
      host,
      feed: journalAndDeliver,
    } = durableRuleHost(dir, {
      outbox: { maxMessages: 10_000, overflow: 'drop-oldest' },
      modelState: () => state,
      // A model that is not there fails its calls, as the model host does while it reloads.
      infer: async (_app, _model, args) => {
        if (state !== 'ready') throw new EwError('MODEL_NOT_READY', 'model m is loading');
        return (args[0] as number) * 2;
      },
    });
    const app = (version: string, withGone: boolean) => ({
      name: 'rl',
      version,
      deploymentId: `d-${version}`,
      manifest: parseManifest({
        apiVersion: 'edgeweave/v1',
        kind: 'App',
        metadata: { name: 'rl', version },
        spec: {
          models: [{ name: 'm', format: 'onnx', path: 'models/m.onnx', sha256: 'a'.repeat(64) }],
          streams: [{ name: 'recs', topic: 'rl/+/rec', schema: { n: 'int' } }],
          rules: [
            { name: 'score', sql: "SELECT n, infer('m', n) AS s FROM recs", sinks: [{ uplink: 'scored' }] },
            ...(withGone ? [{ name: 'gone', sql: "SELECT n, infer('m', n) AS s FROM recs", sinks: [{ uplink: 'gone' }] }] : []),
          ],
          policy: { egress: { allow: ['scored', 'gone'] } },
        },
      }),
    });
    const feed = (from: number, to: number) => {
      const recs = Array.from({ length: to - from }, (_, i) => ({
        topic: 'rl/d/rec',
        payload: Buffer.from(JSON.stringify({ n: from + i })),
      }));
      assert.ok(router.routes('rl/d/rec'), 'the stream is read (or held) all along');
      journalAndDeliver(recs);
    };
    const settle = async () => {
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      host.commit();
    };
    const scored = () =>
      outbox
        .peek(0, 10_000)
        .filter((r) => r.topic.endsWith('/scored'))
        .flatMap((r) => (JSON.parse(r.payload.toString()) as { body: { data: { n: number } } }).body.data.n);
    const v1 = app('1.0.0', true);
    const v2 = app('1.1.0', false);
    await host.start(v1);
    feed(0, 10);
    await settle();
    assert.equal(outbox.pending, 20);
    // The update: the model rules pause before the models unload; records keep coming.
    host.prepareUpdate(v1, v2);
    state = 'waiting';
    feed(10, 20);
    await host.update(v1, v2);
    feed(20, 30);
    await settle();
    const st = host.statuses();
    assert.match(st.find((s) => s.rule === 'score')?.blocked ?? '', /waiting for model m/);
    assert.equal(
      st.find((s) => s.rule === 'gone'),
      undefined,
    );
    assert.equal(journal.cursor('rl/gone'), undefined, 'the removed rule holds no journal');
    assert.ok(journal.pending >= 20, "the paused rule's input held in the journal");
    assert.equal(dead.total, 0);
    // The model is ready (a retry loaded it): the rule starts and replays what waited.
    state = 'ready';
    host.modelsChanged('rl');
    await settle();
    feed(30, 40);
    await settle();
    const ns = scored();
    assert.equal(dead.total, 0, 'none dead-lettered');
    assert.equal(ns.length, new Set(ns).size, 'none doubled');
    assert.deepEqual(
      [...ns].sort((a, b) => a - b),
      Array.from({ length: 40 }, (_, i) => i),
      'none lost',
    );
    assert.equal(journal.pending, 0, 'the journal drained');
    host.close();
    db.close();
  });
});
