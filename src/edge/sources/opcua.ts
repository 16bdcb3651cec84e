import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { OpcuaSourceSpec } from '../../contracts/industrial.ts';
import { quietOpcua } from './opcua-quiet.ts';
import { SourceBase, type SourceDeps } from './source.ts';

type UA = typeof import('node-opcua');
type Session = import('node-opcua').ClientSession;
type Client = import('node-opcua').OPCUAClient;
type DataValue = import('node-opcua').DataValue;

/** node-opcua is large (about 1 s to load): only a site that uses OPC UA pays for it. */
let uaModule: Promise<UA> | undefined;
export function loadOpcua(): Promise<UA> {
  quietOpcua();
  uaModule ??= import('node-opcua');
  return uaModule;
}

/** An OPC UA failure with the stable code it maps to. */
export class OpcuaFailure extends Error {
  constructor(
    readonly code: 'SOURCE_UNREACHABLE' | 'SOURCE_SECURITY' | 'SOURCE_ADDRESS_INVALID' | 'WRITE_FAILED',
    message: string,
  ) {
    super(message);
  }
}

export interface OpcuaConnectOptions {
  endpoint: string;
  securityMode: OpcuaSourceSpec['securityMode'];
  securityPolicy?: OpcuaSourceSpec['securityPolicy'];
  user?: OpcuaSourceSpec['user'];
  trustOnFirstUse: boolean;
}

/**
 * The site's OPC UA client PKI lives in {dataDir}/pki/opcua (never ~/.config): its own
 * certificate, `trusted/certs` (servers it trusts) and `rejected` (servers it refused: an
 * operator moves a certificate from there to trusted/certs to trust it). One manager per folder.
 */
const managers = new Map<string, Trust>();

/**
 * A certificate manager and what our connections know of its trust list. node-opcua keeps the
 * trust list in memory, updated by file watchers that start without waiting to be ready: a
 * certificate an operator moves into trusted/certs just then is never seen, and the server stays
 * refused until the agent restarts (CI saw it once). So after a refusal the folder's listing is
 * kept; a later connection that finds it changed has the manager re-read its folders first —
 * with no handshake of this folder under way meanwhile, since a re-read empties the list first.
 */
interface Trust {
  manager: import('node-opcua').OPCUACertificateManager;
  /** trusted/certs as it was when a server was last refused for its certificate. */
  refusedWith?: string;
  /** Handshakes under way, and a re-read waiting for them to end. */
  active: number;
  idle: (() => void)[];
  reloading?: Promise<void>;
}

function trustedListing(pkiDir: string): string {
  try {
    return readdirSync(join(pkiDir, 'trusted', 'certs'))
      .sort()
      .join('\n');
  } catch {
    return '';
  }
}

async function certificateManager(ua: UA, pkiDir: string, trustOnFirstUse: boolean): Promise<Trust> {
  const key = `${pkiDir}|${trustOnFirstUse}`;
  let t = managers.get(key);
  if (!t) {
    t = {
      manager: new ua.OPCUACertificateManager({ rootFolder: pkiDir, automaticallyAcceptUnknownCertificate: trustOnFirstUse }),
      active: 0,
      idle: [],
    };
    managers.set(key, t);
  }
  if (t.refusedWith !== undefined && !t.reloading && trustedListing(pkiDir) !== t.refusedWith) {
    t.refusedWith = undefined;
    const trust = t;
    trust.reloading = (async () => {
      // (A handshake that hangs does not hold it for ever: 10 s, then it re-reads regardless.)
      const deadline = Date.now() + 10_000;
      while (trust.active > 0 && Date.now() < deadline)
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.max(0, deadline - Date.now()));
          trust.idle.push(() => {
            clearTimeout(t);
            r();
          });
        });
      await trust.manager.reloadCertificates();
    })()
      .catch(() => {})
      .finally(() => {
        trust.reloading = undefined;
      });
  }
  while (t.reloading) await t.reloading;
  return t;
}

