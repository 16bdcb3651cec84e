import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ERROR_CODES, EwError, formatPath, isEwError, type ErrorCode } from '../../contracts/errors.ts';
import {
  WIRE_VERSION,
  MAX_FRAME_BYTES,
  checkTensorBytes,
  packTensors,
  unpackTensors,
  ErrorFrame,
  type TensorHead,
  type WireTensor,
} from '../../contracts/infer-wire.ts';
import { pointerToPath } from '../../lib/http.ts';
import type { Clock } from '../../lib/clock.ts';
import { InferenceRouter, targetName, type RouteContext, type RouteOptions, type RouteTrace } from '../router/router.ts';
import type { EndpointInfo } from '../router/catalog.ts';
import type { Forwarder } from '../router/forwarder.ts';
import type { CloudRuntime } from '../router/cloud-runtime.ts';
import type { RouterAudit } from '../router/audit.ts';
import type { KeyLimiter } from '../router/limits.ts';
import { checkTensorCascade } from '../router/cascade.ts';
import { place } from '../router/policy.ts';
import { VERSION } from '../../version.ts';

/**
 * The cloud's inference endpoints: the Open Inference Protocol v2 for every endpoint the
 * tenant's deployments declare, routed to sites over their MQTT link (or the cloud-side runtime)
 * by the router. Errors in OIP's own shape, `{"error": "…"}`, with our stable `code` (and `path`)
 * beside it. Per-key rate and concurrency limits answer 429 with Retry-After.
 *
 * Routing controls (all optional), as headers:
 *   X-Edgeweave-Regions: eu-west,eu-central   regions the data may be processed in
 *   X-Edgeweave-Data-Class: pii               the data class (the app's policy.residency.classes)
 *   X-Edgeweave-Site: <site id>               prefer the site next to the data (if eligible)
 *   X-Edgeweave-Timeout-Ms: 30000             the deadline across every attempt
 *   X-Edgeweave-Explain: 1 (or ?explain=1)    add why the request went where (parameters.edgeweave.explain)
 */
export interface InferenceDeps {
  router: InferenceRouter;
  forwarder: Forwarder;
  cloudRuntime?: CloudRuntime;
  audit: RouterAudit;
  limiter: KeyLimiter;
  clock: Clock;
  /** Default and largest deadline (ms). Defaults 30 s and 10 min. */
  defaultTimeoutMs?: number;
  maxTimeoutMs?: number;
}

const Tensor = z.object({
  name: z.string().min(1).max(256),
  datatype: z.enum(['BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES']),
  shape: z.array(z.number().int().nonnegative()).max(16),
  data: z.array(z.unknown()),
  parameters: z.record(z.string(), z.unknown()).optional(),
});
const InferBody = z.object({
  id: z.string().max(256).optional(),
  parameters: z.record(z.string(), z.unknown()).optional(),
  inputs: z.array(Tensor).min(1).max(256),
  outputs: z
    .array(z.object({ name: z.string().max(256), parameters: z.record(z.string(), z.unknown()).optional() }))
    .max(256)
    .optional(),
});
type InferBody = z.infer<typeof InferBody>;
/** The JSON part of a binary request (Triton's binary tensor extension): `data` or `parameters.binary_data_size` per input. */
const BinaryInferHead = InferBody.extend({
  inputs: z
    .array(
      Tensor.extend({
        data: z.array(z.unknown()).optional(),
        parameters: z.object({ binary_data_size: z.number().int().nonnegative().optional() }).passthrough().optional(),
      }),
    )
    .min(1)
    .max(256),
});

function check<T>(schema: z.ZodType<T>, v: unknown): T {
  const r = schema.safeParse(v);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const path = formatPath(issue.path);
  throw new EwError('VALIDATION_FAILED', `${path || 'body'}: ${issue.message}`, { path: path || undefined });
}

