import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { tempDir, removeDirs } from './support/harness.ts';
import { openStore } from '../src/cloud/store/open.ts';
import type { Store } from '../src/cloud/store/store.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { isEwError } from '../src/contracts/errors.ts';
import { hashSecret } from '../src/lib/secrets.ts';
import { canonical, pushApp } from '../src/cloud/services/apps.ts';
import { DeploymentService } from '../src/cloud/services/deployments.ts';
import { createJoinToken, enrollSite } from '../src/cloud/services/enrollment.ts';
import { RolloutController } from '../src/cloud/rollout/controller.ts';
import type { Fleet } from '../src/cloud/fleet.ts';
import { silentLogger } from '../src/lib/logger.ts';

/**
 * The API's multi-step operations, called directly (no HTTP, no broker): a real SQLite store and
 * a manual clock; the fleet and the rollout controller are the narrow parts the services use,
 * recorded here so a test can see that the service asked them.
 */
const T = 'ten-a';
const manifest = (name: string, version: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name, version },
  spec: { ...extra },
});

describe('services: push an app, deploy it, enroll a site — without HTTP', () => {
  let store: Store;
  let dir: string;
  const clock = new ManualClock(1_000_000);
  const reconciledSites: string[][] = [];
  const reconciledTenants: string[] = [];
  let steps = 0;
  const fleet = {
    reconcileSites: async (ids: readonly string[]) => {
      reconciledSites.push([...ids]);
    },
    reconcileTenant: async (t: string) => {
      reconciledTenants.push(t);
    },
  };
  const files = new Set<string>();
  const artifacts = { exists: (sha: string) => files.has(sha) };

  before(async () => {
    dir = tempDir('services');
    store = openStore(undefined, dir);
    await store.migrate();
    await store.createTenant({ id: T, name: 'a', createdAt: 1 });
  });
  after(async () => {
    await store.close();
    removeDirs(dir);
  });

  it('pushApp: one digest whatever the key order, versions immutable, errors under manifest.', async () => {
    const a = await pushApp({ store, artifacts, clock }, T, manifest('demo', '1.0.0', { streams: [] }));
    assert.equal(a.digest, createHash('sha256').update(canonical(a.manifest)).digest('hex'));
    assert.equal(canonical({ b: 1, a: { d: 2, c: [3, { f: 1, e: 2 }] } }), canonical({ a: { c: [3, { e: 2, f: 1 }], d: 2 }, b: 1 }));
    await assert.rejects(
      pushApp({ store, artifacts, clock }, T, manifest('demo', '1.0.0', { streams: [] })),
      (e) => isEwError(e, 'APP_VERSION_EXISTS') && /identical/.test(e.message) && e.path === 'manifest.metadata.version',
    );
    await assert.rejects(
      pushApp({ store, artifacts, clock }, T, manifest('demo', 'one')),
      (e) => isEwError(e, 'INVALID_MANIFEST') && e.path === 'manifest.metadata.version',
    );
    const sha = 'b'.repeat(64);
    const withModel = manifest('m', '1.0.0', { models: [{ name: 'x', format: 'onnx', path: 'x.onnx', sha256: sha }] });
    await assert.rejects(
      pushApp({ store, artifacts, clock }, T, withModel),
      (e) => isEwError(e, 'ARTIFACT_NOT_FOUND') && e.path === 'manifest.spec.models[0].sha256',
    );
    files.add(sha);
    await assert.rejects(
      pushApp({ store, artifacts, clock }, T, withModel),
      (e) => isEwError(e, 'ARTIFACT_NOT_FOUND'),
      "on disk, but not this tenant's",
    );
    await store.addArtifactOwner(T, sha, 1);
    assert.equal((await pushApp({ store, artifacts, clock }, T, withModel)).name, 'm');
  });

  it('DeploymentService: the rollout and the deployment together, the same submission once, races included', async () => {
    const svc = new DeploymentService({
      store,
      rollouts: {
        stepOne: async () => {
          steps++;
          return new Set<string>();
        },
      },
      fleet,
      clock,
    });
    const req = {
      app: 'demo',
      version: '1.0.0',
      selector: { tier: 'a' },
      strategy: { type: 'all' as const },
      options: { stepTimeoutS: 60, onFailure: 'rollback' as const },
    };
    await assert.rejects(svc.create(T, { ...req, version: '9.9.9' }), (e) => isEwError(e, 'APP_NOT_FOUND') && e.path === 'version');
    await assert.rejects(svc.create(T, { ...req, selector: { 'bad key!': 'x' } }), (e) => isEwError(e, 'INVALID_SELECTOR'));
    const first = await svc.create(T, req);
    assert.equal(first.created, true);
    assert.equal((await store.getRollout(T, first.deployment.id))?.state.app, 'demo');
    assert.equal((await store.getDeployment(T, first.deployment.id))?.appVersion, '1.0.0');
    assert.equal(steps, 1, 'the controller stepped once');
    assert.deepEqual(reconciledTenants, [T]);
    const again = await svc.create(T, req);
    assert.equal(again.created, false);
    assert.equal(again.deployment.id, first.deployment.id);
    // Two identical new submissions at once resolve to one deployment. (The store orders
    // deployments by creation time, then id: the clock moves so "newest" is well defined.)
    clock.advance(1);
    const changed = { ...req, selector: { tier: 'b' } };
    const [x, y] = await Promise.all([svc.create(T, changed), svc.create(T, changed)]);
    assert.equal(x.deployment.id, y.deployment.id);
    assert.deepEqual([x.created, y.created].sort(), [false, true]);
    assert.equal((await store.listDeployments(T)).length, 2);
  });

  it('enrollSite: a token enrolls once, then says why it no longer can', async () => {
    const { token, secret } = await createJoinToken({ store, clock }, T, {
      labels: { tier: 'a' },
      region: 'r1',
      ttlSeconds: 60,
      description: '',
    });
    assert.equal(token.hash, hashSecret(secret), 'stored hashed only');
    const { site, secret: siteSecret } = await enrollSite({ store, fleet, clock }, secret, 'press-hall');
    assert.equal(site.name, 'press-hall');
    assert.deepEqual(site.labels, { tier: 'a' });
    assert.equal(site.secretHash, hashSecret(siteSecret));
    assert.deepEqual(reconciledSites.at(-1), [site.id], 'its desired state is computed at once');
    await assert.rejects(enrollSite({ store, fleet, clock }, secret, undefined), (e) => isEwError(e, 'TOKEN_USED'));
    await assert.rejects(enrollSite({ store, fleet, clock }, 'ewj_unknown', undefined), (e) => isEwError(e, 'TOKEN_INVALID'));
    const late = await createJoinToken({ store, clock }, T, { labels: {}, region: 'r1', ttlSeconds: 60, description: '' });
    clock.advance(61_000);
    await assert.rejects(enrollSite({ store, fleet, clock }, late.secret, undefined), (e) => isEwError(e, 'TOKEN_EXPIRED'));
    await assert.rejects(
      createJoinToken({ store, clock }, T, { labels: { 'bad key!': 'x' }, region: 'r', ttlSeconds: 60, description: '' }),
      (e) => isEwError(e, 'INVALID_SELECTOR'),
    );
  });

  it('a replica without the controller lease steps the rollout it just created at once; its periodic step does nothing', async () => {
    // Two replicas' controllers on one store; A holds the lease. The fleet is the narrow part the
    // controller reads (what sites said, liveness) and asks (publish a tenant's desired state).
    const published: string[] = [];
    const stub = {
      statuses: new Map(),
      isOnline: () => true,
      reconcileTenant: async (t: string) => {
        published.push(t);
      },
    } as unknown as Fleet;
    const a = new RolloutController({ store, fleet: stub, clock, log: silentLogger(), holder: 'replica-a' });
    const b = new RolloutController({ store, fleet: stub, clock, log: silentLogger(), holder: 'replica-b' });
    await a.step(); // (it also steps the earlier test's rollouts)
    published.length = 0;
    assert.equal(await store.acquireLease('rollout-controller', 'replica-b', clock.now(), 5000), false, 'A holds the lease');
    await pushApp({ store, artifacts, clock }, T, manifest('fast', '1.0.0'));
    const svc = new DeploymentService({ store, rollouts: b, fleet: stub, clock });
    const out = await svc.create(T, {
      app: 'fast',
      version: '1.0.0',
      selector: { tier: 'a' },
      strategy: { type: 'all' },
      options: { stepTimeoutS: 60, onFailure: 'rollback' },
    });
    assert.ok(out.sites.length >= 1);
    assert.deepEqual(out.rollout.admitted.sort(), [...out.sites].sort(), 'admitted by B, which has no lease');
    assert.deepEqual(published, [T], 'published once, by the step (not again by the service)');
    assert.equal((await b.step()).size, 0, "B's periodic step: no lease, nothing stepped");
  });
});
