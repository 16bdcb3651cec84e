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
  /** One journal commit per record, PUBACK by PUBACK (how it was before group commit; bench:durability compares). Default false. */
  ackEach?: boolean;
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
      clientId: this.o.clientId,
      username: this.o.username,
      password: this.o.password,
      protocolVersion: this.o.protocolVersion ?? 4,
      clean: false,
      // MQTT 5: the session outlives the connection as with 3.1.1's clean: false.
      ...(this.o.protocolVersion === 5 ? { properties: { sessionExpiryInterval: 0xffffffff } } : {}),
      reconnectPeriod: 2000,
      connectTimeout: 10_000,
      resubscribe: true,
      // As the cloud link: no 6 MB table of pre-built number Buffers (mqtt-packet's, process-wide).
      writeCache: false,
    });
    this.client = client;
    // The PUBACK to the external broker goes only once the record is durable here; until then
    // the broker keeps the record in the agent's persistent session and redelivers it after a
    // crash. A record that cannot be made durable drops the connection without a PUBACK, so the
    // broker delivers it again.
    // mqtt.js reads one inbound packet at a time and sends a QoS 1 PUBACK when handleMessage calls
    // back, which would make one journal commit per record. So for QoS 1 the agent lets mqtt.js
    // read on at once (a callback with an error continues its pump and sends no PUBACK) and sends
    // the PUBACK itself once the record is durable: records arriving together are journaled in one
    // group commit, as with the embedded broker. How many wait unacknowledged is bounded by the
    // broker's in-flight window (Mosquitto's max_inflight_messages) and the intake's bound.
    const send = (client as unknown as { _sendPacket?: (p: object, cb: () => void) => void })._sendPacket;
    client.handleMessage = (packet, done) => {
      if (!this.intake) return done();
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      const durable = this.intake({ topic: packet.topic, payload, clientId: '', properties: propertiesOf(packet) });
      const fail = (e: Error) => {
        log.warn({ err: e.message, topic: packet.topic }, 'device record not made durable; reconnecting for redelivery');
        return true;
      };
      if (packet.qos !== 1 || typeof send !== 'function' || packet.messageId === undefined || this.o.ackEach) {
        durable.then(
          () => done(),
          (e: Error) => {
            fail(e);
            if (packet.qos === 0) return done();
            client.stream?.destroy();
          },
        );
        return;
      }
      const stream = client.stream;
      const messageId = packet.messageId;
      done(DEFERRED);
      durable.then(
        () => {
          // Only on the connection it came in on: after a reconnect the broker redelivers it (and
          // may have given its id to another message).
          if (client.stream !== stream || stream.destroyed) return;
          send.call(client, { cmd: 'puback', messageId, ...(this.o.protocolVersion === 5 ? { reasonCode: 0 } : {}) }, () => {});
        },
        (e: Error) => {
          fail(e);
          if (client.stream === stream) stream.destroy();
        },
      );
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
    if (add.length)
      await c
        .subscribeAsync(add, { qos: 1 })
        .catch((e: Error) => this.o.log.error({ err: e.message, filters: add }, 'subscribing on the external device broker failed'));
    if (remove.length) await c.unsubscribeAsync(remove).catch(() => {});
  }

  publish(topic: string, payload: string): void {
    this.client?.publish(topic, payload, { qos: 0 });
  }

  async close(): Promise<void> {
    await this.client?.endAsync();
  }
}

/** Passed to mqtt.js's handleMessage callback: go on reading, the agent sends this PUBACK itself. */
const DEFERRED = Object.assign(new Error('acknowledged once durable'), { deferred: true });

/** A message's MQTT 5 properties, as the streams read them (stamped with the receive time). */
function propertiesOf(packet: IPublishPacket): DeviceMessage['properties'] {
  const p = packet.properties;
  return p
    ? {
        userProperties: p.userProperties,
        messageExpiryInterval: p.messageExpiryInterval,
        contentType: p.contentType,
        responseTopic: p.responseTopic,
        receivedAt: Date.now(),
      }
    : undefined;
}
