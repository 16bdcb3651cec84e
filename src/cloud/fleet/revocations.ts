import { z } from 'zod';
import { Counter, type Registry } from 'prom-client';
import type { Store } from '../store/store.ts';
import type { Logger } from '../../lib/logger.ts';
import type { Clock } from '../../lib/clock.ts';
import { isValidSiteId } from '../../contracts/topics.ts';
import type { SiteDirectory } from './sites.ts';

/**
 * What one replica tells the others when it revokes sites (or deletes a tenant's): their ids. A
 * hint, never trusted on its own: the hearer reads each site from the store and forgets only what
 * the store says is revoked or gone, so a forged message (an open broker) cannot cut a live site.
 */
export const RevocationNews = z.object({
  v: z.literal(1),
  from: z.string().max(64),
  sites: z.array(z.string().max(64)).min(1).max(1000),
});
export type RevocationNews = z.infer<typeof RevocationNews>;
/** The largest revocation message read (1,000 ids at their longest fit well within). */
export const MAX_REVOCATION_NEWS_BYTES = 96 * 1024;
/** How often the store is asked for recent revocations, and how far back (replicas' clocks differ). */
export const CHECK_EVERY_MS = 60_000;
const CHECK_OVERLAP_MS = 5 * 60_000;
/** Recent revocations read per check; past it, the whole directory is read again instead. */
const CHECK_LIMIT = 10_000;

/**
 * Revocation between replicas (external broker). Each replica keeps a directory of sites (which
 * tenant, revoked or not) to check every message against without a query; a revocation made on
 * one replica must reach the others' directories, or they keep storing the revoked site's results
 * (the shared subscription hands each result to any replica) and keep it online.
 *  - `tell`: the revoking replica publishes the ids (QoS 1);
 *  - `hear`: a replica checks them against the store and forgets those revoked or gone;
 *  - `resync`: after a reconnect to the broker (news may have been missed while away), the whole
 *    directory is read again from the store, once its subscriptions are back;
 *  - `check` (every minute): the sites revoked in the store lately, by an index, in case news was
 *    lost some other way (the revoking replica died before its message left).
 */
export class Revocations {
  private readonly heard: Counter<'outcome'>;
  /** When the last check that reached the store began (its window starts CHECK_OVERLAP_MS before). */
  private checkedAt: number;
  private stopTimer?: () => void;

  constructor(
    private readonly o: {
      store: Store;
      clock: Clock;
      log: Logger;
      registry: Registry;
      sites: SiteDirectory;
      replicaId: string;
      publish: (payload: string) => Promise<void>;
      /** Drops what this replica knows of the site's liveness and status. */
      forget: (siteId: string) => void;
    },
  ) {
    this.heard = new Counter({
      name: 'ew_cloud_revocation_news_total',
      help: 'Site revocations heard from other replicas, by outcome: applied, ignored (the store says the site is live: a stale or forged message), not-held (a site this replica holds nothing of: nothing to do, no query), dropped (malformed or oversized)',
      labelNames: ['outcome'],
      registers: [o.registry],
    });
    // The directory is read whole at start (Fleet.start): the first check looks back from here.
    this.checkedAt = o.clock.now();
  }

  start(): void {
    const tick = () => {
      this.stopTimer = this.o.clock.setTimer(CHECK_EVERY_MS, tick);
      this.check().catch((e: Error) => this.o.log.warn({ err: e.message }, 'checking the store for revoked sites failed; retrying'));
    };
    this.stopTimer = this.o.clock.setTimer(CHECK_EVERY_MS, tick);
  }

  stop(): void {
    this.stopTimer?.();
  }

  /** Forgets the sites revoked since the last check (with an overlap); answers how many were new here. */
  async check(): Promise<number> {
    const began = this.o.clock.now();
    const ids = await this.o.store.listSitesRevokedSince(this.checkedAt - CHECK_OVERLAP_MS, CHECK_LIMIT);
    let fresh = 0;
    if (ids.length >= CHECK_LIMIT) {
      await this.resync();
    } else {
      for (const id of ids) {
        if (this.o.sites.isRevoked(id)) continue;
        this.apply(id);
        fresh++;
      }
      // Deleting a tenant deletes its sites' rows (no revoked_at to find): sites held here under a
      // tenant that is gone are read again, and forgotten if gone too.
      const tenants = new Set((await this.o.store.listTenants()).map((t) => t.id));
      for (const id of this.o.sites.liveOutside(tenants)) {
        if (await this.o.store.getSiteById(id)) continue;
        this.gone(id);
        fresh++;
      }
    }
    this.checkedAt = began;
    return fresh;
  }

  async tell(siteId: string): Promise<void> {
    const news: RevocationNews = { v: 1, from: this.o.replicaId, sites: [siteId] };
    await this.o.publish(JSON.stringify(news));
  }

  async hear(payload: Buffer): Promise<void> {
    const { log } = this.o;
    if (payload.length > MAX_REVOCATION_NEWS_BYTES) {
      this.heard.inc({ outcome: 'dropped' });
      log.warn({ bytes: payload.length, limit: MAX_REVOCATION_NEWS_BYTES }, 'revocation news over its size bound; dropped');
      return;
    }
    let news: RevocationNews;
    try {
      news = RevocationNews.parse(JSON.parse(payload.toString('utf8')));
    } catch (e) {
      this.heard.inc({ outcome: 'dropped' });
      log.warn({ err: (e as Error).message.slice(0, 200) }, 'malformed revocation news from a replica; dropped');
      return;
    }
    if (news.from === this.o.replicaId) return; // our own, back from the broker
    for (const id of news.sites) {
      if (!isValidSiteId(id)) {
        this.heard.inc({ outcome: 'dropped' });
        continue;
      }
      // Only sites held here as live are looked up: a site held as revoked needs nothing, and one
      // never seen here is read from the store when it first sends. So a forged message of made-up
      // ids costs no query and adds nothing to the directory.
      if (!this.o.sites.isLive(id)) {
        this.heard.inc({ outcome: 'not-held' });
        continue;
      }
      const s = await this.o.store.getSiteById(id);
      if (s && s.revokedAt === null) {
        this.heard.inc({ outcome: 'ignored' });
        log.warn({ siteId: id, from: news.from.slice(0, 64) }, 'revocation news for a site the store holds as live; ignored');
        continue;
      }
      if (s) this.apply(id);
      else this.gone(id);
      this.heard.inc({ outcome: 'applied' });
    }
  }

  /** Reads every site again (after a reconnect): revoked or deleted meanwhile, it is forgotten. */
  async resync(): Promise<void> {
    const refs = await this.o.store.listSiteRefs();
    const missing = this.o.sites.reload(refs);
    for (const r of refs) if (r.revokedAt !== null) this.o.forget(r.id);
    // Not in the read: deleted, or enrolled just after it (read again, not forgotten).
    for (const id of missing) {
      const s = await this.o.store.getSiteById(id);
      if (s) this.o.sites.note(s);
      else this.o.forget(id);
    }
  }

  private apply(siteId: string): void {
    this.o.sites.markRevoked(siteId);
    this.o.forget(siteId);
  }

  /** A site the store no longer has: unknown from now on (its messages are read against the store, found nowhere, ignored). */
  private gone(siteId: string): void {
    this.o.sites.forget(siteId);
    this.o.forget(siteId);
  }
}
