import { z } from 'zod';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { EwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Site, Store } from '../store/store.ts';
import type { SiteStatusBody } from '../../contracts/messages.ts';
import { siteView } from './schemas.ts';

/**
 * The live event stream behind the console: `GET /api/v1/events`, server-sent events
 * (text/event-stream), authenticated with the same `Authorization: Bearer` API key as every other
 * route (the console reads it with fetch streaming, so the key never goes into a URL).
 *
 * Events:
 * - `ready`    {cursor}          the stream is live; re-read lists now, changes follow from here
 * - `results`  {items}           results stored since the last frame; `id:` is the last seq, so a
 *                                client that reconnects with `Last-Event-ID` misses nothing
 * - `sites`    {items}           site views (as GET /api/v1/sites/{id}) that changed
 * - `rollouts` {items}           rollout states that changed
 * - `gap`      {from, to, reason} results were skipped (backlog over the bound); read them with
 *                                GET /api/v1/results?after=from
 * - `error`    {code, message}   the stream ends (the key was revoked)
 *
 * The feed reads the store, not this process's memory: with several cloud replicas behind a
 * load balancer, results that another replica received (shared MQTT subscriptions) still reach
 * a console connected here. One feed per tenant, shared by all its open streams, polls once per
 * `pollMs`; it exists only while someone listens.
 *
 * Bounds: streams per tenant and per replica (EVENT_STREAMS_LIMIT beyond), results per poll
 * (beyond: a `gap` and the cursor jumps to the newest), site and rollout views per frame (the
 * rest follow in the next polls), and bytes buffered per stream (a client that does not read is
 * cut off; it reconnects with Last-Event-ID).
 */

export interface EventStreamLimits {
  /** Open streams per tenant. Default 64. */
  perTenant: number;
  /** Open streams on this replica. Default 1024. */
  total: number;
  /** Bytes queued for one stream before it is cut off as too slow. Default 1 MiB. */
  maxBufferedBytes: number;
  /** How often a tenant's feed reads the store. Default 1000 ms. */
  pollMs: number;
  /** A comment line this often keeps proxies from closing an idle stream. Default 15 000 ms. */
  pingMs: number;
  /** How often the keys of open streams are checked again (a revoked key ends its stream). Default 5000 ms. */
  keyCheckMs: number;
  /** Results sent per poll; a larger backlog is skipped with a `gap` event. Default 1000. */
  maxResultsPerPoll: number;
  /** Results a reconnecting stream may catch up on from its Last-Event-ID. Default 1000. */
  maxCatchUp: number;
  /** Site or rollout views per frame; more wait for the next poll. Default 500. */
  maxViewsPerFrame: number;
}

export const DEFAULT_EVENT_LIMITS: EventStreamLimits = {
  perTenant: 64,
  total: 1024,
  maxBufferedBytes: 1024 * 1024,
  pollMs: 1000,
  pingMs: 15_000,
  keyCheckMs: 5000,
  maxResultsPerPoll: 1000,
  maxCatchUp: 1000,
  maxViewsPerFrame: 500,
};

