import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Store, Site, Deployment } from './store/store.ts';
import type { Fleet } from './fleet.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import { matches } from '../contracts/selector.ts';
import { abort, pause, reconcile, resume, undo, type RolloutState, type SiteObservation } from './rollout.ts';
import { EwError } from '../contracts/errors.ts';

/**
 * The deployment controller's shell: every second it steps each running rollout with what the
 * sites last reported, stores what changed, and republishes desired state when the set of sites
 * a rollout admits changes. Operator actions (pause, resume, abort, undo) go through here too.
 */
export function observe(site: Site, online: boolean, app: string): SiteObservation {
  const st = site.status;
  const running = st?.apps.find((a) => a.name === app)?.version;
  const failedRule = st?.rules?.find((r) => r.app === app && r.state === 'failed');
  const models = st?.models?.filter((m) => m.app === app) ?? [];
  const failedModel = models.find((m) => m.state === 'failed');
  const loading = models.find((m) => m.state !== 'ready' && m.state !== 'failed');
  // Read as data (contract 1.1): this app's own entries, by name — `guard` is not `my-guard`.
  const own = st?.applyErrors?.filter((e) => e.app === app);
  const applyError = own ? (own.length ? own.map((e) => `${e.component}: ${e.code}: ${e.message}`).join('; ') : undefined)
    : legacyApplyError(st?.applyError, app);
  const healthReason = !running ? `does not run ${app}`
    : failedModel ? `model ${failedModel.name} failed: ${failedModel.error ?? 'unknown'}`
      : failedRule ? `rule ${failedRule.rule} failed: ${failedRule.error ?? 'unknown'}`
        : loading ? `model ${loading.name} is ${loading.state}`
          : applyError;
  const withStats = models.filter((m) => m.stats);
  const means = withStats.map((m) => m.stats!.outputMean).filter((x): x is number => typeof x === 'number');
  return {
    online, runningVersion: running, healthy: !healthReason, healthReason, failed: !!(failedModel || failedRule || applyError),
    metrics: withStats.length ? {
      requests: withStats.reduce((a, m) => a + m.stats!.requests, 0),
      errors: withStats.reduce((a, m) => a + m.stats!.errors, 0),
      p95Ms: Math.max(...withStats.map((m) => m.stats!.p95Ms ?? 0)),
      outputMean: means.length ? means.reduce((a, b) => a + b, 0) / means.length : null,
    } : undefined,
  };
}

/**
 * A 1.0 agent's one-text apply error: entries `app@version: …` joined by `; `. Only entries that
 * start with this app's name count (at the start or after a separator), never a substring.
 */
export function legacyApplyError(text: string | undefined, app: string): string | undefined {
  if (!text) return undefined;
  const entries = text.split('; ').filter((e) => e.startsWith(`${app}@`));
  return entries.length ? entries.join('; ') : undefined;
}

export class RolloutController {
  private stopTimer?: () => void;
  private running?: Promise<void>;

  /** This replica's name for the controller lease (several replicas: one steps at a time). */
  private readonly holder = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;

  constructor(private readonly o: { store: Store; fleet: Fleet; clock: Clock; log: Logger; everyMs?: number }) {}

  start(): void {
    const every = this.o.everyMs ?? 1000;
    const tick = () => {
      this.stopTimer = this.o.clock.setTimer(every, tick);
      if (!this.running) this.running = this.step().catch((e) => this.o.log.error({ err: e }, 'rollout step failed')).finally(() => { this.running = undefined; });
    };
    this.stopTimer = this.o.clock.setTimer(every, tick);
  }

  async stop(): Promise<void> {
    this.stopTimer?.();
    await this.running;
  }

  private targets(sites: Site[], d: Deployment): string[] {
    return sites.filter((s) => s.revokedAt === null && matches(d.selector, s)).map((s) => s.id);
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
      const targets = this.targets(sites, d);
      const obs = new Map(sites.filter((s) => targets.includes(s.id)).map((s) => [s.id, observe(s, fleet.isOnline(s.id), d.appName)]));
      const next = reconcile(row.state, targets, obs, clock.now());
      if (JSON.stringify(next) === JSON.stringify(row.state)) continue;
      // Saved only if no one (an operator's pause, say) changed it since we read it.
      if (!(await store.saveRollout({ id: row.id, tenantId: row.tenantId, state: next, rev: row.rev }))) continue;
      if (next.phase !== row.state.phase) log.info({ deployment: row.id, app: next.app, version: next.version, phase: next.phase, reason: next.reason }, `rollout ${next.phase}`);
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