/** Connects and opens a session; node-opcua's own reconnection is off (the caller owns retries). */
export async function openSession(
  o: OpcuaConnectOptions,
  pkiDir: string,
  secret: (name: string) => string | undefined,
): Promise<{ ua: UA; client: Client; session: Session }> {
  const ua = await loadOpcua();
  const policy = o.securityPolicy ?? (o.securityMode === 'None' ? 'None' : 'Basic256Sha256');
  let userIdentity: import('node-opcua').UserIdentityInfo | undefined;
  if (o.user) {
    const password = secret(o.user.passwordSecret);
    if (password === undefined)
      throw new OpcuaFailure(
        'SOURCE_SECURITY',
        `the site secret "${o.user.passwordSecret}" (the password of OPC UA user ${o.user.username}) is missing: put it in the site's secrets folder ({dataDir}/secrets/${o.user.passwordSecret})`,
      );
    userIdentity = { type: ua.UserTokenType.UserName, userName: o.user.username, password };
  }
  const trust = await certificateManager(ua, join(pkiDir), o.trustOnFirstUse);
  const client = ua.OPCUAClient.create({
    applicationName: 'Edgeweave edge agent',
    endpointMustExist: false,
    securityMode: ua.MessageSecurityMode[o.securityMode],
    securityPolicy: ua.SecurityPolicy[policy],
    clientCertificateManager: trust.manager,
    connectionStrategy: { maxRetry: 0, initialDelay: 200, maxDelay: 1000 },
    keepSessionAlive: true,
    requestedSessionTimeout: 60_000,
  });
  trust.active++;
  try {
    await client.connect(o.endpoint);
  } catch (e) {
    await client.disconnect().catch(() => {});
    const msg = (e as Error).message;
    if (/certificate/i.test(msg)) {
      trust.refusedWith = trustedListing(pkiDir);
      throw new OpcuaFailure(
        'SOURCE_SECURITY',
        `${o.endpoint}: the server's certificate is not trusted (${msg.split('\n')[0]}); to trust it, move it from ${join(pkiDir, 'rejected')} to ${join(pkiDir, 'trusted', 'certs')}, or set trustOnFirstUse: true`,
      );
    }
    throw new OpcuaFailure('SOURCE_UNREACHABLE', `${o.endpoint}: cannot connect: ${msg.split('\n')[0]}`);
  } finally {
    trust.active--;
    if (trust.active === 0) for (const r of trust.idle.splice(0)) r();
  }
  try {
    const session = await client.createSession(userIdentity);
    return { ua, client, session };
  } catch (e) {
    await client.disconnect().catch(() => {});
    const msg = (e as Error).message.split('\n')[0]!;
    const security = /BadUserAccessDenied|BadIdentityToken|BadSecurity|BadCertificate|identity/i.test(msg);
    throw new OpcuaFailure(
      security ? 'SOURCE_SECURITY' : 'SOURCE_UNREACHABLE',
      `${o.endpoint}: the server refused a session${o.user ? ` for user ${o.user.username}` : ''}: ${msg}`,
    );
  }
}

/** A Variant's value as a JSON value: Int64 pairs, DateTimes, typed arrays, texts made plain. */
export function plainValue(ua: UA, dv: DataValue): unknown {
  const v = dv.value;
  const x = v.value as unknown;
  const int64 = v.dataType === ua.DataType.Int64 || v.dataType === ua.DataType.UInt64;
  const one = (y: unknown): unknown => {
    if (int64 && Array.isArray(y) && y.length === 2) return (y[0] as number) * 2 ** 32 + (y[1] as number);
    if (y instanceof Date) return y.getTime();
    if (y && typeof y === 'object' && 'text' in y) return (y as { text: string | null }).text;
    if (y && typeof y === 'object' && 'toString' in y && (v.dataType === ua.DataType.NodeId || v.dataType === ua.DataType.QualifiedName))
      return String(y);
    return y;
  };
  if (v.arrayType === ua.VariantArrayType.Array) return Array.from(x as ArrayLike<unknown>, one);
  return one(x);
}

interface Field {
  name: string;
  node: string;
  deadband?: number;
}

/**
 * Reads an OPC UA server's nodes into a stream. `subscription` (default): monitored items
 * sampled by the server every samplingIntervalMs (with an optional absolute deadband), their
 * changes published every publishingIntervalMs; `poll`: one Read of every node each intervalMs.
 * Each record holds the latest value of every field; its event time is the newest source
 * timestamp among the values that changed (the PLC's own clock, not the arrival time).
 * Nodes that do not exist are reported (SOURCE_ADDRESS_INVALID) and left out; the others run.
 * On a lost connection (a PLC reboot) the client, session and subscription are built again with
 * backoff: the stream keeps its fields, whatever the server forgot.
 */
