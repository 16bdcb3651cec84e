import { createHash } from 'node:crypto';
import { EwError } from '../../contracts/errors.ts';
import { type AppManifest, parseManifest } from '../../contracts/manifest.ts';
import { checkApp } from '../../stream/app.ts';
import type { Clock } from '../../lib/clock.ts';
import type { App, Store } from '../store/store.ts';
import type { FileArtifactStore } from '../artifacts.ts';

/** Canonical JSON (sorted keys) so that a manifest's digest does not depend on key order. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

export interface AppServiceDeps {
  store: Pick<Store, 'ownsArtifact' | 'createApp' | 'getApp'>;
  artifacts: Pick<FileArtifactStore, 'exists'>;
  clock: Clock;
}

/**
 * Pushing an app version: the manifest parsed and checked as a whole (streams, rules, egress),
 * each model file one this tenant uploaded, then stored once (versions are immutable). Errors
 * in the manifest carry their path under `manifest.`, as the request body names it.
 */
export async function pushApp(d: AppServiceDeps, tenantId: string, raw: unknown): Promise<App> {
  let manifest: AppManifest;
  try {
    manifest = parseManifest(raw);
    checkApp(manifest);
    for (const [i, m] of manifest.spec.models.entries()) {
      // Only files this tenant uploaded: knowing another tenant's sha256 grants nothing.
      if (m.sha256 && !(d.artifacts.exists(m.sha256) && (await d.store.ownsArtifact(tenantId, m.sha256)))) {
        throw new EwError(
          'ARTIFACT_NOT_FOUND',
          `model ${m.name}'s file ${m.sha256} was not uploaded by this tenant; upload it first (PUT /api/v1/artifacts/${m.sha256})`,
          { path: `spec.models[${i}].sha256` },
        );
      }
    }
  } catch (e) {
    if (e instanceof EwError && e.path !== undefined) throw e.within('manifest.');
    throw e;
  }
  const a: App = {
    tenantId,
    name: manifest.metadata.name,
    version: manifest.metadata.version,
    manifest,
    digest: createHash('sha256').update(canonical(manifest)).digest('hex'),
    createdAt: d.clock.now(),
  };
  if ((await d.store.createApp(a)) === 'exists') {
    const cur = await d.store.getApp(tenantId, a.name, a.version);
    throw new EwError(
      'APP_VERSION_EXISTS',
      `${a.name}@${a.version} already exists${cur?.digest === a.digest ? ' (identical)' : ' with different content'}; versions are immutable, so bump metadata.version`,
      { path: 'manifest.metadata.version' },
    );
  }
  return a;
}
