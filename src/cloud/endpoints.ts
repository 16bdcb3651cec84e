import { matches } from '../contracts/selector.ts';
import { computeDesiredApps } from './desired.ts';
import type { RolloutState } from './rollout/reconcile.ts';
import type { App, Deployment, SiteRef } from './store/store.ts';

/**
 * Endpoint names are a site's namespace: `/v2/models/{endpoint}` names no app, so two apps on one
 * site declaring the same endpoint would have one silently shadow the other. We refuse instead of
 * namespacing (clients keep the protocol's plain URLs): a deployment that would put two apps with
 * a common endpoint name on one site is refused, naming both apps and the sites. Pure.
 *
 * Every other deployment counts as if its rollout had finished (a rollout still in progress
 * reaches its whole pool soon); rolled-back and aborted ones reach no site.
 */
export interface EndpointConflict {
  endpoint: string;
  app: string;
  version: string;
  otherApp: string;
  otherVersion: string;
  sites: string[];
}

export function findEndpointConflict(
  next: Pick<App, 'name' | 'version' | 'manifest'>,
  selector: Deployment['selector'],
  sites: readonly SiteRef[],
  deployments: readonly Deployment[],
  apps: ReadonlyMap<string, App>,
  rollouts: ReadonlyMap<string, RolloutState>,
): EndpointConflict | undefined {
  const mine = new Set(next.manifest.spec.endpoints.map((e) => e.name));
  if (mine.size === 0) return undefined;
  const ended = new Map([...rollouts].filter(([, r]) => r.phase === 'rolled-back' || r.phase === 'aborted'));
  const found = new Map<string, EndpointConflict>();
  for (const site of sites) {
    if (site.revokedAt !== null || !matches(selector, site)) continue;
    for (const other of computeDesiredApps(site, deployments, apps, ended)) {
      if (other.name === next.name) continue;
      for (const e of other.manifest.spec.endpoints) {
        if (!mine.has(e.name)) continue;
        const k = `${e.name}\u0000${other.name}\u0000${other.version}`;
        const c = found.get(k) ?? {
          endpoint: e.name,
          app: next.name,
          version: next.version,
          otherApp: other.name,
          otherVersion: other.version,
          sites: [],
        };
        c.sites.push(site.id);
        found.set(k, c);
      }
    }
  }
  return found.values().next().value;
}

export function conflictMessage(c: EndpointConflict): string {
  const shown = c.sites.slice(0, 5).join(', ') + (c.sites.length > 5 ? ` and ${c.sites.length - 5} more` : '');
  return `endpoint "${c.endpoint}" of ${c.app}@${c.version} is also declared by app ${c.otherApp}@${c.otherVersion}, which runs on ${c.sites.length} site(s) of this pool (${shown}); a site serves each endpoint name once, so one would shadow the other: rename the endpoint in one of the two apps, or deploy to a pool that does not overlap`;
}
