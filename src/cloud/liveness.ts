import type { Clock } from '../lib/clock.ts';

/**
 * Pure liveness bookkeeping. A site is online from its first heartbeat; it goes offline when
 * its last will arrives or when `missedBeats` heartbeat intervals (the interval the site itself
 * reports) pass without one. `sweep()` returns the sites that just went offline; the shell calls
 * it on a timer and persists the changes.
 */
export interface LivenessEvent {
  siteId: string;
  online: boolean;
  at: number;
  reason: string;
}

/**
 * `unknown`: the cloud restarted and the store says the site was online, but nothing has been
 * heard from it since — it is not shown as online until it reconnects (a heartbeat), nor as
 * offline until its heartbeat budget runs out.
 */
export type SiteLiveness = 'online' | 'offline' | 'unknown';

interface Entry {
  lastSeen: number;
  intervalMs: number;
  online: boolean;
  unknown?: boolean;
  bootId: string;
}

export class LivenessTracker {
  private readonly sites = new Map<string, Entry>();
  constructor(
    private readonly clock: Clock,
    private readonly missedBeats: number,
  ) {
    if (!(missedBeats >= 1)) throw new RangeError('missedBeats must be at least 1');
  }

  /**
   * After a cloud restart: a site the store last saw online is `unknown`, with one full
   * heartbeat budget (from now) to be heard from before it is declared offline.
   */
  seedUnknown(siteId: string, intervalMs: number, bootId: string): void {
    this.sites.set(siteId, { lastSeen: this.clock.now(), intervalMs, online: false, unknown: true, bootId });
  }

  /** A heartbeat; returns an event if the site just came online. */
  heartbeat(siteId: string, intervalMs: number, bootId: string): LivenessEvent | undefined {
    const now = this.clock.now();
    const e = this.sites.get(siteId);
    if (e) {
      const wasOnline = e.online;
      e.unknown = false;
      e.lastSeen = now;
      e.intervalMs = intervalMs;
      e.online = true;
      e.bootId = bootId;
      return wasOnline ? undefined : { siteId, online: true, at: now, reason: 'heartbeat' };
    }
    this.sites.set(siteId, { lastSeen: now, intervalMs, online: true, bootId });
    return { siteId, online: true, at: now, reason: 'heartbeat' };
  }

  /**
   * The last will (or a clean goodbye). A will from an older boot of the agent, delivered after
   * the new boot's first heartbeat, is ignored so that a quick restart never reads as offline.
   */
  offline(siteId: string, bootId: string, reason: string): LivenessEvent | undefined {
    const e = this.sites.get(siteId);
    if (!e || !(e.online || e.unknown) || e.bootId !== bootId) return undefined;
    e.online = false;
    e.unknown = false;
    return { siteId, online: false, at: this.clock.now(), reason };
  }

  /**
   * A site whose liveness another replica kept until now (heartbeat ownership moved here): taken
   * over as it stands — online with a full heartbeat budget from now, unknown, or offline.
   */
  adopt(siteId: string, state: SiteLiveness, intervalMs: number, bootId: string): void {
    if (state === 'offline') this.sites.set(siteId, { lastSeen: this.clock.now(), intervalMs, online: false, bootId });
    else
      this.sites.set(siteId, { lastSeen: this.clock.now(), intervalMs, online: state === 'online', unknown: state === 'unknown', bootId });
  }

  /** What is known of a site, to hand it to another replica (undefined: never heard of). */
  entry(siteId: string): { state: SiteLiveness; intervalMs: number; bootId: string } | undefined {
    const e = this.sites.get(siteId);
    return e && { state: this.state(siteId), intervalMs: e.intervalMs, bootId: e.bootId };
  }

  /** Every site it tracks. */
  known(): IterableIterator<string> {
    return this.sites.keys();
  }

  /** Forget a site (revoked): no more events for it. */
  forget(siteId: string): void {
    this.sites.delete(siteId);
  }

  sweep(): LivenessEvent[] {
    const now = this.clock.now();
    const out: LivenessEvent[] = [];
    for (const [siteId, e] of this.sites) {
      if ((e.online || e.unknown) && now - e.lastSeen > e.intervalMs * this.missedBeats) {
        e.online = false;
        e.unknown = false;
        out.push({ siteId, online: false, at: now, reason: `missed ${this.missedBeats} heartbeats` });
      }
    }
    return out;
  }

  isOnline(siteId: string): boolean {
    return this.sites.get(siteId)?.online ?? false;
  }

  state(siteId: string): SiteLiveness {
    const e = this.sites.get(siteId);
    return e?.unknown ? 'unknown' : e?.online ? 'online' : 'offline';
  }

  onlineCount(): number {
    let n = 0;
    for (const e of this.sites.values()) if (e.online) n++;
    return n;
  }
}
