import { createHash } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { ModelHost, type InferRequest } from '../../inference/host.ts';
import { LlmService } from '../../inference/llm/service.ts';
import { registerOpenAi } from '../../inference/openai.ts';
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
  /** Extra runtimes (GGUF, the remote OpenAI-compatible runtime for LLMs). */
  runtimes?: ModelRuntime[];
  /** Named secrets (a remote model's API key): never logged. */
  secret?(name: string): Promise<string>;
}

/** What the cloud's /v1 gets back from the cloud-side runtime: as a site's /v1 would answer. */
export interface OpenAiAnswer {
  status: number;
  streamed: boolean;
  stream: AsyncIterable<Buffer>;
  rename: (b: Buffer) => Buffer;
}

interface Loaded {
  key: string;
  ready: Promise<void>;
  failedAt?: number;
  error?: string;
}

export class CloudRuntime {
  private readonly host: ModelHost;
  private readonly registry: RuntimeRegistry;
  private readonly apps = new Map<string, Loaded>();
  private readonly llm: LlmService;
  private v1?: Promise<FastifyInstance>;

  constructor(private readonly o: CloudRuntimeOptions) {
    this.registry = new RuntimeRegistry()
      .register(
        new OnnxRuntime((model, reason) =>
          o.log.warn({ model, reason }, 'CUDA asked for but not available in the cloud runtime; the model runs on the CPU'),
        ),
      )
      .register(new BuiltinRuntime());
    for (const r of o.runtimes ?? []) this.registry.register(r);
    this.host = new ModelHost({
      runtimes: this.registry,
      clock: o.clock,
      log: o.log,
      registry: o.registry,
      tier: 'cloud',
      ...(o.secret ? { secret: o.secret } : {}),
      fetchModel: async (_app, m) => {
        const f = m.sha256 ? o.artifactFile(m.sha256) : undefined;
        if (!f) throw new EwError('ARTIFACT_NOT_FOUND', `model ${m.name}: the cloud has no complete artifact ${m.sha256 ?? '(no sha256)'}`);
        return f;
      },
    });
    this.llm = new LlmService(this.host, o.registry, o.clock);
  }

  /** One loaded unit per model: the cloud loads just what a fallback or an escalation needs. */
  private static appName(tenantId: string, app: string, version: string, model: string): string {
    return `${tenantId}~${app}~${version}~${model}`;
  }

  /** The endpoint name the model is served under inside the cloud runtime (unique per tenant, app, version, model). */
  static endpointName(appName: string): string {
    return `cloud-${createHash('sha256').update(appName).digest('hex').slice(0, 24)}`;
  }

