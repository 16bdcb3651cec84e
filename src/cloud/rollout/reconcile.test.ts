import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  abort,
  admittedSites,
  newRollout,
  observe,
  pause,
  reconcile,
  resume,
  sameJson,
  undo,
  type RolloutState,
  type SiteObservation,
  type Strategy,
} from './reconcile.ts';
import { ManualClock } from '../../lib/clock.ts';
import type { SiteStatusBody } from '../../contracts/messages.ts';

/**
 * A small simulated fleet: each site runs whatever version it is admitted to one step after it
 * is admitted (or never, for sites told to misbehave), and reports metrics per version.
 */
class Fleet {
  t = 0;
  running = new Map<string, string>();
  online = new Map<string, boolean>();
  broken = new Set<string>(); // never become healthy on the new version
  crashing = new Set<string>(); // fail outright on the new version
  metrics = new Map<string, SiteObservation['metrics']>();
  constructor(
    readonly sites: string[],
    readonly oldVersion = '1.0.0',
  ) {
    for (const s of sites) {
      this.running.set(s, oldVersion);
      this.online.set(s, true);
    }
  }
  obs(): Map<string, SiteObservation> {
    return new Map(
      this.sites.map((s) => [
        s,
        {
          online: this.online.get(s)!,
          runningVersion: this.running.get(s),
          healthy: !((this.broken.has(s) || this.crashing.has(s)) && this.running.get(s) !== this.oldVersion),
          healthReason: this.broken.has(s) || this.crashing.has(s) ? 'rule anomalies failed: SQL_INVALID' : undefined,
          failed: this.crashing.has(s) && this.running.get(s) !== this.oldVersion,
          metrics: this.metrics.get(`${s}@${this.running.get(s)}`) ?? undefined,
        },
      ]),
    );
  }
  /** Sites apply what the rollout admits (online ones), then the controller steps. */
  step(r: RolloutState, ms = 1000): RolloutState {
    this.t += ms;
    const admitted = admittedSites(r, this.sites);
    for (const s of this.sites) if (this.online.get(s)) this.running.set(s, admitted.has(s) ? r.version : this.oldVersion);
    return reconcile(r, this.sites, this.obs(), this.t);
  }
  run(r: RolloutState, steps: number, ms = 1000): RolloutState {
    for (let i = 0; i < steps; i++) r = this.step(r, ms);
    return r;
  }
}

const opts = { stepTimeoutS: 60, onFailure: 'rollback' as const };
const start = (strategy: Strategy) => newRollout('dep-1', 'vib', '2.0.0', strategy, opts, 0);

