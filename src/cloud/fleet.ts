import type { Registry } from 'prom-client';
import type { Store } from './store/store.ts';
import type { Hub } from './hub/hub.ts';
import type { SiteLiveness } from './liveness.ts';
import type { SiteStatusBody } from '../contracts/messages.ts';
import type { RpcMethod, RpcParams, RpcResult } from '../contracts/rpc.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import { verifySecret } from '../lib/secrets.ts';
import { SiteDirectory } from './fleet/sites.ts';
import { UplinkWriter } from './fleet/uplink.ts';
import { DesiredPublisher } from './fleet/desired.ts';
import { SiteRpc } from './fleet/rpc.ts';
import { Ingest } from './fleet/ingest.ts';
import type { Ownership } from './fleet/ownership.ts';
import { LivenessNews, MAX_NEWS_BYTES, SiteStatuses } from './fleet/status.ts';
import { Revocations } from './fleet/revocations.ts';

export interface FleetOptions {
  store: Store;
  hub: Hub;
  clock: Clock;
  log: Logger;
  registry: Registry;
  /** Heartbeats a site may miss before it is marked offline. */
  missedHeartbeats: number;
  /** How often liveness is swept and status writes are flushed. */
  sweepIntervalMs?: number;
  /**
   * Acknowledge stored uplink to each site on `ew/{site}/ack` and say so in the desired state
   * (external brokers: their PUBACK does not mean stored). Default false.
   */
  storeAcks?: boolean;
  /** Whether one more result of this tenant fits its results-per-day quota (cloud/quotas.ts). */
  admitResult?: (tenantId: string) => Promise<boolean>;
  /**
   * Several replicas (external broker): which sites' heartbeats this one owns, and the topics on
   * which the replicas tell each other of their sites' liveness (fleet/ownership.ts) and of the
   * sites they revoke (fleet/revocations.ts).
   */
  replicas?: { ownership: Ownership; livenessTopic: string; revokedTopic: string; replicaId: string };
}

/**
 * The cloud's fleet logic between the hub and the store, one part per concern (src/cloud/fleet/):
 * ingest (what sites send, checked and dispatched), status (liveness and status write-behind),
 * uplink (storage, each message once), desired (desired-state publishing) and rpc (requests to
 * sites and their answers). This class wires them and owns the sweep timer; callers that need only
 * one part can take that part (`fleet.status`, `fleet.desired`, `fleet.rpcs`…).
 */
export class Fleet {
  readonly sites: SiteDirectory;
  readonly status: SiteStatuses;
  readonly uplink: UplinkWriter;
  readonly desired: DesiredPublisher;
  readonly rpcs: SiteRpc;
  readonly ingest: Ingest;
  /** Revocations told to and heard from the other replicas (external broker only). */
  readonly revocations?: Revocations;
  private stopTimer?: () => void;

  constructor(private readonly o: FleetOptions) {
    const { store, hub, clock, log, registry } = o;
    this.sites = new SiteDirectory(store);
    const replicas = o.replicas;
    this.status = new SiteStatuses({
      store,
      clock,
      log,
      registry,
      missedHeartbeats: o.missedHeartbeats,
      ...(replicas
        ? { ownership: replicas.ownership, tell: (news) => hub.publish(replicas.livenessTopic, JSON.stringify(news), { qos: 1 }) }
        : {}),
    });
    this.uplink = new UplinkWriter({ store, clock, log, registry, hub, storeAcks: o.storeAcks });
    this.desired = new DesiredPublisher({ store, hub, clock, registry, sites: this.sites, storeAcks: o.storeAcks });
    this.rpcs = new SiteRpc({ hub, clock, registry, isOnline: (id) => this.status.isOnline(id) });
    if (replicas)
      this.revocations = new Revocations({
        store,
        clock,
        log,
        registry,
        sites: this.sites,
        replicaId: replicas.replicaId,
        publish: (payload) => hub.publish(replicas.revokedTopic, payload, { qos: 1 }),
        forget: (id) => this.status.forget(id),
      });
    this.ingest = new Ingest({
      log,
      registry,
      sites: this.sites,
      status: this.status,
      uplink: this.uplink,
      rpc: this.rpcs,
      admitResult: o.admitResult,
    });
  }

  /** Seeds liveness from the store (sites that were online get one interval of grace) and starts the sweep. */
  async start(): Promise<void> {
    for (const s of await this.o.store.listAllSites()) {
      this.sites.note(s);
      // The store's "online" predates this process: unknown until the site is heard from.
      this.status.seed(s);
    }
    const every = this.o.sweepIntervalMs ?? 1000;
    const tick = () => {
      this.stopTimer = this.o.clock.setTimer(every, tick);
      void this.sweepNow();
    };
    this.stopTimer = this.o.clock.setTimer(every, tick);
    this.revocations?.start();
    // The embedded hub's retained messages live in memory: republish every site's desired state.
    await this.reconcileAll();
  }

