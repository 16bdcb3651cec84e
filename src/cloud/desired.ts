import { createHash } from 'node:crypto';
import { matches } from '../contracts/selector.ts';
import type { App, Deployment, Site } from './store/store.ts';
import type { DesiredApp } from '../contracts/messages.ts';
import type { RolloutState } from './rollout/reconcile.ts';

/**
 * Pure: a site's desired apps from the tenant's deployments. A deployment applies when its
 * selector matches the site's labels (and region) and its app version exists. Where several
 * deployments of the same app match, the newest wins (ties: the larger id), so re-deploying a
 * new version to a narrower pool upgrades just that pool. Revoked sites get nothing. A deployment
 * with a rollout applies only where the rollout lets it (see rollout.ts).
 */
export function computeDesiredApps(
  site: Pick<Site, 'id' | 'tenantId' | 'labels' | 'region' | 'revokedAt'>,
  deployments: readonly Deployment[],
  apps: ReadonlyMap<string, App>,
  rollouts: ReadonlyMap<string, RolloutState> = new Map(),
): DesiredApp[] {
  if (site.revokedAt !== null) return [];
  const byApp = new Map<string, Deployment>();
  for (const d of deployments) {
    if (d.tenantId !== site.tenantId || !matches(d.selector, site)) continue;
    // A deployment being rolled out reaches only the sites its rollout admitted so far; a
    // rolled-back or aborted one reaches none, so the app's previous deployment applies again.
    const r = rollouts.get(d.id);
    if (r && r.phase !== 'succeeded' && !(r.phase !== 'rolled-back' && r.phase !== 'aborted' && admittedOf(r).has(site.id))) continue;
    if (!apps.has(appKey(d.appName, d.appVersion))) continue;
    const cur = byApp.get(d.appName);
    if (!cur || d.createdAt > cur.createdAt || (d.createdAt === cur.createdAt && d.id > cur.id)) byApp.set(d.appName, d);
  }
  return [...byApp.values()]
    .sort((a, b) => (a.appName < b.appName ? -1 : a.appName > b.appName ? 1 : 0))
    .map((d) => ({
      name: d.appName,
      version: d.appVersion,
      deploymentId: d.id,
      manifest: apps.get(appKey(d.appName, d.appVersion))!.manifest,
    }));
}

/**
 * Pure: computeDesiredApps for many sites of one tenant, computed once per class of sites. A
 * site's desired apps depend only on its labels, its region and, for each rollout still under way,
 * whether it admitted the site: sites alike in those share one result (the same array object), so
 * a fleet-wide fan-out costs a key per site, not a computation per site. The digest is shared too.
 */
export function computeDesiredForSites(
  sites: readonly Pick<Site, 'id' | 'tenantId' | 'labels' | 'region' | 'revokedAt'>[],
  deployments: readonly Deployment[],
  apps: ReadonlyMap<string, App>,
  rollouts: ReadonlyMap<string, RolloutState> = new Map(),
): { apps: DesiredApp[]; digest: string }[] {
  // The rollouts whose admitted set decides something: neither succeeded nor ended.
  const partial = deployments
    .map((d) => rollouts.get(d.id))
    .filter((r): r is RolloutState => !!r && r.phase !== 'succeeded' && r.phase !== 'rolled-back' && r.phase !== 'aborted')
    .map(admittedOf);
  const classes = new Map<string, { apps: DesiredApp[]; digest: string }>();
  return sites.map((site) => {
    let key = `${site.tenantId}\0${site.revokedAt === null ? '' : 'revoked'}\0${site.region}\0${JSON.stringify(site.labels)}\0`;
    for (const admitted of partial) key += admitted.has(site.id) ? '1' : '0';
    let c = classes.get(key);
    if (!c) {
      const desired = computeDesiredApps(site, deployments, apps, rollouts);
      c = { apps: desired, digest: desiredDigest(desired) };
      classes.set(key, c);
    }
    return c;
  });
}

/** The admitted sites as a set, built once per rollout state object (pools can be large). */
const admittedSets = new WeakMap<RolloutState, Set<string>>();
function admittedOf(r: RolloutState): Set<string> {
  let s = admittedSets.get(r);
  if (!s) {
    s = new Set(r.admitted);
    admittedSets.set(r, s);
  }
  return s;
}

export function appKey(name: string, version: string): string {
  return `${name}@${version}`;
}

/** Digest of what a site should run; the generation moves only when this changes. */
export function desiredDigest(apps: readonly DesiredApp[]): string {
  const h = createHash('sha256');
  for (const a of apps) h.update(`${a.name}\0${a.version}\0${a.deploymentId}\n`);
  return h.digest('hex');
}
