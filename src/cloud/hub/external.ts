import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import type { Hub, HubHandler } from './hub.ts';
import { randomUUID } from 'node:crypto';
import { cloudFilters, TOPIC_ROOT } from '../../contracts/topics.ts';
import type { Logger } from '../../lib/logger.ts';

export interface ExternalHubOptions {
  /** Where the cloud connects, e.g. mqtt://emqx:1883. */
  url: string;
  username?: string;
  password?: string;
  /** Unique per replica (two replicas with one id take each other's connection over). */
  clientId: string;
  /** What agents dial (given at enrollment); defaults to `url`. */
  agentUrl?: string;
  /** Shared-subscription group: replicas in one group split the sites' messages. */
  shareGroup?: string;
  /**
   * MQTT version towards the broker, also told to agents: 5 (default; Mosquitto, EMQX) or 4
   * (3.1.1: NATS's MQTT server, which speaks no MQTT 5).
   */
  protocolVersion?: 4 | 5;
  /**
   * Read uplink through a shared subscription (default true). False where the broker has none
   * (NATS's MQTT server grants `$share/…` but never delivers on it): every replica then receives
   * every result and the store's unique key keeps one.
   */
  shareUplink?: boolean;
  /** Topics between the replicas of this installation (topics.ts replicaTopics), also subscribed. */
  replicaTopics?: readonly string[];
  /**
   * Called after each reconnect, once the replica topics are subscribed again: what the other
   * replicas said while this one was away is lost, so it reads the store again (fleet/revocations.ts).
   */
  onReconnected?: () => Promise<void>;
  /**
   * Put before every topic (`prod/` → `prod/ew/{site}/…`), so that installations sharing a broker
   * live in separate topic trees an ACL can keep apart. Told to agents at enrollment.
   */
  topicPrefix?: string;
  log: Logger;
}

/**
 * The cloud as a client of an operator's MQTT broker, QoS 1. Uplink through a shared
 * subscription (`$share/{group}/…`) so that several cloud replicas each store a part of it;
 * heartbeats and RPC answers to every replica.
 *
 * The session is clean (MQTT 5: clean start, session expiry 0; 3.1.1: clean session): a replica
 * that dies or is scaled down leaves no session behind in the share group for the broker to
 * queue a share of every result into (issue #17). What a replica had received but not stored
 * when it died is not redelivered by the broker; the site still has it, because with this hub a
 * site deletes a result only when the cloud says it STORED it (`ew/{site}/ack`, Fleet
 * `storeAcks`), and sends it again otherwise (docs/architecture.md).
 */
export class ExternalHub implements Hub {
  readonly kind = 'external' as const;
  readonly agentProtocolVersion: 4 | 5;
  private client?: MqttClient;
  readonly agentTopicPrefix?: string;
  private readonly p: string;
  constructor(private readonly opts: ExternalHubOptions) {
    this.agentProtocolVersion = opts.protocolVersion ?? 5;
    this.p = opts.topicPrefix ?? '';
    if (this.p) this.agentTopicPrefix = this.p;
  }

  get agentUrl(): string {
    return this.opts.agentUrl ?? this.opts.url;
  }

