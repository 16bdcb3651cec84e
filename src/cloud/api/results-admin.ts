import { Readable } from 'node:stream';
import { z } from 'zod';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { EwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Store, UplinkQuery } from '../store/store.ts';
import { MAX_RETENTION_DAYS } from '../results/retention.ts';
import { RetentionList, RetentionPolicyView } from './schemas.ts';

/** Rows read from the store per page of an export (bounds the export's memory, not its size). */
export const EXPORT_PAGE_ROWS = 1000;

const ErrorSchema = z.object({ code: z.string(), message: z.string(), path: z.string().optional() });
const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema };
/** `*` (the tenant's default) or a stream name as the manifest spells them. */
const StreamParam = z
  .string()
  .regex(/^(\*|[A-Za-z_][A-Za-z0-9_]{0,127})$/, 'a stream name (letters, digits, _) or * for the tenant default');

/**
 * Results at volume: retention policies per tenant and stream, and an export of a time range as
 * JSON lines streamed page by page (the CLI writes Parquet from it).
 */
export function registerResultsAdmin(app: FastifyInstance, d: { store: Store; clock: Clock; defaultRetentionDays?: number }): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const { store } = d;

  r.get(
    '/api/v1/retention',
    {
      schema: {
        tags: ['results'],
        summary: "The tenant's result retention policies (stream `*`: the tenant default) and the cloud-wide default",
        response: { 200: RetentionList, ...errors },
      },
    },
    async (req) => ({
      policies: (await store.listRetention(req.tenantId)).map((p) => ({ stream: p.stream, days: p.days, updatedAt: p.updatedAt })),
      cloudDefaultDays: d.defaultRetentionDays && d.defaultRetentionDays > 0 ? d.defaultRetentionDays : null,
    }),
  );

  r.put(
    '/api/v1/retention/:stream',
    {
      schema: {
        tags: ['results'],
        summary: "Keep the tenant's results of a stream (or `*`: every stream without its own policy) this many days",
        params: z.object({ stream: StreamParam }),
        body: z.object({
          days: z
            .number()
            .int()
            .min(1)
            .max(MAX_RETENTION_DAYS)
            .describe('whole days; results older are deleted at the next maintenance pass'),
        }),
        response: { 200: RetentionPolicyView, ...errors },
      },
    },
    async (req) => {
      const now = d.clock.now();
      await store.setRetention(req.tenantId, req.params.stream, req.body.days, now);
      return { stream: req.params.stream, days: req.body.days, updatedAt: now };
    },
  );

  r.delete(
    '/api/v1/retention/:stream',
    {
      schema: {
        tags: ['results'],
        summary: 'Remove a retention policy (the stream falls back to `*`, then the cloud default, then keep)',
        params: z.object({ stream: StreamParam }),
        response: { 204: z.null(), ...errors },
      },
    },
    async (req, reply) => {
      if (!(await store.setRetention(req.tenantId, req.params.stream, null, d.clock.now()))) {
        throw new EwError('NOT_FOUND', `no retention policy for stream "${req.params.stream}"`, { path: 'stream' });
      }
      return reply.code(204).send(null);
    },
  );

  r.get(
    '/api/v1/results/export',
    {
      schema: {
        tags: ['results'],
        summary:
          "One stream's results in a site-time range as JSON lines, oldest site time first; ends at the results stored when it began",
        querystring: z.object({
          stream: z.string().min(1).max(128),
          site: z.string().optional(),
          app: z.string().optional(),
          rule: z.string().optional(),
          since: z.coerce.number().int().optional().describe('site time, ms since epoch, inclusive'),
          until: z.coerce.number().int().optional().describe('site time, ms since epoch, exclusive'),
        }),
      },
    },
    async (req, reply) => {
      const q = req.query;
      if (q.since !== undefined && q.until !== undefined && q.until <= q.since) {
        throw new EwError('VALIDATION_FAILED', `until (${q.until}) must be after since (${q.since})`, { path: 'until' });
      }
      // Pinned at the start: results stored during the export are not in it, so it always ends.
      const maxSeq = await store.latestUplinkSeq();
      const base: UplinkQuery = {
        siteId: q.site,
        stream: q.stream,
        app: q.app,
        rule: q.rule,
        since: q.since,
        until: q.until,
        limit: EXPORT_PAGE_ROWS,
        maxSeq,
      };
      const tenantId = req.tenantId;
      async function* lines(): AsyncGenerator<string> {
        let after: { at: number; seq: number } | undefined;
        for (;;) {
          const rows = await store.queryUplink(tenantId, { ...base, byTime: { after } });
          if (rows.length === 0) return;
          // One chunk per page: the stream's backpressure paces the store reads.
          yield rows
            .map(
              (x) =>
                `${JSON.stringify({ seq: x.seq, siteId: x.siteId, id: x.msgId, stream: x.stream, app: x.app, rule: x.rule, at: x.at, receivedAt: x.receivedAt, data: x.data })}\n`,
            )
            .join('');
          if (rows.length < EXPORT_PAGE_ROWS) return;
          const last = rows[rows.length - 1]!;
          after = { at: last.at, seq: last.seq };
        }
      }
      return reply.type('application/x-ndjson').header('cache-control', 'no-store').send(Readable.from(lines()));
    },
  );
}