export class OpcuaSource extends SourceBase {
  private client?: Client;
  private session?: Session;
  private subscription?: import('node-opcua').ClientSubscription;
  private readonly fields: Field[];
  private readonly last: Record<string, unknown> = {};
  private pending = 0;
  private pendingTime = 0;
  private flushScheduled = false;
  private cancelPoll?: () => void;
  private generation = 0;

  constructor(
    private readonly spec: OpcuaSourceSpec,
    d: SourceDeps,
  ) {
    super('opcua', spec.endpoint, d);
    this.fields = Object.entries(spec.fields).map(([name, f]) =>
      typeof f === 'string' ? { name, node: f } : { name, node: f.node, deadband: f.deadband },
    );
  }

  start(): void {
    void this.connect();
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const gen = ++this.generation;
    this.status.state = 'connecting';
    let opened: Awaited<ReturnType<typeof openSession>>;
    try {
      opened = await openSession(this.spec, this.d.pkiDir, this.d.secret);
    } catch (e) {
      const f = e as OpcuaFailure;
      this.fail(f.code ?? 'SOURCE_UNREACHABLE', f.message);
      this.later(() => void this.connect());
      return;
    }
    const { ua, client, session } = opened;
    if (this.closed || gen !== this.generation) {
      await session.close().catch(() => {});
      await client.disconnect().catch(() => {});
      return;
    }
    this.client = client;
    this.session = session;
    const lost = (why: string) => {
      if (gen !== this.generation || this.closed) return;
      this.fail('SOURCE_UNREACHABLE', `${this.spec.endpoint}: connection lost (${why}); reconnecting`);
      void this.teardown().then(() => this.later(() => void this.connect()));
    };
    client.on('connection_lost', () => lost('connection lost'));
    client.on('close', () => lost('closed'));
    // node-opcua's own recovery is off (maxRetry 0); if it starts one anyway, ours takes over.
    client.on('start_reconnection', () => lost('reconnection started'));
    session.on('session_closed', () => lost('session closed'));
    session.on('keepalive_failure', () => lost('session keep-alive failed'));
    try {
      // One Read first: it finds nodes that do not exist and gives every field a value.
      const first = await session.read(this.fields.map((f) => ({ nodeId: f.node, attributeId: ua.AttributeIds.Value })));
      const good: Field[] = [];
      let newest = 0;
      first.forEach((dv, i) => {
        const f = this.fields[i]!;
        if (dv.statusCode.isGood()) {
          good.push(f);
          this.last[f.name] = plainValue(ua, dv);
          newest = Math.max(newest, dv.sourceTimestamp?.getTime() ?? dv.serverTimestamp?.getTime() ?? 0);
        } else if (
          dv.statusCode.value === ua.StatusCodes.BadNodeIdUnknown.value ||
          dv.statusCode.value === ua.StatusCodes.BadNodeIdInvalid.value
        ) {
          this.fail(
            'SOURCE_ADDRESS_INVALID',
            `field ${f.name}: node ${f.node} does not exist on ${this.spec.endpoint} (${dv.statusCode.name}); check the node id (browse the server with an OPC UA client)`,
          );
        } else {
          good.push(f); // exists, no good value yet (e.g. BadWaitingForInitialData)
        }
      });
      this.attempt = 0;
      this.status.state = 'connected';
      this.d.log.info(
        { app: this.d.app, stream: this.d.stream, endpoint: this.spec.endpoint, nodes: good.length, mode: this.spec.mode },
        'opcua source connected',
      );
      if (good.length === 0) return;
      if (this.spec.mode === 'poll') {
        this.send({ ...this.last }, good.length, newest || this.d.clock.now());
        this.schedulePoll(ua, good, gen);
      } else {
        await this.subscribe(ua, session, good, gen);
      }
    } catch (e) {
      lost((e as Error).message.split('\n')[0]!);
    }
  }