  async stop(): Promise<void> {
    this.stopTimer?.();
    this.revocations?.stop();
    await this.sweepNow();
    await this.uplink.drain();
  }

  /** The hub handler: never throws for a bad message; a bad message is counted and logged. */
  get handle(): (topic: string, payload: Buffer) => Promise<void> {
    const topic = this.o.replicas?.livenessTopic;
    const revocations = this.revocations;
    if (!topic || !revocations) return this.ingest.handle;
    const revokedTopic = this.o.replicas?.revokedTopic;
    return async (t, payload) => {
      if (t === revokedTopic) return revocations.hear(payload);
      if (t !== topic) return this.ingest.handle(t, payload);
      // Only cloud replicas may publish here (the broker's ACL); still checked, never trusted blindly.
      if (payload.length > MAX_NEWS_BYTES) {
        this.o.log.warn({ topic: t, bytes: payload.length, limit: MAX_NEWS_BYTES }, 'liveness news over its size bound; dropped');
        return;
      }
      let news: LivenessNews;
      try {
        news = LivenessNews.parse(JSON.parse(payload.toString('utf8')));
      } catch (e) {
        this.o.log.warn({ topic: t, err: (e as Error).message.slice(0, 200) }, 'malformed liveness news from a replica; dropped');
        return;
      }
      this.status.onNews(news);
    };
  }

  isOnline(siteId: string): boolean {
    return this.status.isOnline(siteId);
  }

  liveState(siteId: string): SiteLiveness {
    return this.status.state(siteId);
  }

  /** Sweeps liveness and flushes queued status writes in one transaction. */
  sweepNow(): Promise<void> {
    return this.status.sweepNow();
  }

  /** The last status each site reported, in memory for the router (the store's copy is written behind). */
  get statuses(): ReadonlyMap<string, SiteStatusBody> {
    return this.status.statuses;
  }

  /** Routed inference answers (binary frames) go to the router's forwarder; false: nobody waits (late or cancelled). */
  get onFrame(): SiteRpc['onFrame'] {
    return this.rpcs.onFrame;
  }
  set onFrame(fn: SiteRpc['onFrame']) {
    this.rpcs.onFrame = fn;
  }

  /** Recomputes and (if changed) publishes the desired state of the given sites, serialised. */
  reconcileSites(siteIds: readonly string[]): Promise<void> {
    return this.desired.reconcileSites(siteIds);
  }

  /** Every site of a tenant (after a deployment changes). */
  reconcileTenant(tenantId: string): Promise<void> {
    return this.desired.reconcileTenant(tenantId);
  }

  reconcileAll(): Promise<void> {
    return this.desired.reconcileAll();
  }

  /** Asks a site something over its MQTT link (fleet/rpc.ts: typed by the method, its answer parsed). */
  rpc<M extends RpcMethod>(siteId: string, method: M, params: RpcParams<M>, timeoutMs = 10_000): Promise<RpcResult<M>> {
    return this.rpcs.call(siteId, method, params, timeoutMs);
  }

  /**
   * Revocation: forget liveness, cut the live connection, clear retained desired state, and tell
   * the other replicas (each checks the store and forgets the site too).
   */
  async revoked(siteId: string): Promise<void> {
    this.sites.markRevoked(siteId);
    this.status.forget(siteId);
    // Not awaited: with the broker away the message waits in the client until it is back, and
    // the others' minute check of the store (fleet/revocations.ts) does not depend on it.
    this.revocations
      ?.tell(siteId)
      .catch((e: Error) =>
        this.o.log.warn(
          { siteId, err: e.message },
          'could not tell the other replicas of a revocation; they find it in the store within a minute',
        ),
      );
    this.o.hub.disconnectSite(siteId);
    await this.desired.clear(siteId);
    // Whatever else is retained under its topics goes too (issue 8: it pinned cloud memory).
    await this.o.hub
      .clearRetained(siteId)
      .catch((e: Error) => this.o.log.warn({ siteId, err: e.message }, "could not clear the revoked site's retained messages"));
  }

  /** Site credential check for the embedded hub. */
  async verifySite(siteId: string, secret: string): Promise<boolean> {
    const s = await this.o.store.getSiteById(siteId);
    return !!s && s.revokedAt === null && verifySecret(secret, s.secretHash);
  }
}
