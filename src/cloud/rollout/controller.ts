import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Store, Site, Deployment } from '../store/store.ts';
import type { Fleet } from '../fleet.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import { matches } from '../../contracts/selector.ts';
import { abort, observe, pause, reconcile, resume, undo, type RolloutState } from './reconcile.ts';
import { EwError } from '../../contracts/errors.ts';

/**
 * The deployment controller's shell: every second it steps each running rollout with what the
 * sites last reported, stores what changed, and republishes desired state when the set of sites
 * a rollout admits changes. Operator actions (pause, resume, abort, undo) go through here too.
 */
export class RolloutController {
  private stopTimer?: () => void;
  private running?: Promise<void>;

  /** This replica's name for the controller lease (several replicas: one steps at a time). */
  private readonly holder: string;

  /** `holder`: this replica's lease name (main.ts: its replica id and a per-start suffix). */
  constructor(private readonly o: { store: Store; fleet: Fleet; clock: Clock; log: Logger; everyMs?: number; holder?: string }) {
    this.holder = o.holder ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  }

  start(): void {
    const every = this.o.everyMs ?? 1000;
    const tick = () => {
      this.stopTimer = this.o.clock.setTimer(every, tick);
      if (!this.running)
        this.running = this.step()
          .catch((e) => this.o.log.error({ err: e }, 'rollout step failed'))
          .finally(() => {
            this.running = undefined;
          });
    };
    this.stopTimer = this.o.clock.setTimer(every, tick);
  }

  async stop(): Promise<void> {
    this.stopTimer?.();
    await this.running;
  }

  /** The deployment's pool: the tenant's sites its selector matches, revoked ones left out. */
  private pool(sites: Site[], d: Deployment): Site[] {
    return sites.filter((s) => s.revokedAt === null && matches(d.selector, s));
  }

  /** Steps every running rollout once (only on the replica holding the controller lease). */
  async step(): Promise<void> {
    const { store, fleet, clock, log } = this.o;
    if (!(await store.acquireLease('rollout-controller', this.holder, clock.now(), 5 * (this.o.everyMs ?? 1000)))) return;
    const active = await store.listRollouts(undefined, { activeOnly: true });
    const tenants = new Set<string>();
    for (const row of active) {
      const d = await store.getDeployment(row.tenantId, row.id);
      if (!d) continue;
      const sites = await store.listSites(row.tenantId);
      // One pass over the pool (a pool can hold tens of thousands of sites: no per-site scans).
      const pool = this.pool(sites, d);
      const targets = pool.map((s) => s.id);
      const obs = new Map(pool.map((s) => [s.id, observe(s, fleet.isOnline(s.id), d.appName)]));
      const next = reconcile(row.state, targets, obs, clock.now());
      if (JSON.stringify(next) === JSON.stringify(row.state)) continue;
      // Saved only if no one (an operator's pause, say) changed it since we read it.
      if (!(await store.saveRollout({ id: row.id, tenantId: row.tenantId, state: next, rev: row.rev }))) continue;
      if (next.phase !== row.state.phase)
        log.info(
          { deployment: row.id, app: next.app, version: next.version, phase: next.phase, reason: next.reason },
          `rollout ${next.phase}`,
        );
      if (next.admitted.join() !== row.state.admitted.join() || next.phase !== row.state.phase) tenants.add(row.tenantId);
    }
    for (const t of tenants) await fleet.reconcileTenant(t);
  }

  /** pause | resume | abort | undo, by an operator. */
  async act(tenantId: string, id: string, action: 'pause' | 'resume' | 'abort' | 'undo'): Promise<RolloutState> {
    const fn = { pause, resume, abort, undo }[action];
    let next: RolloutState;
    // Optimistic: if the controller saved a step between our read and our write, read again.
    for (let attempt = 0; ; attempt++) {
      const row = await this.o.store.getRollout(tenantId, id);
      if (!row) throw new EwError('DEPLOYMENT_NOT_FOUND', `no rollout for deployment "${id}"`, { path: 'id' });
      try {
        next = fn(row.state, this.o.clock.now());
      } catch (e) {
        throw new EwError('ROLLOUT_STATE', `cannot ${action}: ${(e as Error).message}`, { path: 'action' });
      }
      if (await this.o.store.saveRollout({ id, tenantId, state: next, rev: row.rev })) break;
      if (attempt >= 5) throw new EwError('ROLLOUT_STATE', `cannot ${action}: the rollout keeps changing; try again`, { path: 'action' });
    }
    this.o.log.info({ deployment: id, action, phase: next.phase }, `rollout ${action}`);
    await this.o.fleet.reconcileTenant(tenantId);
    return next;
  }
}