describe('rollout controller (pure, fake time)', () => {
  it('all at once: every site at once, succeeded when all run the new version', () => {
    const f = new Fleet(['a', 'b', 'c']);
    let r = f.step(start({ type: 'all' }));
    assert.deepEqual(r.admitted.sort(), ['a', 'b', 'c']);
    r = f.run(r, 2);
    assert.equal(r.phase, 'succeeded');
    assert.match(r.reason!, /all 3 site\(s\) run vib@2.0.0/);
    assert.deepEqual([...f.running.values()], ['2.0.0', '2.0.0', '2.0.0']);
  });

  it('rolling: never more than maxUnavailable sites updating at once', () => {
    const f = new Fleet(['a', 'b', 'c', 'd', 'e']);
    let r = start({ type: 'rolling', maxUnavailable: 2 });
    const seen: number[] = [];
    for (let i = 0; i < 12 && r.phase !== 'succeeded'; i++) {
      r = f.step(r);
      seen.push(Object.values(r.sites).filter((s) => s.phase === 'updating').length);
    }
    assert.equal(r.phase, 'succeeded');
    assert.ok(Math.max(...seen) <= 2, `in flight: ${seen}`);
    assert.ok(r.history.filter((h) => h.event.startsWith('admitted')).length >= 3, 'in several waves');
  });

  it('canary: a few sites first, gates held for the bake time, then the rest', () => {
    const f = new Fleet(['a', 'b', 'c', 'd']);
    let r = start({
      type: 'canary',
      canary: 25,
      canaryPercent: true,
      bakeTimeS: 30,
      gates: { maxErrorRate: 0.05, maxP95Ms: 50 },
      then: 'all',
    });
    r = f.step(r);
    assert.deepEqual(r.canaries, ['a']);
    assert.deepEqual(r.admitted, ['a']);
    f.metrics.set('a@2.0.0', { requests: 1000, errors: 2, p95Ms: 12, outputMean: 0.31 });
    r = f.run(r, 2);
    assert.equal(r.phase, 'baking');
    r = f.run(r, 20);
    assert.equal(r.admitted.length, 1, 'still baking at 22 s');
    r = f.run(r, 12);
    assert.equal(r.admitted.length, 4, 'promoted after the bake');
    r = f.run(r, 2);
    assert.equal(r.phase, 'succeeded');
  });

  it('canary: a failed gate rolls back by itself, with the figures in the reason', () => {
    const f = new Fleet(['a', 'b', 'c']);
    let r = start({ type: 'canary', canary: 1, bakeTimeS: 60, gates: { maxErrorRate: 0.01 }, then: 'all' });
    r = f.run(r, 2);
    f.metrics.set('a@2.0.0', { requests: 200, errors: 30, p95Ms: 5, outputMean: 0.2 });
    r = f.run(r, 1);
    assert.equal(r.phase, 'rolled-back');
    assert.match(r.reason!, /error rate 15.00 % on canary sites is above the gate of 1.00 %/);
    assert.deepEqual(r.admitted, []);
    r = f.run(r, 1);
    assert.equal(f.running.get('a'), '1.0.0', 'the canary is back on the previous version');
  });

  it('canary: output drift against the previous version is a gate', () => {
    const f = new Fleet(['a', 'b', 'c']);
    f.metrics.set('b@1.0.0', { requests: 100, errors: 0, p95Ms: 3, outputMean: 0.2 });
    f.metrics.set('c@1.0.0', { requests: 100, errors: 0, p95Ms: 3, outputMean: 0.22 });
    f.metrics.set('a@2.0.0', { requests: 100, errors: 0, p95Ms: 3, outputMean: 0.5 });
    let r = start({ type: 'canary', canary: 1, bakeTimeS: 60, gates: { maxDrift: 0.25 }, then: 'all' });
    r = f.run(r, 3);
    assert.equal(r.phase, 'rolled-back');
    assert.match(r.reason!, /drift 138.1 % .*above the gate of 25.0 %/);
  });

  it('a site that never runs the new version fails the rollout after the step timeout, which rolls back', () => {
    const f = new Fleet(['a', 'b']);
    f.broken.add('b');
    let r = start({ type: 'all' });
    r = f.run(r, 30);
    assert.equal(r.phase, 'progressing', 'not before the deadline');
    r = f.run(r, 40);
    assert.equal(r.phase, 'failed');
    assert.match(r.reason!, /site b unhealthy for 60 s: rule anomalies failed/);
    assert.deepEqual(r.admitted, [], 'onFailure rollback');
  });

  it('a site that fails outright on the new version fails the canary at once, without waiting for the deadline', () => {
    const f = new Fleet(['a', 'b', 'c']);
    f.crashing.add('a');
    let r = start({ type: 'canary', canary: 1, bakeTimeS: 60, gates: {}, then: 'all' });
    r = f.run(r, 2);
    assert.equal(r.phase, 'rolled-back');
    assert.match(r.reason!, /canary failed: site a: rule anomalies failed/);
    assert.ok(f.t <= 2000);
  });

  it('an offline site is deferred: it does not hold the rollout and converges when it returns', () => {
    const f = new Fleet(['a', 'b', 'c']);
    f.online.set('c', false);
    let r = f.run(start({ type: 'rolling', maxUnavailable: 1 }), 6);
    assert.equal(r.phase, 'succeeded');
    assert.match(r.reason!, /1 offline site\(s\) will when they return/);
    assert.equal(r.sites.c!.phase, 'deferred');
    assert.ok(admittedSites(r, f.sites).has('c'), 'its desired state already names the new version');
    f.online.set('c', true);
    r = f.step(r);
    assert.equal(f.running.get('c'), '2.0.0');
    assert.equal(r.sites.c!.phase, 'updated', 'the rollout follows it back');
    assert.equal(r.phase, 'succeeded');
  });

  it('pause holds, resume continues, abort returns every site to the previous version', () => {
    const f = new Fleet(['a', 'b', 'c', 'd']);
    let r = f.step(start({ type: 'rolling', maxUnavailable: 1 }));
    r = pause(r, f.t);
    const held = f.run(r, 10);
    assert.equal(held.phase, 'paused');
    assert.equal(held.admitted.length, 1);
    assert.throws(() => pause(held, f.t), /only a running rollout/);
    r = resume(held, f.t);
    r = f.run(r, 2);
    assert.ok(r.admitted.length >= 2);
    r = abort(r, f.t);
    assert.equal(r.phase, 'aborted');
    f.step(r);
    assert.deepEqual([...f.running.values()], ['1.0.0', '1.0.0', '1.0.0', '1.0.0']);
    assert.throws(() => abort(r, f.t), /already ended/);
  });

  it('undo takes a finished rollout back', () => {
    const f = new Fleet(['a', 'b']);
    let r = f.run(start({ type: 'all' }), 3);
    assert.equal(r.phase, 'succeeded');
    r = undo(r, f.t);
    assert.equal(r.phase, 'rolled-back');
    f.step(r);
    assert.deepEqual([...f.running.values()], ['1.0.0', '1.0.0']);
  });

  it('a canary whose sites are all offline rolls back at the deadline instead of promoting blind', () => {
    const f = new Fleet(['a', 'b']);
    f.online.set('a', false);
    f.online.set('b', false);
    const r = f.run(start({ type: 'canary', canary: 1, bakeTimeS: 10, gates: {}, then: 'all' }), 70);
    assert.equal(r.phase, 'rolled-back');
    assert.match(r.reason!, /no canary site came online/);
  });

  it('canary covering the whole pool (one site, --canary 1) still bakes and is gated: a p95 gate it misses rolls it back', () => {
    // The attack from the review: --max-p95-ms 0.0001 --bake 20s on a one-site pool passed in 0.1 s.
    const f = new Fleet(['solo']);
    f.metrics.set('solo@2.0.0', { requests: 50, errors: 0, p95Ms: 3.2, outputMean: 0.4 });
    let r = start({ type: 'canary', canary: 1, bakeTimeS: 20, gates: { maxP95Ms: 0.0001 }, then: 'all' });
    r = f.step(r, 100);
    assert.deepEqual(r.canaries, ['solo']);
    assert.notEqual(r.phase, 'succeeded');
    r = f.run(r, 3, 100);
    assert.equal(r.phase, 'rolled-back');
    assert.match(r.reason!, /canary gate failed: p95 latency 3.2 ms on a canary site is above the gate of 0.0001 ms/);
    assert.equal(f.running.get('solo'), '1.0.0');
  });

  it('canary covering the whole pool waits the full bake before it succeeds', () => {
    const f = new Fleet(['a', 'b']);
    f.metrics.set('a@2.0.0', { requests: 50, errors: 0, p95Ms: 3, outputMean: 0.4 });
    f.metrics.set('b@2.0.0', { requests: 50, errors: 0, p95Ms: 3, outputMean: 0.4 });
    let r = start({ type: 'canary', canary: 100, canaryPercent: true, bakeTimeS: 20, gates: { maxP95Ms: 50 }, then: 'all' });
    r = f.run(r, 5);
    assert.equal(r.phase, 'baking');
    r = f.run(r, 14);
    assert.equal(r.phase, 'baking', 'still baking before 20 s');
    r = f.run(r, 10);
    assert.equal(r.phase, 'succeeded');
    assert.ok(r.history.some((h) => /canary passed its gates \(it covered the whole pool\)/.test(h.event)));
    assert.ok(f.t >= 20_000);
  });

  it('with no site left on the previous version, drift is judged against the figures recorded before the update', () => {
    const f = new Fleet(['solo']);
    f.metrics.set('solo@1.0.0', { requests: 500, errors: 0, p95Ms: 3, outputMean: 0.2 });
    f.metrics.set('solo@2.0.0', { requests: 50, errors: 0, p95Ms: 3, outputMean: 0.9 });
    let r = start({ type: 'canary', canary: 1, bakeTimeS: 60, gates: { maxDrift: 0.25 }, then: 'all' });
    r = f.step(r);
    assert.deepEqual(r.baseline, { at: 1000, outputMean: 0.2, sites: 1 }, 'recorded while the site still ran 1.0.0');
    r = f.run(r, 3);
    assert.equal(r.phase, 'rolled-back');
    assert.match(r.reason!, /drift 350.0 % \(canary mean 0.9000, previous version 0.2000\)/);
    // The same update with output close to the recorded figures passes after its bake.
    const g = new Fleet(['solo']);
    g.metrics.set('solo@1.0.0', { requests: 500, errors: 0, p95Ms: 3, outputMean: 0.2 });
    g.metrics.set('solo@2.0.0', { requests: 50, errors: 0, p95Ms: 3, outputMean: 0.21 });
    const ok = g.run(start({ type: 'canary', canary: 1, bakeTimeS: 60, gates: { maxDrift: 0.25 }, then: 'all' }), 70);
    assert.equal(ok.phase, 'succeeded');
  });
});

