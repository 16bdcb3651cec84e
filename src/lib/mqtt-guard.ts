import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';
import type { Client } from 'aedes';
import type { Clock } from './clock.ts';
import { systemClock } from './clock.ts';
import type { Logger } from './logger.ts';
import { TokenBuckets } from './rate-limit.ts';
import { EwError } from '../contracts/errors.ts';
import { Counter, type Registry } from 'prom-client';

/**
 * What an MQTT listener (the cloud's embedded hub, a site's device broker) accepts before and
 * after a client authenticates. aedes buffers a whole packet before it looks at it, and checks
 * credentials only once the CONNECT is complete; these bounds act on the byte stream before
 * aedes sees it. Every field has its default in the comment (docs/operators.md lists them).
 */
export interface MqttLimits {
  /** Bytes a client may send before it is authenticated, CONNECT included. Default 64 KiB. */
  preAuthMaxBytes: number;
  /** Largest packet an authenticated client may send (the whole packet). Default 1 MiB. */
  maxPacketBytes: number;
  /** Connections not yet authenticated, all addresses together. Default 1,000. */
  maxPendingConnections: number;
  /** Connections not yet authenticated from one address. Default 20. */
  maxPendingPerAddress: number;
  /** New connections per address: a burst, then this many per second. Default 30, then 5/s. */
  connectBurst: number;
  connectPerSecond: number;
  /** A connection that has not authenticated within this time is closed. Default 10 s. */
  connectTimeoutMs: number;
  /** Failed logins per address: a burst, then this many per minute; beyond, logins are refused unchecked. Default 10, then 6/min. */
  authFailBurst: number;
  authFailPerMinute: number;
  /** Most addresses remembered by the rate tables (least recently seen forgotten first). Default 100,000. */
  maxTrackedAddresses: number;
}

export const DEFAULT_MQTT_LIMITS: MqttLimits = {
  preAuthMaxBytes: 64 * 1024,
  maxPacketBytes: 1024 * 1024,
  maxPendingConnections: 1000,
  maxPendingPerAddress: 20,
  connectBurst: 30,
  connectPerSecond: 5,
  connectTimeoutMs: 10_000,
  authFailBurst: 10,
  authFailPerMinute: 6,
  maxTrackedAddresses: 100_000,
};

/** A Prometheus counter of the guard's refusals by reason (read at scrape time). */
export function guardRefusalCounter(name: string, help: string, registry: Registry, guard: () => MqttGuard | undefined): Counter<'reason'> {
  return new Counter({
    name,
    help,
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      const g = guard();
      if (!g) return;
      this.reset();
      for (const [reason, n] of Object.entries(g.refused)) if (n > 0) this.inc({ reason }, n);
    },
  });
}

/** Parses `--mqtt-limits name=value,…` (names of MqttLimits), e.g. `maxPacketBytes=262144,connectTimeoutMs=5000`. */
export function parseMqttLimits(spec: string, flag = '--mqtt-limits'): Partial<MqttLimits> {
  const out: Partial<MqttLimits> = {};
  for (const part of spec
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    const m = /^([A-Za-z]+)=(\d+(?:\.\d+)?)$/.exec(part);
    if (!m || !(m[1]! in DEFAULT_MQTT_LIMITS) || !(Number(m[2]) > 0)) {
      throw new EwError(
        'CONFIG_INVALID',
        `${flag}: "${part}" is not name=positive number with name one of ${Object.keys(DEFAULT_MQTT_LIMITS).join(', ')}`,
        { path: flag.replace(/^--/, '') },
      );
    }
    out[m[1] as keyof MqttLimits] = Number(m[2]);
  }
  return out;
}

export type GuardRefusal =
  | 'pending-total'
  | 'pending-address'
  | 'connect-rate'
  | 'pre-auth-bytes'
  | 'packet-size'
  | 'not-connect'
  | 'malformed'
  | 'connect-timeout'
  | 'auth-throttled';

/**
 * The MQTT fixed header as a streaming state machine: it reads each packet's type and announced
 * remaining length and skips the body without keeping it, so a violation is seen at the header,
 * before a single byte of a huge body is buffered. Pure (no I/O), tested byte by byte.
 */
