import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import { topics } from '../contracts/topics.ts';
import { decodePayload, envelope, RpcRequest, UplinkAck, type RpcResponse, type SiteStatusBody } from '../contracts/messages.ts';
import { EwError, isEwError } from '../contracts/errors.ts';
import { isFrame } from '../contracts/infer-wire.ts';
import { clipText } from '../contracts/bounds.ts';
import type { Logger } from '../lib/logger.ts';
import { systemClock, type Clock } from '../lib/clock.ts';
import { Backoff } from './backoff.ts';

export interface Credentials {
  siteId: string;
  url: string;
  username: string;
  password: string;
  clientId: string;
  protocolVersion?: 4 | 5;
  ca?: string;
  /** Put before every topic on the broker (`prod/` → `prod/ew/{site}/…`): installations sharing a broker (docs/operators.md). */
  topicPrefix?: string;
}

export type LinkState = 'connecting' | 'connected' | 'disconnected' | 'refused';

export interface CloudLinkOptions {
  creds: Credentials;
  bootId: string;
  log: Logger;
  /** First reconnect window (ms); each failure doubles it, with full jitter, up to reconnectMaxMs. Default 1,000. */
  reconnectPeriodMs?: number;
  /** Largest reconnect window (ms). Default 30,000. */
  reconnectMaxMs?: number;
  /**
   * MQTT keepalive to the cloud (s): with no traffic, a ping goes every keepalive and a link
   * whose ping is not answered by the next one is dropped — a silent partition (packets
   * black-holed, no RST) is noticed within about 1.5× this. Default 10.
   */
  keepaliveS?: number;
  clock?: Clock;
  random?: () => number;
  /** Called for each desired-state message; the PUBACK waits for it (store before ack). */
  onDesired: (payload: Buffer) => Promise<void>;
  /** Answers a request from the cloud (`ew/{site}/rpc/req/{id}`). */
  onRpc?: (method: string, params: Record<string, unknown>) => Promise<unknown>;
  /** Routed inference: binary frames on the same request topics (see contracts/infer-wire.ts). */
  onFrame?: (payload: Buffer) => void;
  onState: (s: LinkState) => void;
  /** The cloud stored these uplink message ids (`ew/{site}/ack`). */
  onStoreAck?: (ids: string[]) => void;
  /**
   * Whether the cloud said (in its desired state, `uplinkAck`) that it acknowledges storage, as
   * last known (persisted by the caller so a restart does not fall back to PUBACK-deletes before
   * the desired state arrives). Changes are reported through onStoreAckMode.
   */
  storeAckAdvertised?: boolean;
  onStoreAckMode?: (advertised: boolean) => void;
}

/**
 * The agent's one MQTT 5 connection to the cloud: agent-initiated (works behind NAT),
 * persistent session, QoS 1, a last will on its `reported` topic so the cloud hears of an
 * unclean loss at once. Reconnects by itself; the cloud can be down for as long as it likes.
 */
export class CloudLink {
  private client?: MqttClient;
  private state: LinkState = 'disconnected';
  private stateSince: number;
  private lastContact: number | null = null;
  private stopped = false;
  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private advertised: boolean;
  private ackSubscribed = false;
  /** The installation's topic prefix ('' for none). */
  private readonly p: string;

  constructor(private readonly o: CloudLinkOptions) {
    this.advertised = o.storeAckAdvertised ?? false;
    this.p = o.creds.topicPrefix ?? '';
    this.clock = o.clock ?? systemClock;
    this.stateSince = this.clock.now();
    this.backoff = new Backoff(
      this.clock,
      { baseMs: o.reconnectPeriodMs ?? 1000, capMs: Math.max(o.reconnectPeriodMs ?? 1000, o.reconnectMaxMs ?? 30_000) },
      o.random,
    );
  }

  get linkState(): LinkState {
    return this.state;
  }

  /**
   * Rows wait for the cloud's store acknowledgement only when the cloud says it sends them AND
   * the broker let us subscribe to them (an operator's ACL that predates `ew/{site}/ack` refuses
   * it: then PUBACK deletes, as before, and a warning says what to add).
   */
  get storeAcks(): boolean {
    return this.advertised && this.ackSubscribed;
  }

