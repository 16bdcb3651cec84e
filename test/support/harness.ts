import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCloud, type CloudConfig, type CloudHandle } from '../../src/cloud/main.ts';
import { startEdge, type EdgeConfig, type EdgeHandle } from '../../src/edge/main.ts';
import { newSecret } from '../../src/lib/secrets.ts';
import { silentLogger } from '../../src/lib/logger.ts';
import type { Clock } from '../../src/lib/clock.ts';

/**
 * In-process test fleet: a real cloud (HTTP + MQTT on loopback, ephemeral ports) and real
 * agents, each with its own temporary data dir. Everything is torn down by `cleanup()`.
 */
/** Connection-rate and pending bounds lifted: every test client dials from 127.0.0.1. */
export const LOOPBACK_MQTT_LIMITS = {
  connectBurst: 1e6,
  connectPerSecond: 1e6,
  maxPendingPerAddress: 1e6,
  authFailBurst: 1e6,
  authFailPerMinute: 1e6,
} as const;

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `ew-${prefix}-`));
}

/** Waits until `fn` returns a truthy value, checking again on each turn; fails after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 15_000, everyMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The system clock shifted by a settable offset: lets a test jump past a token's expiry. */
export class OffsetClock implements Clock {
  offset = 0;
  now(): number {
    return Date.now() + this.offset;
  }
  setTimer(ms: number, fn: () => void): () => void {
    const t = setTimeout(fn, ms);
    t.unref();
    return () => clearTimeout(t);
  }
}

export interface TestCloud {
  handle: CloudHandle;
  url: string;
  adminKey: string;
  dataDir: string;
  /** A call to the cloud's API in process (app.inject, no socket), with the admin key unless another is given. */
  api<T = any>(method: string, path: string, body?: unknown, key?: string): Promise<{ status: number; body: T }>;
  /** The same over the cloud's listening HTTP port (for tests of the transport). */
  overHttp<T = any>(method: string, path: string, body?: unknown, key?: string): Promise<{ status: number; body: T }>;
  token(opts?: { labels?: Record<string, string>; region?: string; ttlSeconds?: number }): Promise<string>;
  /** Starts again (stopping first if running) on the same data dir and ports; agents reconnect. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startTestCloud(cfg: Partial<CloudConfig> = {}): Promise<TestCloud> {
  const dataDir = cfg.dataDir ?? tempDir('cloud');
  const adminKey = newSecret('ewk');
  const keyFile = join(dataDir, 'admin.key');
  writeFileSync(keyFile, adminKey, { mode: 0o600 });
  // Tests run many agents and clients from one loopback address, which the per-address rate
  // limits are not meant for: off unless a test sets its own (test/http-hardening.test.ts).
  const conf: CloudConfig = {
    httpHost: '127.0.0.1',
    httpPort: 0,
    mqttHost: '127.0.0.1',
    mqttPort: 0,
    log: silentLogger(),
    rateLimits: false,
    mqttLimits: LOOPBACK_MQTT_LIMITS,
    ...cfg,
    dataDir,
    adminKeyFile: keyFile,
  };
  let handle = await startCloud(conf);
  let running = true;
  const tc: TestCloud = {
    get handle() {
      return handle;
    },
    get url() {
      return handle.url;
    },
    adminKey,
    dataDir,
    // In-process (fastify's inject): the whole request path — hooks, auth, validation,
    // serialisation — without a socket. `overHttp` goes through the listening port for the
    // tests that are about the transport itself.
    async api(method, path, body, key = adminKey) {
      const res = await handle.http.inject({
        method: method as 'GET',
        url: path,
        headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body === undefined ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }),
      });
      let parsed: unknown = res.body;
      try {
        parsed = JSON.parse(res.body);
      } catch {
        /* not JSON */
      }
      return { status: res.statusCode, body: parsed as any };
    },
    async overHttp(method, path, body, key = adminKey) {
      const res = await fetch(new URL(path, handle.url), {
        method,
        headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        /* not JSON */
      }
      return { status: res.status, body: parsed as any };
    },
    async token(opts = {}) {
      const r = await tc.api('POST', '/api/v1/tokens', {
        labels: opts.labels ?? {},
        region: opts.region ?? 'test',
        ttlSeconds: opts.ttlSeconds ?? 3600,
      });
      if (r.status !== 201) throw new Error(`token creation failed: ${JSON.stringify(r.body)}`);
      return r.body.token as string;
    },
    async restart() {
      const http = Number(new URL(handle.url).port);
      const mqtt = Number(new URL(handle.mqttUrl).port);
      if (running) await handle.close();
      handle = await startCloud({ ...conf, httpPort: http, mqttPort: cfg.broker ? undefined : mqtt });
      running = true;
    },
    async stop() {
      if (running) await handle.close();
      running = false;
    },
  };
  return tc;
}

export interface TestEdge {
  handle: EdgeHandle;
  dataDir: string;
  apiKey: string;
  devicePassword: string;
  /** POST records to the local uplink endpoint. */
  uplink(stream: string, records: unknown[]): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
  restart(extra?: Partial<EdgeConfig>): Promise<void>;
}

export async function startTestEdge(
  cloud: TestCloud | undefined,
  opts: {
    labels?: Record<string, string>;
    region?: string;
    name?: string;
    dataDir?: string /** Off: devices need their own credentials. */;
    sharedDevicePassword?: boolean;
  } & Partial<EdgeConfig> = {},
): Promise<TestEdge> {
  const dataDir = opts.dataDir ?? tempDir('edge');
  const apiKey = newSecret('ewl');
  const devicePassword = newSecret('ewd');
  writeFileSync(join(dataDir, 'api.key'), apiKey, { mode: 0o600 });
  writeFileSync(join(dataDir, 'device.pw'), devicePassword, { mode: 0o600 });
  const token = cloud ? await cloud.token({ labels: opts.labels, region: opts.region }) : undefined;
  const conf: EdgeConfig = {
    apiHost: '127.0.0.1',
    apiPort: 0,
    deviceHost: '127.0.0.1',
    devicePort: 0,
    heartbeatIntervalS: 1,
    reconnectPeriodMs: 100,
    log: silentLogger(),
    deviceLimits: LOOPBACK_MQTT_LIMITS,
    ...opts,
    dataDir,
    cloudUrl: cloud?.url,
    token,
    apiKeyFile: join(dataDir, 'api.key'),
    // Most tests use the shared device password (an opt-in); device-acl.test.ts turns it off.
    devicePasswordFile: opts.sharedDevicePassword === false ? undefined : join(dataDir, 'device.pw'),
  };
  let handle = await startEdge(conf);
  const te: TestEdge = {
    get handle() {
      return handle;
    },
    dataDir,
    apiKey,
    devicePassword,
    async uplink(stream, records) {
      const res = await fetch(`${handle.apiUrl}/api/v1/uplink/${stream}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ records }),
      });
      return { status: res.status, body: await res.json() };
    },
    async stop() {
      await handle.close();
    },
    async restart(extra = {}) {
      await handle.close();
      handle = await startEdge({ ...conf, token: undefined, ...extra });
    },
  };
  return te;
}

export function removeDirs(...dirs: string[]): void {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
