import { Counter, Histogram, type Registry } from 'prom-client';
import type { AppComponent } from '../contracts/app-component.ts';
import type { DesiredApp } from '../contracts/messages.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import { EwError, isEwError } from '../contracts/errors.ts';
import { DynamicBatcher } from './batcher.ts';
import type { LoadedModel, ModelLoadSpec, RuntimeRegistry } from './runtime.ts';
import type { LlmModel } from './llm/types.ts';
import { DATATYPES, elementCount, shapeFits, typedFrom, type Datatype, type Tensor, type TensorData, type TensorSpec } from './tensor.ts';

/**
 * The models a site serves, one set per app: each model is fetched (verified by sha256), loaded
 * by the runtime of its format and put behind its own dynamic batcher. Requests come from the
 * Open Inference Protocol routes (by endpoint name) and from `infer()` in rules (by model name).
 * Per-model metrics go to the site's /metrics.
 */
export type ModelState = 'fetching' | 'loading' | 'ready' | 'failed';

export interface ServedModel {
  app: string;
  version: string;
  name: string;
  format: string;
  state: ModelState;
  error?: string;
  model?: LoadedModel;
  batcher?: DynamicBatcher<Record<string, Tensor>, Record<string, Tensor>>;
  /** Whether the model's first dimension is a batch dimension (dynamic). */
  batchable: boolean;
  sha256?: string;
  /** Since this version loaded: what the deployment controller's canary gates read. */
  stats: ModelStats;
  /** Load attempts that failed and were retried (a download or verification failure). */
  retries: number;
  /** When the next attempt is due (ms since the epoch), while one is scheduled. */
  nextRetryAt?: number;
  /** Cancels the scheduled retry. */
  cancelRetry?: () => void;
  /** fetchModel returned its file (so the cache holds it for us until releaseModel). */
  fetched?: boolean;
}

/** Requests and errors since load; latency and first-output samples over the last 1,000 requests. */
export class ModelStats {
  requests = 0;
  errors = 0;
  private lat: number[] = [];
  private out: number[] = [];
  record(ms: number, output?: number): void {
    this.requests++;
    this.lat.push(ms);
    if (this.lat.length > 1000) this.lat.shift();
    if (typeof output === 'number' && Number.isFinite(output)) {
      this.out.push(output);
      if (this.out.length > 1000) this.out.shift();
    }
  }
  fail(): void {
    this.requests++;
    this.errors++;
  }
  summary(): { requests: number; errors: number; p95Ms: number | null; outputMean: number | null } {
    const s = [...this.lat].sort((a, b) => a - b);
    return {
      requests: this.requests,
      errors: this.errors,
      p95Ms: s.length ? s[Math.min(s.length - 1, Math.floor(0.95 * s.length))]! : null,
      outputMean: this.out.length ? this.out.reduce((a, b) => a + b, 0) / this.out.length : null,
    };
  }
}

export interface ModelHostDeps {
  runtimes: RuntimeRegistry;
  /** A verified local file for a model (downloads it when needed). */
  fetchModel(
    app: string,
    model: { name: string; sha256?: string; path?: string; format: string; builtin?: string },
    onProgress: (received: number, total: number) => void,
  ): Promise<string>;
  /** The model no longer uses its file (the cache may evict it). */
  releaseModel?(sha256: string): void;
  clock: Clock;
  log: Logger;
  registry: Registry;
  /**
   * A model whose file could not be fetched or failed verification (the cloud's copy is missing
   * or corrupt) is tried again, with exponential backoff from `initialMs` to `maxMs`, for as long
   * as its app runs, so fixing the cloud's copy heals the site. Default 5 s doubling to 5 min.
   */
  retry?: { initialMs: number; maxMs: number };
  /** A model of `app` loaded on a retry: the app's earlier load error no longer holds. */
  onRecovered?(app: string): void;
  /** A retried load of a model of `app` ended, loaded or not (rules waiting for it look again). */
  onRetried?(app: string): void;
  /** Which models to load: a site (`edge`, default) skips models marked `tier: cloud`; the cloud-side runtime loads them all. */
  tier?: 'edge' | 'cloud';
  /** Resolves a named secret (a remote model's API key); never logged. */
  secret?(name: string): Promise<string>;
}

