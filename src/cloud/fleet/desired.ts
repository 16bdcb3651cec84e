import { Counter, type Registry } from 'prom-client';
import type { Store, Site, SiteRef, App } from '../store/store.ts';
import type { Hub } from '../hub/hub.ts';
import { appKey, computeDesiredForSites } from '../desired.ts';
import { envelope, type DesiredState } from '../../contracts/messages.ts';
import { topics } from '../../contracts/topics.ts';
import type { Clock } from '../../lib/clock.ts';
import type { SiteDirectory } from './sites.ts';

/** Runs fn(0..n-1) with at most `width` calls in flight. */
async function pool(n: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, n) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

/**
 * A desired-state envelope (made with empty apps) as JSON with its apps spliced in, already
 * serialised (shared by every site that runs the same): byte for byte what JSON.stringify of the
 * whole message gives (fleet/desired.test.ts).
 */
export function desiredPayload(msg: DesiredState, appsJson: string): string {
  // A function, not a string, as the replacement: `$&` in an app's JSON must stay as it is.
  return JSON.stringify(msg).replace('"apps":[]', () => `"apps":${appsJson}`);
}

/**
 * Desired-state publishing: recomputes what each site should run (the pure computation in
 * ../desired.ts) from deployments, apps and rollouts, bumps the stored generation and publishes it
 * retained. Runs are serialised, so two changes never publish out of order.
 */
export class DesiredPublisher {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly published: Counter;

  constructor(private readonly o: { store: Store; hub: Hub; clock: Clock; registry: Registry; sites: SiteDirectory; storeAcks?: boolean }) {
    this.published = new Counter({
      name: 'ew_cloud_desired_published_total',
      help: 'Desired-state messages published',
      registers: [o.registry],
    });
  }

  /** Recomputes and (if changed) publishes the desired state of the given sites, serialised. */
  reconcileSites(siteIds: readonly string[]): Promise<void> {
    return this.serialise(async () => {
      const sites = await Promise.all(siteIds.map((id) => this.o.store.getSiteById(id)));
      await this.reconcileNow(sites.filter((s): s is Site => s !== undefined));
    });
  }

  /** Every site of a tenant (after a deployment changes). */
  reconcileTenant(tenantId: string): Promise<void> {
    return this.serialise(async () => this.reconcileNow(await this.o.store.listSiteRefs(tenantId)));
  }

  reconcileAll(): Promise<void> {
    return this.serialise(async () => this.reconcileNow(await this.o.store.listSiteRefs()));
  }

  /** Revocation: the site's retained desired state is cleared. */
  async clear(siteId: string): Promise<void> {
    await this.o.hub.publish(topics.desired(siteId), '', { retain: true });
  }

  /** Runs queued or under way (the rollout controller waits a little rather than compete with a fan-out). */
  private runs = 0;
  get busy(): boolean {
    return this.runs > 0;
  }

  private serialise(fn: () => Promise<void>): Promise<void> {
    this.runs++;
    const run = this.chain.then(fn).finally(() => {
      this.runs--;
    });
    this.chain = run.catch(() => {});
    return run;
  }

  private async reconcileNow(sites: readonly SiteRef[]): Promise<void> {
    const { store } = this.o;
    const byTenant = new Map<string, SiteRef[]>();
    for (const s of sites) {
      this.o.sites.note(s);
      if (s.revokedAt !== null) continue;
      // Pushed, not copied: a copy per site made grouping 10,000 sites quadratic.
      const list = byTenant.get(s.tenantId);
      if (list) list.push(s);
      else byTenant.set(s.tenantId, [s]);
    }
    for (const [tenantId, tenantSites] of byTenant) {
      const deployments = await store.listDeployments(tenantId);
      const apps = new Map<string, App>();
      const rollouts = new Map((await store.listRollouts(tenantId, { ids: deployments.map((d) => d.id) })).map((r) => [r.id, r.state]));
      for (const d of deployments) {
        const k = appKey(d.appName, d.appVersion);
        if (!apps.has(k)) {
          const a = await store.getApp(tenantId, d.appName, d.appVersion);
          if (a) apps.set(k, a);
        }
      }
      // Once per class of alike sites, not once per site (desired.ts).
      const desired = computeDesiredForSites(tenantSites, deployments, apps, rollouts);
      const gens = await store.bumpDesired(tenantSites.map((site, i) => ({ siteId: site.id, digest: desired[i]!.digest })));
      // Published even when unchanged: retained state is idempotent for the agent (it ignores
      // generations it already runs) and this heals a broker that lost its retained messages.
      // Many at once: each publish waits on the broker, not on the previous one.
      // The apps are the same JSON for every site that runs the same thing: serialised once per
      // digest, not once per site (10,000 copies of a manifest were most of a fan-out's CPU).
      const appsJson = new Map<string, string>();
      const ack = this.o.storeAcks ? { uplinkAck: true } : {};
      await pool(tenantSites.length, 256, async (i) => {
        const site = tenantSites[i]!;
        const { apps: siteApps, digest } = desired[i]!;
        let apps = appsJson.get(digest);
        if (apps === undefined) {
          apps = JSON.stringify(siteApps);
          appsJson.set(digest, apps);
        }
        const msg = desiredPayload(
          envelope('desired', { siteId: site.id, generation: gens[i]!.generation, apps: [], ...ack }, this.o.clock),
          apps,
        );
        await this.o.hub.publish(topics.desired(site.id), msg, { retain: true });
        this.published.inc();
      });
    }
  }
}
