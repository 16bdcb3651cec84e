import { z } from 'zod';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import type { AuditEntry, Store } from '../store/store.ts';
import { EwError } from '../../contracts/errors.ts';
import { need } from './access.ts';
import { AuditPage } from './schemas.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who a public call turned out to be (an enrollment: the new site and its tenant). */
    auditActor?: { tenantId?: string; siteId?: string };
  }
}

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Whether a call goes into the audit log: every call that may change something (any method but
 * GET, HEAD, OPTIONS), answered or refused, on any route, present or future — except inference
 * (`/v2/…` Open Inference Protocol, `/v1/…` OpenAI-compatible), which POSTs to read.
 */
export function audited(req: FastifyRequest): boolean {
  if (SAFE.has(req.method)) return false;
  const url = req.routeOptions.url ?? req.url;
  return !(url.startsWith('/v1/') || url.startsWith('/v2/') || url === '/v2');
}

/**
 * The audit log, as one hook on every route (so a route added or moved anywhere is covered):
 * who (key id and role, or site, and tenant), what (method and route, path), when, from which
 * address, and the outcome (status and error code). Bodies and headers are never recorded, so
 * no secret (a key, a token, a site password) can reach it.
 *
 * It is an `onSend` hook, not `onResponse`: the entry is stored before the answer leaves, so a
 * client that got its answer finds the change in the log (an `onResponse` write raced the
 * client's next request). A write that fails is logged loudly and never changes the answer.
 */
export function installAudit(app: FastifyInstance, store: Store, clock: Clock, log: Logger): void {
  app.decorateRequest('auditActor', undefined);
  app.addHook('onSend', async (req, reply, payload) => {
    if (!audited(req)) return payload;
    const status = reply.statusCode;
    let code: string | null = null;
    if (typeof payload === 'string') {
      try {
        if (status >= 400) {
          const c = (JSON.parse(payload) as { code?: unknown }).code;
          if (typeof c === 'string') code = c.slice(0, 64);
        } else if (req.routeOptions.url === '/api/v1/enroll') {
          // The enrollment is public; its answer names the tenant that now has a new site (only
          // the two ids are read from it).
          const b = JSON.parse(payload) as { tenantId?: unknown; siteId?: unknown };
          if (typeof b.tenantId === 'string' && typeof b.siteId === 'string') req.auditActor = { tenantId: b.tenantId, siteId: b.siteId };
        }
      } catch {
        /* not JSON: no code to read */
      }
    }
    const entry: AuditEntry = {
      at: clock.now(),
      tenantId: req.tenantId || req.auditActor?.tenantId || null,
      keyId: req.apiKeyId || null,
      role: req.role ?? null,
      siteId: req.siteId ?? req.auditActor?.siteId ?? null,
      action: `${req.method} ${req.routeOptions.url ?? '(no such route)'}`,
      target: req.url.split('?')[0]!,
      status,
      outcome: status < 400 ? 'ok' : status === 401 || status === 403 ? 'denied' : 'failed',
      code,
      address: req.ip,
      requestId: String(req.id),
    };
    try {
      await store.appendAudit(entry);
    } catch (e) {
      log.error(
        { err: e, action: entry.action, tenantId: entry.tenantId, status },
        'AUDIT WRITE FAILED: a call was answered but is missing from the audit log',
      );
    }
    return payload;
  });
}

/** `GET /api/v1/audit`: the tenant's audit log for its admins; a platform admin may name any tenant. */
export async function auditRoutes(app: FastifyInstance, o: { store: Store }): Promise<void> {
  const ErrorSchema = z.object({ code: z.string(), message: z.string(), path: z.string().optional() });
  app.withTypeProvider<ZodTypeProvider>().get(
    '/api/v1/audit',
    {
      schema: {
        tags: ['audit'],
        summary: 'The audit log: every change made through the API, and every refused attempt, oldest first; page or follow with `after`',
        querystring: z.object({
          after: z.coerce.number().int().min(0).optional().describe('the `next` cursor of the previous page'),
          since: z.coerce.number().int().optional().describe('ms since epoch, inclusive'),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
          tenant: z.string().max(64).optional().describe('platform admins: this tenant\'s log, or "*" for every entry'),
        }),
        response: { 200: AuditPage, 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema },
      },
    },
    async (req) => {
      need(req, 'audit:read');
      let tenantId: string | undefined = req.tenantId;
      if (req.query.tenant !== undefined && req.query.tenant !== req.tenantId) {
        if (req.role !== 'platform-admin')
          throw new EwError(
            'PERMISSION_DENIED',
            `this API key (role ${req.role}) reads its own tenant's audit log only; the tenant parameter needs the permission tenants:read`,
            { path: 'tenant' },
          );
        tenantId = req.query.tenant === '*' ? undefined : req.query.tenant;
      }
      const items = await o.store.queryAudit({ tenantId, afterSeq: req.query.after, since: req.query.since, limit: req.query.limit });
      return {
        items: items.map((e) => ({ ...e, seq: e.seq!, siteId: e.siteId ?? null })),
        next: items.length > 0 ? items[items.length - 1]!.seq! : (req.query.after ?? null),
      };
    },
  );
}
