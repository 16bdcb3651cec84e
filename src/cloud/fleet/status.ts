import { createHash } from 'node:crypto';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Store, Site, SiteStatusUpdate } from '../store/store.ts';
import { LivenessTracker, type LivenessEvent, type SiteLiveness } from '../liveness.ts';
import type { ReportedMessage, SiteStatusBody } from '../../contracts/messages.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';

/**
 * What a status says apart from the figures that move with the clock alone (uptime, free memory
 * and disk, load): equal digests mean there is nothing new to write.
 */
export function statusDigest(body: SiteStatusBody): string {
  const { uptimeS: _u, system, ...rest } = body;
  const { memoryFreeBytes: _m, diskFreeBytes: _d, loadAvg1: _l, ...fixed } = system;
  return createHash('sha1')
    .update(JSON.stringify([rest, fixed]))
    .digest('base64url');
}

/**
 * Site status: liveness (the pure tracker in liveness.ts) fed by heartbeats and last wills, the
 * last status each site reported (in memory, for the router), and the store's copy written behind
 * in one transaction per sweep. At most one pending write per site: the map is bounded by the fleet.
 *
 * A heartbeat is written only when it says something new (statusDigest), when the site's
 * liveness changes, or every `refreshMs` (30 s: lastSeenAt in the store is that coarse; the
 * replica's own liveness is exact). Every replica hears every heartbeat, so the write is
 * conditional in the store: the first replica writes, the others' updates match no row.
 */
export class SiteStatuses {
  /** The last status each site reported, in memory for the router (the store's copy is written behind). */
  readonly statuses = new Map<string, SiteStatusBody>();
  /** When this replica last heard each site's heartbeat (the store's lastSeenAt is up to 30 s coarser). */
  readonly heardAt = new Map<string, number>();
  private readonly liveness: LivenessTracker;
  private readonly pending = new Map<string, SiteStatusUpdate>();
  private flushing?: Promise<void>;
  private readonly heartbeats: Counter;
  /** What was last queued for each site (bounded by the fleet; forgotten on revocation). */
  private readonly queued = new Map<string, { digest: string; at: number; online: boolean }>();
  private readonly refreshMs: number;

  constructor(
    private readonly o: { store: Store; clock: Clock; log: Logger; registry: Registry; missedHeartbeats: number; refreshMs?: number },
  ) {
    this.refreshMs = o.refreshMs ?? 30_000;
    this.liveness = new LivenessTracker(o.clock, o.missedHeartbeats);
    this.heartbeats = new Counter({
      name: 'ew_cloud_heartbeats_total',
      help: 'Status heartbeats received from sites',
      registers: [o.registry],
    });
    const liveness = this.liveness;
    new Gauge({
      name: 'ew_cloud_sites_online',
      help: 'Sites currently online',
      registers: [o.registry],
      collect() {
        this.set(liveness.onlineCount());
      },
    });
  }

  /** A site the store says was online before this process started: unknown until it is heard from. */
  seed(s: Site): void {
    if (s.online && s.revokedAt === null)
      this.liveness.seedUnknown(s.id, (s.status?.heartbeatIntervalS ?? 10) * 1000, s.status?.bootId ?? '');
  }

  isOnline(siteId: string): boolean {
    return this.liveness.isOnline(siteId);
  }

  state(siteId: string): SiteLiveness {
    return this.liveness.state(siteId);
  }

  onReported(siteId: string, msg: ReportedMessage): void {
    if (msg.type === 'status') {
      this.heartbeats.inc();
      this.statuses.set(siteId, msg.body);
      const ev = this.liveness.heartbeat(siteId, msg.body.heartbeatIntervalS * 1000, msg.body.bootId);
      const now = this.o.clock.now();
      this.heardAt.set(siteId, now);
      const digest = statusDigest(msg.body);
      const last = this.queued.get(siteId);
      if (ev || !last || !last.online || last.digest !== digest || now - last.at >= this.refreshMs) {
        this.queued.set(siteId, { digest, at: now, online: true });
        this.pending.set(siteId, {
          siteId,
          online: true,
          lastSeenAt: now,
          status: msg.body,
          reportedGeneration: msg.body.generation,
          digest,
          refreshBefore: now - this.refreshMs / 2,
        });
      }
      if (ev) this.apply(ev);
    } else {
      const ev = this.liveness.offline(siteId, msg.body.bootId, msg.body.reason);
      if (ev) this.apply(ev);
    }
  }

  /** Sweeps liveness and flushes queued status writes in one transaction. */
  async sweepNow(): Promise<void> {
    for (const e of this.liveness.sweep()) this.apply(e);
    if (this.flushing) return this.flushing;
    if (this.pending.size === 0) return;
    const batch = [...this.pending.values()];
    this.pending.clear();
    this.flushing = this.o.store
      .updateSiteStatuses(batch)
      .catch((e) => {
        this.o.log.error({ err: e }, 'status flush failed; will retry');
        for (const u of batch) if (!this.pending.has(u.siteId)) this.pending.set(u.siteId, u);
      })
      .finally(() => {
        this.flushing = undefined;
      });
    return this.flushing;
  }

  /** Revocation: the site is no longer tracked. */
  forget(siteId: string): void {
    this.queued.delete(siteId);
    this.liveness.forget(siteId);
    this.statuses.delete(siteId);
    this.heardAt.delete(siteId);
  }

  private apply(e: LivenessEvent): void {
    const q = this.queued.get(e.siteId);
    if (q) q.online = e.online;
    const cur = this.pending.get(e.siteId);
    this.pending.set(e.siteId, { ...(cur ?? { siteId: e.siteId }), online: e.online });
    this.o.log.info({ siteId: e.siteId, online: e.online, reason: e.reason }, e.online ? 'site online' : 'site offline');
  }
}
