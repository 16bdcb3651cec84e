/**
 * npm run chaos — the chaos suite: a steady QoS 1 device stream into a real site (an `edgeweave
 * edge` process with its embedded device broker and a pass-through rule to the cloud) and a real
 * cloud (an `edgeweave cloud` process, SQLite, or PostgreSQL with CHAOS_PG=postgres://…), while
 * the suite
 *   1. kills the agent with SIGKILL at random moments and restarts it;
 *   2. kills the cloud with SIGKILL and restarts it on the same ports (the hook for several
 *      replicas: `Clouds` starts N of them; today N = 1);
 *   3. partitions the site from the cloud through a TCP proxy on the cloud's MQTT port: refused
 *      (connections cut and refused), stalled (bytes held, sockets open), stalled for long;
 *   4. restarts the agent while the cloud is down (an offline restart);
 *   5. damages the site's storage (a zero-length edge.db beside its credentials, a corrupt page)
 *      and checks the agent refuses to start (exit 2, DATA_DIR_INVALID) rather than start afresh.
 * Each scenario prints sent / acknowledged / stored / lost / duplicated and its recovery times;
 * the suite exits 1 on any lost or duplicated record (or damaged storage not refused).
 *
 * A record is published once and never resent: one whose PUBACK never came may or may not
 * arrive; one acknowledged must arrive exactly once.
 *
 * Size: `--small` (or CHAOS_SIZE=small; what CI runs, test/chaos.test.ts) or the default full
 * size (10 agent kills, 5 cloud kills, stalls of 8 s and 50 s). CHAOS_SEED fixes the randomness.
 *
 * Replicas: `--replicas N` (N ≥ 2, with CHAOS_PG, and CHAOS_MQTT: default the Mosquitto at
 * 127.0.0.1:1883) runs N `edgeweave cloud` replicas on PostgreSQL and that broker instead, the
 * proxy in front of the broker (the site's link to it is what is cut). The cloud kills then take
 * one replica at a time, in turn, while the others serve; the offline restart stops them all.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import {
  mkdtempSync,
  mkdirSync,
  rmSync,
  writeFileSync,
  copyFileSync,
  readdirSync,
  openSync,
  writeSync,
  closeSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import pg from 'pg';
import { newSecret } from '../src/lib/secrets.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const small = process.argv.includes('--small') || process.env.CHAOS_SIZE === 'small';
const SIZE = small
  ? { agentKills: 2, cloudKills: 1, stallMs: 2500, longStallMs: 6000, between: [400, 1200] as const, keepaliveS: 2, outboxMax: 100_000 }
  : { agentKills: 10, cloudKills: 5, stallMs: 8000, longStallMs: 50_000, between: [500, 4000] as const, keepaliveS: 5, outboxMax: 600_000 };
let seed = Number(process.env.CHAOS_SEED ?? 20261130) >>> 0;
const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
const REPLICAS = process.argv.includes('--replicas') ? Number(process.argv[process.argv.indexOf('--replicas') + 1]) : 1;
if (!(Number.isInteger(REPLICAS) && REPLICAS >= 1 && REPLICAS <= 8)) {
  console.error('chaos: --replicas takes a number of cloud replicas, 1 to 8');
  process.exit(2);
}
if (REPLICAS > 1 && !process.env.CHAOS_PG) {
  console.error('chaos: --replicas needs a shared PostgreSQL: set CHAOS_PG=postgres://…');
  process.exit(2);
}
const BROKER = process.env.CHAOS_MQTT ?? 'mqtt://127.0.0.1:1883';
/** `--only A,B`: run only the scenarios whose name contains one of these (a scenario again, while looking into it). */
const ONLY = process.argv.includes('--only')
  ? (process.argv[process.argv.indexOf('--only') + 1] ?? '').split(',').filter(Boolean)
  : undefined;
const between = () => Math.floor(SIZE.between[0] + rand() * (SIZE.between[1] - SIZE.between[0]));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const log = (...a: unknown[]) => console.log(`[chaos ${new Date().toISOString().slice(11, 23)}]`, ...a);

