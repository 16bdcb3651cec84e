import { createHash } from 'node:crypto';
import { Counter, Gauge, type Registry } from 'prom-client';
import { z } from 'zod';
import type { Ownership } from './ownership.ts';
import type { Store, Site, SiteStatusUpdate } from '../store/store.ts';
import { LivenessTracker, type LivenessEvent, type SiteLiveness } from '../liveness.ts';
import type { ReportedMessage, SiteStatusBody } from '../../contracts/messages.ts';
import { isValidSiteId } from '../../contracts/topics.ts';
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
 * What one replica tells the others of the sites it owns: `[siteId, state, intervalMs, bootId]`
 * with state 0 offline, 1 online, 2 unknown. Transitions as they happen; every site it owns in
 * snapshots every `refreshMs` (`full`), so a replica that missed a message heals within that.
 */
export const LivenessNews = z.object({
  v: z.literal(1),
  from: z.string().max(64),
  full: z.boolean(),
  sites: z
    .array(z.tuple([z.string().max(64), z.union([z.literal(0), z.literal(1), z.literal(2)]), z.number().int().min(0), z.string().max(64)]))
    .max(5000),
});
export type LivenessNews = z.infer<typeof LivenessNews>;
const STATES: readonly SiteLiveness[] = ['offline', 'online', 'unknown'];
/** Sites per liveness message (about 60 bytes each). */
const NEWS_CHUNK = 2000;
/** The largest liveness message read (NEWS_CHUNK entries at their longest fit well within). */
export const MAX_NEWS_BYTES = 512 * 1024;
/** Sites other replicas may tell of: far beyond any fleet's size, a bound all the same. */
const MAX_REMOTE_SITES = 5_000_000;

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
  /**
   * Sites another replica owns (fleet/ownership.ts): their liveness as their owner last told,
   * bounded by the fleet. Empty when this replica owns every site.
   */
  private readonly remote = new Map<string, { state: SiteLiveness; intervalMs: number; bootId: string }>();
  /** Transitions of owned sites not yet told to the other replicas. */
  private news: LivenessNews['sites'] = [];
  private lastSnapshotAt = 0;
  private readonly skipped: Counter;

  constructor(
    private readonly o: {
      store: Store;
      clock: Clock;
      log: Logger;
      registry: Registry;
      missedHeartbeats: number;
      refreshMs?: number;
      /** Which sites this replica owns (several replicas); absent: every site. */
      ownership?: Ownership;
      /** Tells the other replicas (their `onNews`); called from sweepNow. */
      tell?: (news: LivenessNews) => Promise<void>;
    },
  ) {
    this.refreshMs = o.refreshMs ?? 30_000;
    this.skipped = new Counter({
      name: 'ew_cloud_heartbeats_not_owned_total',
      help: 'Status heartbeats dropped unread because another cloud replica owns the site',
      registers: [o.registry],
    });
    this.liveness = new LivenessTracker(o.clock, o.missedHeartbeats);
    this.heartbeats = new Counter({
      name: 'ew_cloud_heartbeats_total',
      help: 'Status heartbeats received from sites',
      registers: [o.registry],
    });
    const liveness = this.liveness;
    const remote = this.remote;
    new Gauge({
      name: 'ew_cloud_sites_online',
      help: 'Sites currently online (those this replica owns and, as their owners told, the others)',
      registers: [o.registry],
      collect() {
        let n = liveness.onlineCount();
        for (const r of remote.values()) if (r.state === 'online') n++;
        this.set(n);
      },
    });
  }

  /**
   * A site as the store had it when this process started. Owned: unknown until it is heard from.
   * Another replica's: online as the store says, until that replica tells otherwise.
   */
  seed(s: Site): void {
    if (!(s.online && s.revokedAt === null)) return;
    const intervalMs = (s.status?.heartbeatIntervalS ?? 10) * 1000;
    const bootId = s.status?.bootId ?? '';
    if (this.owns(s.id)) this.liveness.seedUnknown(s.id, intervalMs, bootId);
    else this.remote.set(s.id, { state: 'online', intervalMs, bootId });
  }

  /** Whether this replica handles the site's heartbeats (always, with one replica). */
  owns(siteId: string): boolean {
    return this.o.ownership?.owns(siteId) ?? true;
  }

  /** A heartbeat of a site another replica owns, dropped unread (counted). */
  notOwned(): void {
    this.skipped.inc();
  }

  isOnline(siteId: string): boolean {
    return this.owns(siteId) ? this.liveness.isOnline(siteId) : this.remote.get(siteId)?.state === 'online';
  }

  state(siteId: string): SiteLiveness {
    return this.owns(siteId) ? this.liveness.state(siteId) : (this.remote.get(siteId)?.state ?? 'offline');
  }

  /** What another replica told of the sites it owns. Sites this replica owns are its own to judge. */
  onNews(news: LivenessNews): void {
    if (news.from === this.o.ownership?.self) return;
    for (const [siteId, state, intervalMs, bootId] of news.sites) {
      if (this.owns(siteId) || !isValidSiteId(siteId)) continue;
      // Bounded: only replicas may publish news (the broker's ACL), but a wrong ACL must not make
      // this map grow without end.
      if (this.remote.size >= MAX_REMOTE_SITES && !this.remote.has(siteId)) continue;
      const was = this.remote.get(siteId)?.state;
      this.remote.set(siteId, { state: STATES[state]!, intervalMs, bootId });
      if (was !== undefined && was !== STATES[state])
        this.o.log.info({ siteId, state: STATES[state], owner: news.from }, `site ${STATES[state]} (heard from its owner)`);
    }
  }

  /**
   * The replicas changed: sites this replica gained are taken over as their last owner told
   * (online ones with a full heartbeat budget from now), sites it lost are handed to the
   * remote view with what this replica knew, and their in-memory status forgotten.
   */
  ownershipChanged(): void {
    for (const siteId of [...this.liveness.known()]) {
      if (this.owns(siteId)) continue;
      const e = this.liveness.entry(siteId)!;
      this.remote.set(siteId, e);
      this.liveness.forget(siteId);
      this.statuses.delete(siteId);
      this.heardAt.delete(siteId);
      this.queued.delete(siteId);
    }
    for (const [siteId, e] of [...this.remote]) {
      if (!this.owns(siteId)) continue;
      this.liveness.adopt(siteId, e.state, e.intervalMs, e.bootId);
      this.remote.delete(siteId);
    }
    // Everyone hears what this replica owns now at the next sweep.
    this.lastSnapshotAt = 0;
  }

  onReported(siteId: string, msg: ReportedMessage): void {
    // Ingest drops a heartbeat of a site another replica owns before parsing it; a message that
    // arrives here all the same (ownership moved meanwhile) is dropped too.
    if (!this.owns(siteId)) {
      this.notOwned();
      return;
    }
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

  /** Sweeps liveness, tells the other replicas what changed, and flushes queued status writes in one transaction. */
  async sweepNow(): Promise<void> {
    for (const e of this.liveness.sweep()) this.apply(e);
    await this.tellNews();
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

  /** Transitions since the last sweep; every owned site's liveness every refreshMs. */
  private async tellNews(): Promise<void> {
    const { ownership, tell } = this.o;
    if (!ownership || !tell || ownership.alone) {
      this.news = [];
      return;
    }
    const now = this.o.clock.now();
    let full = false;
    let sites = this.news;
    this.news = [];
    if (now - this.lastSnapshotAt >= this.refreshMs) {
      full = true;
      this.lastSnapshotAt = now;
      sites = [];
      for (const siteId of this.liveness.known()) {
        const e = this.liveness.entry(siteId)!;
        sites.push([siteId, STATES.indexOf(e.state) as 0 | 1 | 2, e.intervalMs, e.bootId]);
      }
    }
    for (let i = 0; i < sites.length || (full && i === 0); i += NEWS_CHUNK) {
      const chunk = sites.slice(i, i + NEWS_CHUNK);
      await tell({ v: 1, from: ownership.self, full, sites: chunk }).catch((e: Error) =>
        this.o.log.warn({ err: e.message }, 'could not tell the other replicas of site liveness; the next snapshot will'),
      );
    }
  }

  /** Revocation: the site is no longer tracked. */
  forget(siteId: string): void {
    this.remote.delete(siteId);
    this.queued.delete(siteId);
    this.liveness.forget(siteId);
    this.statuses.delete(siteId);
    this.heardAt.delete(siteId);
  }

  private apply(e: LivenessEvent): void {
    const known = this.liveness.entry(e.siteId);
    if (known) this.news.push([e.siteId, STATES.indexOf(known.state) as 0 | 1 | 2, known.intervalMs, known.bootId]);
    const q = this.queued.get(e.siteId);
    if (q) q.online = e.online;
    const cur = this.pending.get(e.siteId);
    this.pending.set(e.siteId, { ...(cur ?? { siteId: e.siteId }), online: e.online });
    this.o.log.info({ siteId: e.siteId, online: e.online, reason: e.reason }, e.online ? 'site online' : 'site offline');
  }
}
