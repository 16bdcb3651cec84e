import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import { topics } from '../contracts/topics.ts';
import { decodePayload, envelope, RpcRequest, type RpcResponse, type SiteStatusBody } from '../contracts/messages.ts';
import { EwError, isEwError } from '../contracts/errors.ts';
import { isFrame } from '../contracts/infer-wire.ts';
import { clipText } from '../contracts/bounds.ts';
import type { Logger } from '../lib/logger.ts';
import { systemClock, type Clock } from '../lib/clock.ts';
import { Backoff } from './backoff.ts';

export interface Credentials { siteId: string; url: string; username: string; password: string; clientId: string; protocolVersion?: 4 | 5; ca?: string }

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

  constructor(private readonly o: CloudLinkOptions) {
    this.clock = o.clock ?? systemClock;
    this.stateSince = this.clock.now();
    this.backoff = new Backoff(this.clock, { baseMs: o.reconnectPeriodMs ?? 1000, capMs: Math.max(o.reconnectPeriodMs ?? 1000, o.reconnectMaxMs ?? 30_000) }, o.random);
  }

  get linkState(): LinkState {
    return this.state;
  }

  /** What /healthz shows of the link: its state, since when, the last packet from the cloud, reconnect failures. */
  health(): { state: LinkState; since: number; lastContactAt: number | null; keepaliveS: number; reconnectFailures: number } {
    return { state: this.state, since: this.stateSince, lastContactAt: this.lastContact, keepaliveS: this.o.keepaliveS ?? 10, reconnectFailures: this.backoff.failures };
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
      will: { topic: topics.reported(creds.siteId), payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: false },
      // mqtts with a private CA: trust it (certificates are always verified).
      ...(creds.ca ? { ca: creds.ca } : {}),
    });
    this.client = client;
    this.setState('connecting');
    client.handleMessage = (packet: IPublishPacket, done) => {
      const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
      if (packet.topic !== topics.desired(creds.siteId)) {
        done();
        if (this.o.onFrame && isFrame(payload)) {
          this.o.onFrame(payload);
          return;
        }
        void this.answer(packet.topic, payload);
        return;
      }
      this.o.onDesired(payload).then(() => done(), (e: Error) => {
        // Not stored: no PUBACK, and a reconnect makes the broker deliver it again.
        log.error({ err: e }, 'storing desired state failed; reconnecting for redelivery');
        client.stream?.destroy();
      });
    };
    client.on('connect', () => {
      log.info({ url: creds.url }, 'connected to cloud');
      this.backoff.reset();
      // Routed inference answers are small and latency-bound: no Nagle delay on the link.
      (client.stream as { setNoDelay?: (v: boolean) => void } | undefined)?.setNoDelay?.(true);
      // Subscribed on every connect: cheap, and the retained desired state arrives again,
      // which covers a cloud hub that lost our session.
      client.subscribe({ [topics.desired(creds.siteId)]: { qos: 1 }, [topics.rpcRequests(creds.siteId)]: { qos: 1 } }, (err, granted) => {
        if (err || granted?.some((g) => g.qos >= 0x80)) log.error({ err: err?.message }, 'cloud refused the desired-state subscription');
      });
      this.setState('connected');
    });
    client.on('packetreceive', () => { this.lastContact = this.clock.now(); });
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
        if (this.state !== 'refused') log.error({ code: e.code }, 'the cloud refused this site\'s credentials (revoked?); running on, retrying');
        this.setState('refused');
      } else {
        log.debug({ err: e.message }, 'cloud link error');
      }
    });
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
    return c.publishAsync(topic, payload, { qos }).then(() => undefined);
  }

  /** Heartbeat: QoS 0, dropped when offline (a stale heartbeat is worth nothing). */
  sendStatus(body: SiteStatusBody): void {
    const c = this.client;
    if (!c?.connected) return;
    const msg = envelope('status', body, this.clock);
    c.publish(topics.reported(this.o.creds.siteId), JSON.stringify(msg), { qos: 0 });
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
        c.publishAsync(topics.reported(this.o.creds.siteId), JSON.stringify(bye), { qos: 1 }).catch(() => {}),
        new Promise((r) => setTimeout(r, 2000).unref()),
      ]);
    }
    await c.endAsync(true);
  }
}
