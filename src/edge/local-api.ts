import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Counter, Registry } from 'prom-client';
import { kvGet, type EdgeDb } from './db.ts';
import type { Outbox } from './outbox.ts';
import type { CloudLink, LinkState } from './link.ts';
import type { AppSupervisor } from './apps.ts';
import type { DeadLetters, StreamRouter } from './record-router.ts';
import type { EgressAudit } from './sinks.ts';
import type { RuleHost } from './rules.ts';
import type { Intake } from './journal.ts';
import type { SourceHost } from './sources/host.ts';
import type { WriteAudit } from './writes.ts';
import type { ModelHost } from '../inference/host.ts';
import { registerOip } from '../inference/oip.ts';
import { registerOpenAi } from '../inference/openai.ts';
import type { LlmService } from '../inference/llm/service.ts';
import type { SiteStatusBody } from '../contracts/messages.ts';
import { isValidStreamName, topics } from '../contracts/topics.ts';
import type { EgressGrant } from '../contracts/manifest.ts';
import { checkGrantedFields, localUplinkGrant } from './local-uplink.ts';
import { registerDeviceRoutes, type DeviceAdmin } from './device-api.ts';
import { installHttpMetrics } from '../lib/metrics.ts';
import { EwError } from '../contracts/errors.ts';
import type { Logger } from '../lib/logger.ts';
import { verifySecret } from '../lib/secrets.ts';
import { bearer, hardenedServerOptions, installErrorHandling, type HttpTimeouts } from '../lib/http.ts';

export interface LocalApiDeps {
  timeouts?: Partial<HttpTimeouts>;
  internalToken: string;
  log: Logger;
  registry: Registry;
  httpErrors: Counter<'code'>;
  db: EdgeDb;
  outbox: Outbox;
  siteId: string;
  statusBody: () => SiteStatusBody;
  linkState: () => LinkState;
  linkHealth: () => ReturnType<CloudLink['health']>;
  intake: Intake;
  router: StreamRouter;
  dead: DeadLetters;
  audit: EgressAudit;
  rules: RuleHost;
  models: ModelHost;
  sources: SourceHost;
  writeAudit: WriteAudit;
  supervisor: AppSupervisor;
  uplinkAllow: readonly EgressGrant[];
  deviceAdmin: DeviceAdmin;
  llm: LlmService;
  /** The durable push path (see startEdge): records journaled before the answer. */
  ingest: (
    app: string,
    stream: string,
    records: readonly unknown[],
  ) => Promise<{ accepted: number; rejected: { index: number; reason: string; detail?: string }[] }>;
  /** Outbox rows the rules owe for records already acknowledged. */
  reserved: () => number;
}

/**
 * The site's local HTTP API (bound to loopback by default): health, metrics, status, and the
 * uplink endpoint through which local programs send results to the cloud via the outbox.
 */
