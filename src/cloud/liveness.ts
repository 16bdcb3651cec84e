import type { Clock } from '../lib/clock.ts';

/**
 * Pure liveness bookkeeping. A site is online from its first heartbeat; it goes offline when
 * its last will arrives or when `missedBeats` heartbeat intervals (the interval the site itself
 * reports) pass without one. `sweep()` returns the sites that just went offline; the shell calls
 * it on a timer and persists the changes.
 */
export interface LivenessEvent { siteId: string; online: boolean; at: number; reason: string }

interface Entry { lastSeen: number; intervalMs: number; online: boolean; bootId: string }

export class LivenessTracker {
  private readonly sites = new Map<string, Entry>();
  constructor(private readonly clock: Clock, private readonly missedBeats: number) {
    if (!(missedBeats >= 1)) throw new RangeError('missedBeats must be at least 1');
  }

  /** A heartbeat; returns an event if the site just came online. */
  heartbeat(siteId: string, intervalMs: number, bootId: string): LivenessEvent | undefined {
    const now = this.clock.now();
    const e = this.sites.get(siteId);
    if (e) {
      const wasOnline = e.online;
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
    if (!e || !e.online || e.bootId !== bootId) return undefined;
    e.online = false;
    return { siteId, online: false, at: this.clock.now(), reason };
  }

  /** Forget a site (revoked): no more events for it. */
  forget(siteId: string): void {
    this.sites.delete(siteId);
  }

  sweep(): LivenessEvent[] {
    const now = this.clock.now();
    const out: LivenessEvent[] = [];
    for (const [siteId, e] of this.sites) {
      if (e.online && now - e.lastSeen > e.intervalMs * this.missedBeats) {
        e.online = false;
        out.push({ siteId, online: false, at: now, reason: `missed ${this.missedBeats} heartbeats` });
      }
    }
    return out;
  }

  isOnline(siteId: string): boolean {
    return this.sites.get(siteId)?.online ?? false;
  }

  onlineCount(): number {
    let n = 0;
    for (const e of this.sites.values()) if (e.online) n++;
    return n;
  }
}