export class MqttPacketMeter {
  private state: 'type' | 'length' | 'topicLength' | 'topic' | 'body' = 'type';
  private type = 0;
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private left = 0;
  private size = 0;
  private topicLength = 0;
  private topicLengthBytes = 0;
  private topicWanted = 0;
  private topic: number[] = [];
  /** Packets whose header was read completely. */
  packets = 0;

  /** Topic names longer than this are judged by their first bytes (ours are far shorter). */
  static readonly TOPIC_PEEK = 512;

  /**
   * Feeds received bytes. `check(type, packetBytes, index)` is called at each complete header
   * with the packet's total size (header included); returning a string stops metering and is
   * returned as the violation. With `onTopic`, the topic name of each PUBLISH is read too (at
   * most TOPIC_PEEK bytes, nothing else of the body is kept) and `onTopic(topic, packetBytes)`
   * may refuse it the same way. Returns undefined while all is well.
   */
  feed(
    chunk: Uint8Array,
    check: (type: number, packetBytes: number, index: number) => string | undefined,
    onTopic?: (topic: string, packetBytes: number) => string | undefined,
  ): string | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'body') {
        const n = Math.min(this.left, chunk.length - i);
        this.left -= n;
        i += n;
        if (this.left === 0) this.state = 'type';
        continue;
      }
      if (this.state === 'topic') {
        const n = Math.min(this.topicWanted - this.topic.length, chunk.length - i);
        for (let k = 0; k < n; k++) this.topic.push(chunk[i + k]!);
        i += n;
        this.left -= n;
        if (this.topic.length === this.topicWanted) {
          const v = onTopic!(Buffer.from(this.topic).toString('utf8'), this.size);
          if (v) return v;
          this.topic = [];
          this.state = this.left === 0 ? 'type' : 'body';
        }
        continue;
      }
      const byte = chunk[i++]!;
      if (this.state === 'type') {
        this.type = byte >> 4;
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
        this.state = 'length';
        continue;
      }
      if (this.state === 'topicLength') {
        // The PUBLISH variable header starts with the topic name's length, two bytes big-endian.
        this.topicLength = this.topicLength * 256 + byte;
        this.left--;
        if (++this.topicLengthBytes < 2) continue;
        this.topicWanted = Math.min(this.topicLength, MqttPacketMeter.TOPIC_PEEK, this.left);
        if (this.topicWanted > 0) {
          this.topic = [];
          this.state = 'topic';
          continue;
        }
        const v = onTopic!('', this.size);
        if (v) return v;
        this.state = this.left === 0 ? 'type' : 'body';
        continue;
      }
      // Remaining length: 7 bits per byte, at most 4 bytes (MQTT 3.1.1 §2.2.3).
      this.length += (byte & 0x7f) * this.multiplier;
      this.multiplier *= 128;
      this.lengthBytes++;
      if (byte & 0x80) {
        if (this.lengthBytes >= 4) return 'malformed remaining length';
        continue;
      }
      this.size = 1 + this.lengthBytes + this.length;
      const v = check(this.type, this.size, this.packets++);
      if (v) return v;
      this.left = this.length;
      if (onTopic && this.type === 3 && this.left >= 2) {
        this.topicLength = 0;
        this.topicLengthBytes = 0;
        this.state = 'topicLength';
      } else {
        this.state = this.left === 0 ? 'type' : 'body';
      }
    }
    return undefined;
  }
}

/** One accepted connection: the socket seen through the meter, handed to aedes as its stream. */
class GuardedConnection extends Duplex {
  constructor(
    readonly socket: Socket,
    private readonly inspect: (chunk: Buffer) => boolean,
  ) {
    super({ allowHalfOpen: false });
    socket.on('data', (chunk: Buffer) => {
      if (!this.inspect(chunk)) return;
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (e) => this.destroy(e));
    socket.on('close', () => this.destroy());
  }
  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }
  override _read(): void {
    this.socket.resume();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.socket.destroyed) {
      cb();
      return;
    }
    this.socket.write(chunk, (e) => cb(e ?? null));
  }
  // aedes corks its stream and mqtt-packet writes a packet in pieces (header, length, topic,
  // payload): without _writev each piece was its own socket write and system call — most of a
  // 10,000-site desired-state fan-out's CPU (bench:fleet). Corked pieces go out as one write.
  override _writev(chunks: { chunk: Buffer }[], cb: (e?: Error | null) => void): void {
    if (this.socket.destroyed) {
      cb();
      return;
    }
    const buf = chunks.length === 1 ? chunks[0]!.chunk : Buffer.concat(chunks.map((c) => c.chunk));
    this.socket.write(buf, (e) => cb(e ?? null));
  }
  override _final(cb: (e?: Error | null) => void): void {
    this.socket.end(() => cb());
  }
  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}

