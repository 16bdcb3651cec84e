import { createServer, type Server } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { Aedes, type Client, type PublishPacket, type Subscription } from 'aedes';
import type { Hub, HubHandler, SiteAuthenticator } from './hub.ts';
import { parseTopic, TOPIC_ROOT } from '../../contracts/topics.ts';
import type { Logger } from '../../lib/logger.ts';
import { indexedMemoryPersistence } from './retained.ts';
import { MqttGuard, type MqttLimits } from '../../lib/mqtt-guard.ts';
import { MAX_FRAME_BYTES } from '../../contracts/infer-wire.ts';
import type { Clock } from '../../lib/clock.ts';

/**
 * The ACL, as pure functions of the authenticated site id. A site publishes only its reports,
 * its uplink and its RPC responses; it subscribes only to its desired state and RPC requests.
 * Wildcards are refused outright so that `ew/#` or `ew/+/desired` can never widen a grant.
 */
export function mayPublish(siteId: string, topic: string): boolean {
  const t = parseTopic(topic);
  if (!t || t.siteId !== siteId) return false;
  return t.kind === 'reported' || t.kind === 'up' || t.kind === 'rpc-res';
}

export function maySubscribe(siteId: string, filter: string): boolean {
  if (filter === `${TOPIC_ROOT}/${siteId}/desired`) return true;
  if (filter === `${TOPIC_ROOT}/${siteId}/rpc/req/#`) return true;
  // Store acknowledgements: this hub never sends them (its PUBACK follows the commit), but an
  // agent subscribes wherever it is, and a refusal would read as a fault.
  if (filter === `${TOPIC_ROOT}/${siteId}/ack`) return true;
  return false;
}

export interface EmbeddedHubOptions {
  port: number;
  host?: string;
  /** The URL handed to agents at enrollment; defaults to mqtt://{host}:{boundPort}. */
  publicUrl?: string;
  auth: SiteAuthenticator;
  /** MQTT over TLS (mqtts) with this certificate and key (PEM). */
  tls?: { cert: Buffer; key: Buffer };
  log: Logger;
  /** Counted per refusal: 'auth' | 'publish' | 'subscribe' | 'retain' (a retain flag dropped). */
  onRefused?: (what: 'auth' | 'publish' | 'subscribe' | 'retain', siteId: string | undefined) => void;
  /** Bounds before and after authentication (src/lib/mqtt-guard.ts; defaults in docs/operators.md). */
  limits?: Partial<MqttLimits>;
  /** Drives the guard's connect deadline and rate tables (tests). Default: the system clock. */
  clock?: Clock;
}

class RefusedError extends Error {
  returnCode: number;
  constructor(message: string, returnCode: number) {
    super(message);
    this.returnCode = returnCode;
  }
}

export class EmbeddedHub implements Hub {
  readonly kind = 'embedded' as const;
  readonly agentProtocolVersion = 4 as const;
  private broker!: Aedes;
  private server!: Server;
  private boundPort = 0;
  /** Sites revoked while this process runs; checked on every publish so revocation is instant. */
  private readonly revoked = new Set<string>();
  private persistence!: ReturnType<typeof indexedMemoryPersistence>;
  /** Before-CONNECT and packet-size bounds, connection and bad-password throttles. */
  guard!: MqttGuard;

  constructor(private readonly opts: EmbeddedHubOptions) {}

  get port(): number {
    return this.boundPort;
  }

  get agentUrl(): string {
    return (
      this.opts.publicUrl ??
      `${this.opts.tls ? 'mqtts' : 'mqtt'}://${this.opts.host === undefined || this.opts.host === '0.0.0.0' ? '127.0.0.1' : this.opts.host}:${this.boundPort}`
    );
  }

