import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  place,
  modelKey,
  type FleetSnapshot,
  type ModelState,
  type ResidencyPolicy,
  type RouteRequest,
  type SiteSnapshot,
} from './policy.ts';
import { seeded } from '../../lib/random.ts';

const M = { app: 'guard', name: 'ae', version: '1.0.0' };
const K = modelKey(M);

function site(id: string, region: string, over: Partial<SiteSnapshot> = {}): SiteSnapshot {
  return {
    id,
    region,
    online: true,
    models: new Map([[K, 'ready' as ModelState]]),
    queued: 0,
    inFlight: 0,
    parallelism: 2,
    accelerators: [],
    ...over,
  };
}
function req(over: Partial<RouteRequest> = {}): RouteRequest {
  return { endpoint: 'score', models: [M], cloudFallback: false, residency: {}, ...over };
}

describe('placement policy', () => {
  it('orders eligible sites by estimated latency and says why each other one was left out', () => {
    const fleet: FleetSnapshot = {
      now: 1000,
      sites: [
        site('a', 'eu', { latencyMs: 10, inFlight: 4 }), // 10 × (1 + 4/2) = 30
        site('b', 'eu', { latencyMs: 12 }), // 12
        site('c', 'us', { latencyMs: 1 }),
        site('d', 'eu', { online: false }),
        site('e', 'eu', { models: new Map([[K, 'loading']]) }),
        site('f', 'eu', { circuitOpenUntil: 5000 }),
        site('g', 'eu', { models: new Map([['other/x@1.0.0', 'ready']]) }),
      ],
      cloud: { region: 'eu', canServe: true },
    };
    const d = place(req({ regions: ['eu'], cloudFallback: true }), fleet);
    assert.ok(d.ok);
    assert.deepEqual(
      d.choices.map((c) => (c.target.kind === 'site' ? c.target.siteId : 'cloud')),
      ['b', 'a', 'cloud'],
    );
    assert.deepEqual(
      d.rejected.map((r) => [r.target.kind === 'site' ? r.target.siteId : 'cloud', r.reason]),
      [
        ['c', 'residency'],
        ['d', 'offline'],
        ['e', 'not-ready'],
        ['f', 'circuit-open'],
      ],
    );
    assert.match(d.choices[0]!.reasons.join('; '), /latency: 12\.0 ms measured/);
  });

  it('puts a preferred site first only when it is eligible, and favours GPUs for models that want one', () => {
    const fleet: FleetSnapshot = {
      now: 0,
      sites: [site('a', 'eu', { latencyMs: 10 }), site('b', 'eu', { latencyMs: 15, accelerators: ['nvidia:0'] }), site('c', 'us')],
    };
    const gpu = place(req({ wantsAccelerator: true }), fleet);
    assert.ok(gpu.ok);
    assert.equal((gpu.choices[0]!.target as { siteId: string }).siteId, 'b');
    assert.match(gpu.choices[0]!.reasons.join(), /accelerator: nvidia:0/);
    const pref = place(req({ preferSite: 'a', regions: ['eu'], wantsAccelerator: true }), fleet);
    assert.ok(pref.ok);
    assert.equal((pref.choices[0]!.target as { siteId: string }).siteId, 'a');
    const forbidden = place(req({ preferSite: 'c', regions: ['eu'] }), fleet);
    assert.ok(forbidden.ok);
    assert.ok(
      forbidden.choices.every((c) => c.target.region === 'eu'),
      'a preference never overrides residency',
    );
  });

  it('refuses with the constraint named when residency leaves nothing, and with NO_SITE_AVAILABLE when eligible sites are down', () => {
    const residency: ResidencyPolicy = { classes: { pii: { regions: ['eu'], cloud: false }, public: {} } };
    const fleet: FleetSnapshot = {
      now: 0,
      sites: [site('a', 'us'), site('b', 'eu', { online: false })],
      cloud: { region: 'us', canServe: true },
    };
    const empty = place(req({ residency, dataClass: 'pii', regions: ['us'], cloudFallback: true }), fleet);
    assert.equal(empty.ok, false);
    assert.ok(!empty.ok && empty.code === 'RESIDENCY_UNSATISFIABLE');
    assert.match(
      !empty.ok ? empty.message : '',
      /data class "pii" allows regions \[eu\].*the request allows regions \[us\] — these leave no region/,
    );
    const unknown = place(req({ residency, dataClass: 'secret' }), fleet);
    assert.ok(!unknown.ok && unknown.code === 'RESIDENCY_UNSATISFIABLE');
    assert.match(!unknown.ok ? unknown.message : '', /data class "secret" is not declared by the endpoint \(declared: pii, public\)/);
    const down = place(req({ residency, dataClass: 'pii', cloudFallback: true }), fleet);
    assert.ok(!down.ok && down.code === 'NO_SITE_AVAILABLE', 'b is allowed but offline; the cloud may not see pii');
    assert.match(!down.ok ? down.message : '', /b: offline/);
    const cloudOk = place(req({ residency, dataClass: 'public', cloudFallback: true }), {
      ...fleet,
      sites: [site('b', 'eu', { online: false })],
    });
    assert.ok(cloudOk.ok);
    assert.deepEqual(
      cloudOk.choices.map((c) => c.target.kind),
      ['cloud'],
    );
  });

  it('property: residency is never violated under random requests, regions, policies and site failures', () => {
    const rand = seeded(20261130);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const some = <T>(xs: readonly T[]): T[] => xs.filter(() => rand() < 0.5);
    const REGIONS = ['eu-west', 'eu-central', 'us-east', 'ap-south', 'cn-east'];
    const STATES: ModelState[] = ['ready', 'ready', 'ready', 'loading', 'failed', 'fetching'];
    let decisions = 0;
    let unsatisfiable = 0;
    let retries = 0;
    for (let round = 0; round < 3000; round++) {
      const n = 1 + Math.floor(rand() * 12);
      const sites: SiteSnapshot[] = Array.from({ length: n }, (_, i) =>
        site(`s${i}`, pick(REGIONS), {
          online: rand() < 0.8,
          models: rand() < 0.9 ? new Map([[K, pick(STATES)]]) : new Map(),
          inFlight: Math.floor(rand() * 10),
          queued: Math.floor(rand() * 10),
          maxQueue: rand() < 0.3 ? 5 : undefined,
          latencyMs: rand() < 0.5 ? rand() * 100 : undefined,
          accelerators: rand() < 0.2 ? ['nvidia:0'] : [],
          circuitOpenUntil: rand() < 0.1 ? 10 : undefined,
        }),
      );
      const residency: ResidencyPolicy = {
        regions: rand() < 0.3 ? some(REGIONS) : undefined,
        cloud: rand() < 0.2 ? false : undefined,
        classes: {
          pii: {
            regions: some(REGIONS),
            sites: rand() < 0.3 ? some(sites.map((s) => s.id)) : undefined,
            cloud: rand() < 0.5 ? false : undefined,
          },
          open: {},
        },
      };
      const r = req({
        residency,
        cloudFallback: rand() < 0.5,
        wantsAccelerator: rand() < 0.3,
        regions: rand() < 0.5 ? some(REGIONS) : undefined,
        dataClass: rand() < 0.6 ? pick(['pii', 'open', 'unknown-class']) : undefined,
        preferSite: rand() < 0.3 ? `s${Math.floor(rand() * n)}` : undefined,
      });
      const fleet: FleetSnapshot = { now: 5, sites, cloud: rand() < 0.7 ? { region: pick(REGIONS), canServe: rand() < 0.8 } : undefined };

      // The oracle, written from the inputs and not from the policy's own constraint.
      const cls = r.dataClass === undefined ? undefined : residency.classes![r.dataClass];
      const allowed = (t: { kind: 'site' | 'cloud'; region: string; siteId?: string }): boolean => {
        if (r.dataClass !== undefined && !cls) return false;
        if (residency.regions && !residency.regions.includes(t.region)) return false;
        if (cls?.regions && !cls.regions.includes(t.region)) return false;
        if (r.regions && !r.regions.includes(t.region)) return false;
        if (t.kind === 'cloud') return residency.cloud !== false && cls?.cloud !== false;
        return !cls?.sites || cls.sites.includes(t.siteId!);
      };

      // The shell's retry loop: each chosen target fails at random and the policy is asked again
      // with it excluded, until one answers or nothing is left — every target must be allowed.
      const tried: string[] = [];
      for (let attempt = 0; attempt < n + 2; attempt++) {
        const d = place({ ...r, exclude: tried }, fleet);
        decisions++;
        if (!d.ok) {
          if (attempt === 0 && d.code === 'RESIDENCY_UNSATISFIABLE') {
            unsatisfiable++;
            const anyAllowed =
              sites.some((s) => s.models.has(K) && allowed({ kind: 'site', region: s.region, siteId: s.id })) ||
              (fleet.cloud !== undefined && r.cloudFallback && allowed({ kind: 'cloud', region: fleet.cloud.region }));
            assert.equal(anyAllowed, false, `round ${round}: refused as unsatisfiable though an allowed target serves it`);
          }
          break;
        }
        for (const ch of d.choices) {
          assert.ok(
            allowed(ch.target as never),
            `round ${round}: ${JSON.stringify(ch.target)} violates residency of ${JSON.stringify({ residency, r: { regions: r.regions, dataClass: r.dataClass } })}`,
          );
          if (ch.target.kind === 'site') {
            const s = sites.find((x) => x.id === (ch.target as { siteId: string }).siteId)!;
            assert.ok(s.online && s.models.get(K) === 'ready' && !tried.includes(s.id), `round ${round}: an ineligible site was chosen`);
          } else {
            assert.ok(r.cloudFallback && fleet.cloud?.canServe, 'the cloud only where a fallback is declared and possible');
          }
        }
        const sitesFirst = d.choices.findIndex((c) => c.target.kind === 'cloud');
        assert.ok(sitesFirst === -1 || sitesFirst === d.choices.length - 1, 'the cloud fallback comes after every site');
        const first = d.choices[0]!;
        if (rand() < 0.5) break; // it answered
        retries++;
        tried.push(first.target.kind === 'site' ? first.target.siteId : 'cloud');
      }
    }
    assert.ok(
      decisions > 3000 && unsatisfiable > 100 && retries > 500,
      `the generator exercises all paths (${decisions} decisions, ${unsatisfiable} unsatisfiable, ${retries} retries)`,
    );
  });
});