  private async subscribe(ua: UA, session: Session, fields: Field[], gen: number): Promise<void> {
    const s = this.spec;
    const sub = await session.createSubscription2({
      requestedPublishingInterval: s.publishingIntervalMs,
      requestedLifetimeCount: 120,
      requestedMaxKeepAliveCount: 10,
      maxNotificationsPerPublish: 0,
      publishingEnabled: true,
      priority: 10,
    });
    if (gen !== this.generation) return;
    this.subscription = sub;
    // A subscription the server forgot (a restart) or timed out ends here: rebuild everything.
    sub.on('terminated', () => {
      if (gen !== this.generation || this.closed) return;
      this.fail('SOURCE_UNREACHABLE', `${s.endpoint}: the subscription ended; reconnecting`);
      void this.teardown().then(() => this.later(() => void this.connect()));
    });
    sub.on('internal_error', (e: Error) =>
      this.d.log.warn({ app: this.d.app, stream: this.d.stream, err: e.message }, 'opcua subscription error'),
    );
    // With publishing slower than sampling, the server queues samples per item: size the queue
    // so that none is dropped between two publishes.
    const queueSize = Math.min(1000, Math.max(1, Math.ceil(s.publishingIntervalMs / Math.max(1, s.samplingIntervalMs)) + 1));
    const byDeadband = new Map<number, Field[]>();
    for (const f of fields) {
      const k = f.deadband ?? 0;
      byDeadband.set(k, [...(byDeadband.get(k) ?? []), f]);
    }
    for (const [deadband, group] of byDeadband) {
      const filter =
        deadband > 0
          ? new ua.DataChangeFilter({
              trigger: ua.DataChangeTrigger.StatusValue,
              deadbandType: ua.DeadbandType.Absolute,
              deadbandValue: deadband,
            })
          : undefined;
      const items = await ua.ClientMonitoredItemGroup.create(
        sub,
        group.map((f) => ({ nodeId: f.node, attributeId: ua.AttributeIds.Value })),
        { samplingInterval: s.samplingIntervalMs, discardOldest: true, queueSize, ...(filter ? { filter } : {}) },
        ua.TimestampsToReturn.Both,
      );
      items.on('changed', (_item, dv, index) => {
        if (gen !== this.generation) return;
        const f = group[index]!;
        if (!dv.statusCode.isGood()) return;
        this.last[f.name] = plainValue(ua, dv);
        this.pending++;
        this.pendingTime = Math.max(this.pendingTime, dv.sourceTimestamp?.getTime() ?? dv.serverTimestamp?.getTime() ?? this.d.clock.now());
        // The notifications of one publish arrive in one turn: they make one record.
        if (!this.flushScheduled) {
          this.flushScheduled = true;
          setImmediate(() => this.flush());
        }
      });
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.pending === 0 || this.closed) return;
    const n = this.pending;
    const t = this.pendingTime;
    this.pending = 0;
    this.pendingTime = 0;
    this.send({ ...this.last }, n, t);
  }

  private schedulePoll(ua: UA, fields: Field[], gen: number): void {
    this.cancelPoll = this.d.clock.setTimer(this.spec.intervalMs, () => {
      void (async () => {
        const session = this.session;
        if (!session || gen !== this.generation || this.closed) return;
        try {
          const dvs = await session.read(fields.map((f) => ({ nodeId: f.node, attributeId: ua.AttributeIds.Value })));
          if (gen !== this.generation || this.closed) return;
          let newest = 0;
          let n = 0;
          dvs.forEach((dv, i) => {
            if (!dv.statusCode.isGood()) return;
            this.last[fields[i]!.name] = plainValue(ua, dv);
            newest = Math.max(newest, dv.sourceTimestamp?.getTime() ?? dv.serverTimestamp?.getTime() ?? 0);
            n++;
          });
          if (n) this.send({ ...this.last }, n, newest || this.d.clock.now());
          this.schedulePoll(ua, fields, gen);
        } catch (e) {
          if (gen !== this.generation || this.closed) return;
          this.fail('SOURCE_UNREACHABLE', `${this.spec.endpoint}: read failed: ${(e as Error).message.split('\n')[0]}; reconnecting`);
          await this.teardown();
          this.later(() => void this.connect());
        }
      })();
    });
  }

  private async teardown(): Promise<void> {
    this.generation++;
    this.cancelPoll?.();
    this.cancelPoll = undefined;
    const { client, session, subscription } = this;
    this.client = undefined;
    this.session = undefined;
    this.subscription = undefined;
    await subscription?.terminate().catch(() => {});
    await session?.close(false).catch(() => {});
    await client?.disconnect().catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    this.stopTimers();
    await this.teardown();
    this.status.state = 'closed';
  }
}