  async start(handler: HubHandler): Promise<void> {
    const { log } = this.opts;
    const group = this.opts.shareGroup ?? 'edgeweave-cloud';
    const client = mqtt.connect(this.opts.url, {
      clientId: this.opts.clientId,
      username: this.opts.username,
      password: this.opts.password,
      protocolVersion: this.agentProtocolVersion,
      clean: true,
      ...(this.agentProtocolVersion === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}),
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      // Each delivery is awaited before it is acknowledged; the broker bounds in-flight messages.
      resubscribe: true,
    });
    this.client = client;
    client.handleMessage = (packet: IPublishPacket, done) => {
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      if (this.p && !packet.topic.startsWith(this.p)) return done();
      handler(packet.topic.slice(this.p.length), payload).then(
        () => done(),
        (e: Error) => {
          // Not stored, so not acknowledged to the site either: it sends the message again when
          // no store acknowledgement comes. The connection is dropped so that the broker stops
          // sending to a replica that cannot store.
          log.error({ err: e, topic: packet.topic }, 'hub handler failed; reconnecting (the site resends)');
          client.stream?.destroy();
        },
      );
    };
    client.on('error', (e) => log.warn({ err: e.message }, 'external broker error'));
    client.on('reconnect', () => log.info('reconnecting to external broker'));
    await new Promise<void>((resolve, reject) => {
      const onErr = (e: Error) => reject(e);
      client.once('error', onErr);
      client.once('connect', () => {
        client.off('error', onErr);
        resolve();
      });
    });
    await client
      .subscribeAsync(
        // Uplink is shared (each message to one replica, which stores it); heartbeats and RPC
        // responses are not: every replica keeps its own view of which sites are online, and a
        // response must reach the replica that asked.
        {
          [this.p + cloudFilters.reported]: { qos: 1 },
          [this.opts.shareUplink === false ? this.p + cloudFilters.up : `$share/${group}/${this.p}${cloudFilters.up}`]: { qos: 1 },
          [this.p + cloudFilters.rpcResponses]: { qos: 1 },
          ...Object.fromEntries((this.opts.replicaTopics ?? []).map((t) => [this.p + t, { qos: 1 as const }])),
        },
      )
      .then((grants) => {
        const refused = grants.filter((g) => g.qos >= 0x80);
        if (refused.length) throw new Error(`external broker refused the cloud's subscriptions: ${refused.map((g) => g.topic).join(', ')}`);
      });
    const again = this.opts.onReconnected;
    const replicaTopics = this.opts.replicaTopics ?? [];
    if (again) {
      client.on('connect', () => {
        // mqtt.js resubscribes by itself but says nothing of when the broker granted it; this
        // SUBACK (the same filters again: the broker replaces them) says the topics are live.
        const subscribed = replicaTopics.length
          ? client.subscribeAsync(Object.fromEntries(replicaTopics.map((t) => [this.p + t, { qos: 1 as const }])))
          : Promise.resolve();
        subscribed
          .then(() => again())
          .catch((e: Error) => log.warn({ err: e.message }, 'catching up after a reconnect to the external broker failed'));
      });
    }
  }

  async publish(topic: string, payload: string | Buffer, opts: { retain?: boolean; qos?: 0 | 1 } = {}): Promise<void> {
    if (!this.client) throw new Error('hub not started');
    await this.client.publishAsync(this.p + topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false });
  }

  disconnectSite(): void {
    // The operator's broker owns site sessions: revocation there is its ACL's job (docs/operators.md).
  }

  /**
   * The broker keeps what a site retained; on revocation a short-lived client of ours finds it
   * and clears it. Retained messages arrive right after the SUBACK, so a marker published after
   * the SUBACK comes back after all of them: no waiting on a timer.
   */
  async clearRetained(siteId: string): Promise<number> {
    const o = this.opts;
    const c = await mqtt.connectAsync(o.url, {
      clientId: `${o.clientId}-clear-${randomUUID().slice(0, 8)}`,
      username: o.username,
      password: o.password,
      protocolVersion: this.agentProtocolVersion,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    try {
      const found = new Set<string>();
      const marker = `${this.p}${TOPIC_ROOT}/${siteId}/rpc/req/clear-${randomUUID()}`;
      const seen = new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`clearing ${siteId}'s retained messages: the broker did not echo the marker`)), 10_000);
        c.on('message', (topic, payload, packet) => {
          if (topic === marker) {
            clearTimeout(t);
            resolve();
          } else if (packet.retain && payload.length > 0) found.add(topic);
        });
      });
      await c.subscribeAsync(`${this.p}${TOPIC_ROOT}/${siteId}/#`, { qos: 0 });
      await c.publishAsync(marker, '', { qos: 0 });
      await seen;
      for (const t of found) await c.publishAsync(t, '', { qos: 1, retain: true });
      if (found.size) o.log.info({ siteId, cleared: found.size }, 'retained messages of a revoked site cleared');
      return found.size;
    } finally {
      await c.endAsync(true);
    }
  }

  connectionCount(): number {
    return -1;
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
  }
}