/** One SSE frame. JSON never holds a raw newline, so the data fits one `data:` line. */
export function sseFrame(event: string, data: unknown, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/**
 * The items whose serialised form differs from what was last sent, at most `max` of them;
 * `sent` is updated only for those returned (the others stay "changed" for the next call) and
 * forgets keys that no longer exist. Pure apart from `sent`.
 */
export function takeChanged<T>(sent: Map<string, string>, items: readonly T[], key: (t: T) => string, max: number): T[] {
  const live = new Set<string>();
  const out: T[] = [];
  for (const it of items) {
    const k = key(it);
    live.add(k);
    if (out.length >= max) continue;
    const json = JSON.stringify(it);
    if (sent.get(k) !== json) {
      sent.set(k, json);
      out.push(it);
    }
  }
  for (const k of [...sent.keys()]) if (!live.has(k)) sent.delete(k);
  return out;
}

/** Where frames go: an HTTP response in production, a plain object in tests. */
export interface EventSink {
  write(chunk: string): void;
  /** Bytes written but not yet taken by the client. */
  buffered(): number;
  end(): void;
  /** Drops the connection and what is queued for it. */
  destroy(): void;
}

interface Subscriber {
  tenantId: string;
  keyId: string;
  sink: EventSink;
  lastEventId?: number;
  closed: boolean;
}

export interface EventHubDeps {
  store: Store;
  isOnline: (siteId: string) => boolean;
  /** online, offline, or unknown (not heard from since a cloud restart); absent: from isOnline. */
  liveState?: (siteId: string) => 'online' | 'offline' | 'unknown';
  /**
   * The last status a site reported, as this replica heard it. The store's copy is written only
   * when something other than the volatile figures (memory, disk, load) changes, or every 30 s
   * (fleet/status.ts); the live console charts those figures every heartbeat, so it reads them here.
   */
  liveStatus?: (siteId: string) => { status: SiteStatusBody; at: number } | undefined;
  clock: Clock;
  log: Logger;
  limits?: Partial<EventStreamLimits>;
}

/** A tenant's shared feed: one cursor over stored results, the last views sent, its listeners. */
class TenantFeed {
  cursor = 0;
  private baseline = false;
  private readonly sites = new Map<string, string>();
  private readonly rollouts = new Map<string, string>();
  readonly subs = new Set<Subscriber>();
  joining: Subscriber[] = [];
  private running?: Promise<void>;
  private again = false;
  private stopTimer?: () => void;
  private lastPing: number;
  private lastKeyCheck: number;

  constructor(
    private readonly tenantId: string,
    private readonly hub: EventHub,
  ) {
    this.lastPing = hub.d.clock.now();
    this.lastKeyCheck = hub.d.clock.now();
  }

  start(): void {
    const tick = () => {
      this.stopTimer = this.hub.d.clock.setTimer(this.hub.limits.pollMs, tick);
      void this.kick();
    };
    this.stopTimer = this.hub.d.clock.setTimer(this.hub.limits.pollMs, tick);
  }

  stop(): void {
    this.stopTimer?.();
  }

  join(s: Subscriber): Promise<void> {
    this.joining.push(s);
    return this.kick();
  }

  /** Runs a poll now, or once more right after the one in flight. */
  kick(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        try {
          await this.poll();
        } catch (e) {
          this.hub.d.log.warn({ err: e, tenantId: this.tenantId }, 'event feed poll failed; retrying on the next tick');
        }
      } while (this.again && (this.subs.size > 0 || this.joining.length > 0));
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private broadcast(frame: string): void {
    for (const s of this.subs) this.hub.send(s, frame);
  }

  private async poll(): Promise<void> {
    const { store, clock, isOnline, liveState } = this.hub.d;
    const live = (id: string) => liveState?.(id) ?? (isOnline(id) ? 'online' : 'offline');
    const withLiveStatus = (s: Site): Site => {
      const heard = this.hub.d.liveStatus?.(s.id);
      return heard && s.revokedAt === null ? { ...s, status: heard.status, lastSeenAt: Math.max(s.lastSeenAt ?? 0, heard.at) } : s;
    };
    const L = this.hub.limits;
    const t = this.tenantId;
    if (!this.baseline) {
      // Start at the newest result; remember the current views so only changes are sent.
      this.cursor = await store.latestUplinkSeq();
      takeChanged(
        this.sites,
        (await store.listSites(t)).map((s) => siteView(withLiveStatus(s), live(s.id))),
        (v) => v.id,
        Number.MAX_SAFE_INTEGER,
      );
      takeChanged(
        this.rollouts,
        (await store.listRollouts(t)).map((r) => r.state),
        (r) => r.id,
        Number.MAX_SAFE_INTEGER,
      );
      this.baseline = true;
    }
    for (const j of this.joining.splice(0)) {
      if (j.closed) continue;
      if (j.lastEventId !== undefined && j.lastEventId < this.cursor) {
        const rows = (await store.queryUplink(t, { afterSeq: j.lastEventId, limit: L.maxCatchUp + 1 })).filter((r) => r.seq <= this.cursor);
        if (rows.length > L.maxCatchUp) {
          this.hub.send(
            j,
            sseFrame(
              'gap',
              {
                from: j.lastEventId,
                to: this.cursor,
                reason: `more than ${L.maxCatchUp} results since the last event; read them with GET /api/v1/results?after=${j.lastEventId}`,
              },
              this.cursor,
            ),
          );
        } else if (rows.length > 0) {
          this.hub.send(j, sseFrame('results', { items: rows.map(resultView) }, rows[rows.length - 1]!.seq));
        }
      }
      this.hub.send(j, sseFrame('ready', { cursor: this.cursor }));
      if (!j.closed) this.subs.add(j);
    }
    if (this.subs.size === 0) return;

    const rows = await store.queryUplink(t, { afterSeq: this.cursor, limit: L.maxResultsPerPoll + 1 });
    if (rows.length > L.maxResultsPerPoll) {
      const to = await store.latestUplinkSeq();
      this.broadcast(
        sseFrame(
          'gap',
          {
            from: this.cursor,
            to,
            reason: `more than ${L.maxResultsPerPoll} results arrived in one poll; read them with GET /api/v1/results?after=${this.cursor}`,
          },
          to,
        ),
      );
      this.cursor = to;
    } else if (rows.length > 0) {
      this.cursor = rows[rows.length - 1]!.seq;
      this.broadcast(sseFrame('results', { items: rows.map(resultView) }, this.cursor));
    }

    const sites = takeChanged(
      this.sites,
      (await store.listSites(t)).map((s) => siteView(withLiveStatus(s), live(s.id))),
      (v) => v.id,
      L.maxViewsPerFrame,
    );
    if (sites.length > 0) this.broadcast(sseFrame('sites', { items: sites }));
    const rollouts = takeChanged(
      this.rollouts,
      (await store.listRollouts(t)).map((r) => r.state),
      (r) => r.id,
      L.maxViewsPerFrame,
    );
    if (rollouts.length > 0) this.broadcast(sseFrame('rollouts', { items: rollouts }));

    const now = clock.now();
    if (now - this.lastKeyCheck >= L.keyCheckMs) {
      this.lastKeyCheck = now;
      const live = new Set((await store.listApiKeys(t)).filter((k) => k.revokedAt === null).map((k) => k.id));
      for (const s of this.subs) {
        if (!live.has(s.keyId)) {
          this.hub.send(
            s,
            sseFrame('error', { code: 'UNAUTHENTICATED', message: 'the API key was revoked; sign in again with a live key' }),
          );
          this.hub.close(s);
        }
      }
    }
    if (now - this.lastPing >= L.pingMs) {
      this.lastPing = now;
      this.broadcast(`: ping ${now}\n\n`);
    }
  }
}

function resultView(x: import('../store/store.ts').UplinkRow) {
  return {
    seq: x.seq,
    siteId: x.siteId,
    id: x.msgId,
    stream: x.stream,
    app: x.app,
    rule: x.rule,
    at: x.at,
    receivedAt: x.receivedAt,
    data: x.data,
  };
}

export class EventHub {
  readonly limits: EventStreamLimits;
  private readonly feeds = new Map<string, TenantFeed>();
  private count = 0;
  /** The most bytes any stream had queued when a frame was written (for the bound's test). */
  maxBufferedSeen = 0;

  constructor(readonly d: EventHubDeps) {
    this.limits = { ...DEFAULT_EVENT_LIMITS, ...d.limits };
  }

  /** Open streams, all tenants. */
  get size(): number {
    return this.count;
  }

  /**
   * Adds a listener; resolves once it has had its `ready` frame (after any catch-up from
   * `lastEventId`). Throws EVENT_STREAMS_LIMIT when a bound is reached.
   */
  /** Throws EVENT_STREAMS_LIMIT when one more stream for the tenant would pass a bound. */
  checkCapacity(tenantId: string): void {
    const feed = this.feeds.get(tenantId);
    if (this.count >= this.limits.total)
      throw new EwError(
        'EVENT_STREAMS_LIMIT',
        `this cloud replica already serves ${this.limits.total} live event streams; close unused console tabs or try again later`,
      );
    if (feed && feed.subs.size + feed.joining.length >= this.limits.perTenant)
      throw new EwError(
        'EVENT_STREAMS_LIMIT',
        `this tenant already has ${this.limits.perTenant} live event streams open; close unused console tabs`,
      );
  }

  subscribe(tenantId: string, keyId: string, sink: EventSink, lastEventId?: number): { done: Promise<void>; close: () => void } {
    this.checkCapacity(tenantId);
    const feed = this.feeds.get(tenantId);
    const s: Subscriber = { tenantId, keyId, sink, lastEventId, closed: false };
    this.count++;
    let f = feed;
    if (!f) {
      f = new TenantFeed(tenantId, this);
      this.feeds.set(tenantId, f);
      f.start();
    }
    return { done: f.join(s), close: () => this.close(s) };
  }

  /** Writes a frame, or cuts the stream off when its client has stopped reading. */
  send(s: Subscriber, frame: string): void {
    if (s.closed) return;
    const queued = s.sink.buffered();
    if (queued > this.maxBufferedSeen) this.maxBufferedSeen = queued;
    if (queued + frame.length > this.limits.maxBufferedBytes) {
      this.d.log.warn(
        { tenantId: s.tenantId, queued },
        'event stream client is not reading; disconnecting it (it resumes with Last-Event-ID)',
      );
      this.close(s, true);
      return;
    }
    s.sink.write(frame);
  }

  close(s: Subscriber, destroy = false): void {
    if (s.closed) return;
    s.closed = true;
    this.count--;
    if (destroy) s.sink.destroy();
    else s.sink.end();
    const f = this.feeds.get(s.tenantId);
    if (!f) return;
    f.subs.delete(s);
    if (f.subs.size === 0) {
      // The joiner list may still hold live subscribers; keep the feed for them.
      queueMicrotask(() => {
        if (f.subs.size === 0 && this.feeds.get(s.tenantId) === f && !this.hasJoining(f)) {
          f.stop();
          this.feeds.delete(s.tenantId);
        }
      });
    }
  }

  private hasJoining(f: TenantFeed): boolean {
    return f.joining.some((j) => !j.closed);
  }

  /** Polls a tenant's feed now (tests drive the feed with this and a manual clock). */
  pollNow(tenantId: string): Promise<void> {
    return this.feeds.get(tenantId)?.kick() ?? Promise.resolve();
  }

  /** Ends every stream (the server is closing: open streams would hold it open). */
  closeAll(): void {
    for (const f of this.feeds.values()) {
      for (const s of [...f.subs]) this.close(s);
      f.stop();
    }
    this.feeds.clear();
  }
}

/** Registers `GET /api/v1/events` on the cloud's API server. */
export function registerEvents(app: FastifyInstance, hub: EventHub): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  app.addHook('preClose', async () => hub.closeAll());
  r.get(
    '/api/v1/events',
    {
      schema: {
        tags: ['events'],
        summary: 'Live events (text/event-stream): results, site and rollout changes. Send Last-Event-ID to resume after a reconnect',
        headers: z
          .object({
            'last-event-id': z
              .string()
              .regex(/^\d{1,15}$/, 'the id of the last event received (a number)')
              .optional(),
          })
          .passthrough(),
      },
    },
    async (req, reply) => {
      const last = req.headers['last-event-id'];
      const res = reply.raw;
      const sink: EventSink = {
        write: (c) => {
          res.write(c);
        },
        buffered: () => res.writableLength,
        end: () => {
          res.end();
        },
        destroy: () => {
          res.destroy();
        },
      };
      // Throws EVENT_STREAMS_LIMIT (a normal JSON error) before anything is written.
      // A bound reached is a normal JSON error, so it is checked before the stream's headers go out.
      hub.checkCapacity(req.tenantId);
      reply.hijack();
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-store, no-transform',
        'x-accel-buffering': 'no',
        'x-content-type-options': 'nosniff',
        connection: 'keep-alive',
      });
      res.write('retry: 2000\n\n');
      const sub = hub.subscribe(req.tenantId, req.apiKeyId, sink, last !== undefined ? Number(last) : undefined);
      req.raw.on('close', () => sub.close());
      res.on('error', () => sub.close());
      await sub.done;
    },
  );
}