/** A request as the router forwards it: tensor heads and their bytes (from JSON, or as they came). */
interface Parsed {
  body: Omit<InferBody, 'inputs'> & { inputs: { name: string; datatype: string; shape: number[] }[] };
  heads: TensorHead[];
  bytes: Buffer[];
  binaryOut: (name: string) => boolean;
}

/** Parses an OIP request: JSON, or Triton's binary extension (Inference-Header-Content-Length + raw tensors). */
function parseInfer(req: FastifyRequest): Parsed {
  const wantsBinary =
    (b: { parameters?: Record<string, unknown>; outputs?: { name: string; parameters?: Record<string, unknown> }[] }) => (name: string) =>
      b.parameters?.binary_data_output === true || b.outputs?.find((o) => o.name === name)?.parameters?.binary_data === true;
  if (!Buffer.isBuffer(req.body)) {
    const body = check(InferBody, req.body);
    const packed = packTensors(body.inputs as WireTensor[]);
    return { body, heads: packed.heads, bytes: packed.body, binaryOut: wantsBinary(body) };
  }
  const raw = req.body;
  const hl = Number(req.headers['inference-header-content-length']);
  if (!Number.isInteger(hl) || hl < 2 || hl > raw.length)
    throw new EwError(
      'VALIDATION_FAILED',
      `a binary request needs the header Inference-Header-Content-Length: the length of its JSON part (1…${raw.length})`,
      { path: 'headers.inference-header-content-length' },
    );
  let json: unknown;
  try {
    json = JSON.parse(raw.subarray(0, hl).toString('utf8'));
  } catch (e) {
    throw new EwError('INVALID_JSON', `the JSON part of the binary request is not valid JSON: ${(e as Error).message}`);
  }
  const body = check(BinaryInferHead, json);
  const heads: TensorHead[] = [];
  const bytes: Buffer[] = [];
  let off = hl;
  body.inputs.forEach((t, i) => {
    const size = t.parameters?.binary_data_size;
    if ((size === undefined) === (t.data === undefined))
      throw new EwError('INFER_INPUT_INVALID', `input ${t.name} needs either "data" or parameters.binary_data_size`, {
        path: `inputs[${i}]`,
      });
    if (size === undefined) {
      const p = packTensors([t as WireTensor], 'inputs');
      heads.push(p.heads[0]!);
      bytes.push(p.body[0]!);
      return;
    }
    if (off + size > raw.length)
      throw new EwError(
        'INFER_INPUT_INVALID',
        `input ${t.name} declares ${size} binary bytes but only ${raw.length - off} remain in the body`,
        { path: `inputs[${i}].parameters.binary_data_size` },
      );
    const b = raw.subarray(off, off + size);
    off += size;
    const bad = checkTensorBytes(t.datatype, t.shape, b);
    if (bad) throw new EwError('INFER_INPUT_INVALID', `input ${t.name}: ${bad}`, { path: `inputs[${i}].parameters.binary_data_size` });
    heads.push({ name: t.name, datatype: t.datatype, shape: t.shape, bytes: size });
    bytes.push(b);
  });
  if (off !== raw.length)
    throw new EwError('INFER_INPUT_INVALID', `the body has ${raw.length - off} bytes after the last binary input`, { path: 'inputs' });
  return { body: body as Parsed['body'], heads, bytes, binaryOut: wantsBinary(body) };
}