/** Failures another attempt can cure: the file, not the model, was the problem. */
const RETRIABLE = new Set(['ARTIFACT_DIGEST_MISMATCH', 'ARTIFACT_NOT_FOUND', 'CLOUD_UNREACHABLE']);

export interface InferRequest {
  id?: string;
  inputs: { name: string; datatype: string; shape: number[]; data: unknown[] }[];
  outputs?: { name: string }[];
}

export class ModelHost implements AppComponent {
  readonly name = 'models';
  /** key: `${app}/${model}` */
  private readonly models = new Map<string, ServedModel>();
  /** endpoint name → `${app}/${model}` */
  private readonly endpoints = new Map<string, { app: string; model: string; spec: Record<string, unknown> }>();
  /** Endpoints refused because another app served the name: they take it when that app goes. */
  private readonly waiting = new Map<string, { app: string; model: string; spec: Record<string, unknown> }[]>();
  readonly progress = new Map<string, { received: number; total: number }>();
  private readonly m;

  constructor(private readonly d: ModelHostDeps) {
    const r = d.registry;
    this.m = {
      requests: new Counter({
        name: 'ew_infer_requests_total',
        help: 'Inference requests by app, model and outcome',
        labelNames: ['app', 'model', 'outcome'],
        registers: [r],
      }),
      // Latency as a caller sees it (queue, batch and run), per model of each app.
      latency: new Histogram({
        name: 'ew_infer_request_duration_seconds',
        help: 'Inference request duration (queue and run) by app and model',
        labelNames: ['app', 'model'],
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30],
        registers: [r],
      }),
      queue: new Histogram({
        name: 'ew_infer_queue_seconds',
        help: 'Time a request waited in the batcher',
        labelNames: ['app', 'model'],
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
        registers: [r],
      }),
      compute: new Histogram({
        name: 'ew_infer_compute_seconds',
        help: 'Model execution time per batch',
        labelNames: ['app', 'model'],
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
        registers: [r],
      }),
      batch: new Histogram({
        name: 'ew_infer_batch_size',
        help: 'Rows per executed batch',
        labelNames: ['app', 'model'],
        buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
        registers: [r],
      }),
    };
  }

  list(): ServedModel[] {
    return [...this.models.values()];
  }

  /**
   * Whether a model of `app` can serve a rule now: `waiting` while it is fetched or loaded, or
   * failed with another attempt scheduled; `failed` for good; undefined when the app has no such model.
   */
  stateOf(app: string, model: string): 'ready' | 'waiting' | 'failed' | undefined {
    const s = this.models.get(`${app}/${model}`);
    if (!s) return undefined;
    if (s.state === 'ready') return 'ready';
    if (s.state === 'failed') return s.nextRetryAt !== undefined ? 'waiting' : 'failed';
    return 'waiting';
  }

  endpointNames(): string[] {
    return [...this.endpoints.keys()];
  }

  /**
   * A language-model endpoint (`/v1` on the site) or, with `app`, an endpoint of that app (llm()
   * in its rules). Throws MODEL_NOT_FOUND for an unknown name or one whose model is not a
   * language model, MODEL_NOT_READY while it loads.
   */
  llmEndpoint(name: string, app?: string): { app: string; endpoint: string; model: string; spec: Record<string, unknown>; llm: LlmModel } {
    const t = this.endpoints.get(name);
    if (!t || (app !== undefined && t.app !== app)) {
      const known = [...this.endpoints]
        .filter(([, v]) => (app === undefined || v.app === app) && this.models.get(`${v.app}/${v.model}`)?.model?.llm)
        .map(([k]) => k);
      throw new EwError(
        'MODEL_NOT_FOUND',
        `no language-model endpoint "${name}"${app ? ` in app ${app}` : ''} is served here${known.length ? `; there are ${known.join(', ')}` : ''}`,
        { path: 'model' },
      );
    }
    const s = this.models.get(`${t.app}/${t.model}`);
    if (!s || s.state !== 'ready')
      throw new EwError(
        'MODEL_NOT_READY',
        `endpoint ${name}: model ${t.model} is ${s?.state ?? 'not loaded'}${s?.error ? `: ${s.error}` : ''}`,
      );
    if (!s.model!.llm)
      throw new EwError(
        'MODEL_NOT_FOUND',
        `endpoint ${name} serves model ${t.model}, which is not a language model (format ${s.format}); call it over /v2 (Open Inference Protocol)`,
        { path: 'model' },
      );
    return { app: t.app, endpoint: name, model: t.model, spec: t.spec, llm: s.model!.llm };
  }

  /** Language-model endpoints that are ready: what `/v1/models` lists. */
  llmEndpoints(): { app: string; endpoint: string; model: string; version: string; spec: Record<string, unknown> }[] {
    const out: { app: string; endpoint: string; model: string; version: string; spec: Record<string, unknown> }[] = [];
    for (const [name, t] of this.endpoints) {
      const s = this.models.get(`${t.app}/${t.model}`);
      if (s?.state === 'ready' && s.model?.llm) out.push({ app: t.app, endpoint: name, model: t.model, version: s.version, spec: t.spec });
    }
    return out;
  }

  async start(app: DesiredApp): Promise<void> {
    await this.load(app);
  }

  async update(prev: DesiredApp, next: DesiredApp): Promise<void> {
    // An app being updated keeps its endpoint names: none is handed to a waiting app meanwhile.
    await this.unload(prev, false);
    await this.load(next);
  }

  async stop(app: DesiredApp): Promise<void> {
    await this.unload(app, true);
  }

  /** Cancels every scheduled retry (agent shutdown). */
  cancelRetries(): void {
    for (const s of this.models.values()) s.cancelRetry?.();
  }

  private async unload(app: DesiredApp, handOver: boolean): Promise<void> {
    for (const [key, s] of this.models) {
      if (s.app !== app.name) continue;
      s.cancelRetry?.();
      s.batcher?.close();
      await s.model?.close().catch(() => {});
      if (s.sha256 && s.format !== 'builtin' && s.fetched) this.d.releaseModel?.(s.sha256);
      this.models.delete(key);
    }
    for (const [ep, list] of this.waiting) {
      const rest = list.filter((w) => w.app !== app.name);
      if (rest.length) this.waiting.set(ep, rest);
      else this.waiting.delete(ep);
    }
    for (const [ep, t] of this.endpoints) {
      if (t.app !== app.name) continue;
      this.endpoints.delete(ep);
      const next = handOver ? this.waiting.get(ep)?.shift() : undefined;
      if (next) {
        this.endpoints.set(ep, next);
        this.d.log.info(
          { endpoint: ep, app: next.app },
          'endpoint freed by the app that served it; now served by the app that was refused it',
        );
      }
    }
  }

  /** Unloads every model (the agent stops): language-model child processes end with it. */
  async close(): Promise<void> {
    await Promise.all(
      [...this.models.values()].map(async (s) => {
        s.batcher?.close();
        await s.model?.close().catch(() => {});
      }),
    );
    this.models.clear();
    this.endpoints.clear();
  }

  private async load(app: DesiredApp): Promise<void> {
    const spec = app.manifest.spec;
    const failures: string[] = [];
    // An endpoint name another app already serves here is refused, never shadowed (the cloud
    // refuses such deployments; a site relabelled into two pools can still meet one).
    for (const e of spec.endpoints) {
      const owner = this.endpoints.get(e.name);
      if (owner && owner.app !== app.name) {
        const msg = `endpoint "${e.name}" is already served on this site by app ${owner.app}; app ${app.name} cannot declare it too — rename it in one of the two apps`;
        failures.push(`ENDPOINT_CONFLICT: ${msg}`);
        this.waiting.set(e.name, [...(this.waiting.get(e.name) ?? []), { app: app.name, model: e.model, spec: e }]);
        this.d.log.error({ app: app.name, endpoint: e.name, servedBy: owner.app }, 'endpoint name conflict: refused');
        continue;
      }
      this.endpoints.set(e.name, { app: app.name, model: e.model, spec: e });
    }
    const mine = spec.models.filter((ms) => this.d.tier === 'cloud' || (ms as { tier?: string }).tier !== 'cloud');
    await Promise.all(
      mine.map(async (ms) => {
        const key = `${app.name}/${ms.name}`;
        const served: ServedModel = {
          app: app.name,
          version: app.version,
          name: ms.name,
          format: ms.format,
          state: 'fetching',
          batchable: false,
          sha256: ms.sha256,
          stats: new ModelStats(),
          retries: 0,
        };
        this.models.set(key, served);
        const err = await this.loadModel(app, ms, served);
        if (err) failures.push(`model ${ms.name}: ${err}`);
      }),
    );
    if (failures.length) throw new Error(failures.join('; '));
  }

  /** One model's fetch and load; on a failure another attempt may cure, schedules it. Returns the error, if any. */
  private async loadModel(
    app: DesiredApp,
    ms: DesiredApp['manifest']['spec']['models'][number],
    served: ServedModel,
  ): Promise<string | undefined> {
    const key = `${app.name}/${ms.name}`;
    try {
      // Built-in pipelines ship with the agent: the runtime takes their name, not a file.
      // Remote models have no file: the upstream is their runtime.
      const file =
        ms.format === 'builtin'
          ? ms.builtin!
          : ms.format === 'remote'
            ? ''
            : await this.d.fetchModel(app.name, ms, (received, total) => this.progress.set(key, { received, total }));
      if (ms.format !== 'builtin' && ms.format !== 'remote') served.fetched = true;
      if (this.models.get(key) !== served) {
        // Stopped while it downloaded: let the cache have the file back.
        if (served.fetched && ms.sha256) this.d.releaseModel?.(ms.sha256);
        return undefined;
      }
      served.state = 'loading';
      const opts = (ms as { runtime?: ModelLoadSpec['options'] }).runtime;
      // Remote models: the upstream travels with the runtime settings; its key is resolved from a secret here.
      const up = (
        ms as {
          upstream?: { baseUrl: string; model: string; apiKeySecret?: string; timeoutMs?: number; retries?: number; concurrency?: number };
        }
      ).upstream;
      const upstream = up ? { ...up, apiKey: up.apiKeySecret ? await this.d.secret?.(up.apiKeySecret) : undefined } : undefined;
      const model = await this.d.runtimes.load({
        name: ms.name,
        format: ms.format,
        file,
        options: { ...opts, ...(upstream ? { upstream } : {}) },
      });
      served.model = model;
      served.batchable =
        model.inputs.length > 0 && model.inputs.every((i) => i.shape[0] === -1) && model.outputs.every((o) => o.shape[0] === -1);
      const b = ms.batching ?? {};
      const maxBatchSize = served.batchable ? (b.maxBatchSize ?? 64) : 1;
      served.batcher = new DynamicBatcher<Record<string, Tensor>, Record<string, Tensor>>(
        {
          // No added delay by default (as Triton): batches form from what queues while the model runs.
          maxBatchSize,
          maxQueueDelayMs: b.maxQueueDelayMs ?? 0,
          clock: this.d.clock,
          preferredBatchSizes: (b as { preferredBatchSizes?: number[] }).preferredBatchSizes,
          maxQueueSize: (b as { maxQueueSize?: number }).maxQueueSize,
        },
        (reqs) => this.runBatch(model, reqs),
        (s) => {
          const labels = { app: app.name, model: ms.name };
          this.m.batch.observe(labels, s.size);
          this.m.compute.observe(labels, s.computeMs / 1000);
          for (const q of s.queueMs) this.m.queue.observe(labels, q / 1000);
        },
      );
      served.state = 'ready';
      delete served.error;
      delete served.nextRetryAt;
      this.progress.delete(key);
      this.d.log.info(
        { app: app.name, model: ms.name, inputs: model.inputs, outputs: model.outputs, retries: served.retries },
        'model ready',
      );
      return undefined;
    } catch (e) {
      served.state = 'failed';
      served.error = isEwError(e) ? `${e.code}: ${e.message}` : (e as Error).message;
      if (isEwError(e) && RETRIABLE.has(e.code) && this.models.get(key) === served) {
        const r = this.d.retry ?? { initialMs: 5000, maxMs: 300_000 };
        const delay = Math.min(r.maxMs, r.initialMs * 2 ** Math.min(served.retries, 30));
        served.nextRetryAt = this.d.clock.now() + delay;
        served.error += `; retrying in ${Math.round(delay / 1000)} s`;
        served.cancelRetry = this.d.clock.setTimer(delay, () => {
          if (this.models.get(key) !== served) return;
          served.retries++;
          served.state = 'fetching';
          delete served.nextRetryAt;
          void this.loadModel(app, ms, served).then((err) => {
            if (!err) this.d.onRecovered?.(app.name);
            this.d.onRetried?.(app.name);
          });
        });
      }
      this.d.log.error({ app: app.name, model: ms.name, err: served.error, retries: served.retries }, 'model failed to load');
      return served.error;
    }
  }

  /** Concatenates requests along the batch dimension, runs once, splits the outputs back. */
  private async runBatch(model: LoadedModel, reqs: Record<string, Tensor>[]): Promise<Record<string, Tensor>[]> {
    if (reqs.length === 1) return [await model.run(reqs[0]!)];
    const rows = reqs.map((r) => r[model.inputs[0]!.name]!.shape[0]!);
    const feeds: Record<string, Tensor> = {};
    for (const spec of model.inputs) {
      const parts = reqs.map((r) => r[spec.name]!);
      feeds[spec.name] = {
        datatype: spec.datatype,
        shape: [rows.reduce((a, b) => a + b, 0), ...parts[0]!.shape.slice(1)],
        data: concat(parts.map((p) => p.data)),
      };
    }
    const out = await model.run(feeds);
    return reqs.map((_, i) => {
      const start = rows.slice(0, i).reduce((a, b) => a + b, 0);
      const res: Record<string, Tensor> = {};
      for (const [name, t] of Object.entries(out)) {
        const per = elementCount(t.shape.slice(1));
        res[name] = {
          datatype: t.datatype,
          shape: [rows[i]!, ...t.shape.slice(1)],
          data: slice(t.data, start * per, (start + rows[i]!) * per),
        };
      }
      return res;
    });
  }

  private served(name: string, version?: string, byEndpoint = true): ServedModel {
    const target = byEndpoint ? this.endpoints.get(name) : undefined;
    const key = target ? `${target.app}/${target.model}` : name;
    const s = this.models.get(key);
    if (!s || (version !== undefined && s.version !== version)) {
      throw new EwError(
        'MODEL_NOT_FOUND',
        `no model "${name}"${version ? ` version ${version}` : ''} is served here; GET /v2/models lists them`,
        { path: 'model' },
      );
    }
    return s;
  }

  /** Metadata of an endpoint (OIP `GET /v2/models/{name}`). */
  metadata(
    name: string,
    version?: string,
  ): { name: string; versions: string[]; platform: string; inputs: TensorSpec[]; outputs: TensorSpec[] } {
    const s = this.served(name, version);
    if (s.state !== 'ready') throw new EwError('MODEL_NOT_READY', `model ${name} is ${s.state}${s.error ? `: ${s.error}` : ''}`);
    return {
      name,
      versions: [s.version],
      platform: `${s.format === 'onnx' ? 'onnxruntime_onnx' : s.format}`,
      inputs: [...s.model!.inputs],
      outputs: [...s.model!.outputs],
    };
  }

  ready(name: string, version?: string): boolean {
    return this.served(name, version).state === 'ready';
  }

  /** OIP `POST /v2/models/{name}[/versions/{v}]/infer`. */
  async infer(
    name: string,
    version: string | undefined,
    req: InferRequest,
  ): Promise<{
    model_name: string;
    model_version: string;
    id?: string;
    outputs: { name: string; datatype: Datatype; shape: number[]; data: unknown[] }[];
  }> {
    const s = this.served(name, version);
    const label = { app: s.app, model: s.name };
    if (s.state !== 'ready') {
      this.m.requests.inc({ ...label, outcome: 'not_ready' });
      throw new EwError('MODEL_NOT_READY', `model ${name} is ${s.state}${s.error ? `: ${s.error}` : ''}`);
    }
    let feeds: Record<string, Tensor>;
    let rows: number;
    try {
      ({ feeds, rows } = this.checkInputs(s, req));
    } catch (e) {
      this.m.requests.inc({ ...label, outcome: 'bad_input' });
      throw e;
    }
    const wanted = req.outputs?.map((o) => o.name);
    if (wanted) {
      const known = s.model!.outputs.map((o) => o.name);
      wanted.forEach((w, i) => {
        if (!known.includes(w))
          throw new EwError('INFER_INPUT_INVALID', `model ${name} has no output "${w}"; it has ${known.join(', ')}`, {
            path: `outputs[${i}].name`,
          });
      });
    }
    const t0 = this.d.clock.now();
    try {
      const out = await s.batcher!.submit(feeds, rows);
      this.m.requests.inc({ ...label, outcome: 'ok' });
      this.m.latency.observe(label, (this.d.clock.now() - t0) / 1000);
      const first = Object.values(out)[0]?.data;
      s.stats.record(this.d.clock.now() - t0, first && typeof first[0] === 'number' ? (first[0] as number) : undefined);
      return {
        model_name: name,
        model_version: s.version,
        ...(req.id !== undefined ? { id: req.id } : {}),
        outputs: Object.entries(out)
          .filter(([n]) => !wanted || wanted.includes(n))
          .map(([n, t]) => ({ name: n, datatype: t.datatype, shape: t.shape, data: jsonData(t.data) })),
      };
    } catch (e) {
      this.m.requests.inc({ ...label, outcome: isEwError(e, 'QUEUE_FULL') ? 'queue_full' : 'error' });
      s.stats.fail();
      throw e;
    }
  }

  /**
   * `infer(model, a, b, …)` in a rule: one row whose features are the arguments, for a model
   * with one input of shape [-1, n] (or [n]). Returns the model's single output value for the
   * row, or an object of all outputs when it has several.
   */
  async inferRow(app: string, model: string, args: unknown[]): Promise<unknown> {
    const s = this.models.get(`${app}/${model}`);
    if (!s) throw new EwError('MODEL_NOT_FOUND', `app ${app} has no model "${model}"`);
    if (s.state !== 'ready') throw new EwError('MODEL_NOT_READY', `model ${model} is ${s.state}`);
    const input = s.model!.inputs[0]!;
    const width = input.shape[input.shape.length - 1]!;
    if (s.model!.inputs.length !== 1 || (width >= 0 && width !== args.length)) {
      throw new EwError(
        'INFER_INPUT_INVALID',
        `infer('${model}', …) passes ${args.length} values but the model's input ${input.name} takes ${width} per row`,
      );
    }
    const nums = args.map((a) => (typeof a === 'number' ? a : Number(a)));
    if (nums.some((x) => !Number.isFinite(x)))
      throw new EwError('INFER_INPUT_INVALID', `infer('${model}', …) needs numbers; got ${JSON.stringify(args)}`);
    const shape = s.batchable ? [1, nums.length] : [nums.length];
    const t0 = this.d.clock.now();
    let out: Record<string, Tensor>;
    try {
      out = await s.batcher!.submit({ [input.name]: { datatype: input.datatype, shape, data: typedFrom(input.datatype, nums) } }, 1);
    } catch (e) {
      s.stats.fail();
      this.m.requests.inc({ app, model, outcome: 'error' });
      throw e;
    }
    const vals = Object.entries(out).map(([n, t]) => [n, t.shape.length <= 1 ? jsonData(t.data)[0] : jsonData(t.data)] as const);
    this.m.requests.inc({ app, model, outcome: 'ok' });
    this.m.latency.observe({ app, model }, (this.d.clock.now() - t0) / 1000);
    s.stats.record(this.d.clock.now() - t0, typeof vals[0]?.[1] === 'number' ? (vals[0][1] as number) : undefined);
    return vals.length === 1 ? vals[0]![1] : Object.fromEntries(vals);
  }

  private checkInputs(s: ServedModel, req: InferRequest): { feeds: Record<string, Tensor>; rows: number } {
    const specs = s.model!.inputs;
    const feeds: Record<string, Tensor> = {};
    let rows = 1;
    req.inputs.forEach((inp, i) => {
      const spec = specs.find((x) => x.name === inp.name);
      if (!spec)
        throw new EwError(
          'INFER_INPUT_INVALID',
          `model ${s.name} has no input "${inp.name}"; its inputs are ${specs.map((x) => x.name).join(', ')}`,
          { path: `inputs[${i}].name` },
        );
      if (!DATATYPES.includes(inp.datatype as Datatype) || inp.datatype !== spec.datatype) {
        throw new EwError('INFER_INPUT_INVALID', `input ${inp.name} must be ${spec.datatype}, not ${inp.datatype}`, {
          path: `inputs[${i}].datatype`,
        });
      }
      if (!shapeFits(spec.shape, inp.shape) || inp.shape.some((d) => !Number.isInteger(d) || d < 0)) {
        throw new EwError(
          'INFER_INPUT_INVALID',
          `input ${inp.name} has shape [${inp.shape.join(', ')}] but the model takes [${spec.shape.join(', ')}] (-1: any size)`,
          { path: `inputs[${i}].shape` },
        );
      }
      const flat = (inp.data as unknown[]).flat(Infinity as 1) as unknown[];
      if (flat.length !== elementCount(inp.shape)) {
        throw new EwError(
          'INFER_INPUT_INVALID',
          `input ${inp.name} has ${flat.length} values but shape [${inp.shape.join(', ')}] needs ${elementCount(inp.shape)}`,
          { path: `inputs[${i}].data` },
        );
      }
      if (spec.datatype !== 'BYTES' && spec.datatype !== 'BOOL' && flat.some((v) => typeof v !== 'number' || !Number.isFinite(v))) {
        throw new EwError('INFER_INPUT_INVALID', `input ${inp.name} must hold numbers`, { path: `inputs[${i}].data` });
      }
      feeds[inp.name] = { datatype: spec.datatype, shape: inp.shape, data: typedFrom(spec.datatype, flat) };
      if (s.batchable) rows = inp.shape[0]!;
    });
    for (const spec of specs)
      if (!feeds[spec.name])
        throw new EwError('INFER_INPUT_INVALID', `input "${spec.name}" is missing (${spec.datatype} [${spec.shape.join(', ')}])`, {
          path: 'inputs',
        });
    if (s.batchable) {
      const counts = new Set(Object.values(feeds).map((t) => t.shape[0]));
      if (counts.size > 1)
        throw new EwError('INFER_INPUT_INVALID', 'all inputs must have the same batch size (first dimension)', { path: 'inputs' });
    }
    return { feeds, rows };
  }
}

function concat(parts: TensorData[]): TensorData {
  const first = parts[0]!;
  if (Array.isArray(first)) return (parts as unknown[][]).flat() as TensorData;
  const total = parts.reduce((a, p) => a + (p as ArrayLike<unknown>).length, 0);
  const Ctor = (first as Float32Array).constructor as new (n: number) => Float32Array;
  const out = new Ctor(total);
  let off = 0;
  for (const p of parts) {
    out.set(p as Float32Array, off);
    off += (p as Float32Array).length;
  }
  return out as TensorData;
}

function slice(d: TensorData, a: number, b: number): TensorData {
  return (Array.isArray(d) ? d.slice(a, b) : (d as Float32Array).slice(a, b)) as TensorData;
}

function jsonData(d: TensorData): unknown[] {
  const out = new Array<unknown>(d.length);
  for (let i = 0; i < d.length; i++) {
    const v = d[i];
    out[i] = typeof v === 'bigint' ? Number(v) : v;
  }
  return out;
}
