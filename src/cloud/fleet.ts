import { randomUUID } from 'node:crypto';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Store, Site, SiteStatusUpdate, UplinkRecord, App } from './store/store.ts';
import type { Hub } from './hub/hub.ts';
import { LivenessTracker, type LivenessEvent } from './liveness.ts';
import { appKey, computeDesiredApps, desiredDigest } from './desired.ts';
import { decodePayload, ENVELOPE_VERSION, PAYLOAD_LIMITS, ReportedMessage, RpcResponse, UPLINK_ACK_MAX_IDS, UplinkMessage, type DesiredState, type UplinkAck, type RpcRequest, type SiteStatusBody } from '../contracts/messages.ts';
import { isFrame, MAX_FRAME_BYTES } from '../contracts/infer-wire.ts';
import { parseTopic, topics } from '../contracts/topics.ts';
import { EwError, isEwError } from '../contracts/errors.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import { verifySecret } from '../lib/secrets.ts';

/** Runs fn(0..n-1) with at most `width` calls in flight. */
async function pool(n: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, n) }, async () => {
    while (next < n) await fn(next++);
  }));
}

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
}

/**
 * The cloud's fleet logic between the hub and the store: liveness, status write-behind, uplink
 * storage (each message once), and desired-state reconciliation. The decisions are the pure
 * functions in liveness.ts and desired.ts; this class owns the timers and the I/O.
 */