interface ConnState {
  address: string;
  authenticated: boolean /** Bytes announced by packet headers before authentication. */;
  bytes: number;
  cancelTimer: () => void;
  released: boolean;
}

type AuthError = Error & { returnCode: 1 | 2 | 3 | 4 | 5 };
type AuthenticateFn = (
  client: Client,
  username: Readonly<string> | undefined,
  password: Readonly<Buffer> | undefined,
  done: (err: AuthError | null, ok: boolean | null) => void,
) => void;

/**
 * Protects an aedes listener before and after authentication: packet size caps, a cap on
 * unauthenticated connections (all together and per address), a connection rate per address,
 * a deadline for completing CONNECT, and a bad-password throttle per address. Apply it with
 * `net.createServer(guard.handler(broker.handle))` and `authenticate: guard.authenticate(fn)`.
 */
export class MqttGuard {
  readonly limits: MqttLimits;
  private readonly clock: Clock;
  private readonly conns = new WeakMap<object, ConnState>();
  private pendingTotal = 0;
  private readonly pendingByAddress = new Map<string, number>();
  private readonly connectRate: TokenBuckets;
  private readonly authFailures: TokenBuckets;
  /** Refusals by reason, since start (exported as a metric by the owner). */
  readonly refused: Record<GuardRefusal, number> = {
    'pending-total': 0,
    'pending-address': 0,
    'connect-rate': 0,
    'pre-auth-bytes': 0,
    'packet-size': 0,
    'not-connect': 0,
    malformed: 0,
    'connect-timeout': 0,
    'auth-throttled': 0,
  };

  /**
   * `packetLimitFor(topic)`: a larger bound than maxPacketBytes for the PUBLISH packets of some
   * topics (the hub's routed inference answers); the topic is read before any of the body is
   * kept, so everything else is still cut at maxPacketBytes.
   */
  constructor(
    private readonly o: {
      limits?: Partial<MqttLimits>;
      clock?: Clock;
      log: Logger;
      name: string;
      packetLimitFor?: (topic: string) => number | undefined;
    },
  ) {
    this.limits = { ...DEFAULT_MQTT_LIMITS, ...o.limits };
    this.clock = o.clock ?? systemClock;
    for (const [k, v] of Object.entries(this.limits)) {
      if (!(typeof v === 'number' && v > 0)) throw new Error(`MQTT limit ${k} must be a positive number (got ${v})`);
    }
    this.connectRate = new TokenBuckets({
      capacity: this.limits.connectBurst,
      refillPerSecond: this.limits.connectPerSecond,
      maxKeys: this.limits.maxTrackedAddresses,
      clock: this.clock,
    });
    this.authFailures = new TokenBuckets({
      capacity: this.limits.authFailBurst,
      refillPerSecond: this.limits.authFailPerMinute / 60,
      maxKeys: this.limits.maxTrackedAddresses,
      clock: this.clock,
    });
  }

  /** Connections accepted and not yet authenticated. */
  get pending(): number {
    return this.pendingTotal;
  }

  /** Addresses the rate tables remember (bounded by maxTrackedAddresses). */
  get trackedAddresses(): number {
    return Math.max(this.connectRate.size, this.authFailures.size);
  }

  private refuse(reason: GuardRefusal, address: string, socket: Socket, detail?: string): void {
    this.refused[reason]++;
    this.o.log.warn({ listener: this.o.name, address, reason, detail }, 'MQTT connection refused by the guard');
    socket.destroy();
  }

  private release(st: ConnState): void {
    if (st.released) return;
    st.released = true;
    st.cancelTimer();
    this.pendingTotal--;
    const n = (this.pendingByAddress.get(st.address) ?? 1) - 1;
    if (n <= 0) this.pendingByAddress.delete(st.address);
    else this.pendingByAddress.set(st.address, n);
  }

