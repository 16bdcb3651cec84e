import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import type { Hub, HubHandler } from './hub.ts';
import { cloudFilters } from '../../contracts/topics.ts';
import type { Logger } from '../../lib/logger.ts';

export interface ExternalHubOptions {
  /** Where the cloud connects, e.g. mqtt://emqx:1883. */
  url: string;
  username?: string;
  password?: string;
  /** Stable per replica so the broker keeps its persistent session across restarts. */
  clientId: string;
  /** What agents dial (given at enrollment); defaults to `url`. */
  agentUrl?: string;
  /** Shared-subscription group: replicas in one group split the sites' messages. */
  shareGroup?: string;
  /** How long the broker keeps this replica's session while it is away (s). Default 86400. */
  sessionExpiryS?: number;
  log: Logger;
}

/**
 * The cloud as a client of an operator's MQTT broker. MQTT 5, persistent session, QoS 1; uplink
 * through a shared subscription (`$share/{group}/…`) so that several cloud replicas each store a
 * part of it, heartbeats to every replica. The PUBACK to the broker is sent only after the handler resolves (mqtt.js
 * `handleMessage`), so the broker redelivers whatever a crashed replica had not yet stored.
 */
export class ExternalHub implements Hub {
  readonly kind = 'external' as const;
  readonly agentProtocolVersion = 5 as const;
  private client?: MqttClient;
  constructor(private readonly opts: ExternalHubOptions) {}

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
      protocolVersion: 5,
      clean: false,
      properties: { sessionExpiryInterval: this.opts.sessionExpiryS ?? 24 * 3600 },
      reconnectPeriod: 1000,
      connectTimeout: 10_000,
      // Each delivery is awaited before it is acknowledged; the broker bounds in-flight messages.
      resubscribe: true,
    });
    this.client = client;
    client.handleMessage = (packet: IPublishPacket, done) => {
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      handler(packet.topic, payload).then(
        () => done(),
        (e: Error) => {
          // Not stored, so not acknowledged: drop the connection and let the broker redeliver
          // it from our persistent session after the reconnect.
          log.error({ err: e, topic: packet.topic }, 'hub handler failed; reconnecting for redelivery');
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
    await client.subscribeAsync(
      // Uplink is shared (each message to one replica, which stores it); heartbeats and RPC
      // responses are not: every replica keeps its own view of which sites are online, and a
      // response must reach the replica that asked.
      { [cloudFilters.reported]: { qos: 1 }, [`$share/${group}/${cloudFilters.up}`]: { qos: 1 }, [cloudFilters.rpcResponses]: { qos: 1 } },
    ).then((grants) => {
      const refused = grants.filter((g) => g.qos >= 0x80);
      if (refused.length) throw new Error(`external broker refused the cloud's subscriptions: ${refused.map((g) => g.topic).join(', ')}`);
    });
  }

  async publish(topic: string, payload: string | Buffer, opts: { retain?: boolean; qos?: 0 | 1 } = {}): Promise<void> {
    if (!this.client) throw new Error('hub not started');
    await this.client.publishAsync(topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false });
  }

  disconnectSite(): void {
    // The operator's broker owns site sessions: revocation there is its ACL's job (docs/operators.md).
  }

  connectionCount(): number {
    return -1;
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
  }
}
