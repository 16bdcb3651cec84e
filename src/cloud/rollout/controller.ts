import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Store, SiteRef, Deployment, RolloutRow } from '../store/store.ts';
import type { SiteStatusBody } from '../../contracts/messages.ts';
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
    let waited = 0;
    const tick = () => {
      this.stopTimer = this.o.clock.setTimer(every, tick);
      // While desired state is being published the sites have not heard it yet, so a step would
      // see nothing new and only slow the fan-out (a 10,000-site step takes tens of ms): wait, but
      // never more than 5 ticks in a row, so a fleet that publishes all the time still steps.
      if (this.o.fleet.desired.busy && waited < 5) {
        waited++;
        return;
      }
      waited = 0;
      if (!this.running)
        this.running = this.step()
          .then(() => {})
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
  private pool(sites: SiteRef[], d: Deployment): SiteRef[] {
    return sites.filter((s) => s.revokedAt === null && matches(d.selector, s));
  }

  /**
   * What each site last reported: as this replica heard it (every replica hears every heartbeat,
   * so that is the newest, and already parsed), else the store's copy (a site not heard since
   * this process started), read in one query for those only.
   */
  private async statuses(ids: readonly string[]): Promise<(id: string) => SiteStatusBody | null> {
    const heard = this.o.fleet.statuses;
    const unheard = ids.filter((id) => !heard.has(id));
    const stored = unheard.length ? await this.o.store.getSiteStatuses(unheard) : new Map<string, SiteStatusBody>();
    return (id) => heard.get(id) ?? stored.get(id) ?? null;
  }

  /**
   * Steps every running rollout once (only on the replica holding the controller lease). Returns
   * the tenants whose desired state it republished (so does stepOne).
   */
  async step(): Promise<ReadonlySet<string>> {
    const { store, clock } = this.o;
    if (!(await store.acquireLease('rollout-controller', this.holder, clock.now(), 5 * (this.o.everyMs ?? 1000)))) return new Set();
    return this.stepRows(await store.listRollouts(undefined, { activeOnly: true }));
  }

  /**
   * Steps one rollout now, on this replica, lease or not: a new deployment's first sites get their
   * desired state from the replica that took the request, not a tick later from the lease holder.
   * Safe beside the controller: a step is saved only if the rollout did not change since it was
   * read (optimistic revision), so of two steps of the same state one is kept.
   */
  async stepOne(tenantId: string, id: string): Promise<ReadonlySet<string>> {
    return this.stepRows(await this.o.store.listRollouts(tenantId, { activeOnly: true, ids: [id] }));
  }

  private async stepRows(active: RolloutRow[]): Promise<ReadonlySet<string>> {
    const { store, fleet, clock, log } = this.o;
    const tenants = new Set<string>();
    const refs = new Map<string, SiteRef[]>();
    for (const row of active) {
      const d = await store.getDeployment(row.tenantId, row.id);
      if (!d) continue;
      let sites = refs.get(row.tenantId);
      if (!sites) {
        sites = await store.listSiteRefs(row.tenantId);
        refs.set(row.tenantId, sites);
      }
      // One pass over the pool (a pool can hold tens of thousands of sites: no per-site scans).
      const pool = this.pool(sites, d);
      const targets = pool.map((s) => s.id);
      const status = await this.statuses(targets);
      const obs = new Map(targets.map((id) => [id, observe({ status: status(id) }, fleet.isOnline(id), d.appName)]));
      const next = reconcile(row.state, targets, obs, clock.now());
      // reconcile() answers the state it was given when nothing changed (touch).
      if (next === row.state) continue;
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
    return tenants;
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
