import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ResultQuota } from './quotas.ts';
import type { Store } from './store/store.ts';
import { openSqliteStore } from './store/open.ts';
import { ManualClock } from '../lib/clock.ts';

describe('the results-per-day quota across replicas (cloud/quotas.ts)', () => {
  let dir: string;
  let store: Store;
  /** Store round trips for quota blocks: what a tenant at its quota must not cause per result. */
  let reservations = 0;
  let counted: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ew-quotas-'));
    store = openSqliteStore(join(dir, 'cloud.db'));
    await store.migrate();
    counted = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop === 'reserveResults')
          return (...args: Parameters<Store['reserveResults']>) => {
            reservations++;
            return target.reserveResults(...args);
          };
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('two replicas together admit exactly the quota, refuse past it without a query, and admit again when it is raised', async () => {
    const clock = new ManualClock(Date.UTC(2026, 10, 30, 12));
    await store.createTenant({ id: 'ten', name: 'ten', createdAt: 1 });
    await store.setTenantQuotas('ten', { resultsPerDay: 250 });
    const replicas = [new ResultQuota(counted, clock), new ResultQuota(counted, clock)];
    let admitted = 0;
    for (let i = 0; i < 400; i++) if (await replicas[i % 2]!.admit('ten')) admitted++;
    assert.equal(admitted, 250, 'each counting on its own, they would admit 250 each');
    assert.ok(reservations <= 250 / 2 + 2, `a block of 2 per round trip (${reservations} round trips)`);

    const before = reservations;
    for (let i = 0; i < 100; i++) assert.equal(await replicas[i % 2]!.admit('ten'), false);
    assert.equal(reservations, before, 'a tenant at its quota costs no store query per result');

    // A restart does not reset the day's count (it is in the store).
    assert.equal(await new ResultQuota(counted, clock).admit('ten'), false);

    // Raised by the platform admin: applied at the next read of the quota.
    await store.setTenantQuotas('ten', { resultsPerDay: 260 });
    clock.advance(5001);
    admitted = 0;
    for (let i = 0; i < 40; i++) if (await replicas[i % 2]!.admit('ten')) admitted++;
    assert.equal(admitted, 10);

    // The next UTC day counts afresh.
    clock.advance(86_400_000);
    assert.equal(await replicas[0]!.admit('ten'), true);
  });

  it('admits everything for a tenant without the quota, without a store round trip per result', async () => {
    const clock = new ManualClock(Date.UTC(2026, 10, 30, 12));
    await store.createTenant({ id: 'free', name: 'free', createdAt: 1 });
    const q = new ResultQuota(counted, clock);
    const before = reservations;
    for (let i = 0; i < 1000; i++) assert.equal(await q.admit('free'), true);
    assert.equal(reservations, before);
  });
});