export class Fleet {
  private readonly liveness: LivenessTracker;
  private readonly pendingStatus = new Map<string, SiteStatusUpdate>();
  private readonly siteCache = new Map<string, { tenantId: string; revoked: boolean }>();
  private stopTimer?: () => void;
  private flushing?: Promise<void>;
  private uplinkQueue: { rec: UplinkRecord; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private uplinkFlush?: Promise<void>;
  private reconcileChain: Promise<unknown> = Promise.resolve();
  private readonly m;

  constructor(private readonly o: FleetOptions) {
    this.liveness = new LivenessTracker(o.clock, o.missedHeartbeats);
    const r = o.registry;
    this.m = {
      heartbeats: new Counter({ name: 'ew_cloud_heartbeats_total', help: 'Status heartbeats received from sites', registers: [r] }),
      uplinkStored: new Counter({ name: 'ew_cloud_uplink_stored_total', help: 'Uplink messages stored (first delivery)', registers: [r] }),
      uplinkDuplicates: new Counter({ name: 'ew_cloud_uplink_duplicates_total', help: 'Uplink messages received again and ignored (already stored)', registers: [r] }),
      badPayloads: new Counter({ name: 'ew_cloud_mqtt_payload_invalid_total', help: 'MQTT messages refused as malformed', labelNames: ['kind'], registers: [r] }),
      oversized: new Counter({ name: 'ew_cloud_mqtt_payload_oversized_total', help: 'MQTT messages dropped for exceeding their topic class bound', labelNames: ['kind'], registers: [r] }),
      uplinkRefused: new Counter({ name: 'ew_cloud_uplink_refused_total', help: 'Uplink messages the store refused on their own (poison values); acknowledged and dropped so they never block other messages', registers: [r] }),
      lateAnswers: new Counter({ name: 'ew_cloud_routed_answers_dropped_total', help: 'Routed inference answers that arrived after their request ended (deadline, cancel)', registers: [r] }),
      storeAcks: new Counter({ name: 'ew_cloud_uplink_store_acks_total', help: 'Store acknowledgements sent to sites (ew/{site}/ack), each naming up to 500 stored messages', registers: [r] }),
      desiredPublished: new Counter({ name: 'ew_cloud_desired_published_total', help: 'Desired-state messages published', registers: [r] }),
    };
    const liveness = this.liveness;
    new Gauge({ name: 'ew_cloud_sites_online', help: 'Sites currently online', registers: [r], collect() { this.set(liveness.onlineCount()); } });
  }

  /** Seeds liveness from the store (sites that were online get one interval of grace) and starts the sweep. */
  async start(): Promise<void> {
    for (const s of await this.o.store.listAllSites()) {
      this.siteCache.set(s.id, { tenantId: s.tenantId, revoked: s.revokedAt !== null });
      // The store's "online" predates this process: unknown until the site is heard from.
      if (s.online && s.revokedAt === null) this.liveness.seedUnknown(s.id, (s.status?.heartbeatIntervalS ?? 10) * 1000, s.status?.bootId ?? '');
    }
    const every = this.o.sweepIntervalMs ?? 1000;
    const tick = () => {
      this.stopTimer = this.o.clock.setTimer(every, tick);
      void this.sweepNow();
    };
    this.stopTimer = this.o.clock.setTimer(every, tick);
    // The embedded hub's retained messages live in memory: republish every site's desired state.
    await this.reconcileAll();
  }

  async stop(): Promise<void> {
    this.stopTimer?.();
    await this.sweepNow();
    await this.uplinkFlush;
  }

  isOnline(siteId: string): boolean {
    return this.liveness.isOnline(siteId);
  }

  liveState(siteId: string): 'online' | 'offline' | 'unknown' {
    return this.liveness.state(siteId);
  }

  /** Sweeps liveness and flushes queued status writes in one transaction. */
  async sweepNow(): Promise<void> {
    for (const e of this.liveness.sweep()) this.applyLiveness(e);
    if (this.flushing) return this.flushing;
    if (this.pendingStatus.size === 0) return;
    const batch = [...this.pendingStatus.values()];
    this.pendingStatus.clear();
    this.flushing = this.o.store.updateSiteStatuses(batch).catch((e) => {
      this.o.log.error({ err: e }, 'status flush failed; will retry');
      for (const u of batch) if (!this.pendingStatus.has(u.siteId)) this.pendingStatus.set(u.siteId, u);
    }).finally(() => { this.flushing = undefined; });
    return this.flushing;
  }

  private applyLiveness(e: LivenessEvent): void {
    const cur = this.pendingStatus.get(e.siteId);
    this.pendingStatus.set(e.siteId, { ...(cur ?? { siteId: e.siteId }), online: e.online });
    this.o.log.info({ siteId: e.siteId, online: e.online, reason: e.reason }, e.online ? 'site online' : 'site offline');
  }

  /** The hub handler: never throws; a bad message is counted and logged. */
  readonly handle = async (topic: string, payload: Buffer): Promise<void> => {
    const t = parseTopic(topic);
    try {
      if (!t) throw new Error(`topic ${topic} is outside the contract`);
      // Routed inference answers are binary frames with their own bound (infer-wire.ts); JSON
      // messages have their topic class's.
      const limit = t.kind === 'rpc-res' && isFrame(payload) ? MAX_FRAME_BYTES : PAYLOAD_LIMITS[t.kind as keyof typeof PAYLOAD_LIMITS];
      if (limit !== undefined && payload.length > limit) {
        // Acknowledged and dropped: resending would not make it smaller (docs/operators.md).
        this.m.oversized.inc({ kind: t.kind });
        this.o.log.warn({ siteId: t.siteId, topic, bytes: payload.length, limit }, 'MQTT message over its size bound dropped');
        return;
      }
      const site = await this.siteInfo(t.siteId);
      if (!site || site.revoked) return; // a revoked or unknown site's late messages are ignored
      if (t.kind === 'reported') return this.onReported(t.siteId, decodePayload(ReportedMessage, payload, topic));
      if (t.kind === 'up') return await this.onUplink(t.siteId, t.stream, decodePayload(UplinkMessage, payload, topic));
      if (t.kind === 'rpc-res' && isFrame(payload)) {
        if (!this.onFrame?.(t.siteId, t.id, payload)) this.m.lateAnswers.inc();
        return;
      }
      if (t.kind === 'rpc-res') {
        const res = decodePayload(RpcResponse, payload, topic);
        const waiting = this.rpcs.get(t.id);
        if (waiting && waiting.siteId === t.siteId) {
          this.rpcs.delete(t.id);
          waiting.done(res);
        }
        return;
      }
    } catch (e) {
      if (isEwError(e, 'MQTT_PAYLOAD_INVALID')) {
        this.m.badPayloads.inc({ kind: t?.kind ?? 'unknown' });
        this.o.log.warn({ code: e.code, path: e.path, siteId: t?.siteId }, e.message);
        return;
      }
      throw e;
    }
  };

  private async siteInfo(siteId: string): Promise<{ tenantId: string; revoked: boolean } | undefined> {
    const hit = this.siteCache.get(siteId);
    if (hit) return hit;
    const s = await this.o.store.getSiteById(siteId);
    if (!s) return undefined;
    const info = { tenantId: s.tenantId, revoked: s.revokedAt !== null };
    this.siteCache.set(siteId, info);
    return info;
  }

  private onReported(siteId: string, msg: ReportedMessage): void {
    if (msg.type === 'status') {
      this.m.heartbeats.inc();
      this.statuses.set(siteId, msg.body);
      const ev = this.liveness.heartbeat(siteId, msg.body.heartbeatIntervalS * 1000, msg.body.bootId);
      this.pendingStatus.set(siteId, { siteId, online: true, lastSeenAt: this.o.clock.now(), status: msg.body, reportedGeneration: msg.body.generation });
      if (ev) this.applyLiveness(ev);
    } else {
      const ev = this.liveness.offline(siteId, msg.body.bootId, msg.body.reason);
      if (ev) this.applyLiveness(ev);
    }
  }

  /** Uplink messages are stored in small batches; each caller resolves once its batch committed. */
  private onUplink(siteId: string, stream: string, msg: UplinkMessage): Promise<void> {
    const rec: UplinkRecord = { siteId, msgId: msg.id, stream, app: msg.body.app, rule: msg.body.rule, at: msg.body.at, receivedAt: this.o.clock.now(), data: msg.body.data };
    return new Promise<void>((resolve, reject) => {
      this.uplinkQueue.push({ rec, resolve, reject });
      if (!this.uplinkFlush) this.uplinkFlush = this.flushUplink();
    });
  }

  private async flushUplink(): Promise<void> {
    // Yield once so that messages arriving in the same tick share one INSERT.
    await new Promise<void>((r) => setImmediate(r));
    while (this.uplinkQueue.length > 0) {
      const batch = this.uplinkQueue.splice(0, 1000);
      try {
        const n = await this.o.store.insertUplink(batch.map((b) => b.rec));
        this.m.uplinkStored.inc(n);
        this.m.uplinkDuplicates.inc(batch.length - n);
        this.ackStored(batch.map((b) => b.rec));
        for (const b of batch) b.resolve();
      } catch (e) {
        if (isEwError(e, 'VALIDATION_FAILED')) {
          // One poisonous message must not fail its neighbours (other sites' messages share the
          // batch): the batch is retried one message at a time.
          await this.insertOneByOne(batch, e);
        } else {
          // Not acknowledged: the sites keep the messages in their outboxes and send them again.
          this.o.log.error({ err: e }, 'storing uplink failed');
          for (const b of batch) b.reject(e);
        }
      }
    }
    this.uplinkFlush = undefined;
  }

  /**
   * After a failed batch: each message alone. A message the store refuses as invalid
   * (VALIDATION_FAILED: a value it cannot hold) is acknowledged, counted and dropped — its site
   * would otherwise resend it for ever; any other failure (the store is down) leaves it
   * unacknowledged, so the site keeps it in its outbox and sends it again.
   */
  private async insertOneByOne(batch: { rec: UplinkRecord; resolve: () => void; reject: (e: unknown) => void }[], batchError: unknown): Promise<void> {
    this.o.log.warn({ err: batchError, messages: batch.length }, 'storing an uplink batch failed; storing its messages one by one');
    const done: UplinkRecord[] = [];
    for (const b of batch) {
      const resolve = b.resolve;
      b.resolve = () => { done.push(b.rec); resolve(); };
      try {
        const n = await this.o.store.insertUplink([b.rec]);
        this.m.uplinkStored.inc(n);
        this.m.uplinkDuplicates.inc(1 - n);
        b.resolve();
      } catch (e) {
        if (isEwError(e, 'VALIDATION_FAILED')) {
          this.m.uplinkRefused.inc();
          this.o.log.warn({ siteId: b.rec.siteId, msgId: JSON.stringify(b.rec.msgId).slice(0, 140), err: (e as Error).message }, 'uplink message refused by the store and dropped');
          b.resolve();
        } else {
          this.o.log.error({ err: e, siteId: b.rec.siteId }, 'storing uplink failed; the site will resend');
          b.reject(e);
        }
      }
    }
    this.ackStored(done);
  }

  /**
   * Tells each site which of its messages are stored (or were already, or were refused for
   * good): only then does it delete them from its outbox. QoS 0 and not awaited: a lost
   * acknowledgement makes the site send the message again, which is stored once and
   * acknowledged again.
   */
  private ackStored(recs: readonly UplinkRecord[]): void {
    if (!this.o.storeAcks || recs.length === 0) return;
    const bySite = new Map<string, string[]>();
    for (const r of recs) {
      const ids = bySite.get(r.siteId);
      if (ids) ids.push(r.msgId); else bySite.set(r.siteId, [r.msgId]);
    }
    for (const [siteId, ids] of bySite) {
      for (let i = 0; i < ids.length; i += UPLINK_ACK_MAX_IDS) {
        const msg: UplinkAck = { v: ENVELOPE_VERSION, id: randomUUID(), ts: this.o.clock.now(), type: 'uplink-ack', body: { ids: ids.slice(i, i + UPLINK_ACK_MAX_IDS) } };
        this.o.hub.publish(topics.ack(siteId), JSON.stringify(msg), { qos: 0 }).then(
          () => this.m.storeAcks.inc(),
          (e: Error) => this.o.log.debug({ siteId, err: e.message }, 'store acknowledgement not sent; the site will resend'),
        );
      }
    }
  }

  /** Recomputes and (if changed) publishes the desired state of the given sites, serialised. */
  reconcileSites(siteIds: readonly string[]): Promise<void> {
    return this.serialise(async () => {
      const sites = await Promise.all(siteIds.map((id) => this.o.store.getSiteById(id)));
      await this.reconcileNow(sites.filter((s): s is Site => s !== undefined));
    });
  }

  /** Every site of a tenant (after a deployment changes). */
  reconcileTenant(tenantId: string): Promise<void> {
    return this.serialise(async () => this.reconcileNow(await this.o.store.listSites(tenantId)));
  }

  reconcileAll(): Promise<void> {
    return this.serialise(async () => this.reconcileNow(await this.o.store.listAllSites()));
  }

  private serialise(fn: () => Promise<void>): Promise<void> {
    const run = this.reconcileChain.then(fn);
    this.reconcileChain = run.catch(() => {});
    return run;
  }

  private async reconcileNow(sites: readonly Site[]): Promise<void> {
    const { store } = this.o;
    const byTenant = new Map<string, Site[]>();
    for (const s of sites) {
      this.siteCache.set(s.id, { tenantId: s.tenantId, revoked: s.revokedAt !== null });
      if (s.revokedAt !== null) continue;
      byTenant.set(s.tenantId, [...(byTenant.get(s.tenantId) ?? []), s]);
    }
    for (const [tenantId, tenantSites] of byTenant) {
      const deployments = await store.listDeployments(tenantId);
      const apps = new Map<string, App>();
      const rollouts = new Map((await store.listRollouts(tenantId, { ids: deployments.map((d) => d.id) })).map((r) => [r.id, r.state]));
      for (const d of deployments) {
        const k = appKey(d.appName, d.appVersion);
        if (!apps.has(k)) {
          const a = await store.getApp(tenantId, d.appName, d.appVersion);
          if (a) apps.set(k, a);
        }
      }
      const desired = tenantSites.map((site) => computeDesiredApps(site, deployments, apps, rollouts));
      const gens = await store.bumpDesired(tenantSites.map((site, i) => ({ siteId: site.id, digest: desiredDigest(desired[i]!) })));
      // Published even when unchanged: retained state is idempotent for the agent (it ignores
      // generations it already runs) and this heals a broker that lost its retained messages.
      // Many at once: each publish waits on the broker, not on the previous one.
      await pool(tenantSites.length, 64, async (i) => {
        const site = tenantSites[i]!;
        const msg: DesiredState = {
          v: ENVELOPE_VERSION, id: randomUUID(), ts: this.o.clock.now(), type: 'desired',
          body: { siteId: site.id, generation: gens[i]!.generation, apps: desired[i]!, ...(this.o.storeAcks ? { uplinkAck: true } : {}) },
        };
        await this.o.hub.publish(topics.desired(site.id), JSON.stringify(msg), { retain: true });
        this.m.desiredPublished.inc();
      });
    }
  }

  /** Routed inference answers (binary frames) go to the router's forwarder; false: nobody waits (late or cancelled). */
  onFrame?: (siteId: string, id: string, payload: Buffer) => boolean;
  /** The last status each site reported, in memory for the router (the store's copy is written behind). */
  readonly statuses = new Map<string, SiteStatusBody>();

  private readonly rpcs = new Map<string, { siteId: string; done: (r: RpcResponse | Error) => void }>();

  /** Asks a site something over its MQTT link; SITE_UNREACHABLE when it does not answer in time. */
  async rpc(siteId: string, method: string, params: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
    if (!this.liveness.isOnline(siteId)) throw new EwError('SITE_UNREACHABLE', `site ${siteId} is offline; it cannot answer now`);
    const id = randomUUID();
    const req: RpcRequest = { v: ENVELOPE_VERSION, id, ts: this.o.clock.now(), type: 'rpc-request', body: { method, params } };
    const res = await new Promise<RpcResponse | Error>((resolve) => {
      const cancel = this.o.clock.setTimer(timeoutMs, () => { this.rpcs.delete(id); resolve(new EwError('SITE_UNREACHABLE', `site ${siteId} did not answer "${method}" within ${timeoutMs / 1000} s`)); });
      this.rpcs.set(id, { siteId, done: (r) => { cancel(); resolve(r); } });
      this.o.hub.publish(topics.rpcRequest(siteId, id), JSON.stringify(req)).catch((e: Error) => { cancel(); this.rpcs.delete(id); resolve(e); });
    });
    if (res instanceof Error) throw res;
    if (!res.body.ok) throw new EwError('SITE_UNREACHABLE', `site ${siteId} refused "${method}": ${res.body.error?.message ?? 'unknown'}`);
    return res.body.result;
  }

  /** Revocation: forget liveness, cut the live connection, clear retained desired state. */
  async revoked(siteId: string): Promise<void> {
    this.siteCache.set(siteId, { tenantId: this.siteCache.get(siteId)?.tenantId ?? '', revoked: true });
    this.liveness.forget(siteId);
    this.statuses.delete(siteId);
    this.o.hub.disconnectSite(siteId);
    await this.o.hub.publish(topics.desired(siteId), '', { retain: true });
    // Whatever else is retained under its topics goes too (issue 8: it pinned cloud memory).
    await this.o.hub.clearRetained(siteId).catch((e: Error) => this.o.log.warn({ siteId, err: e.message }, 'could not clear the revoked site\'s retained messages'));
  }

  /** Site credential check for the embedded hub. */
  async verifySite(siteId: string, secret: string): Promise<boolean> {
    const s = await this.o.store.getSiteById(siteId);
    return !!s && s.revokedAt === null && verifySecret(secret, s.secretHash);
  }
}