  /**
   * Applies the guard to a broker: its `authenticate` is wrapped in place (see `authenticate`),
   * and the returned function replaces `broker.handle` for `net.createServer` /
   * `tls.createServer`. Two lines in the broker's owner, whatever its own authentication does.
   */
  protect(broker: { authenticate: AuthenticateFn; handle: (stream: Duplex) => unknown }): (socket: Socket) => void {
    broker.authenticate = this.authenticate(broker.authenticate.bind(broker));
    return this.handler(broker.handle);
  }

  /** Wraps aedes's `handle` for `net.createServer` / `tls.createServer`. */
  handler(handle: (stream: Duplex) => unknown): (socket: Socket) => void {
    return (socket: Socket) => {
      const address = socket.remoteAddress ?? 'unknown';
      const l = this.limits;
      if (this.pendingTotal >= l.maxPendingConnections) return this.refuse('pending-total', address, socket);
      if ((this.pendingByAddress.get(address) ?? 0) >= l.maxPendingPerAddress) return this.refuse('pending-address', address, socket);
      if (!this.connectRate.take(address).ok) return this.refuse('connect-rate', address, socket);
      this.pendingTotal++;
      this.pendingByAddress.set(address, (this.pendingByAddress.get(address) ?? 0) + 1);
      const meter = new MqttPacketMeter();
      const st: ConnState = { address, authenticated: false, bytes: 0, released: false, cancelTimer: () => {} };
      st.cancelTimer = this.clock.setTimer(l.connectTimeoutMs, () => {
        if (!st.authenticated) this.refuse('connect-timeout', address, socket);
      });
      let stopped = false;
      const conn = new GuardedConnection(socket, (chunk) => {
        if (stopped) return false;
        const limitFor = this.o.packetLimitFor;
        const v = meter.feed(
          chunk,
          (type, size, index) => {
            if (index === 0 && type !== 1) return 'not-connect';
            if (st.authenticated) {
              // A PUBLISH over the bound waits for its topic when some topics may be larger.
              return size > l.maxPacketBytes && !(limitFor && type === 3) ? 'packet-size' : undefined;
            }
            // What was announced counts, not what arrived: a 260 MB CONNECT is cut at its header.
            st.bytes += size;
            return st.bytes > l.preAuthMaxBytes ? 'pre-auth-bytes' : undefined;
          },
          limitFor &&
            ((topic, size) => {
              if (!st.authenticated || size <= l.maxPacketBytes) return undefined;
              const own = limitFor(topic);
              return own !== undefined && size <= own ? undefined : 'packet-size';
            }),
        );
        if (v) {
          stopped = true;
          const reason: GuardRefusal = v === 'not-connect' || v === 'pre-auth-bytes' || v === 'packet-size' ? v : 'malformed';
          this.refuse(reason, address, socket, v);
          return false;
        }
        return true;
      });
      socket.once('close', () => this.release(st));
      this.conns.set(conn, st);
      handle(conn);
    };
  }

  /**
   * Wraps aedes's `authenticate`: refuses at once (return code 5) an address that spent its
   * bad-password budget, counts refusals for bad credentials (return codes 4 and 5), and lifts
   * the pre-authentication bounds once the client is in.
   */
  authenticate(inner: AuthenticateFn): AuthenticateFn {
    return (client, username, password, done) => {
      const st = this.conns.get(client.conn as object);
      const address = st?.address ?? 'unknown';
      if (this.authFailures.peek(address) < 1) {
        this.refused['auth-throttled']++;
        this.o.log.warn(
          { listener: this.o.name, address, retryAfterMs: this.authFailures.waitMs(address) },
          'MQTT login refused unchecked: too many bad passwords from this address',
        );
        const e = Object.assign(new Error('too many failed logins from this address; try again later'), { returnCode: 5 as const });
        done(e, false);
        return;
      }
      inner(client, username, password, (err, ok) => {
        if (!err && ok) {
          if (st) {
            st.authenticated = true;
            this.release(st);
          }
        } else if (err?.returnCode === 4 || err?.returnCode === 5) {
          this.authFailures.take(address);
        }
        done(err, ok);
      });
    };
  }
}