type Model = NonNullable<SiteStatusBody['models']>[number];
type Rule = NonNullable<SiteStatusBody['rules']>[number];
/** A site's last status as the agent reports it, with only what observe() reads filled in. */
function status(o: {
  apps?: { name: string; version: string }[];
  models?: Partial<Model>[];
  rules?: Partial<Rule>[];
  applyError?: string;
}): SiteStatusBody {
  return {
    agentVersion: '1',
    bootId: 'b',
    uptimeS: 1,
    heartbeatIntervalS: 10,
    generation: 1,
    apps: o.apps ?? [],
    system: {
      hostname: 'h',
      platform: 'linux',
      arch: 'x64',
      cores: 1,
      memoryTotalBytes: 1,
      memoryFreeBytes: 1,
      diskTotalBytes: 1,
      diskFreeBytes: 1,
      loadAvg1: 0,
    },
    runtimes: [],
    accelerators: [],
    outbox: { pending: 0, dropped: 0 },
    devices: { connected: 0, messagesIn: 0 },
    applyError: o.applyError,
    models: o.models?.map((m) => ({ app: 'vib', name: 'm', version: '1', state: 'ready', ...m })),
    rules: o.rules?.map((r) => ({
      app: 'vib',
      rule: 'r',
      state: 'running',
      in: 0,
      out: 0,
      filtered: 0,
      late: 0,
      errors: 0,
      dropped: 0,
      sinkErrors: 0,
      lastOutputAt: null,
      ...r,
    })),
  };
}

