import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Store } from '../../store/store.ts';
import { errors, ResultsPage, ResultsQuery } from '../schemas.ts';

/** Most bytes of result data in one page of GET /api/v1/results (docs/operators.md). */
export const RESULTS_PAGE_BYTES = 8 * 1024 * 1024;

/** Results (and alerts, a result stream like any other) sent up by sites. */
export const resultRoutes: FastifyPluginAsyncZod<{ store: Pick<Store, 'queryUplink'> }> = async (app, { store }) => {
  app.get(
    '/api/v1/results',
    {
      schema: {
        tags: ['results'],
        summary: 'Results sent up by sites, oldest first; page with `after`',
        querystring: ResultsQuery,
        response: { 200: ResultsPage, ...errors },
      },
    },
    async (req) => {
      const q = req.query;
      const rows = await store.queryUplink(req.tenantId, {
        siteId: q.site,
        stream: q.stream,
        app: q.app,
        rule: q.rule,
        since: q.since,
        until: q.until,
        afterSeq: q.after,
        limit: q.limit,
      });
      // A page is also bounded in bytes (RESULTS_PAGE_BYTES): past it, the page ends early and
      // `next` continues from there, so 5,000 results of 256 KiB never make a 1 GiB answer.
      let bytes = 0;
      let n = 0;
      while (n < rows.length && (n === 0 || bytes + Buffer.byteLength(JSON.stringify(rows[n]!.data ?? null)) <= RESULTS_PAGE_BYTES)) {
        bytes += Buffer.byteLength(JSON.stringify(rows[n]!.data ?? null));
        n++;
      }
      const page = rows.slice(0, n);
      return {
        items: page.map((x) => ({
          seq: x.seq,
          siteId: x.siteId,
          id: x.msgId,
          stream: x.stream,
          app: x.app,
          rule: x.rule,
          at: x.at,
          receivedAt: x.receivedAt,
          data: x.data,
        })),
        next: rows.length === q.limit || n < rows.length ? page[page.length - 1]!.seq : null,
      };
    },
  );
};