  /** Can the cloud serve this model at all (a runtime for its format, its file here, no recent failure)? */
  canServe(tenantId: string, manifest: AppManifest, model: string): boolean {
    const m = manifest.spec.models.find((x) => x.name === model);
    if (!m || !this.registry.formats().includes(m.format)) return false;
    if (m.format !== 'builtin' && m.format !== 'remote' && !(m.sha256 && this.o.artifactFile(m.sha256))) return false;
    const l = this.apps.get(CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version, model));
    return !(l?.failedAt !== undefined && this.o.clock.now() - l.failedAt < (this.o.retryAfterMs ?? 30_000));
  }

  private ensure(tenantId: string, manifest: AppManifest, model: string): Promise<void> {
    const name = CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version, model);
    const cur = this.apps.get(name);
    if (cur && (cur.failedAt === undefined || this.o.clock.now() - cur.failedAt < (this.o.retryAfterMs ?? 30_000))) {
      this.apps.delete(name);
      this.apps.set(name, cur); // most recently used last
      return cur.ready;
    }
    // Just this model, under one endpoint of its own (with the limits of the app's endpoint that names it).
    const spec = manifest.spec.models.find((m) => m.name === model);
    if (!spec)
      return Promise.reject(
        new EwError('MODEL_NOT_FOUND', `app ${manifest.metadata.name}@${manifest.metadata.version} has no model ${model}`),
      );
    const declared = manifest.spec.endpoints.find((e) => e.model === model);
    const llm = spec.format === 'gguf' || spec.format === 'remote';
    const endpoint = { ...(declared ?? {}), name: CloudRuntime.endpointName(name), model, ...(llm ? { kind: 'chat' as const } : {}) };
    const only = { ...manifest, spec: { ...manifest.spec, models: [spec], endpoints: [endpoint], rules: [], streams: [] } } as AppManifest;
    const desired = { name, version: manifest.metadata.version, deploymentId: 'cloud', manifest: only };
    const l: Loaded = { key: name, ready: Promise.resolve() };
    l.ready = this.host.start(desired).catch((e: Error) => {
      l.failedAt = this.o.clock.now();
      l.error = e.message;
      throw new EwError(
        'MODEL_LOAD_FAILED',
        `the cloud-side runtime could not load ${manifest.metadata.name}@${manifest.metadata.version}: ${e.message}`,
      );
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
    await this.ensure(tenantId, manifest, model);
    const app = CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version, model);
    return this.host.infer(`${app}/${model}`, undefined, req);
  }

  async metadata(tenantId: string, manifest: AppManifest, model: string): Promise<ReturnType<ModelHost['metadata']>> {
    await this.ensure(tenantId, manifest, model);
    return this.host.metadata(`${CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version, model)}/${model}`);
  }

  /**
   * An OpenAI-compatible request (`/v1/chat/completions`, …) on a language model in the cloud: the
   * endpoint's own GGUF model, or a larger one through the remote runtime. It runs on the same
   * /v1 code the sites run (in process, fastify's inject), so answers, streams and errors are
   * exactly a site's; `rename` puts the public endpoint name back into what comes out.
   */
  async openai(
    tenantId: string,
    manifest: AppManifest,
    model: string,
    publicName: string,
    path: string,
    body: Record<string, unknown>,
    signal: AbortSignal,
  ): Promise<OpenAiAnswer> {
    await this.ensure(tenantId, manifest, model);
    const internal = CloudRuntime.endpointName(CloudRuntime.appName(tenantId, manifest.metadata.name, manifest.metadata.version, model));
    this.v1 ??= (async () => {
      const app = Fastify({ logger: false });
      registerOpenAi(app, { host: this.host, llm: this.llm, log: this.o.log });
      await app.ready();
      return app;
    })();
    const app = await this.v1;
    const res = (await app.inject({
      method: 'POST',
      url: path,
      payload: { ...body, model: internal },
      payloadAsStream: true,
      signal,
    })) as unknown as {
      statusCode: number;
      headers: Record<string, unknown>;
      stream(): AsyncIterable<Buffer | string>;
      raw: { res: { destroy(): void } };
    };
    signal.addEventListener('abort', () => res.raw.res.destroy(), { once: true });
    const from = Buffer.from(internal);
    const to = Buffer.from(publicName);
    const rename = (b: Buffer): Buffer => {
      let i = b.indexOf(from);
      if (i < 0) return b;
      const parts: Buffer[] = [];
      let at = 0;
      for (; i >= 0; i = b.indexOf(from, at)) {
        parts.push(b.subarray(at, i), to);
        at = i + from.length;
      }
      parts.push(b.subarray(at));
      return Buffer.concat(parts);
    };
    const src = res.stream();
    return {
      status: res.statusCode,
      streamed: String(res.headers['content-type'] ?? '').startsWith('text/event-stream'),
      rename,
      stream: (async function* () {
        for await (const c of src) yield Buffer.isBuffer(c) ? c : Buffer.from(c);
      })(),
    };
  }

  async close(): Promise<void> {
    if (this.v1) await (await this.v1).close();
    // Language models' child processes end with their models.
    await this.host.close();
    this.apps.clear();
  }
}