describe('reconcile: what it gives back', () => {
  const deepFreeze = <T>(x: T): T => {
    if (x && typeof x === 'object' && !Object.isFrozen(x)) {
      Object.freeze(x);
      for (const v of Object.values(x)) deepFreeze(v);
    }
    return x;
  };

  it('never changes the state it is given, through canaries, deferrals, failures and roll-backs', () => {
    // Frozen inputs: any change in place throws (modules run in strict mode).
    const sites = Array.from({ length: 12 }, (_, i) => `s${i}`);
    for (const strategy of [
      { type: 'all' },
      { type: 'rolling', maxUnavailable: 3 },
      { type: 'canary', canary: 2, bakeTimeS: 2, gates: { maxErrorRate: 0.1 }, then: 'rolling', maxUnavailable: 4 },
    ] as Strategy[]) {
      const f = new Fleet(sites);
      f.online.set('s5', false);
      f.broken.add('s9');
      let r = start(strategy);
      for (let i = 0; i < 90 && !['failed', 'rolled-back'].includes(r.phase); i++) r = f.step(deepFreeze(r));
      assert.ok(['failed', 'rolled-back'].includes(r.phase), `${strategy.type}: ${r.phase}`);
    }
  });

  it('gives back the very state it was given when a step changes nothing, and a new one stamped with the time when it does', () => {
    const f = new Fleet(['a', 'b']);
    f.broken.add('b');
    const r1 = f.step(start({ type: 'all' }));
    const r2 = reconcile(r1, f.sites, f.obs(), f.t + 1);
    const r3 = reconcile(r2, f.sites, f.obs(), f.t + 2);
    assert.equal(r3, r2, 'nothing new: the same object');
    const r4 = reconcile(r3, f.sites, f.obs(), f.t + 120_000);
    assert.notEqual(r4, r3);
    assert.equal(r4.updatedAt, f.t + 120_000);
  });

  it('sameJson agrees with comparing JSON.stringify output', () => {
    const cases: [unknown, unknown][] = [
      [
        { a: 1, b: [1, 2] },
        { a: 1, b: [1, 2] },
      ],
      [{ a: 1, b: undefined }, { a: 1 }],
      [{ a: 1 }, { a: 1, b: 2 }],
      [
        [1, undefined],
        [1, null],
      ],
      [{ a: { b: { c: 'x' } } }, { a: { b: { c: 'y' } } }],
      [{ a: [] }, { a: {} }],
      [{ a: null }, { a: undefined }],
      [{ a: 0 }, { a: false }],
      [{ s: { x: { phase: 'updated', since: 1 } } }, { s: { x: { phase: 'updated', since: 1 } } }],
    ];
    for (const [a, b] of cases) assert.equal(sameJson(a, b), JSON.stringify(a) === JSON.stringify(b), JSON.stringify([a, b]));
  });
});

