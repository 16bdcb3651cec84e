import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { appKey, computeDesiredApps, computeDesiredForSites, desiredDigest } from './desired.ts';
import type { App, Deployment } from './store/store.ts';

const app = (name: string, version: string): App => ({
  tenantId: 't',
  name,
  version,
  digest: `${name}${version}`,
  createdAt: 0,
  manifest: {
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name, version },
    spec: { models: [], streams: [], rules: [], endpoints: [], policy: {} },
  },
});
const dep = (
  id: string,
  name: string,
  version: string,
  selector: Record<string, string>,
  createdAt: number,
  tenantId = 't',
): Deployment => ({ id, tenantId, appName: name, appVersion: version, selector, createdAt });
const apps = new Map([app('a', '1.0.0'), app('a', '2.0.0'), app('b', '1.0.0')].map((x) => [appKey(x.name, x.version), x]));
const site = { id: 's1', tenantId: 't', labels: { city: 'hz', tier: 'gold' }, region: 'cn-east', revokedAt: null };

describe('computeDesiredApps', () => {
  const table: { name: string; deps: Deployment[]; want: string[] }[] = [
    { name: 'nothing deployed', deps: [], want: [] },
    { name: 'selector matches a label', deps: [dep('d1', 'a', '1.0.0', { city: 'hz' }, 1)], want: ['a@1.0.0'] },
    { name: 'all keys must match', deps: [dep('d1', 'a', '1.0.0', { city: 'hz', tier: 'silver' }, 1)], want: [] },
    { name: 'region is matched as a key', deps: [dep('d1', 'a', '1.0.0', { region: 'cn-east' }, 1)], want: ['a@1.0.0'] },
    { name: 'empty selector is the whole fleet', deps: [dep('d1', 'b', '1.0.0', {}, 1)], want: ['b@1.0.0'] },
    {
      name: 'newest deployment of an app wins',
      deps: [dep('d1', 'a', '2.0.0', { city: 'hz' }, 1), dep('d2', 'a', '1.0.0', { tier: 'gold' }, 2)],
      want: ['a@1.0.0'],
    },
    { name: 'same time: larger id wins', deps: [dep('d9', 'a', '2.0.0', {}, 1), dep('d1', 'a', '1.0.0', {}, 1)], want: ['a@2.0.0'] },
    { name: 'other tenants never apply', deps: [dep('d1', 'a', '1.0.0', {}, 1, 'other')], want: [] },
    { name: 'a missing app version is skipped', deps: [dep('d1', 'a', '9.9.9', {}, 1)], want: [] },
    {
      name: 'several apps, sorted by name',
      deps: [dep('d1', 'b', '1.0.0', {}, 1), dep('d2', 'a', '1.0.0', {}, 1)],
      want: ['a@1.0.0', 'b@1.0.0'],
    },
  ];
  for (const c of table) {
    it(c.name, () => {
      assert.deepEqual(
        computeDesiredApps(site, c.deps, apps).map((a) => `${a.name}@${a.version}`),
        c.want,
      );
    });
  }
  it('lets a rollout hold a new version back from sites it has not admitted, and fall back when rolled back', () => {
    const deps = [dep('d1', 'a', '1.0.0', {}, 1), dep('d2', 'a', '2.0.0', {}, 2)];
    const r = (phase: string, admitted: string[]) => new Map([['d2', { phase, admitted } as never]]);
    assert.deepEqual(
      computeDesiredApps(site, deps, apps, r('progressing', [])).map((a) => a.version),
      ['1.0.0'],
    );
    assert.deepEqual(
      computeDesiredApps(site, deps, apps, r('progressing', ['s1'])).map((a) => a.version),
      ['2.0.0'],
    );
    assert.deepEqual(
      computeDesiredApps(site, deps, apps, r('succeeded', [])).map((a) => a.version),
      ['2.0.0'],
    );
    assert.deepEqual(
      computeDesiredApps(site, deps, apps, r('rolled-back', ['s1'])).map((a) => a.version),
      ['1.0.0'],
    );
  });

  it('gives a revoked site nothing', () => {
    assert.deepEqual(computeDesiredApps({ ...site, revokedAt: 5 }, [dep('d1', 'a', '1.0.0', {}, 1)], apps), []);
  });
  it('digest changes with what runs and nothing else', () => {
    const one = computeDesiredApps(site, [dep('d1', 'a', '1.0.0', {}, 1)], apps);
    const same = computeDesiredApps(site, [dep('d1', 'a', '1.0.0', {}, 1), dep('d0', 'b', '1.0.0', { city: 'nope' }, 1)], apps);
    const other = computeDesiredApps(site, [dep('d1', 'a', '2.0.0', {}, 1)], apps);
    assert.equal(desiredDigest(one), desiredDigest(same));
    assert.notEqual(desiredDigest(one), desiredDigest(other));
  });
});

describe('computeDesiredForSites', () => {
  it('gives every site what computeDesiredApps gives it, labels, regions, tenants, revocations and rollouts mixed', () => {
    const deps = [
      dep('d1', 'a', '1.0.0', {}, 1),
      dep('d2', 'a', '2.0.0', { city: 'hz' }, 2),
      dep('d3', 'b', '1.0.0', { region: 'cn-east' }, 3),
      dep('d4', 'b', '1.0.0', { tier: 'gold' }, 4, 'other'),
    ];
    const sites = Array.from({ length: 60 }, (_, i) => ({
      id: `s${i}`,
      tenantId: i % 7 === 0 ? 'other' : 't',
      labels: (i % 3 === 0 ? { city: 'hz', tier: 'gold' } : i % 3 === 1 ? { tier: 'gold', city: 'hz' } : { city: 'sh' }) as Record<
        string,
        string
      >,
      region: i % 2 ? 'cn-east' : 'cn-west',
      revokedAt: i % 11 === 0 ? 5 : null,
    }));
    const base = {
      app: 'a',
      version: '2.0.0',
      strategy: { type: 'rolling' as const, maxUnavailable: 1 },
      options: { stepTimeoutS: 60, onFailure: 'rollback' as const },
      startedAt: 0,
      updatedAt: 0,
      canaries: [],
      sites: {},
      history: [],
    };
    for (const phase of ['progressing', 'succeeded', 'rolled-back'] as const) {
      const rollouts = new Map([['d2', { ...base, id: 'd2', phase, admitted: ['s1', 's4', 's9', 's30'] }]]);
      const got = computeDesiredForSites(sites, deps, apps, rollouts);
      sites.forEach((site, i) => {
        const want = computeDesiredApps(site, deps, apps, rollouts);
        assert.deepEqual(got[i]!.apps, want, `${phase}: site ${site.id}`);
        assert.equal(got[i]!.digest, desiredDigest(want), `${phase}: site ${site.id}`);
      });
    }
  });

  it('computes once per class of sites: alike sites share one result', () => {
    const sites = Array.from({ length: 1000 }, (_, i) => ({
      id: `s${i}`,
      tenantId: 't',
      labels: { shard: String(i % 10) },
      region: 'r',
      revokedAt: null,
    }));
    const got = computeDesiredForSites(sites, [dep('d1', 'a', '1.0.0', {}, 1)], apps);
    assert.equal(new Set(got.map((x) => x.apps)).size, 10);
    assert.equal(got[0]!.apps, got[10]!.apps);
  });
});
