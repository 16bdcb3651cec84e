import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Store } from '../store/store.ts';
import type { Clock } from '../../lib/clock.ts';
import { systemClock } from '../../lib/clock.ts';
import { EwError } from '../../contracts/errors.ts';

/**
 * Idempotency keys on mutating API calls (`Idempotency-Key: <uuid>` on POST, PUT, PATCH,
 * DELETE). The first request with a key claims it in the store and its answer is recorded
 * there; the same request sent again — to this replica or any other, say after the first one
 * died or the client lost the answer — gets that answer back (with `Idempotent-Replayed: true`)
 * and changes nothing. The key is the client's: scoped to its API key, kept 24 h.
 *
 *  - same key, different request (method, URL or body): IDEMPOTENCY_KEY_REUSED;
 *  - same key while the first is still running: IDEMPOTENCY_KEY_IN_PROGRESS, Retry-After 1;
 *  - a claim whose replica died mid-request is taken over after `staleMs` (30 s): the request
 *    runs again — what the dead replica had half done is then done again, so routes whose
 *    effect is not itself idempotent keep that window (docs/operators.md);
 *  - a 5xx answer is not recorded: the claim is freed and a retry runs the request again;
 *  - without the header nothing changes (older clients).
 *
 * Registered once on the root instance (skip-override: its hooks reach every route).
 */
export interface IdempotencyOptions {
  store: Store;
  clock?: Clock;
  /** A claim older than this with no answer is taken over (ms). Default 30,000. */
  staleMs?: number;
  /** How long a key is kept (ms). Default 24 h. */
  ttlMs?: number;
  /** Largest answer recorded (bytes); a larger one is recorded without its body. Default 256 KiB. */
  maxBodyBytes?: number;
}

const KEY_RE = /^[\x21-\x7e]{1,200}$/;
const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

declare module 'fastify' {
  interface FastifyRequest {
    /** Set when this request holds an idempotency claim that its answer completes. */
    idempotency?: { scope: string; key: string };
  }
}

function idempotency(app: FastifyInstance, o: IdempotencyOptions, done: (err?: Error) => void): void {
  const clock = o.clock ?? systemClock;
  const staleMs = o.staleMs ?? 30_000;
  const ttlMs = o.ttlMs ?? 24 * 3600_000;
  const maxBody = o.maxBodyBytes ?? 256 * 1024;
  let claims = 0;
  app.decorateRequest('idempotency', undefined);

  app.addHook('preHandler', async (req: FastifyRequest, reply: FastifyReply) => {
    const header = req.headers['idempotency-key'];
    if (header === undefined || !MUTATING.has(req.method)) return;
    const key = Array.isArray(header) ? header[0]! : header;
    if (!KEY_RE.test(key))
      throw new EwError('VALIDATION_FAILED', 'the Idempotency-Key header must be 1–200 visible ASCII characters (a UUID is best)', {
        path: 'headers.idempotency-key',
      });
    // Streamed bodies (model uploads) have their own resumable protocol; their bytes are not hashed.
    if (req.body !== undefined && req.body !== null && typeof (req.body as { pipe?: unknown }).pipe === 'function') return;
    const principal = req.siteId ? `site:${req.siteId}` : `${req.tenantId}/${req.apiKeyId}`;
    if (principal === '/') return; // public routes (enrollment): the join token is the idempotency
    const scope = principal;
    const fingerprint = createHash('sha256')
      .update(`${req.method} ${req.url}\n`)
      .update(req.body === undefined ? '' : JSON.stringify(req.body))
      .digest('hex');
    const now = clock.now();
    if (++claims % 500 === 0)
      void o.store
        .pruneIdempotencyKeys(now - ttlMs)
        .catch((e: Error) => req.log.warn({ err: e.message }, 'pruning idempotency keys failed'));
    const r = await o.store.claimIdempotencyKey({ scope, key, fingerprint, holder: req.id, now, staleMs });
    if (r.claimed) {
      req.idempotency = { scope, key };
      return;
    }
    const rec = r.record;
    if (rec.fingerprint !== fingerprint)
      throw new EwError(
        'IDEMPOTENCY_KEY_REUSED',
        `Idempotency-Key "${key}" was first used for another request (method, path or body differ); use a new key for a new request`,
        { path: 'headers.idempotency-key' },
      );
    if (rec.status === null) {
      void reply.header('retry-after', '1');
      throw new EwError(
        'IDEMPOTENCY_KEY_IN_PROGRESS',
        `a request with Idempotency-Key "${key}" is still being processed; retry the same request after 1 s`,
        { path: 'headers.idempotency-key' },
      );
    }
    void reply.code(rec.status).header('idempotent-replayed', 'true');
    if (rec.body !== null) void reply.header('content-type', 'application/json; charset=utf-8');
    return reply.send(rec.body ?? '');
  });

  app.addHook('onSend', async (req, reply, payload) => {
    const claim = req.idempotency;
    if (!claim) return payload;
    req.idempotency = undefined;
    try {
      if (reply.statusCode >= 500) {
        await o.store.releaseIdempotencyKey(claim.scope, claim.key, req.id);
      } else {
        const body = typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : null;
        await o.store.completeIdempotencyKey(claim.scope, claim.key, req.id, {
          status: reply.statusCode,
          body: body !== null && Buffer.byteLength(body) <= maxBody ? body : null,
          at: clock.now(),
        });
      }
    } catch (e) {
      // The request itself is done; a retry finds the claim in progress until it goes stale.
      req.log.warn({ err: (e as Error).message }, 'recording the idempotent answer failed');
    }
    return payload;
  });
  done();
}
// Not encapsulated: the hooks apply to the routes registered beside it (what fastify-plugin does).
(idempotency as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;

export const idempotencyPlugin = idempotency;