  /** What /healthz shows of the link: its state, since when, the last packet from the cloud, reconnect failures. */
  health(): { state: LinkState; since: number; lastContactAt: number | null; keepaliveS: number; reconnectFailures: number } {
    return {
      state: this.state,
      since: this.stateSince,
      lastContactAt: this.lastContact,
      keepaliveS: this.o.keepaliveS ?? 10,
      reconnectFailures: this.backoff.failures,
    };
  }

  private setState(s: LinkState): void {
    if (s === this.state) return;
    this.state = s;
    this.stateSince = this.clock.now();
    this.o.onState(s);
  }

  start(): void {
    const { creds, log, bootId } = this.o;
    const will = envelope('offline', { bootId, reason: 'connection lost' }, this.clock);
    const client = mqtt.connect(creds.url, {
      clientId: creds.clientId,
      username: creds.username,
      password: creds.password,
      // The cloud says which protocol its hub speaks (the embedded aedes hub is MQTT 3.1.1).
      protocolVersion: creds.protocolVersion ?? 4,
      clean: false,
      ...(creds.protocolVersion === 5 ? { properties: { sessionExpiryInterval: 7 * 24 * 3600 } } : {}),
      keepalive: this.o.keepaliveS ?? 10,
      // Reconnects are ours (exponential back-off with full jitter), not mqtt.js's fixed period.
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      queueQoSZero: false,
      resubscribe: true,
      // No table of 65,536 pre-built two-byte Buffers (6 MB of heap, a sixth of an idle agent's):
      // mqtt-packet builds each number as it writes it. The switch is mqtt-packet's, process-wide,
      // so it holds for the embedded device broker (aedes) too (bench:agent).
      writeCache: false,
      will: { topic: this.p + topics.reported(creds.siteId), payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: false },
      // mqtts with a private CA: trust it (certificates are always verified).
      ...(creds.ca ? { ca: creds.ca } : {}),
    });
    this.client = client;
    this.setState('connecting');
    client.handleMessage = (packet: IPublishPacket, done) => {
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      // The contract's topic, without this installation's prefix.
      const topic = this.p && packet.topic.startsWith(this.p) ? packet.topic.slice(this.p.length) : packet.topic;
      if (topic === topics.ack(creds.siteId)) {
        done();
        try {
          this.o.onStoreAck?.(decodePayload(UplinkAck, payload, topic).body.ids);
        } catch (e) {
          log.warn({ err: (e as Error).message }, 'malformed store acknowledgement ignored');
        }
        return;
      }
      if (topic !== topics.desired(creds.siteId)) {
        done();
        if (this.o.onFrame && isFrame(payload)) {
          this.o.onFrame(payload);
          return;
        }
        void this.answer(topic, payload);
        return;
      }
      this.noteAdvertised(payload);
      this.o.onDesired(payload).then(
        () => done(),
        (e: Error) => {
          // Not stored: no PUBACK, and a reconnect makes the broker deliver it again.
          log.error({ err: e }, 'storing desired state failed; reconnecting for redelivery');
          client.stream?.destroy();
        },
      );
    };
    client.on('connect', () => {
      log.info({ url: creds.url }, 'connected to cloud');
      this.backoff.reset();
      // Routed inference answers are small and latency-bound: no Nagle delay on the link.
      (client.stream as { setNoDelay?: (v: boolean) => void } | undefined)?.setNoDelay?.(true);
      // Subscribed on every connect: cheap, and the retained desired state arrives again,
      // which covers a cloud hub that lost our session.
      client.subscribe(
        { [this.p + topics.desired(creds.siteId)]: { qos: 1 }, [this.p + topics.rpcRequests(creds.siteId)]: { qos: 1 } },
        (err, granted) => {
          if (err || granted?.some((g) => g.qos >= 0x80)) log.error({ err: err?.message }, 'cloud refused the desired-state subscription');
        },
      );
      // Apart, so that a broker ACL without it refuses only this one (QoS 0: a lost ack only
      // means the result is sent again and acknowledged again).
      client.subscribe({ [this.p + topics.ack(creds.siteId)]: { qos: 0 } }, (err, granted) => {
        this.ackSubscribed = !err && !!granted?.length && granted.every((g) => g.qos < 0x80);
        if (!this.ackSubscribed && this.advertised)
          log.warn(
            { topic: topics.ack(creds.siteId) },
            "the broker refused the store-acknowledgement subscription: results are deleted on the broker's PUBACK (allow the site to subscribe to its ack topic, docs/operators.md)",
          );
      });
      this.setState('connected');
    });
    client.on('packetreceive', () => {
      this.lastContact = this.clock.now();
    });
    client.on('close', () => {
      if (this.state === 'connected' || this.state === 'connecting') this.setState('disconnected');
      if (this.stopped) return;
      const delay = this.backoff.schedule(() => {
        if (this.stopped) return;
        if (this.state !== 'refused') this.setState('connecting');
        client.reconnect();
      });
      log.debug({ delayMs: delay, failures: this.backoff.failures }, 'cloud link down; reconnecting after a jittered back-off');
    });
    client.on('error', (e: Error & { code?: number }) => {
      // CONNACK 0x86/0x87 (MQTT 5) or 4/5 (3.1.1): the credentials were refused — revoked?
      if (e.code === 134 || e.code === 135 || e.code === 4 || e.code === 5) {
        if (this.state !== 'refused')
          log.error({ code: e.code }, "the cloud refused this site's credentials (revoked?); running on, retrying");
        this.setState('refused');
      } else {
        log.debug({ err: e.message }, 'cloud link error');
      }
    });
  }