const REGION = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** The routing headers, checked: a bad one is a 400 naming the header. */
export function routeOptions(
  req: FastifyRequest,
  clock: Clock,
  defaultTimeoutMs: number,
  maxTimeoutMs: number,
): RouteOptions & { explain: boolean } {
  const h = req.headers;
  const one = (name: string): string | undefined => {
    const v = h[name];
    return Array.isArray(v) ? v[0] : v;
  };
  let regions: string[] | undefined;
  const rh = one('x-edgeweave-regions');
  if (rh !== undefined) {
    regions = rh
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    const bad = regions.find((r) => !REGION.test(r));
    if (regions.length === 0 || bad !== undefined)
      throw new EwError(
        'VALIDATION_FAILED',
        `header X-Edgeweave-Regions must be a comma-separated list of region names${bad ? `; "${bad}" is not one` : ''}`,
        { path: 'headers.x-edgeweave-regions' },
      );
  }
  const dataClass = one('x-edgeweave-data-class')?.trim();
  if (dataClass !== undefined && !/^[a-z0-9][a-z0-9_-]{0,62}$/.test(dataClass))
    throw new EwError(
      'VALIDATION_FAILED',
      `header X-Edgeweave-Data-Class "${dataClass}" is not a data class name (lower-case letters, digits, "_", "-")`,
      { path: 'headers.x-edgeweave-data-class' },
    );
  const t = one('x-edgeweave-timeout-ms');
  let timeoutMs = defaultTimeoutMs;
  if (t !== undefined) {
    timeoutMs = Number(t);
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > maxTimeoutMs)
      throw new EwError('VALIDATION_FAILED', `header X-Edgeweave-Timeout-Ms must be an integer from 1 to ${maxTimeoutMs}`, {
        path: 'headers.x-edgeweave-timeout-ms',
      });
  }
  const q = req.query as Record<string, unknown> | undefined;
  const explain = ['1', 'true'].includes(String(q?.explain ?? one('x-edgeweave-explain') ?? ''));
  return { regions, dataClass, preferSite: one('x-edgeweave-site')?.trim() || undefined, deadline: clock.now() + timeoutMs, explain };
}

/** Headers every routed answer carries: who answered, and a one-line route. */
export function routeHeaders(reply: FastifyReply, trace: RouteTrace | undefined, answered?: { target: string; model: string }): void {
  if (answered) {
    void reply.header('x-edgeweave-site', answered.target);
    void reply.header('x-edgeweave-model', answered.model);
  }
  if (trace) void reply.header('x-edgeweave-route', trace.attempts.map((a) => `${targetName(a.target)}=${a.outcome}`).join(',') || 'none');
}

const retryAfter = (code: ErrorCode): number | undefined => (code === 'NO_SITE_AVAILABLE' || code === 'QUEUE_FULL' ? 1 : undefined);

/** The per-key limits as an onRequest hook; the slot is freed when the response ends or the client goes. */
export function limitHook(limiter: KeyLimiter) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const a = limiter.acquire(req.apiKeyId || 'anonymous');
    if (!a.ok) {
      void reply.header('retry-after', String(a.retryAfterS));
      throw new EwError(a.code, a.message);
    }
    reply.raw.once('close', a.release);
  };
}