describe('observe (what a site reports, read for one app)', () => {
  const v2 = [
    { name: 'vib', version: '2.0.0' },
    { name: 'other', version: '9.9.9' },
  ];

  it('a site with no status yet does not run the app: unhealthy, not failed', () => {
    const o = observe({ status: null }, true, 'vib');
    assert.deepEqual(o, {
      online: true,
      runningVersion: undefined,
      healthy: false,
      healthReason: 'does not run vib',
      failed: false,
      metrics: undefined,
    });
  });

  it('running with ready models and running rules is healthy', () => {
    const o = observe({ status: status({ apps: v2, models: [{}], rules: [{}] }) }, true, 'vib');
    assert.equal(o.runningVersion, '2.0.0');
    assert.equal(o.healthy, true);
    assert.equal(o.failed, false);
  });

  it('a model still loading is unhealthy but not failed; a failed model or rule is failed, with its error', () => {
    const loading = observe({ status: status({ apps: v2, models: [{ state: 'loading' }] }) }, true, 'vib');
    assert.deepEqual([loading.healthy, loading.failed, loading.healthReason], [false, false, 'model m is loading']);
    const model = observe({ status: status({ apps: v2, models: [{ state: 'failed', error: 'bad onnx' }] }) }, true, 'vib');
    assert.deepEqual([model.healthy, model.failed, model.healthReason], [false, true, 'model m failed: bad onnx']);
    const rule = observe({ status: status({ apps: v2, rules: [{ rule: 'hot', state: 'failed', error: 'SQL_INVALID' }] }) }, true, 'vib');
    assert.deepEqual([rule.healthy, rule.failed, rule.healthReason], [false, true, 'rule hot failed: SQL_INVALID']);
  });

  it("another app's failed model or rule does not count against this one", () => {
    const o = observe(
      { status: status({ apps: v2, models: [{ app: 'other', state: 'failed' }], rules: [{ app: 'other', state: 'failed' }] }) },
      true,
      'vib',
    );
    assert.deepEqual([o.healthy, o.failed], [true, false]);
  });

  it("an apply error naming the app's version fails it", () => {
    const o = observe({ status: status({ apps: v2, applyError: 'vib@2.0.0: MANIFEST_INVALID' }) }, true, 'vib');
    assert.deepEqual([o.healthy, o.failed, o.healthReason], [false, true, 'vib@2.0.0: MANIFEST_INVALID']);
  });

  it("model figures add up over the app's models: requests and errors summed, worst p95, mean of the output means", () => {
    const o = observe(
      {
        status: status({
          apps: v2,
          models: [
            { name: 'a', stats: { requests: 100, errors: 1, p95Ms: 12, outputMean: 0.2 } },
            { name: 'b', stats: { requests: 50, errors: 4, p95Ms: 30, outputMean: 0.4 } },
            { name: 'c', stats: { requests: 5, errors: 0, p95Ms: null, outputMean: null } },
            { name: 'd' },
            { app: 'other', name: 'x', stats: { requests: 9999, errors: 9999, p95Ms: 9999, outputMean: 99 } },
          ],
        }),
      },
      false,
      'vib',
    );
    assert.equal(o.online, false);
    assert.equal(o.metrics!.requests, 155);
    assert.equal(o.metrics!.errors, 5);
    assert.equal(o.metrics!.p95Ms, 30);
    assert.ok(Math.abs(o.metrics!.outputMean! - 0.3) < 1e-12);
  });

  it('drives reconcile on a fake clock: a model that loads in time succeeds, one stuck loading fails at the step deadline', () => {
    for (const stuck of [false, true]) {
      const clock = new ManualClock(0);
      let st = status({ apps: [{ name: 'vib', version: '1.0.0' }], models: [{}] });
      let r = reconcile(
        newRollout('dep-1', 'vib', '2.0.0', { type: 'all' }, opts, clock.now()),
        ['a'],
        new Map([['a', observe({ status: st }, true, 'vib')]]),
        clock.now(),
      );
      assert.deepEqual(r.admitted, ['a']);
      // The site applies the new version; its model loads.
      st = status({ apps: [{ name: 'vib', version: '2.0.0' }], models: [{ state: 'loading' }] });
      for (let s = 0; s < 70 && r.phase === 'progressing'; s++) {
        clock.advance(1000);
        if (!stuck && clock.now() === 20_000) st = status({ apps: [{ name: 'vib', version: '2.0.0' }], models: [{ state: 'ready' }] });
        r = reconcile(r, ['a'], new Map([['a', observe({ status: st }, true, 'vib')]]), clock.now());
      }
      if (stuck) {
        assert.equal(r.phase, 'failed');
        assert.equal(r.history.at(-1)!.at, 61_000, 'failed on the first step past the 60 s deadline');
        assert.equal(r.updatedAt, 61_000, "an ending updates the state's time");
        assert.match(r.reason!, /unhealthy for 60 s: model m is loading/);
      } else {
        assert.equal(r.phase, 'succeeded');
        assert.equal(r.history.at(-1)!.at, 20_000, 'succeeded on the step that saw the model ready');
        assert.equal(r.updatedAt, 20_000);
      }
    }
  });
});
