import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';

/** Rollouts with real agents: a canary that fails rolls back by itself; an offline site converges. */
describe('rollouts across real sites', () => {
  let cloud: TestCloud;
  let a: TestEdge;
  let b: TestEdge;
  const app = (version: string, extra: Record<string, unknown> = {}) => ({
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'guard', version },
    spec: {
      streams: [{ name: 's', topic: 'plant/+/x' }],
      rules: [{ name: 'r', sql: 'SELECT * FROM s', sinks: [{ log: true }] }],
      ...extra,
    },
  });
  const running = (e: TestEdge) => e.handle.supervisor.running().find((x) => x.name === 'guard')?.version;
  const rollout = async (id: string) => (await cloud.api('GET', `/api/v1/rollouts/${id}`)).body;

  before(async () => {
    cloud = await startTestCloud();
    a = await startTestEdge(cloud, { labels: { pool: 'p' } });
    b = await startTestEdge(cloud, { labels: { pool: 'p' } });
    for (const v of ['1.0.0', '3.0.0']) assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: app(v) })).status, 201);
    // Version 2 carries a "model" whose file is not a model: a site cannot load it.
    const junk = randomBytes(256);
    const sha = createHash('sha256').update(junk).digest('hex');
    await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(junk),
    });
    assert.equal(
      (await cloud.api('POST', '/api/v1/apps', { manifest: app('2.0.0', { models: [{ name: 'm', format: 'onnx', sha256: sha }] }) }))
        .status,
      201,
    );
    const d1 = await cloud.api('POST', '/api/v1/deployments', { app: 'guard', version: '1.0.0', selector: { pool: 'p' } });
    assert.equal(d1.status, 201);
    await waitFor('both on 1.0.0', () => running(a) === '1.0.0' && running(b) === '1.0.0');
    await waitFor('rollout 1 succeeded', async () => (await rollout(d1.body.id)).phase === 'succeeded');
  });
  after(async () => {
    await a?.stop().catch(() => {});
    await b?.stop().catch(() => {});
    await cloud?.stop();
  });

  it('a canary whose new version fails on its site rolls back by itself', async () => {
    const d2 = await cloud.api('POST', '/api/v1/deployments', {
      app: 'guard',
      version: '2.0.0',
      selector: { pool: 'p' },
      stepTimeoutS: 30,
      strategy: { type: 'canary', canary: 1, bakeTimeS: 2, gates: { maxErrorRate: 0.05 } },
    });
    assert.equal(d2.status, 201);
    assert.equal(d2.body.rollout.canaries.length, 1);
    const canary = d2.body.rollout.canaries[0] as string;
    const r = await waitFor(
      'rolled back',
      async () => {
        const x = await rollout(d2.body.id);
        return x.phase === 'rolled-back' ? x : undefined;
      },
      20_000,
      100,
    );
    assert.match(r.reason, new RegExp(`canary failed: site ${canary}: model m failed: MODEL_LOAD_FAILED`));
    assert.equal(r.sites[canary].phase, 'reverted');
    await waitFor('both back on 1.0.0', () => running(a) === '1.0.0' && running(b) === '1.0.0');
    const other = canary === a.handle.siteId ? b : a;
    assert.ok(!r.admitted.includes(other.handle.siteId), 'the other site never got the broken version');
  });

  it('a site offline during a rolling rollout is deferred, and converges when it returns', async () => {
    await b.stop();
    await waitFor(
      'b offline at the cloud',
      async () => (await cloud.api('GET', `/api/v1/sites/${b.handle.siteId}`)).body.state === 'offline',
    );
    const d3 = await cloud.api('POST', '/api/v1/deployments', {
      app: 'guard',
      version: '3.0.0',
      selector: { pool: 'p' },
      strategy: { type: 'rolling', maxUnavailable: 1 },
    });
    const r = await waitFor(
      'succeeded',
      async () => {
        const x = await rollout(d3.body.id);
        return x.phase === 'succeeded' ? x : undefined;
      },
      20_000,
      100,
    );
    assert.equal(r.sites[b.handle.siteId].phase, 'deferred');
    assert.match(r.reason, /1 offline site\(s\) will when they return/);
    assert.equal(running(a), '3.0.0');
    await b.restart();
    await waitFor('b converges to 3.0.0', () => running(b) === '3.0.0');
  });

  it('refuses an action that does not fit the phase with a clear code, and undoes', async () => {
    const list = (await cloud.api('GET', '/api/v1/rollouts')).body.items;
    const last = list.at(-1);
    assert.equal(last.phase, 'succeeded');
    const bad = await cloud.api('POST', `/api/v1/rollouts/${last.id}/resume`);
    assert.equal(bad.status, 409);
    assert.equal(bad.body.code, 'ROLLOUT_STATE');
    const u = await cloud.api('POST', `/api/v1/rollouts/${last.id}/undo`);
    assert.equal(u.body.phase, 'rolled-back');
    await waitFor('both back on 1.0.0', () => running(a) === '1.0.0' && running(b) === '1.0.0');
  });
});
