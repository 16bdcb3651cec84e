import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Registry } from 'prom-client';
import { startTestCloud, type TestCloud } from './support/harness.ts';
import { ModelHost } from '../src/inference/host.ts';
import { RuntimeRegistry } from '../src/inference/runtime.ts';
import { OnnxRuntime } from '../src/inference/onnx.ts';
import { AppSupervisor } from '../src/edge/apps.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import type { DesiredApp } from '../src/contracts/messages.ts';
import { parseManifest } from '../src/contracts/manifest.ts';

const modelFile = new URL('../models/vibration-ae.onnx', import.meta.url).pathname;
const sha = createHash('sha256').update(readFileSync(modelFile)).digest('hex');

const manifest = (name: string, version: string, endpoint: string) => ({
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name, version },
  spec: {
    models: [{ name: 'ae', format: 'onnx', path: 'models/vibration-ae.onnx', sha256: sha }],
    endpoints: [{ name: endpoint, model: 'ae' }],
  },
});

describe('endpoint names: two apps on one site may not declare the same one', () => {
  let cloud: TestCloud;
  before(async () => {
    cloud = await startTestCloud();
    const put = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(readFileSync(modelFile)),
    });
    assert.ok(put.ok);
    // Sites enrolled straight through the API: the check is the cloud's, no agent needed.
    for (const labels of [{ line: 'a' }, { line: 'a', zone: 'z' }, { line: 'b' }] as Record<string, string>[]) {
      const r = await cloud.api('POST', '/api/v1/enroll', { token: await cloud.token({ labels }) }, '');
      assert.equal(r.status, 201);
    }
    for (const m of [
      manifest('pump-guard', '1.0.0', 'score'),
      manifest('fan-guard', '1.0.0', 'score'),
      manifest('fan-guard', '1.1.0', 'fan-score'),
    ]) {
      assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: m })).status, 201);
    }
  });
  after(async () => cloud?.stop());

  it('refuses at deployment a second app with the same endpoint on an overlapping pool, naming both apps', async () => {
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'pump-guard', version: '1.0.0', selector: { line: 'a' } })).status,
      201,
    );
    const clash = await cloud.api('POST', '/api/v1/deployments', { app: 'fan-guard', version: '1.0.0', selector: { zone: 'z' } });
    assert.equal(clash.status, 409);
    assert.equal(clash.body.code, 'ENDPOINT_CONFLICT');
    assert.equal(clash.body.path, 'app');
    assert.match(
      clash.body.message,
      /endpoint "score" of fan-guard@1\.0\.0 is also declared by app pump-guard@1\.0\.0, which runs on 1 site\(s\)/,
    );
    assert.equal((await cloud.api('GET', '/api/v1/deployments')).body.items.length, 1, 'nothing stored');
    // A pool that does not overlap, a renamed endpoint, or a new version of the same app: fine.
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'fan-guard', version: '1.0.0', selector: { line: 'b' } })).status,
      201,
    );
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'fan-guard', version: '1.1.0', selector: { zone: 'z' } })).status,
      201,
    );
    // The same app again on its own pool never conflicts with itself (an identical submission
    // answers the existing deployment: 200, idempotent).
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'pump-guard', version: '1.0.0', selector: { line: 'a' } })).status,
      200,
    );
  });

  it('at a site, a second app declaring a served endpoint is refused and the first keeps serving it', async () => {
    const host = new ModelHost({
      runtimes: new RuntimeRegistry().register(new OnnxRuntime()),
      clock: new ManualClock(),
      log: silentLogger(),
      registry: new Registry(),
      fetchModel: async () => modelFile,
    });
    const sup = new AppSupervisor(silentLogger());
    sup.register(host);
    const desired = (name: string, version: string, endpoint: string): DesiredApp => ({
      name,
      version,
      deploymentId: `dep-${name}`,
      manifest: parseManifest(manifest(name, version, endpoint)),
    });
    const r = await sup.apply(1, [desired('pump-guard', '1.0.0', 'score'), desired('zz-guard', '1.0.0', 'score')]);
    assert.match(
      r.error ?? '',
      /zz-guard@1\.0\.0: models failed to start: ENDPOINT_CONFLICT: endpoint "score" is already served on this site by app pump-guard/,
    );
    assert.equal(host.metadata('score').versions[0], '1.0.0');
    const out = await host.infer('score', undefined, {
      inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 3, 120] }],
    });
    assert.equal(out.model_name, 'score');
    assert.deepEqual(host.endpointNames(), ['score']);
    // Once the first app goes, the second can take the name.
    const r2 = await sup.apply(2, [desired('zz-guard', '1.0.0', 'score')]);
    assert.equal(r2.error, undefined);
    assert.ok(host.ready('score'));
    await sup.apply(3, []);
  });
});
