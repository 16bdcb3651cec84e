import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { startTestCloud, tempDir, removeDirs, waitFor, type TestCloud } from './support/harness.ts';
import { ModelHost } from '../src/inference/host.ts';
import { RuntimeRegistry } from '../src/inference/runtime.ts';
import { OnnxRuntime } from '../src/inference/onnx.ts';
import { AppSupervisor } from '../src/edge/apps.ts';
import { ArtifactCache, cloudArtifactSource } from '../src/edge/artifacts.ts';
import { openEdgeDb } from '../src/edge/db.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { parseManifest } from '../src/contracts/manifest.ts';

const modelFile = new URL('../models/vibration-ae.onnx', import.meta.url).pathname;
const bytes = readFileSync(modelFile);
const sha = createHash('sha256').update(bytes).digest('hex');

describe("a model that failed verification is retried with backoff, and loads once the cloud's copy is fixed", () => {
  let cloud: TestCloud;
  const dir = tempDir('retry');
  before(async () => {
    cloud = await startTestCloud();
  });
  after(async () => {
    await cloud?.stop();
    removeDirs(dir);
  });

  it('fails on a corrupt cloud copy, retries at 5 s, 10 s, 20 s…, and is ready after the copy is fixed', async () => {
    const put = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(bytes),
    });
    assert.ok(put.ok);
    const manifest = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'guard', version: '1.0.0' },
      spec: {
        models: [{ name: 'ae', format: 'onnx', path: 'models/vibration-ae.onnx', sha256: sha }],
        endpoints: [{ name: 'score', model: 'ae' }],
      },
    };
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
    const site = (await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token({ labels: { retry: 'yes' } }) }, '')).body;
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'guard', version: '1.0.0', selector: { retry: 'yes' } })).status,
      201,
    );
    // The attack on the supply chain: the cloud's stored copy is damaged (same size, other bytes).
    const stored = join(cloud.dataDir, 'artifacts', sha);
    writeFileSync(stored, Buffer.alloc(bytes.length, 7));

    const clock = new ManualClock(Date.UTC(2026, 10, 30));
    const log = silentLogger();
    const db = openEdgeDb(join(dir, 'site'));
    const cache = new ArtifactCache(
      db,
      join(dir, 'site', 'models'),
      1024 ** 3,
      cloudArtifactSource(cloud.url, site.siteId, site.mqtt.password),
      clock,
      log,
    );
    const recovered: string[] = [];
    const sup = new AppSupervisor(log);
    const host = new ModelHost({
      runtimes: new RuntimeRegistry().register(new OnnxRuntime()),
      clock,
      log,
      registry: new Registry(),
      fetchModel: async (_app, m) => {
        const f = await cache.ensure(m.sha256!);
        cache.acquire(m.sha256!);
        return f;
      },
      releaseModel: (s) => cache.release(s),
      onRecovered: (app) => {
        recovered.push(app);
        sup.recovered(app, 'models');
      },
    });
    sup.register(host);
    const r = await sup.apply(1, [{ name: 'guard', version: '1.0.0', deploymentId: 'd', manifest: parseManifest(manifest) }]);
    assert.match(
      r.error ?? '',
      /ARTIFACT_DIGEST_MISMATCH: the downloaded model hashes to [0-9a-f]{64}, not [0-9a-f]{64}; it was deleted and is not loaded; retrying in 5 s/,
    );
    const served = () => host.list()[0]!;
    assert.equal(served().state, 'failed');
    assert.equal(served().nextRetryAt, clock.now() + 5000);

    // Still corrupt at the first retry: fails again, next wait doubled.
    clock.advance(4999);
    assert.equal(served().retries, 0, 'not before its time');
    clock.advance(1);
    await waitFor('second attempt failed', () => served().retries === 1 && served().state === 'failed');
    assert.equal(served().nextRetryAt, clock.now() + 10_000);
    assert.match(served().error!, /retrying in 10 s/);

    // The operator fixes the cloud's copy; the next retry loads the model.
    writeFileSync(stored, bytes);
    clock.advance(10_000);
    await waitFor('model ready', () => served().state === 'ready');
    assert.equal(served().retries, 2);
    assert.equal(served().error, undefined);
    assert.deepEqual(recovered, ['guard']);
    assert.equal(sup.error, undefined, "the app's load error cleared");
    const out = await host.infer('score', undefined, {
      inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 3, 120] }],
    });
    assert.equal(out.outputs[0]!.shape[0], 1);

    // Stopping the app cancels any retry; nothing fires afterwards.
    await sup.apply(2, []);
    assert.equal(host.list().length, 0);
    db.close();
  });
});