export function registerInference(app: FastifyInstance, d: InferenceDeps): void {
  const defaultTimeoutMs = d.defaultTimeoutMs ?? 30_000;
  const maxTimeoutMs = d.maxTimeoutMs ?? 600_000;

  // Encapsulated: these routes answer errors in OIP's shape, the rest of the API keeps its own.
  void app.register(async (oip) => {
    oip.setErrorHandler((err: unknown, req, reply) => {
      let code: ErrorCode;
      let message: string;
      let path: string | undefined;
      if (err instanceof EwError) {
        ({ code, message, path } = err);
      } else if (hasZodFastifySchemaValidationErrors(err)) {
        const first = err.validation[0]!;
        path = pointerToPath(first.instancePath, err.validationContext) || undefined;
        code = 'VALIDATION_FAILED';
        message = `${path ?? err.validationContext ?? 'request'}: ${first.message}`;
      } else {
        const e = err as { code?: string; statusCode?: number; message?: string };
        if (
          e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
          e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' ||
          (e.statusCode === 400 && /JSON/.test(e.message ?? ''))
        ) {
          code = 'INVALID_JSON';
          message = `the request body is not valid JSON: ${e.message}`;
        } else if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
          code = 'PAYLOAD_TOO_LARGE';
          message = 'the request body is too large';
        } else if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
          code = 'UNSUPPORTED_MEDIA_TYPE';
          message = 'send the body as application/json';
        } else {
          req.log.error({ err }, 'unhandled error');
          code = 'INTERNAL';
          message = `internal error (request id ${req.id})`;
        }
      }
      const ra = retryAfter(code);
      if (ra !== undefined && !reply.hasHeader('retry-after')) void reply.header('retry-after', String(ra));
      routeHeaders(reply, (err as { trace?: RouteTrace }).trace);
      void reply.status(ERROR_CODES[code].status).send({ error: message, code, ...(path ? { path } : {}) });
    });
    // Binary requests (Triton's binary tensor extension) arrive whole, up to the frame bound.
    oip.removeContentTypeParser('application/octet-stream');
    oip.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: MAX_FRAME_BYTES }, (_req, body, done) =>
      done(null, body),
    );
    const r = oip.withTypeProvider<ZodTypeProvider>();
    const publicRoute = { config: { public: true }, schema: { hide: true } };
    r.get('/v2/health/live', publicRoute, async () => ({ live: true }));
    r.get('/v2/health/ready', publicRoute, async () => ({ ready: true }));
    r.get('/v2', { schema: { hide: true } }, async () => ({
      name: 'edgeweave-cloud',
      version: VERSION,
      extensions: ['edgeweave_routing'],
    }));

    r.get('/v2/models', { schema: { hide: true } }, async (req) => {
      const eps = await d.router.o.catalog.endpointsOf(req.tenantId);
      const out = [];
      for (const ep of eps.values())
        out.push({
          name: ep.name,
          versions: ep.versions.map((v) => v.version),
          platform: ep.format === 'onnx' ? 'onnxruntime_onnx' : ep.format,
          kind: ep.kind,
          ready: await readyAnywhere(req.tenantId, ep),
        });
      return { models: out };
    });

    const readyAnywhere = async (tenantId: string, ep: EndpointInfo, version?: string): Promise<boolean> => {
      const versions = version ? ep.versions.filter((v) => v.version === version) : ep.versions;
      const models = versions.map((v) => ({ app: ep.app, name: ep.model, version: v.version }));
      if (models.length === 0) return false;
      const cloudOk = !!d.cloudRuntime && ep.fallback && d.cloudRuntime.canServe(tenantId, versions[0]!.manifest, ep.model);
      // Readiness ignores the request-specific residency constraints (a request may narrow them).
      const snap = await d.router.snapshot(tenantId, ep.name, models, cloudOk);
      return place({ endpoint: ep.name, models, cloudFallback: ep.fallback, residency: { ...ep.residency, classes: undefined } }, snap).ok;
    };

    const Params = z.object({ name: z.string().min(1).max(256), version: z.string().max(64).optional() });
    const Query = z.object({ explain: z.string().optional() }).passthrough();
    for (const base of ['/v2/models/:name', '/v2/models/:name/versions/:version']) {
      r.get(base, { schema: { hide: true, params: Params } }, async (req, reply) => {
        const ep = await d.router.endpoint(req.tenantId, req.params.name, req.params.version);
        return metadata(req, reply, ep, req.params.version);
      });
      r.get(`${base}/ready`, { schema: { hide: true, params: Params } }, async (req, reply) => {
        const ep = await d.router.endpoint(req.tenantId, req.params.name, req.params.version);
        const ready = await readyAnywhere(req.tenantId, ep, req.params.version);
        void reply.status(ready ? 200 : 503);
        return { name: ep.name, ready };
      });
      r.post(
        `${base}/infer`,
        { schema: { hide: true, params: Params, querystring: Query }, onRequest: limitHook(d.limiter) },
        async (req, reply) => {
          const ep = await d.router.endpoint(req.tenantId, req.params.name, req.params.version);
          if (ep.kind !== 'tensor')
            throw new EwError(
              'MODEL_NOT_FOUND',
              `endpoint ${ep.name} is a language-model endpoint: use POST /v1/chat/completions with "model": "${ep.name}"`,
              { path: 'model' },
            );
          return infer(req, reply, ep, req.params.version, parseInfer(req));
        },
      );
    }

    const metaCache = new Map<string, { at: number; value: unknown }>();
    const metadata = async (req: FastifyRequest, reply: FastifyReply, ep: EndpointInfo, version?: string): Promise<unknown> => {
      const ck = `${req.tenantId}|${ep.name}|${version ?? ''}`;
      const hit = metaCache.get(ck);
      if (hit && d.clock.now() - hit.at < 60_000) return hit.value;
      const opts = routeOptions(req, d.clock, defaultTimeoutMs, maxTimeoutMs);
      const ctx: RouteContext = { tenantId: req.tenantId, keyId: req.apiKeyId, requestId: String(req.id), protocol: 'oip' };
      const versions = version ? ep.versions.filter((v) => v.version === version) : ep.versions;
      const models = versions.map((v) => ({ app: ep.app, name: ep.model, version: v.version }));
      const manifestFor = (v: string) => (ep.versions.find((x) => x.version === v) ?? ep.versions[0]!).manifest;
      // Metadata carries no request data, so no data class applies; the endpoint's regions and the
      // caller's X-Edgeweave-Regions still say where the cloud may ask.
      const routed = await d.router.route(
        ctx,
        { ...ep, residency: { ...ep.residency, classes: undefined } },
        { ...opts, dataClass: undefined },
        models,
        manifestFor,
        async (target, timeoutMs) => {
          if (target.kind === 'cloud') {
            const m = await d.cloudRuntime!.metadata(req.tenantId, manifestFor(versions[0]!.version), ep.model);
            return { ...m, name: ep.name };
          }
          const f = await d.forwarder.call(
            target.siteId,
            { v: WIRE_VERSION, type: 'metadata', endpoint: ep.name, ...(version ? { version } : {}), timeoutMs },
            [],
            timeoutMs,
          );
          const h = siteAnswer(f.head, target.siteId);
          if (h.type !== 'metadata-result')
            throw new EwError('SITE_ANSWER_INVALID', `site ${target.siteId} answered a metadata request with "${h.type}"`);
          return h.metadata;
        },
      );
      routeHeaders(reply, routed.trace, { target: targetName(routed.target), model: ep.model });
      const value = { ...(routed.value as object), versions: versions.map((v) => v.version) };
      metaCache.set(ck, { at: d.clock.now(), value });
      if (metaCache.size > 10_000) metaCache.delete(metaCache.keys().next().value as string);
      return value;
    };

    const infer = async (
      req: FastifyRequest,
      reply: FastifyReply,
      ep: EndpointInfo,
      version: string | undefined,
      parsed: Parsed,
    ): Promise<unknown> => {
      const { body } = parsed;
      const opts = routeOptions(req, d.clock, defaultTimeoutMs, maxTimeoutMs);
      const abort = new AbortController();
      reply.raw.once('close', () => {
        if (!reply.raw.writableFinished) abort.abort();
      });
      opts.signal = abort.signal;
      const ctx: RouteContext = { tenantId: req.tenantId, keyId: req.apiKeyId, requestId: String(req.id), protocol: 'oip' };
      const packed = { heads: parsed.heads, body: parsed.bytes };
      // JSON tensors for the cloud-side runtime, decoded once and only if it is used.
      let jsonInputs: WireTensor[] | undefined;
      const inputsAsJson = () => (jsonInputs ??= unpackTensors(packed.heads, Buffer.concat(packed.body), 'request'));
      const versions = version ? ep.versions.filter((v) => v.version === version) : ep.versions;
      const manifestFor = (v: string) => (ep.versions.find((x) => x.version === v) ?? ep.versions[0]!).manifest;
      const t0 = d.clock.now();

      const stage = (modelName: string, siteEndpoint: string, fallback: boolean) =>
        d.router.route(
          ctx,
          ep,
          opts,
          versions.map((v) => ({ app: ep.app, name: modelName, version: v.version })),
          manifestFor,
          async (target, timeoutMs) => {
            if (target.kind === 'cloud') {
              const out = await d.cloudRuntime!.infer(req.tenantId, manifestFor(versions[0]!.version), modelName, {
                id: body.id,
                inputs: inputsAsJson(),
                outputs: body.outputs,
              });
              const p = packTensors(out.outputs as WireTensor[], 'outputs');
              return { model_version: out.model_version, heads: p.heads, raw: Buffer.concat(p.body), model: modelName };
            }
            const f = await d.forwarder.call(
              target.siteId,
              {
                v: WIRE_VERSION,
                type: 'infer',
                endpoint: siteEndpoint,
                ...(version ? { version } : {}),
                timeoutMs,
                ...(body.id !== undefined ? { requestId: body.id } : {}),
                inputs: packed.heads,
                ...(body.outputs ? { outputs: body.outputs.map((o) => o.name) } : {}),
              },
              packed.body,
              timeoutMs,
              abort.signal,
            );
            const h = siteAnswer(f.head, target.siteId);
            if (h.type !== 'result')
              throw new EwError('SITE_ANSWER_INVALID', `site ${target.siteId} answered an inference request with "${h.type}"`);
            // Checked against the wire contract now (a bad answer moves on to the next site), decoded only if JSON is wanted.
            let off = 0;
            for (const o of h.outputs) {
              const bad = checkTensorBytes(o.datatype, o.shape, f.body.subarray(off, off + o.bytes));
              off += o.bytes;
              if (bad || off > f.body.length)
                throw new EwError(
                  'SITE_ANSWER_INVALID',
                  `answer from site ${target.siteId}: output ${o.name}: ${bad ?? 'runs past the frame'}`,
                );
            }
            if (off !== f.body.length)
              throw new EwError(
                'SITE_ANSWER_INVALID',
                `answer from site ${target.siteId}: ${f.body.length - off} bytes after the last output`,
              );
            return { model_version: h.model_version, heads: h.outputs, raw: f.body, model: modelName };
          },
          fallback,
        );

      const first = await stage(ep.model, ep.name, ep.fallback);
      let final = first;
      let cascade: (Record<string, unknown> & { escalated?: boolean; blocked?: unknown }) | undefined;
      if (ep.cascade) {
        d.router.m.cascaded.inc({ endpoint: ep.name });
        let verdict: ReturnType<typeof checkTensorCascade>;
        try {
          verdict = checkTensorCascade(ep.cascade.when, unpackTensors(first.value.heads, first.value.raw, 'answer'));
        } catch (e) {
          verdict = { escalate: false, why: (e as Error).message };
        }
        cascade = { escalated: verdict.escalate, why: verdict.why, first: { target: targetName(first.target), model: ep.model } } as Record<
          string,
          unknown
        >;
        if (verdict.escalate) {
          const c0 = d.clock.now();
          d.router.m.escalations.inc({ endpoint: ep.name });
          try {
            final = await stage(ep.cascade.to, `${ep.app}/${ep.cascade.to}`, true);
            d.router.m.cascadeAdded.observe({ endpoint: ep.name }, (d.clock.now() - c0) / 1000);
          } catch (e) {
            // The edge's answer stands when the larger model may not (residency) or cannot answer;
            // the response says so. Only the client going away ends the request.
            if (!isEwError(e) || e.code === 'CLIENT_CLOSED') throw e;
            cascade.escalated = false;
            cascade.blocked = { code: e.code, message: e.message };
          }
        }
      }
      routeHeaders(reply, final.trace, { target: targetName(final.target), model: final.value.model });
      const wanted = body.outputs?.map((o) => o.name);
      // Outputs as JSON, or as raw bytes after the JSON part where the client asked (Triton's binary extension).
      const blobs: Buffer[] = [];
      const outputs: unknown[] = [];
      let off = 0;
      for (const h of final.value.heads) {
        const b = final.value.raw.subarray(off, off + h.bytes);
        off += h.bytes;
        if (wanted && !wanted.includes(h.name)) continue;
        if (parsed.binaryOut(h.name)) {
          blobs.push(b);
          outputs.push({ name: h.name, datatype: h.datatype, shape: h.shape, parameters: { binary_data_size: h.bytes } });
        } else {
          outputs.push(unpackTensors([h], b, 'answer')[0]);
        }
      }
      const result = {
        model_name: ep.name,
        model_version: final.value.model_version,
        ...(body.id !== undefined ? { id: body.id } : {}),
        parameters: {
          edgeweave: {
            site: targetName(final.target),
            region: final.target.region,
            model: final.value.model,
            ms: d.clock.now() - t0,
            attempts: final.trace.attempts.length + (final === first ? 0 : first.trace.attempts.length),
            ...(cascade ? { cascade } : {}),
            ...(opts.explain
              ? {
                  explain:
                    final === first
                      ? InferenceRouter.explain(first.trace)
                      : { first: InferenceRouter.explain(first.trace), escalation: InferenceRouter.explain(final.trace) },
                }
              : {}),
          },
        },
        outputs,
      };
      if (blobs.length === 0) return result;
      const head = Buffer.from(JSON.stringify(result));
      void reply.header('inference-header-content-length', String(head.length)).type('application/octet-stream');
      return Buffer.concat([head, ...blobs]);
    };
  });

  // The routing audit and a dry run of the policy, in the control-plane API's own shape.
  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get(
    '/api/v1/router/decisions',
    {
      schema: {
        tags: ['inference'],
        summary: 'Recent routing decisions of the tenant (the audit: constraint, attempts, rejections), newest first',
        querystring: z.object({ endpoint: z.string().optional(), limit: z.coerce.number().int().min(1).max(10_000).default(100) }),
      },
    },
    async (req) => ({ items: d.audit.list(req.tenantId, req.query) }),
  );
  r.get(
    '/api/v1/router/explain/:endpoint',
    {
      schema: {
        tags: ['inference'],
        summary: 'Where a request with these routing headers would go now, and why (nothing is sent)',
        params: z.object({ endpoint: z.string() }),
      },
    },
    async (req) => {
      const ep = await d.router.endpoint(req.tenantId, req.params.endpoint);
      const opts = routeOptions(req, d.clock, defaultTimeoutMs, maxTimeoutMs);
      const models = ep.versions.map((v) => ({ app: ep.app, name: ep.model, version: v.version }));
      const cloudOk = !!d.cloudRuntime && ep.fallback && d.cloudRuntime.canServe(req.tenantId, ep.versions[0]!.manifest, ep.model);
      const dec = place(
        {
          endpoint: ep.name,
          models,
          regions: opts.regions,
          dataClass: opts.dataClass,
          preferSite: opts.preferSite,
          wantsAccelerator: ep.wantsAccelerator,
          cloudFallback: ep.fallback,
          residency: ep.residency,
        },
        await d.router.snapshot(req.tenantId, ep.name, models, cloudOk),
      );
      return {
        ...InferenceRouter.explain({
          endpoint: ep.name,
          constraint: dec.constraint,
          choices: dec.ok ? dec.choices : [],
          rejected: dec.rejected,
          attempts: [],
        }),
        ok: dec.ok,
        ...(dec.ok ? {} : { code: dec.code, message: dec.message }),
      };
    },
  );
}

/** A site's error frame becomes our error (its code kept when we know it); anything else passes through. */
export function siteAnswer<H extends { type: string }>(head: H, siteId: string): H {
  const e = ErrorFrame.safeParse(head);
  if (e.success) {
    const code = (e.data.code in ERROR_CODES ? e.data.code : 'INTERNAL') as ErrorCode;
    throw new EwError(code, `site ${siteId}: ${e.data.message}`, { path: e.data.path });
  }
  return head;
}