  /** Reads `uplinkAck` from a desired-state message (any generation: a cloud upgrade sets it without changing apps). */
  private noteAdvertised(payload: Buffer): void {
    let v = false;
    try {
      v = (JSON.parse(payload.toString('utf8')) as { body?: { uplinkAck?: unknown } })?.body?.uplinkAck === true;
    } catch {
      return; // onDesired reports the malformed message
    }
    if (v === this.advertised) return;
    this.advertised = v;
    this.o.onStoreAckMode?.(v);
  }

  private async answer(topic: string, payload: Buffer): Promise<void> {
    const id = topic.split('/').pop() ?? '';
    let res: RpcResponse;
    try {
      const req = decodePayload(RpcRequest, payload, topic);
      if (!this.o.onRpc) throw new EwError('NOT_FOUND', 'this agent answers no requests');
      res = envelope('rpc-response', { ok: true, result: await this.o.onRpc(req.body.method, req.body.params) }, this.clock);
    } catch (e) {
      // The site's own code and field travel to the cloud, which passes them on; bounded like the
      // contract's fields so that a long message cannot get the whole answer refused.
      const code = isEwError(e) ? e.code : 'INTERNAL';
      const path = isEwError(e) && e.path ? { path: clipText(e.path, 500) } : {};
      res = envelope('rpc-response', { ok: false, error: { code, message: clipText((e as Error).message, 2000), ...path } }, this.clock);
    }
    await this.publish(topics.rpcResponse(this.o.creds.siteId, id), JSON.stringify(res)).catch(() => {});
  }

  /** QoS 1 publish that resolves on PUBACK; rejects at once when not connected. */
  publish(topic: string, payload: Buffer | string, qos: 0 | 1 = 1): Promise<void> {
    const c = this.client;
    if (!c || !c.connected) return Promise.reject(new Error('not connected'));
    return c.publishAsync(this.p + topic, payload, { qos }).then(() => undefined);
  }

  /** Heartbeat: QoS 0, dropped when offline (a stale heartbeat is worth nothing). */
  sendStatus(body: SiteStatusBody): void {
    const c = this.client;
    if (!c?.connected) return;
    const msg = envelope('status', body, this.clock);
    c.publish(this.p + topics.reported(this.o.creds.siteId), JSON.stringify(msg), { qos: 0 });
  }

  /** Clean stop: says goodbye (so the cloud marks us offline at once) and disconnects. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.backoff.stop();
    const c = this.client;
    if (!c) return;
    if (c.connected) {
      const bye = envelope('offline', { bootId: this.o.bootId, reason: 'agent stopped' }, this.clock);
      await Promise.race([
        c.publishAsync(this.p + topics.reported(this.o.creds.siteId), JSON.stringify(bye), { qos: 1 }).catch(() => {}),
        new Promise((r) => setTimeout(r, 2000).unref()),
      ]);
    }
    await c.endAsync(true);
  }
}
