import { createServer, type Server } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { Aedes, type Client } from 'aedes';
import type { Logger } from '../lib/logger.ts';
import { TOPIC_ROOT } from '../contracts/topics.ts';
import { MqttGuard, type MqttLimits } from '../lib/mqtt-guard.ts';
import type { Clock } from '../lib/clock.ts';
import { grantsAllowPublish, grantsAllowReceive, grantsAllowSubscribe, type DeviceGrants } from './device-auth.ts';

export interface DeviceMessage {
  topic: string;
  payload: Buffer;
  clientId: string;
  properties?: import('./mqtt5.ts').Mqtt5Properties;
}

/** Who a device is and what it may do (see device-auth.ts); the broker asks on CONNECT, PUBLISH, SUBSCRIBE and delivery. */
export interface DeviceAuthorizer {
  authenticate(
    username: string | undefined,
    password: string | undefined,
    clientId: string,
  ): { ok: true; who: DeviceGrants } | { ok: false; reason: string; returnCode: number };
}
/** A connected device's grants, kept on its aedes client. */
const GRANTS = Symbol('ew.grants');
type WithGrants = Client & { [GRANTS]?: DeviceGrants };

/**
 * Where a site's device data comes from, with two implementations that pass one conformance
 * suite (`test/device-source.conformance.test.ts`): the embedded broker below, and an external
 * broker the agent reads as a client (ExternalDeviceSource).
 * Lifecycle: construct → start() → setFilters()/publish()… → close().
 */
export interface DeviceSource {
  readonly kind: 'embedded' | 'external';
  readonly url: string;
  readonly stats: { connected: number; messagesIn: number };
  start(): Promise<void>;
  onMessage(fn: (m: DeviceMessage) => void): () => void;
  /**
   * Acknowledge after durability: every device record is handed to `fn` and acknowledged to the
   * device (QoS 1 PUBACK, QoS 2 PUBREC) or to the external broker only once the promise resolves;
   * a rejection withholds the acknowledgement. Set before start().
   */
  setIntake(fn: (m: DeviceMessage) => Promise<void>): void;
  /** The topic filters the site's streams read; an external source subscribes to exactly these. */
  setFilters(filters: readonly string[]): Promise<void>;
  /** Publishes as the site (rule results for local consumers). */
  publish(topic: string, payload: string): void;
  close(): Promise<void>;
}

export interface DeviceBrokerOptions {
  port: number;
  host: string;
  /** Checks a device's username/password (hashes stored by the agent); every topic but the reserved ones. */
  verify?: (username: string, password: string) => boolean;
  /** Per-device credentials and topic grants (device-auth.ts); replaces `verify` when given. */
  auth?: DeviceAuthorizer;
  /** MQTT over TLS for the devices (mqtts), with this certificate and key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
  log: Logger;
  /** Bounds before and after authentication (src/lib/mqtt-guard.ts; defaults in docs/operators.md). */
  limits?: Partial<MqttLimits>;
  /** Drives the guard's connect deadline and rate tables (tests). Default: the system clock. */
  clock?: Clock;
}

/**
 * The site's own MQTT broker, where the site's devices publish. Devices authenticate with a
 * username and password; the `ew/` namespace is reserved for the agent and refused to devices,
 * as is `$SYS`. Every device message is handed to `subscribe()`rs (the stream engine, later).
 */
export class DeviceBroker implements DeviceSource {
  readonly kind = 'embedded' as const;
  private broker!: Aedes;
  private server!: Server;
  private boundPort = 0;
  private messagesIn = 0;
  private readonly listeners = new Set<(m: DeviceMessage) => void>();
  private intake?: (m: DeviceMessage) => Promise<void>;
  /** Before-CONNECT and packet-size bounds, connection and bad-password throttles. */
  guard!: MqttGuard;

  constructor(private readonly o: DeviceBrokerOptions) {}

  setIntake(fn: (m: DeviceMessage) => Promise<void>): void {
    this.intake = fn;
  }

  get port(): number {
    return this.boundPort;
  }
  get url(): string {
    return `${this.o.tls ? 'mqtts' : 'mqtt'}://${this.o.host === '0.0.0.0' ? '127.0.0.1' : this.o.host}:${this.boundPort}`;
  }
  get stats(): { connected: number; messagesIn: number } {
    return { connected: this.broker?.connectedClients ?? 0, messagesIn: this.messagesIn };
  }

