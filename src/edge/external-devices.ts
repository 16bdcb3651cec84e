import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import type { DeviceMessage, DeviceSource } from './devices.ts';
import type { Logger } from '../lib/logger.ts';

export interface ExternalDeviceSourceOptions {
  /** mqtt://host:port of the plant's or city's existing broker. */
  url: string;
  username?: string;
  password?: string;
  /** Stable, so the broker keeps the agent's session (and its QoS 1 messages) across restarts. */
  clientId: string;
  /** MQTT protocol version towards the broker: 5 carries devices' MQTT 5 properties (user properties, expiry) to the streams. Default 4 (3.1.1). */
  protocolVersion?: 4 | 5;
  log: Logger;
}

/**
 * Device data from a broker the site already has (a plant's Mosquitto, a city's EMQX): the agent
 * connects as a client, subscribes to exactly the topic filters its streams declare (QoS 1,
 * persistent session), and follows changes as apps come and go.
 */
export class ExternalDeviceSource implements DeviceSource {
  readonly kind = 'external' as const;
  private client?: MqttClient;
  private filters = new Set<string>();
  private messagesIn = 0;
  private readonly listeners = new Set<(m: DeviceMessage) => void>();
  private intake?: (m: DeviceMessage) => Promise<void>;

  constructor(private readonly o: ExternalDeviceSourceOptions) {}

  setIntake(fn: (m: DeviceMessage) => Promise<void>): void {
    this.intake = fn;
  }

  get url(): string {
    return this.o.url;
  }
  get stats(): { connected: number; messagesIn: number } {
    return { connected: this.client?.connected ? 1 : 0, messagesIn: this.messagesIn };
  }

  onMessage(fn: (m: DeviceMessage) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async start(): Promise<void> {
    const { log } = this.o;
    const client = mqtt.connect(this.o.url, {
      clientId: this.o.clientId, username: this.o.username, password: this.o.password,
      protocolVersion: this.o.protocolVersion ?? 4, clean: false,
      // MQTT 5: the session outlives the connection as with 3.1.1's clean: false.
      ...(this.o.protocolVersion === 5 ? { properties: { sessionExpiryInterval: 0xffffffff } } : {}), reconnectPeriod: 2000, connectTimeout: 10_000, resubscribe: true,
      // As the cloud link: no 6 MB table of pre-built number Buffers (mqtt-packet's, process-wide).
      writeCache: false,
    });
    this.client = client;
    // The PUBACK to the external broker goes only once the record is durable here (mqtt.js sends
    // it after handleMessage calls back); until then the broker keeps the record in the agent's
    // persistent session and redelivers it after a crash. A record that cannot be made durable
    // drops the connection without a PUBACK, so the broker delivers it again. mqtt.js handles
    // one inbound packet at a time this way: the rate is bounded by the journal's group-commit
    // latency (docs/streams.md).
    client.handleMessage = (packet, done) => {
      if (!this.intake) return done();
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      this.intake({ topic: packet.topic, payload, clientId: '', properties: propertiesOf(packet) }).then(() => done(), (e: Error) => {
        log.warn({ err: e.message, topic: packet.topic }, 'device record not made durable; reconnecting for redelivery');
        if (packet.qos === 0) return done();
        client.stream?.destroy();
      });
    };
    client.on('message', (topic, payload, packet) => {
      this.messagesIn++;
      const properties = propertiesOf(packet);
      for (const l of this.listeners) {
        try {
          l({ topic, payload, clientId: '', properties });
        } catch (e) {
          log.error({ err: e, topic }, 'device message listener failed');
        }
      }
    });
    client.on('error', (e) => log.warn({ err: e.message, url: this.o.url }, 'external device broker error'));
    // Filters set before the first connection are subscribed once it is up (mqtt.js then
    // resubscribes by itself after reconnects).
    client.once('connect', () => {
      if (this.filters.size) client.subscribe([...this.filters], { qos: 1 });
    });
    // The site runs even when its device broker is down: connect in the background.
    await Promise.race([
      new Promise<void>((resolve) => client.once('connect', () => resolve())),
      new Promise<void>((resolve) => setTimeout(resolve, 3000).unref()),
    ]);
    if (!client.connected) log.warn({ url: this.o.url }, 'external device broker not reachable yet; retrying in the background');
  }

  async setFilters(filters: readonly string[]): Promise<void> {
    const next = new Set(filters);
    const add = [...next].filter((f) => !this.filters.has(f));
    const remove = [...this.filters].filter((f) => !next.has(f));
    this.filters = next;
    const c = this.client;
    if (!c) return;
    if (add.length) await c.subscribeAsync(add, { qos: 1 }).catch((e: Error) => this.o.log.error({ err: e.message, filters: add }, 'subscribing on the external device broker failed'));
    if (remove.length) await c.unsubscribeAsync(remove).catch(() => {});
  }

  publish(topic: string, payload: string): void {
    this.client?.publish(topic, payload, { qos: 0 });
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
  }
}

/** A message's MQTT 5 properties, as the streams read them (stamped with the receive time). */
function propertiesOf(packet: IPublishPacket): DeviceMessage['properties'] {
  const p = packet.properties;
  return p ? { userProperties: p.userProperties, messageExpiryInterval: p.messageExpiryInterval, contentType: p.contentType, responseTopic: p.responseTopic, receivedAt: Date.now() } : undefined;
}