async function until<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 60_000, everyMs = 50): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch {
      /* not yet */
    }
    if (Date.now() > end) throw new Error(`chaos: timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const p = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

interface Proc {
  child: ChildProcess;
  ready: Promise<Record<string, any>>;
  exited: Promise<number | string>;
  stderr(): string;
}
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
    cwd: ROOT,
    env: { ...process.env, EW_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => {
    err = (err + d.toString()).slice(-50_000);
  });
  const exited = new Promise<number | string>((r) => child.on('exit', (code, sig) => r(code ?? sig ?? -1)));
  const ready = new Promise<Record<string, any>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const o = JSON.parse(line);
        if (o.event === 'ready') resolve(o);
      } catch {
        /* not JSON */
      }
    });
    void exited.then((c) => reject(new Error(`edgeweave ${args[0]} exited (${c}) before it was ready:\n${err.slice(-2000)}`)));
  });
  ready.catch(() => {});
  return { child, ready, exited, stderr: () => err };
}

/** A TCP proxy in front of the cloud's MQTT port: pass, refuse (cut and refuse), or stall (hold bytes, keep sockets). */
class TcpProxy {
  mode: 'pass' | 'refuse' | 'stall' = 'pass';
  private server!: Server;
  private pairs = new Set<{ a: Socket; b: Socket }>();
  private waiting: Socket[] = [];
  constructor(
    readonly port: number,
    private readonly target: number,
  ) {}
  async start(): Promise<void> {
    this.server = createServer((a) => {
      a.on('error', () => {});
      if (this.mode === 'refuse') {
        a.destroy();
        return;
      }
      if (this.mode === 'stall') {
        a.pause();
        this.waiting.push(a);
        return;
      }
      this.join(a);
    });
    await new Promise<void>((r) => this.server.listen(this.port, '127.0.0.1', () => r()));
  }
  private join(a: Socket): void {
    const b = connect(this.target, '127.0.0.1');
    b.on('error', () => a.destroy());
    a.on('error', () => b.destroy());
    const pair = { a, b };
    this.pairs.add(pair);
    a.pipe(b);
    b.pipe(a);
    a.resume();
    const done = () => {
      this.pairs.delete(pair);
      a.destroy();
      b.destroy();
    };
    a.on('close', done);
    b.on('close', done);
  }
  set(mode: 'pass' | 'refuse' | 'stall'): void {
    this.mode = mode;
    if (mode === 'refuse')
      for (const p of [...this.pairs]) {
        p.a.destroy();
        p.b.destroy();
      }
    if (mode === 'stall')
      for (const p of this.pairs) {
        p.a.unpipe(p.b);
        p.b.unpipe(p.a);
        p.a.pause();
        p.b.pause();
      }
    if (mode === 'pass') {
      for (const p of this.pairs) {
        p.a.pipe(p.b);
        p.b.pipe(p.a);
        p.a.resume();
        p.b.resume();
      }
      for (const a of this.waiting.splice(0)) if (!a.destroyed) this.join(a);
    }
  }
  close(): void {
    for (const p of this.pairs) {
      p.a.destroy();
      p.b.destroy();
    }
    for (const a of this.waiting) a.destroy();
    this.server.close();
  }
}

/**
 * The cloud: N replicas of `edgeweave cloud`. One: its embedded hub, on SQLite or PostgreSQL, the
 * proxy in front of its MQTT port. Several: on PostgreSQL (CHAOS_PG) and an external broker
 * (BROKER), each with its own data dir and HTTP port, one installation id and topic prefix of
 * this run's own (the broker may be shared), the proxy in front of the broker.
 */
class Clouds {
  procs: (Proc | undefined)[] = [];
  readonly http: number[] = [];
  readonly mqtt: number[] = [];
  private readonly installation = `chaos-${process.pid}`;
  constructor(
    readonly dataDir: string,
    readonly adminKey: string,
    readonly publicMqtt: number,
    readonly db: string | undefined,
    readonly replicas = 1,
  ) {}
  async init(): Promise<void> {
    writeFileSync(join(this.dataDir, 'admin.key'), this.adminKey, { mode: 0o600 });
    for (let i = 0; i < this.replicas; i++) {
      this.http.push(await freePort());
      this.mqtt.push(await freePort());
      if (this.replicas > 1) mkdirSync(join(this.dataDir, `replica-${i}`));
    }
  }
  /** A live replica's API (the first one up). */
  get url(): string {
    const i = this.procs.findIndex((p) => p !== undefined);
    return `http://127.0.0.1:${this.http[Math.max(0, i)]}`;
  }
  /** Where the site's MQTT link goes through the proxy: the embedded hub, or the external broker. */
  get proxyTarget(): number {
    return this.replicas > 1 ? Number(new URL(BROKER).port || 1883) : this.mqtt[0]!;
  }
  async start(i = 0): Promise<void> {
    const hub =
      this.replicas > 1
        ? [
            '--data-dir',
            join(this.dataDir, `replica-${i}`),
            '--broker',
            BROKER,
            '--installation-id',
            this.installation,
            '--topic-prefix',
            this.installation,
            '--replica-id',
            `replica-${i}`,
          ]
        : ['--data-dir', this.dataDir, '--mqtt-host', '127.0.0.1', '--mqtt-port', String(this.mqtt[i])];
    const p = cli([
      'cloud',
      ...hub,
      '--host',
      '127.0.0.1',
      '--port',
      String(this.http[i]),
      '--mqtt-public-url',
      `mqtt://127.0.0.1:${this.publicMqtt}`,
      '--admin-key-file',
      join(this.dataDir, 'admin.key'),
      '--rate-limit',
      'off',
      '--heartbeat-interval',
      '1',
      '--no-console',
      '--mqtt-limits',
      'connectBurst=1000000,connectPerSecond=1000000,maxPendingPerAddress=1000000,authFailBurst=1000000,authFailPerMinute=1000000',
      ...(this.db ? ['--db', this.db] : []),
    ]);
    this.procs[i] = p;
    await p.ready;
  }
  async kill(i = 0, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.procs[i];
    if (!p) return;
    p.child.kill(signal);
    await p.exited;
    this.procs[i] = undefined;
  }
  async api(method: string, path: string, body?: unknown): Promise<any> {
    const r = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.adminKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const t = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${t}`);
    return t ? JSON.parse(t) : undefined;
  }
}

/** A device publishing QoS 1 records steadily (10 in flight), each once; it follows the agent to its new port after a restart. */
class Device {
  next = 0;
  readonly acked = new Set<number>();
  /** Per scenario: the records published in it and their acknowledgement times. */
  scenario = 0;
  readonly published = new Map<number, number>(); // n → scenario
  lastAckAt = 0;
  private client?: MqttClient;
  private running = false;
  private inFlight = 0;
  constructor(private readonly password: string) {}
  async attach(url: string): Promise<void> {
    this.client?.end(true);
    const c = await mqtt.connectAsync(url, { username: 'device', password: this.password, reconnectPeriod: 0, clean: true });
    c.on('error', () => {});
    this.client = c;
    this.inFlight = 0;
    c.on('close', () => {
      if (this.client === c) this.client = undefined;
    });
    this.pump();
  }
  start(): void {
    this.running = true;
    this.pump();
  }
  stop(): void {
    this.running = false;
  }
  private pump(): void {
    const c = this.client;
    while (this.running && c && this.client === c && c.connected && this.inFlight < 10) {
      const n = this.next++;
      this.inFlight++;
      this.published.set(n, this.scenario);
      c.publish(`chaos/d${n % 5}/rec`, JSON.stringify({ dev: `d${n % 5}`, n }), { qos: 1 }, (err) => {
        if (this.client === c) this.inFlight--;
        if (err) return;
        this.acked.add(n);
        this.lastAckAt = Date.now();
        setTimeout(() => this.pump(), 2); // steady, not flat out: about 10 records every few ms
      });
    }
  }
  get connected(): boolean {
    return !!this.client?.connected;
  }
  close(): void {
    this.running = false;
    this.client?.end(true);
  }
}

interface Row {
  scenario: string;
  sent: number;
  acknowledged: number;
  stored: number;
  lost: number;
  duplicated: number;
  recoveryMs: number[];
  note?: string;
}

async function main(): Promise<number> {
  const work = mkdtempSync(join(tmpdir(), 'ew-chaos-'));
  const cloudDir = join(work, 'cloud');
  const siteDir = join(work, 'site');
  mkdirSync(cloudDir);
  mkdirSync(siteDir);
  let db: string | undefined;
  let dropSchema = async () => {};
  if (process.env.CHAOS_PG) {
    const schema = `ew_chaos_${process.pid}`;
    const c = new pg.Client({ connectionString: process.env.CHAOS_PG });
    await c.connect();
    await c.query(`create schema ${schema}`);
    await c.end();
    db = `${process.env.CHAOS_PG}${process.env.CHAOS_PG.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${schema}`)}`;
    dropSchema = async () => {
      const d = new pg.Client({ connectionString: process.env.CHAOS_PG });
      await d.connect();
      await d.query(`drop schema if exists ${schema} cascade`);
      await d.end();
    };
  }
  const proxyPort = await freePort();
  const clouds = new Clouds(cloudDir, newSecret('ewk'), proxyPort, db, REPLICAS);
  await clouds.init();
  const proxy = new TcpProxy(proxyPort, clouds.proxyTarget);
  await proxy.start();
  const apiKey = newSecret('ewl');
  const devicePassword = newSecret('ewd');
  writeFileSync(join(siteDir, 'api.key'), apiKey, { mode: 0o600 });
  writeFileSync(join(siteDir, 'device.pw'), devicePassword, { mode: 0o600 });
  const edgeArgs = (dir: string) => [
    'edge',
    '--data-dir',
    dir,
    '--api-port',
    '0',
    '--device-port',
    '0',
    '--device-host',
    '127.0.0.1',
    '--api-key-file',
    join(dir, 'api.key'),
    '--device-password-file',
    join(dir, 'device.pw'),
    '--cloud-keepalive',
    String(SIZE.keepaliveS),
    // The outbox must hold what arrives while the link is down: the device sends as fast as the
    // site takes it (about 2,000 records a second here), and the long stall with the reconnect
    // back-off after it (up to 30 s) keeps the link down for up to 80 s. Past the bound the
    // oldest results are dropped (the default policy), which this suite would count as lost.
    '--outbox-max',
    process.env.CHAOS_OUTBOX_MAX ?? String(SIZE.outboxMax),
  ];
  let agent: Proc | undefined;
  const device = new Device(devicePassword);
  const rows: Row[] = [];
  let failed = false;
  try {
    log(
      `size ${small ? 'small' : 'full'}, cloud on ${db ? 'PostgreSQL' : 'SQLite'}${REPLICAS > 1 ? `, ${REPLICAS} replicas on ${BROKER}` : ''}, seed ${process.env.CHAOS_SEED ?? 20261130}`,
    );
    // The first replica alone creates the tenant and admin key; the others join it.
    await clouds.start(0);
    for (let i = 1; i < REPLICAS; i++) await clouds.start(i);
    const token = (await clouds.api('POST', '/api/v1/tokens', { labels: { chaos: 'yes' }, region: 'chaos', ttlSeconds: 3600 }))
      .token as string;
    agent = cli([...edgeArgs(siteDir), '--cloud', clouds.url], { EW_JOIN_TOKEN: token });
    let ready = await agent.ready;
    const siteId = ready.siteId as string;
    await clouds.api('POST', '/api/v1/apps', {
      manifest: {
        apiVersion: 'edgeweave/v1',
        kind: 'App',
        metadata: { name: 'chaos', version: '1.0.0' },
        spec: {
          streams: [{ name: 'recs', topic: 'chaos/+/rec', format: 'json', schema: { dev: 'string', n: 'int' } }],
          rules: [{ name: 'pass', sql: 'SELECT dev, n FROM recs', sinks: [{ uplink: 'chaos' }] }],
          policy: { egress: { allow: ['chaos'] } },
        },
      },
    });
    await clouds.api('POST', '/api/v1/deployments', { app: 'chaos', version: '1.0.0', selector: { chaos: 'yes' } });
    const local = async (path: string) =>
      (await (await fetch(`${ready.apiUrl}${path}`, { headers: { authorization: `Bearer ${apiKey}` } })).json()) as any;
    await until('the rule running', async () =>
      (await local('/api/v1/rules')).items.some((r: { rule: string; state: string }) => r.rule === 'pass' && r.state === 'running'),
    );

    /** Every `n` the cloud stored, with repeats. */
    const stored = async (): Promise<number[]> => {
      const out: number[] = [];
      let after: number | null | undefined;
      do {
        const page = await clouds.api('GET', `/api/v1/results?site=${siteId}&stream=chaos&limit=5000${after ? `&after=${after}` : ''}`);
        for (const it of page.items) out.push((it.data as { n: number }).n);
        after = page.next;
      } while (after);
      return out;
    };
    const startAgent = async () => {
      agent = cli(edgeArgs(siteDir));
      ready = await agent.ready;
      await device.attach(ready.deviceUrl as string);
    };
    const killAgent = async () => {
      agent!.child.kill('SIGKILL');
      await agent!.exited;
    };
    /** Time until every record acknowledged so far is at the cloud. */
    const delivered = async (from: number, timeoutMs = 120_000) => {
      const want = [...device.acked];
      await until(
        'every acknowledged record at the cloud',
        async () => {
          const got = new Set(await stored());
          return want.every((n) => got.has(n));
        },
        timeoutMs,
        100,
      );
      return Date.now() - from;
    };
    /** Results the site's outbox dropped by its bound, over its lifetime (it survives restarts). */
    const outboxDropped = async (): Promise<number> => {
      const text = await (await fetch(`${ready.apiUrl}/metrics`, { headers: { authorization: `Bearer ${apiKey}` } })).text();
      return Number(/^ew_edge_outbox_dropped_total (\S+)$/m.exec(text)?.[1] ?? 0);
    };
    const scenario = async (name: string, fn: (recovery: number[]) => Promise<string | void>) => {
      if (ONLY && !ONLY.some((o) => name.includes(o))) return;
      device.scenario = rows.length;
      const recovery: number[] = [];
      const droppedBefore = await outboxDropped().catch(() => 0);
      log(`${name}: start`);
      let note: string | void;
      try {
        note = await fn(recovery);
      } catch (e) {
        note = `FAILED: ${(e as Error).message.split('\n')[0]}`;
        failed = true;
      }
      // Settle: the device paused, everything acknowledged must reach the cloud.
      device.stop();
      await sleep(300);
      try {
        await delivered(Date.now());
      } catch (e) {
        note = `${note ?? ''} ${(e as Error).message}`;
      }
      const idx = rows.length;
      const mine = new Set([...device.published].filter(([, s]) => s === idx).map(([n]) => n));
      const got = (await stored()).filter((n) => mine.has(n));
      const counts = new Map<number, number>();
      for (const n of got) counts.set(n, (counts.get(n) ?? 0) + 1);
      const acked = [...device.acked].filter((n) => mine.has(n));
      const dropped = (await outboxDropped().catch(() => droppedBefore)) - droppedBefore;
      if (dropped > 0) note = `${note ?? ''} ${dropped} dropped by the outbox bound`.trim();
      const row: Row = {
        scenario: name,
        sent: mine.size,
        acknowledged: acked.length,
        stored: counts.size,
        lost: acked.filter((n) => !counts.has(n)).length,
        duplicated: [...counts.values()].filter((c) => c > 1).length,
        recoveryMs: recovery,
        ...(note ? { note } : {}),
      };
      rows.push(row);
      log(
        `${name}: sent ${row.sent}, acknowledged ${row.acknowledged}, stored ${row.stored}, lost ${row.lost}, duplicated ${row.duplicated}, recovery ${recovery.map((r) => `${r} ms`).join(' / ') || '-'}${note ? ` (${note})` : ''}`,
      );
      device.start();
    };

    await device.attach(ready.deviceUrl as string);
    device.start();

    await scenario(`agent kill -9 ×${SIZE.agentKills}`, async (rec) => {
      for (let k = 0; k < SIZE.agentKills; k++) {
        await sleep(between());
        await killAgent();
        const t0 = Date.now();
        const before = device.acked.size;
        await startAgent();
        await until('a PUBACK from the restarted agent', () => device.acked.size > before, 60_000, 10);
        rec.push(Date.now() - t0); // kill → first acknowledgement again
      }
    });

    // Several replicas: one at a time, in turn, while the others store; one: the cloud itself.
    const cloudKills = REPLICAS > 1 ? Math.max(SIZE.cloudKills, REPLICAS) : SIZE.cloudKills;
    await scenario(`${REPLICAS > 1 ? 'replica' : 'cloud'} kill -9 ×${cloudKills}`, async (rec) => {
      for (let k = 0; k < cloudKills; k++) {
        const i = k % REPLICAS;
        await sleep(between());
        await clouds.kill(i);
        await sleep(between());
        const t0 = Date.now();
        await clouds.start(i);
        rec.push(await delivered(t0)); // restart → the backlog at the cloud
      }
    });

    for (const [name, mode, ms] of [
      ['partition: refused', 'refuse', SIZE.stallMs],
      ['partition: stalled', 'stall', SIZE.stallMs],
      ['partition: long stall', 'stall', SIZE.longStallMs],
    ] as const) {
      await scenario(`${name} ${ms / 1000} s`, async (rec) => {
        await sleep(between());
        proxy.set(mode);
        await sleep(ms);
        proxy.set('pass');
        rec.push(await delivered(Date.now()));
        const h = await local('/healthz');
        if (h.link !== 'connected')
          await until('the link connected again', async () => (await local('/healthz')).link === 'connected', 60_000);
      });
    }

    await scenario('offline restart', async (rec) => {
      await sleep(between());
      for (let i = REPLICAS - 1; i >= 0; i--) await clouds.kill(i, 'SIGTERM');
      await sleep(between());
      await killAgent();
      await startAgent(); // starts with no cloud: the site is autonomous, the device is acknowledged
      const before = device.acked.size;
      await until('acknowledged while offline', () => device.acked.size > before + 20, 60_000, 10);
      await sleep(between());
      const t0 = Date.now();
      for (let i = 0; i < REPLICAS; i++) await clouds.start(i);
      rec.push(await delivered(t0));
    });

    await scenario('damaged storage', async () => {
      device.stop();
      await sleep(200);
      agent!.child.kill('SIGTERM');
      await agent!.exited;
      const outcomes: string[] = [];
      for (const damage of ['zero-length edge.db', 'corrupt page'] as const) {
        const copy = join(work, `damaged-${outcomes.length}`);
        mkdirSync(copy);
        for (const f of readdirSync(siteDir)) if (statSync(join(siteDir, f)).isFile()) copyFileSync(join(siteDir, f), join(copy, f));
        const dbFile = join(copy, 'edge.db');
        for (const side of ['edge.db-wal', 'edge.db-shm']) rmSync(join(copy, side), { force: true });
        if (damage === 'zero-length edge.db') writeFileSync(dbFile, '');
        else {
          const fd = openSync(dbFile, 'r+');
          const size = statSync(dbFile).size;
          // Garbage over every page but the header page: the schema and the tables are gone.
          for (let off = 4096; off < size; off += 4096) writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, off);
          closeSync(fd);
        }
        const p = cli(edgeArgs(copy));
        const code = await Promise.race([p.exited, sleep(60_000).then(() => 'timeout')]);
        if (code === 'timeout') p.child.kill('SIGKILL');
        const ok = code === 2 && /DATA_DIR_INVALID/.test(p.stderr());
        outcomes.push(`${damage}: ${ok ? 'refused (exit 2, DATA_DIR_INVALID)' : `NOT refused (exit ${code})`}`);
        if (!ok) failed = true;
      }
      await startAgent();
      device.start();
      await sleep(between());
      return outcomes.join('; ');
    });

    device.stop();
  } finally {
    device.close();
    if (agent) {
      agent.child.kill('SIGKILL');
      await agent.exited;
    }
    for (let i = 0; i < REPLICAS; i++) await clouds.kill(i).catch(() => {});
    proxy.close();
    await dropSchema().catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
  console.log('\nscenario                              sent   acked  stored  lost  dup  recovery (ms)');
  for (const r of rows)
    console.log(
      `${r.scenario.padEnd(34)} ${String(r.sent).padStart(7)} ${String(r.acknowledged).padStart(7)} ${String(r.stored).padStart(7)} ${String(r.lost).padStart(5)} ${String(r.duplicated).padStart(4)}  ${r.recoveryMs.join(', ') || '-'}${r.note ? `  ${r.note}` : ''}`,
    );
  const bad = rows.filter((r) => r.lost > 0 || r.duplicated > 0);
  console.log(
    JSON.stringify({
      event: 'chaos',
      size: small ? 'small' : 'full',
      replicas: REPLICAS,
      ok: !failed && bad.length === 0,
      scenarios: rows,
    }),
  );
  if (failed || bad.length) {
    console.error(
      `chaos: FAILED — ${bad.map((r) => `${r.scenario}: ${r.lost} lost, ${r.duplicated} duplicated`).join('; ') || 'a scenario did not complete'}`,
    );
    return 1;
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
