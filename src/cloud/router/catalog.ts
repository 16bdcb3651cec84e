import type { Store, Site } from '../store/store.ts';
import type { AppManifest, CascadeSpec } from '../../contracts/manifest.ts';
import type { SiteStatusBody } from '../../contracts/messages.ts';
import type { Clock } from '../../lib/clock.ts';
import type { ModelState, ResidencyPolicy, SiteSnapshot } from './policy.ts';
import { modelKey } from './policy.ts';

/**
 * What the router reads from the control plane, cached briefly (`ttlMs`, default 1 s) so that a
 * request costs no store query: each tenant's endpoints (from its deployments' app manifests)
 * and its sites (region, revocation). Live facts — online, reported status — come from the
 * fleet's memory on every request.
 */
export interface EndpointVersion {
  version: string;
  manifest: AppManifest;
}

export interface EndpointInfo {
  name: string;
  app: string;
  /** The model the endpoint names. */
  model: string;
  /** Newest deployment first; only versions whose residency policy equals the newest one's (so one policy governs every target). */
  versions: EndpointVersion[];
  residency: ResidencyPolicy;
  fallback: boolean;
  cascade?: CascadeSpec;
  /** `chat` for LLM endpoints (OpenAI-compatible); tensor endpoints otherwise. */
  kind: string;
  format: string;
  wantsAccelerator: boolean;
}

export class RouterCatalog {
  private readonly endpoints = new Map<string, { at: number; map: Map<string, EndpointInfo> }>();
  private readonly sites = new Map<string, { at: number; list: Site[] }>();

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly ttlMs = 1000,
  ) {}

  async endpointsOf(tenantId: string): Promise<Map<string, EndpointInfo>> {
    const hit = this.endpoints.get(tenantId);
    if (hit && this.clock.now() - hit.at < this.ttlMs) return hit.map;
    const deployments = [...(await this.store.listDeployments(tenantId))].sort(
      (a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1),
    );
    const map = new Map<string, EndpointInfo>();
    const seen = new Set<string>();
    for (const d of deployments) {
      const k = `${d.appName}@${d.appVersion}`;
      if (seen.has(k)) continue;
      seen.add(k);
      const app = await this.store.getApp(tenantId, d.appName, d.appVersion);
      if (!app) continue;
      const m = app.manifest;
      for (const e of m.spec.endpoints) {
        const residency = (m.spec.policy?.residency ?? {}) as ResidencyPolicy;
        const cur = map.get(e.name);
        if (cur) {
          // Another (older) version of the same app serves it under the same policy: its sites count too.
          if (cur.app === d.appName && JSON.stringify(cur.residency) === JSON.stringify(residency) && cur.model === e.model)
            cur.versions.push({ version: d.appVersion, manifest: m });
          continue; // a different app that declares the same name: the newest deployment's app owns it
        }
        const spec = m.spec.models.find((x) => x.name === e.model);
        const declaredKind = (e as { kind?: unknown }).kind;
        const kind =
          typeof declaredKind === 'string' ? declaredKind : spec?.format === 'gguf' || spec?.format === 'remote' ? 'chat' : 'tensor';
        map.set(e.name, {
          name: e.name,
          app: d.appName,
          model: e.model,
          versions: [{ version: d.appVersion, manifest: m }],
          residency,
          fallback: e.fallback === 'cloud',
          cascade: e.cascade,
          kind,
          format: spec?.format ?? 'onnx',
          wantsAccelerator:
            spec?.runtime?.executionProvider === 'cuda' || ((spec as { gpuLayers?: unknown } | undefined)?.gpuLayers ?? 0) !== 0,
        });
      }
    }
    this.endpoints.set(tenantId, { at: this.clock.now(), map });
    return map;
  }

  async sitesOf(tenantId: string): Promise<Site[]> {
    const hit = this.sites.get(tenantId);
    if (hit && this.clock.now() - hit.at < this.ttlMs) return hit.list;
    const list = (await this.store.listSites(tenantId)).filter((s) => s.revokedAt === null);
    this.sites.set(tenantId, { at: this.clock.now(), list });
    return list;
  }

  /** Forget cached state (after a deployment or app change through this replica). */
  invalidate(tenantId?: string): void {
    if (tenantId === undefined) {
      this.endpoints.clear();
      this.sites.clear();
      return;
    }
    this.endpoints.delete(tenantId);
    this.sites.delete(tenantId);
  }
}

/** GPUs and other accelerators a status names (the plain list and, when reported, the detail). */
export function acceleratorsOf(status: SiteStatusBody | null | undefined): string[] {
  if (!status) return [];
  // Only GPUs some runtime on the site can drive count for placement.
  const fromDetail = status.acceleratorInfo?.gpus.filter((g) => g.usableBy.length > 0).map((g) => `${g.vendor}:${g.index}`) ?? [];
  return [...new Set([...status.accelerators, ...fromDetail])];
}

/** A site's snapshot for the policy, from its latest status and the router's own counters. */
export function siteSnapshot(
  site: Site,
  status: SiteStatusBody | null | undefined,
  live: { online: boolean; inFlight: number; latencyMs?: number; circuitOpenUntil?: number },
  keys: ReadonlySet<string>,
): SiteSnapshot | undefined {
  if (!status?.models) return undefined;
  const models = new Map<string, ModelState>();
  let queued = 0;
  for (const m of status.models) {
    const k = modelKey({ app: m.app, name: m.name, version: m.version });
    if (!keys.has(k)) continue;
    models.set(k, m.state);
    queued += (m as { queued?: number }).queued ?? 0;
  }
  if (models.size === 0) return undefined;
  const reported = (status as { routed?: { inFlight?: number } }).routed?.inFlight ?? 0;
  return {
    id: site.id,
    region: site.region,
    online: live.online,
    models,
    queued,
    inFlight: Math.max(live.inFlight, reported),
    parallelism: Math.max(1, status.system.cores),
    latencyMs: live.latencyMs,
    accelerators: acceleratorsOf(status),
    circuitOpenUntil: live.circuitOpenUntil,
  };
}