  async start(handler: HubHandler): Promise<void> {
    const { auth, log, onRefused } = this.opts;
    const revoked = this.revoked;
    // A routed inference answer (a binary frame of up to MAX_FRAME_BYTES) fits one packet on
    // `ew/{site}/rpc/res/{id}`; every other packet is cut at maxPacketBytes, at its topic.
    const guard = (this.guard = new MqttGuard({
      limits: this.opts.limits,
      clock: this.opts.clock,
      log,
      name: 'hub',
      packetLimitFor: (topic) => (parseTopic(topic)?.kind === 'rpc-res' ? MAX_FRAME_BYTES + 64 * 1024 : undefined),
    }));
    this.persistence = indexedMemoryPersistence();
    this.broker = await Aedes.createBroker({
      // The hub holds no sessions of its own worth keeping: sites reconnect and the cloud
      // republishes desired state at start-up, so in-memory persistence is right — with
      // retained messages indexed per site (see retained.ts).
      persistence: this.persistence.aedes,
      // mqemitter queues emits beyond this many in flight and drains its queue recursively;
      // with thousands of sites heartbeating during a desired-state fan-out the default (100)
      // overflowed the stack at 10,000 sites (bench:fleet). Every site message is ingested
      // before routing, so in-flight emits are cheap; keep the queue out of play.
      concurrency: 100_000,
      heartbeatInterval: 60_000,
      connectTimeout: 30_000,
      authenticate(client: Client, username, password, done) {
        const siteId = username ?? '';
        // The client id must be the site id: otherwise one site could take over another's session.
        if (!siteId || client.id !== siteId || !password) {
          onRefused?.('auth', siteId || undefined);
          done(new RefusedError('client id must equal the username (site id) and a password is required', 4) as never, false);
          return;
        }
        if (revoked.has(siteId)) {
          onRefused?.('auth', siteId);
          done(new RefusedError('site revoked', 5) as never, false);
          return;
        }
        auth.verify(siteId, password.toString('utf8')).then(
          (ok) => {
            if (!ok) {
              onRefused?.('auth', siteId);
              log.warn({ siteId }, 'MQTT connect refused: bad site credentials');
              done(new RefusedError('bad username or password', 4) as never, false);
            } else done(null, true);
          },
          (e: Error) => {
            log.error({ err: e, siteId }, 'MQTT auth failed on the store');
            done(new RefusedError('server unavailable', 3) as never, false);
          },
        );
      },
      authorizePublish(client: Client | null, packet: PublishPacket, cb) {
        if (!client) return cb(null); // the cloud's own publishes
        const siteId = client.id;
        if (revoked.has(siteId) || !mayPublish(siteId, packet.topic)) {
          onRefused?.('publish', siteId);
          log.warn({ siteId, topic: packet.topic }, 'MQTT publish refused by ACL');
          // Disconnecting is MQTT 3.1.1's only refusal.
          return cb(new Error(`site ${siteId} may not publish to ${packet.topic}`));
        }
        // A site has no reason to retain anything (the cloud keeps its status and results in the
        // store): a retained message would pin memory here for good. The message is delivered,
        // never stored. Dropping the flag rather than the connection keeps a misconfigured agent
        // from resending the same message in a loop.
        if (packet.retain) {
          packet.retain = false;
          onRefused?.('retain', siteId);
          log.debug({ siteId, topic: packet.topic }, 'retain flag of a site publish dropped');
        }
        // Ingest here, not in a subscription: aedes writes a QoS 1 PUBACK before it routes a
        // message to subscribers, but only after this hook. So the site's PUBACK (and the
        // deletion from its outbox) follows our commit. A failure refuses the publish, which
        // drops the connection without a PUBACK; the site resends after reconnecting.
        const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
        handler(packet.topic, payload).then(
          () => cb(null),
          (e: Error) => {
            log.error({ err: e, topic: packet.topic }, 'hub handler failed; the site will resend');
            cb(e);
          },
        );
      },
      authorizeSubscribe(client: Client, sub: Subscription, cb) {
        if (revoked.has(client.id) || !maySubscribe(client.id, sub.topic)) {
          onRefused?.('subscribe', client.id);
          log.warn({ siteId: client.id, topic: sub.topic }, 'MQTT subscribe refused by ACL');
          // A null subscription answers SUBACK 0x80 (failure) without dropping the connection.
          return cb(null, null);
        }
        cb(null, sub);
      },
    });
    this.broker.on('clientError', (client, err) => log.debug({ siteId: client?.id, err: err.message }, 'MQTT client error'));
    // No Nagle: routed inference is small request/response messages, and Nagle's delay against
    // the peer's delayed ACK added tens of ms per exchange (bench:router).
    const handle = guard.protect(this.broker as never);
    this.server = this.opts.tls
      ? createTlsServer(
          { cert: this.opts.tls.cert, key: this.opts.tls.key, handshakeTimeout: guard.limits.connectTimeoutMs, noDelay: true },
          handle,
        )
      : createServer({ noDelay: true }, handle);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port, this.opts.host ?? '0.0.0.0', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = this.server.address();
    this.boundPort = typeof addr === 'object' && addr ? addr.port : this.opts.port;
  }

  publish(topic: string, payload: string | Buffer, opts: { retain?: boolean; qos?: 0 | 1 } = {}): Promise<void> {
    return new Promise((resolve, reject) => {
      this.broker.publish(
        {
          cmd: 'publish',
          topic,
          payload: typeof payload === 'string' ? Buffer.from(payload) : payload,
          qos: opts.qos ?? 1,
          retain: opts.retain ?? false,
          dup: false,
        },
        (err?: Error) => (err ? reject(err) : resolve()),
      );
    });
  }

  disconnectSite(siteId: string): void {
    this.revoked.add(siteId);
    const clients = (this.broker as unknown as { clients: Record<string, Client | undefined> }).clients;
    clients[siteId]?.close();
  }

  async clearRetained(siteId: string): Promise<number> {
    return this.persistence?.clearRetained(`${TOPIC_ROOT}/${siteId}`) ?? 0;
  }

  /** Retained messages held in memory (tests, diagnostics). */
  retainedStats(): { messages: number; bytes: number } {
    return this.persistence?.retainedStats() ?? { messages: 0, bytes: 0 };
  }

  connectionCount(): number {
    return this.broker?.connectedClients ?? 0;
  }

  async close(): Promise<void> {
    // The broker first: it disconnects every client, which lets the listening socket close.
    if (this.broker) await new Promise<void>((resolve) => this.broker.close(() => resolve()));
    if (this.server) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
