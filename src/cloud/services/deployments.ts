import { EwError } from '../../contracts/errors.ts';
import { matches, validateLabels } from '../../contracts/selector.ts';
import type { Clock } from '../../lib/clock.ts';
import { newId } from '../../lib/secrets.ts';
import { appKey } from '../desired.ts';
import { conflictMessage, findEndpointConflict } from '../endpoints.ts';
import type { Fleet } from '../fleet.ts';
import { newRollout, type RolloutOptions, type RolloutState, type Strategy } from '../rollout/reconcile.ts';
import type { RolloutController } from '../rollout/controller.ts';
import type { App, Deployment, Store } from '../store/store.ts';
import { canonical } from './apps.ts';

/** A deployment as asked for (the API's body after defaults). */
export interface DeploymentRequest {
  app: string;
  version: string;
  selector: Record<string, string>;
  strategy: Strategy;
  options: RolloutOptions;
}

export interface DeploymentOutcome {
  deployment: Deployment;
  /** The live sites the selector picks now. */
  sites: string[];
  rollout: RolloutState;
  /** False when the same submission was already the app's newest deployment (idempotent). */
  created: boolean;
}

export interface DeploymentServiceDeps {
  store: Pick<Store, 'getApp' | 'listDeployments' | 'listRollouts' | 'listSiteRefs' | 'getRollout' | 'saveRollout' | 'createDeployment'>;
  rollouts: Pick<RolloutController, 'stepOne'>;
  fleet: Pick<Fleet, 'reconcileTenant'>;
  clock: Clock;
}

/**
 * Creating a deployment: the app version must exist, no two apps may claim one endpoint name
 * on a site, the same submission twice answers the first, and the rollout exists before the
 * deployment so no reconcile ever sees one without the other.
 */
export class DeploymentService {
  /** One submission at a time per tenant in this process, so two identical ones racing resolve to one deployment. */
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(private readonly d: DeploymentServiceDeps) {}

  async create(tenantId: string, req: DeploymentRequest): Promise<DeploymentOutcome> {
    const { store } = this.d;
    validateLabels(Object.fromEntries(Object.entries(req.selector).filter(([k]) => k !== 'region')), 'selector');
    const a = await store.getApp(tenantId, req.app, req.version);
    if (!a) throw new EwError('APP_NOT_FOUND', `no app ${req.app}@${req.version}; push it first (POST /api/v1/apps)`, { path: 'version' });
    await this.refuseEndpointConflict(tenantId, a, req.selector);
    return this.serial(tenantId, async () => {
      // Idempotent: the same submission again (same version, selector, strategy and options as
      // the app's newest deployment, whose rollout was not undone) answers that deployment
      // instead of starting a second rollout. Anything newer in between makes it new again.
      const latest = (await store.listDeployments(tenantId)).filter((x) => x.appName === a.name).at(-1);
      if (latest && latest.appVersion === a.version && canonical(latest.selector) === canonical(req.selector)) {
        const ro = await store.getRollout(tenantId, latest.id);
        if (
          ro &&
          ro.state.phase !== 'rolled-back' &&
          ro.state.phase !== 'aborted' &&
          canonical(ro.state.strategy) === canonical(req.strategy) &&
          canonical(ro.state.options) === canonical(req.options)
        ) {
          return { deployment: latest, sites: await this.targets(tenantId, latest), rollout: ro.state, created: false };
        }
      }
      const dep: Deployment = {
        id: newId('dep'),
        tenantId,
        appName: a.name,
        appVersion: a.version,
        selector: req.selector,
        createdAt: this.d.clock.now(),
      };
      const rollout = newRollout(dep.id, a.name, a.version, req.strategy, req.options, this.d.clock.now());
      await store.saveRollout({ id: dep.id, tenantId, state: rollout });
      await store.createDeployment(dep);
      // This replica steps the new rollout at once (lease or not: controller.stepOne), admitting
      // the first sites and publishing their desired state; only when that published nothing is
      // the tenant republished here.
      const published = await this.d.rollouts.stepOne(tenantId, dep.id);
      if (!published.has(tenantId)) await this.d.fleet.reconcileTenant(tenantId);
      const after = await store.getRollout(tenantId, dep.id);
      return { deployment: dep, sites: await this.targets(tenantId, dep), rollout: after?.state ?? rollout, created: true };
    });
  }

  private async targets(tenantId: string, dep: Deployment): Promise<string[]> {
    return (await this.d.store.listSiteRefs(tenantId)).filter((s) => s.revokedAt === null && matches(dep.selector, s)).map((s) => s.id);
  }

  private serial<T>(tenantId: string, fn: () => Promise<T>): Promise<T> {
    const run = (this.chains.get(tenantId) ?? Promise.resolve()).then(fn);
    const tail = run.catch(() => {});
    this.chains.set(tenantId, tail);
    void tail.then(() => {
      if (this.chains.get(tenantId) === tail) this.chains.delete(tenantId);
    });
    return run;
  }

  /** ENDPOINT_CONFLICT when deploying `a` to `selector` would put two apps with one endpoint name on a site. */
  private async refuseEndpointConflict(tenantId: string, a: App, selector: Deployment['selector']): Promise<void> {
    const { store } = this.d;
    if (a.manifest.spec.endpoints.length === 0) return;
    const deployments = await store.listDeployments(tenantId);
    const apps = new Map<string, App>();
    for (const dep of deployments) {
      const k = appKey(dep.appName, dep.appVersion);
      if (!apps.has(k)) {
        const x = await store.getApp(tenantId, dep.appName, dep.appVersion);
        if (x) apps.set(k, x);
      }
    }
    const rollouts = new Map((await store.listRollouts(tenantId, { ids: deployments.map((x) => x.id) })).map((r) => [r.id, r.state]));
    const c = findEndpointConflict(a, selector, await store.listSiteRefs(tenantId), deployments, apps, rollouts);
    if (c) throw new EwError('ENDPOINT_CONFLICT', conflictMessage(c), { path: 'app' });
  }
}
