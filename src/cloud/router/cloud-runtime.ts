import type { Registry } from 'prom-client';
import { ModelHost, type InferRequest } from '../../inference/host.ts';
import { RuntimeRegistry, type ModelRuntime } from '../../inference/runtime.ts';
import { OnnxRuntime } from '../../inference/onnx.ts';
import { BuiltinRuntime } from '../../inference/ocr.ts';
import type { AppManifest } from '../../contracts/manifest.ts';
import { EwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';

/**
 * The cloud-side runtime: the same model files the sites run (from the cloud's artifact store,
 * verified by sha256 like a site does), loaded by the same ModelHost and runtimes, for the
 * router's fallback and for a cascade's larger model (`tier: cloud`). Apps are loaded on first
 * use and kept in a bounded LRU (`maxApps`); a load failure is remembered for `retryAfterMs` so a
 * broken model does not slow every request down.
 */
export interface CloudRuntimeOptions {
  artifactFile(sha256: string): string | undefined;
  clock: Clock;
  log: Logger;
  registry: Registry;
  maxApps?: number;
  retryAfterMs?: number;
  /** Extra runtimes (the remote OpenAI-compatible runtime for LLMs). */
  runtimes?: ModelRuntime[];
}

interface Loaded { key: string; ready: Promise<void>; failedAt?: number; error?: string }

export class CloudRuntime {
  private readonly host: ModelHost;
  private readonly registry: RuntimeRegistry;
  private readonly apps = new Map<string, Loaded>();

  constructor(private readonly o: CloudRuntimeOptions) {
    this.registry = new RuntimeRegistry()
      .register(new OnnxRuntime((model, reason) => o.log.warn({ model, reason }, 'CUDA asked for but not available in the cloud runtime; the model runs on the CPU')))
      .register(new BuiltinRuntime());
    for (const r of o.runtimes ?? []) this.registry.register(r);
    this.host = new ModelHost({
      runtimes: this.registry, clock: o.clock, log: o.log, registry: o.registry, tier: 'cloud',
      fetchModel: async (_app, m) => {
        const f = m.sha256 ? o.artifactFile(m.sha256) : undefined;
        if (!f) throw new EwError('ARTIFACT_NOT_FOUND', `model ${m.name}: the cloud has no complete artifact ${m.sha256 ?? '(no sha256)'}`);
        return f;
      },
    });
  }

  private static appName(tenantId: string, app: string, version: string): string {
    return `${tenantId}~${app}~${version}`;
  }

  /** Can the cloud serve this model at all (a runtime for its format, its file here, no recent failure)? */
  canServe(tenantId: string, manifest: AppManifest, model: string): boolean {
    const m = manifest.spec.models.find((x) => x.name === model);
    if (!m || !this.registry.formats().includes(m.format)) return false;
    if (m.format !== 'builtin' && m.format !== 'remote' && !(m.sha256 && this.o.artifactFile(m.sha256))) return false;
    const l = this.apps.get(CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version));
    return !(l?.failedAt !== undefined && this.o.clock.now() - l.failedAt < (this.o.retryAfterMs ?? 30_000));
  }

  private ensure(tenantId: string, manifest: AppManifest): Promise<void> {
    const name = CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version);
    const cur = this.apps.get(name);
    if (cur && (cur.failedAt === undefined || this.o.clock.now() - cur.failedAt < (this.o.retryAfterMs ?? 30_000))) {
      this.apps.delete(name);
      this.apps.set(name, cur); // most recently used last
      return cur.ready;
    }
    const desired = { name, version: manifest.metadata.version, deploymentId: 'cloud', manifest };
    const l: Loaded = { key: name, ready: Promise.resolve() };
    l.ready = this.host.start(desired).catch((e: Error) => {
      l.failedAt = this.o.clock.now();
      l.error = e.message;
      throw new EwError('MODEL_LOAD_FAILED', `the cloud-side runtime could not load ${manifest.metadata.name}@${manifest.metadata.version}: ${e.message}`);
    });
    this.apps.set(name, l);
    while (this.apps.size > (this.o.maxApps ?? 16)) {
      const [oldest, old] = this.apps.entries().next().value as [string, Loaded];
      this.apps.delete(oldest);
      void old.ready.catch(() => {}).then(() => this.host.stop({ ...desired, name: oldest }));
    }
    return l.ready;
  }

  async infer(tenantId: string, manifest: AppManifest, model: string, req: InferRequest): ReturnType<ModelHost['infer']> {
    await this.ensure(tenantId, manifest);
    const app = CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version);
    return this.host.infer(`${app}/${model}`, undefined, req);
  }

  async metadata(tenantId: string, manifest: AppManifest, model: string): Promise<ReturnType<ModelHost['metadata']>> {
    await this.ensure(tenantId, manifest);
    return this.host.metadata(`${CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version)}/${model}`);
  }

  async close(): Promise<void> {
    for (const [name, l] of this.apps) {
      await l.ready.catch(() => {});
      await this.host.stop({ name, version: '', deploymentId: 'cloud', manifest: { spec: { models: [], endpoints: [] } } as unknown as AppManifest });
    }
    this.apps.clear();
  }
}
