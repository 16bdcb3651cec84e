import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DAY_MS, dayStart, partitionDaysAround, partitionName, planRetention, type RetentionPolicy } from './retention.ts';

const NOW = Date.UTC(2026, 10, 30, 12, 0, 0);
const p = (tenantId: string, stream: string, days: number): RetentionPolicy => ({ tenantId, stream, days, updatedAt: 1 });

describe('retention plan', () => {
  it('keeps everything when nothing is set', () => {
    assert.deepEqual(planRetention(['a', 'b'], [], undefined, NOW), { steps: [] });
    assert.deepEqual(planRetention(['a'], [], 0, NOW), { steps: [] }, '0 days means keep');
  });

  it('applies the cloud default to every tenant and lets whole days go', () => {
    const plan = planRetention(['a', 'b'], [], 30, NOW);
    assert.deepEqual(plan.steps, [
      { tenantId: 'a', before: NOW - 30 * DAY_MS },
      { tenantId: 'b', before: NOW - 30 * DAY_MS },
    ]);
    assert.equal(plan.dropBefore, NOW - 30 * DAY_MS);
  });

  it('a stream policy wins over the tenant default, which wins over the cloud default', () => {
    const plan = planRetention(['a', 'b'], [p('a', 'readings', 2), p('a', 'audit', 400), p('a', '*', 7), p('b', 'x', 2)], 30, NOW);
    assert.deepEqual(plan.steps, [
      { tenantId: 'a', before: NOW - 2 * DAY_MS, streams: ['readings'] },
      { tenantId: 'a', before: NOW - 400 * DAY_MS, streams: ['audit'] },
      { tenantId: 'a', before: NOW - 7 * DAY_MS, except: ['audit', 'readings'] },
      { tenantId: 'b', before: NOW - 2 * DAY_MS, streams: ['x'] },
      { tenantId: 'b', before: NOW - 30 * DAY_MS, except: ['x'] },
    ]);
    assert.equal(plan.dropBefore, NOW - 400 * DAY_MS, 'only days no policy keeps are dropped whole');
  });

  it('streams with the same retention share one step', () => {
    const plan = planRetention(['a'], [p('a', 'y', 3), p('a', 'x', 3)], undefined, NOW);
    assert.deepEqual(plan.steps, [{ tenantId: 'a', before: NOW - 3 * DAY_MS, streams: ['x', 'y'] }]);
  });

  it('without a cloud default, nothing is dropped whole: an unnamed stream of a tenant without `*` is kept', () => {
    const plan = planRetention(['a', 'b'], [p('a', '*', 1)], undefined, NOW);
    assert.deepEqual(plan.steps, [{ tenantId: 'a', before: NOW - DAY_MS }]);
    assert.equal(plan.dropBefore, undefined);
  });

  it('ignores policies of tenants it was not asked about (a deleted tenant)', () => {
    assert.deepEqual(planRetention(['a'], [p('gone', '*', 1)], undefined, NOW).steps, []);
  });

  it('property: every step keeps at least its days, and dropBefore is never newer than any step', () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let i = 0; i < 500; i++) {
      const tenants = ['a', 'b', 'c'].slice(0, 1 + rnd(3));
      const policies: RetentionPolicy[] = [];
      for (const t of tenants) for (const s of ['*', 's1', 's2']) if (rnd(2)) policies.push(p(t, s, 1 + rnd(100)));
      const global = rnd(3) === 0 ? undefined : 1 + rnd(100);
      const plan = planRetention(tenants, policies, global, NOW);
      for (const s of plan.steps) {
        const days = Math.round((NOW - s.before) / DAY_MS);
        const named = policies.filter((x) => x.tenantId === s.tenantId && x.stream !== '*');
        if (s.streams) for (const st of s.streams) assert.equal(named.find((x) => x.stream === st)?.days, days);
        else assert.equal(policies.find((x) => x.tenantId === s.tenantId && x.stream === '*')?.days ?? global, days);
        if (plan.dropBefore !== undefined) assert.ok(plan.dropBefore <= s.before);
      }
    }
  });
});

describe('daily partitions', () => {
  it('are named by UTC day and kept ready from yesterday to three days ahead', () => {
    assert.equal(partitionName(dayStart(NOW)), 'uplink_p20261130');
    assert.equal(dayStart(NOW + 11 * 3_600_000 + 59 * 60_000), Date.UTC(2026, 10, 30), 'still the same UTC day at 23:59');
    assert.deepEqual(partitionDaysAround(NOW).map(partitionName), [
      'uplink_p20261129',
      'uplink_p20261130',
      'uplink_p20261201',
      'uplink_p20261202',
      'uplink_p20261203',
    ]);
  });
});