export async function createLocalApi(d: LocalApiDeps): Promise<FastifyInstance> {
  const { httpTimeouts: _t, ...hardened } = hardenedServerOptions(d.timeouts);
  const app = Fastify({
    ...hardened,
    loggerInstance: d.log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 16 * 1024 * 1024,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app, d.httpErrors, 16 * 1024 * 1024);
  installHttpMetrics(app, d.registry, 'ew_edge');
  app.addHook('onRequest', async (req) => {
    // Liveness and readiness probes answer without a key, as load balancers expect.
    if (req.url === '/healthz' || req.url === '/v2/health/live' || req.url === '/v2/health/ready') return;
    if (req.headers['x-edgeweave-internal'] === d.internalToken) return; // routed from the cloud, in process
    const key = bearer(req.headers.authorization, "the site's local API key (ewl_…)");
    if (!verifySecret(key, kvGet(d.db, 'api.keyHash') ?? '')) throw new EwError('UNAUTHENTICATED', 'the local API key is not recognised');
  });
  const r = app.withTypeProvider<ZodTypeProvider>();
  // The site is autonomous: it is healthy (200) with its cloud link down; the body says how the
  // link is (a silent partition shows as `disconnected` within about 1.5× the keepalive) and
  // whether device acknowledgements are being withheld.
  r.get('/healthz', async () => {
    const h = d.linkHealth();
    return {
      ok: true,
      siteId: d.siteId,
      link: h.state,
      cloud: { since: h.since, lastContactAt: h.lastContactAt, keepaliveS: h.keepaliveS, reconnectFailures: h.reconnectFailures },
      ...(d.intake.withholding ? { withholding: d.intake.withholding } : {}),
    };
  });
  r.get('/metrics', async (_req, reply) => {
    void reply.header('content-type', d.registry.contentType);
    return d.registry.metrics();
  });
  r.get('/api/v1/status', async () => ({ siteId: d.siteId, link: d.linkState(), ...d.statusBody() }));
  r.post(
    '/api/v1/uplink/:stream',
    {
      schema: {
        params: z.object({ stream: z.string() }),
        querystring: z.object({ app: z.string().optional() }),
        body: z.object({ records: z.array(z.unknown()).min(1).max(100_000) }),
      },
    },
    async (req, reply) => {
      const { stream } = req.params;
      if (!isValidStreamName(stream))
        throw new EwError('VALIDATION_FAILED', `stream name "${stream}" is not valid: use letters, digits, "_", "-", "." (at most 128)`, {
          path: 'stream',
        });
      // The same egress policy and audit as a rule's uplink sink (see local-uplink.ts).
      const grant = localUplinkGrant(stream, d.supervisor.apps(), d.uplinkAllow, req.query.app);
      checkGrantedFields(req.body.records, grant, stream);
      // Under reject-new the room the rules were promised is not given away.
      if (d.outbox.policy === 'reject-new' && req.body.records.length > d.outbox.room - d.reserved()) {
        throw new EwError(
          'OUTBOX_FULL',
          `the outbox has room for ${Math.max(0, d.outbox.room - d.reserved())} more messages (its policy is reject-new) and ${req.body.records.length} were sent; wait for the cloud link, or raise --outbox-max`,
        );
      }
      const ids = d.outbox.enqueue(
        topics.up(d.siteId, stream),
        stream,
        req.body.records,
        grant.app === '(operator)' ? undefined : { app: grant.app, rule: 'local-api' },
      );
      d.audit.record(grant.app, 'local-api', stream, 'cloud', ids.length, Buffer.byteLength(JSON.stringify(req.body.records)));
      void reply.status(202);
      return { accepted: ids.length, ids, pending: d.outbox.pending };
    },
  );
  r.get('/api/v1/rules', async () => ({ items: d.rules.statuses() }));
  r.get('/api/v1/sources', async () => ({ items: d.sources.statuses() }));
  r.get(
    '/api/v1/writes',
    {
      schema: {
        querystring: z.object({
          app: z.string().optional(),
          result: z.enum(['written', 'dry-run', 'refused', 'failed', 'superseded']).optional(),
          limit: z.coerce.number().int().min(1).max(10_000).default(100),
        }),
      },
    },
    async (req) => ({ items: d.writeAudit.list(req.query) }),
  );
  registerDeviceRoutes(app, d.deviceAdmin);
  registerOip(app, d.models);
  registerOpenAi(app, { host: d.models, llm: d.llm, log: d.log });
  // Images for OCR endpoints arrive as raw PNG/JPEG bodies.
  app.addContentTypeParser(['image/png', 'image/jpeg'], { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  r.post('/api/v1/ocr/:endpoint', { schema: { params: z.object({ endpoint: z.string() }) } }, async (req) => {
    if (!Buffer.isBuffer(req.body))
      throw new EwError('UNSUPPORTED_MEDIA_TYPE', 'send the image as the body with content-type image/png or image/jpeg');
    const out = await d.models.infer(req.params.endpoint, undefined, {
      inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [req.body.toString('base64')] }],
    });
    const get = (n: string) => out.outputs.find((o) => o.name === n)?.data ?? [];
    const text = get('text') as string[];
    const boxes = get('boxes') as number[];
    const scores = get('scores') as number[];
    return { text: text.join('\n'), lines: text.map((t, i) => ({ text: t, score: scores[i], box: boxes.slice(i * 4, i * 4 + 4) })) };
  });
  r.get(
    '/api/v1/dead-letters',
    {
      schema: {
        querystring: z.object({
          app: z.string().optional(),
          stream: z.string().optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
        }),
      },
    },
    async (req) => ({ total: d.dead.total, items: d.dead.list(req.query) }),
  );
  r.get(
    '/api/v1/egress',
    { schema: { querystring: z.object({ limit: z.coerce.number().int().min(1).max(10_000).default(1000) }) } },
    async (req) => ({ items: d.audit.list(req.query.limit) }),
  );
  // The HTTP push source: records into one app's stream, checked like device messages.
  r.post(
    '/api/v1/streams/:app/:stream',
    {
      schema: {
        params: z.object({ app: z.string(), stream: z.string() }),
        body: z.object({ records: z.array(z.unknown()).min(1).max(100_000) }),
      },
    },
    async (req, reply) => {
      // 2xx only once the accepted records are durable in the site's journal.
      const res = await d.ingest(req.params.app, req.params.stream, req.body.records);
      if (res.accepted === 0)
        throw new EwError('VALIDATION_FAILED', `no record was accepted: ${res.rejected[0]?.reason ?? 'none sent'}`, {
          path: `records[${res.rejected[0]?.index ?? 0}]`,
        });
      void reply.status(202);
      return res;
    },
  );
  return app;
}