  onMessage(fn: (m: DeviceMessage) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async start(): Promise<void> {
    const { verify, auth, log } = this.o;
    const reserved = (topic: string) => topic === TOPIC_ROOT || topic.startsWith(`${TOPIC_ROOT}/`) || topic.startsWith('$');
    const self = this;
    const guard = (this.guard = new MqttGuard({ limits: this.o.limits, clock: this.o.clock, log, name: 'devices' }));
    this.broker = await Aedes.createBroker({
      authenticate(client, username, password, done) {
        if (auth) {
          const r = auth.authenticate(username, password?.toString('utf8'), client.id);
          if (r.ok) {
            (client as WithGrants)[GRANTS] = r.who;
            return done(null, true);
          }
          log.warn({ clientId: client.id, username, reason: r.reason }, 'device connect refused');
          return done(Object.assign(new Error(r.reason), { returnCode: r.returnCode }) as never, false);
        }
        if (username && password && verify?.(username, password.toString('utf8'))) return done(null, true);
        log.warn({ clientId: client.id, username }, 'device connect refused: bad username or password');
        const err = Object.assign(new Error('bad username or password'), { returnCode: 4 });
        done(err as never, false);
      },
      authorizePublish(client: Client | null, packet, cb) {
        if (client && reserved(packet.topic)) return cb(new Error(`devices may not publish to ${packet.topic}`));
        const g = client && (client as WithGrants)[GRANTS];
        if (g && !grantsAllowPublish(g, packet.topic)) {
          log.warn({ clientId: client.id, topic: packet.topic }, 'device publish refused: not in its grants; disconnected');
          return cb(new Error(`device ${client.id} may not publish to ${packet.topic}`));
        }
        // aedes writes the PUBACK (PUBREC) only after this callback, and reads nothing more from
        // this client meanwhile: the record is made durable first, and a site that cannot make
        // it durable slows the device instead of acknowledging and dropping.
        if (client && self.intake) {
          const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
          self.intake({ topic: packet.topic, payload, clientId: client.id }).then(
            () => cb(null),
            (e: Error) => cb(e),
          );
          return;
        }
        cb(null);
      },
      authorizeSubscribe(client, sub, cb) {
        // `#` is allowed to a device granted it: authorizeForward below keeps reserved topics out anyway.
        const g = client && (client as WithGrants)[GRANTS];
        const refused = reserved(sub.topic) || (g && !grantsAllowSubscribe(g, sub.topic));
        if (refused && g) log.warn({ clientId: client.id, filter: sub.topic }, 'device subscription refused: not within its grants');
        cb(null, refused ? null : sub);
      },
      authorizeForward(client, packet) {
        // Never forward reserved topics to devices, whatever they subscribed to; nor what a device's grants do not cover.
        if (reserved(packet.topic)) return null;
        const g = client && (client as WithGrants)[GRANTS];
        return g && !grantsAllowReceive(g, packet.topic) ? null : packet;
      },
    });
    this.broker.on('publish', (packet, client) => {
      if (!client) return;
      this.messagesIn++;
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      for (const l of this.listeners) {
        try {
          l({ topic: packet.topic, payload, clientId: client.id });
        } catch (e) {
          log.error({ err: e, topic: packet.topic }, 'device message listener failed');
        }
      }
    });
    const handle = guard.protect(this.broker as never);
    this.server = this.o.tls
      ? createTlsServer({ cert: this.o.tls.cert, key: this.o.tls.key, handshakeTimeout: guard.limits.connectTimeoutMs }, handle)
      : createServer(handle);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.o.port, this.o.host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const a = this.server.address();
    this.boundPort = typeof a === 'object' && a ? a.port : this.o.port;
  }

  /** Every device publish reaches this broker: the stream router filters, nothing to subscribe. */
  async setFilters(): Promise<void> {}

  /** Cuts a device's live connection (its credentials were revoked). */
  disconnect(clientId: string): boolean {
    const c = (this.broker as unknown as { clients: Record<string, Client | undefined> }).clients[clientId];
    c?.close();
    return !!c;
  }

  /** Publishes on the device broker as the site itself (rule results for local consumers). */
  publish(topic: string, payload: string): void {
    this.broker.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, retain: false, dup: false }, (err?: Error) => {
      if (err) this.o.log.warn({ topic, err: err.message }, 'local publish failed');
    });
  }

  async close(): Promise<void> {
    if (this.broker) await new Promise<void>((r) => this.broker.close(() => r()));
    if (this.server) await new Promise<void>((r) => this.server.close(() => r()));
  }
}
