import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { startTestCloud, startTestEdge, tempDir, waitFor, removeDirs } from './support/harness.ts';
import { spawnCli } from './support/proc.ts';
import { newSecret } from '../src/lib/secrets.ts';

/**
 * Liveness that tells the truth. A cloud restart does not show sites as online from its store:
 * they are "unknown" until they reconnect (online) or their heartbeat budget runs out (offline).
 * An agent behind a link that goes silent (packets black-holed, no reset) notices within its
 * keepalive and says so in /healthz, then reconnects when the path is back.
 */

/** A TCP proxy that can stall: bytes stop flowing both ways, sockets stay open (a silent partition). */
class StallProxy {
  private server!: Server;
  stalled = false;
  private readonly sockets = new Set<Socket>();
  constructor(private readonly upstreamPort: number) {}
  async start(): Promise<number> {
    this.server = createServer((down) => {
      const up = connect(this.upstreamPort, '127.0.0.1');
      for (const s of [up, down]) {
        this.sockets.add(s);
        s.on('error', () => {});
        s.on('close', () => {
          this.sockets.delete(s);
          up.destroy();
          down.destroy();
        });
      }
      down.on('data', (d) => {
        if (!this.stalled) up.write(d);
      });
      up.on('data', (d) => {
        if (!this.stalled) down.write(d);
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    return (this.server.address() as { port: number }).port;
  }
  /** Ends the stall and drops the stalled connections' sockets quietly (the path is back, those sessions are dead). */
  heal(): void {
    this.stalled = false;
  }
  close(): void {
    for (const s of this.sockets) s.destroy();
    this.server.close();
  }
}

describe('liveness after a cloud restart, and a silent partition', () => {
  const dirs: string[] = [];
  after(() => removeDirs(...dirs));

  it('after a restart, a site that was online is unknown until it reconnects (online) or its budget runs out (offline) — never online from the store', async () => {
    const cloud = await startTestCloud();
    dirs.push(cloud.dataDir);
    const live = await startTestEdge(cloud, { name: 'live' });
    dirs.push(live.dataDir);
    const deadDir = tempDir('liveness-dead');
    dirs.push(deadDir);
    writeFileSync(join(deadDir, 'api.key'), newSecret('ewl'));
    writeFileSync(join(deadDir, 'device.pw'), newSecret('ewd'));
    const dead = spawnCli(
      [
        'edge',
        '--data-dir',
        deadDir,
        '--api-port',
        '0',
        '--device-port',
        '0',
        '--device-host',
        '127.0.0.1',
        '--heartbeat-interval',
        '1',
        '--api-key-file',
        join(deadDir, 'api.key'),
        '--device-password-file',
        join(deadDir, 'device.pw'),
        '--cloud',
        cloud.url,
      ],
      { EW_JOIN_TOKEN: await cloud.token() },
    );
    const deadId = (await dead.ready).siteId as string;
    const state = async (id: string) => (await cloud.api('GET', `/api/v1/sites/${id}`)).body.state as string;
    try {
      await waitFor(
        'both online',
        async () => (await state(deadId)) === 'online' && (await state(live.handle.siteId)) === 'online',
        15_000,
        50,
      );
      // The cloud goes down with both online in its store; one site dies meanwhile (no will can be heard).
      await cloud.stop();
      dead.child.kill('SIGKILL');
      await dead.exited;
      await cloud.restart();
      assert.equal(await state(deadId), 'unknown', 'a dead site is not shown online from the store');
      const seen = new Set<string>();
      await waitFor(
        'the dead site offline once its budget ran out',
        async () => {
          const s = await state(deadId);
          seen.add(s);
          return s === 'offline';
        },
        20_000,
        50,
      );
      assert.ok(!seen.has('online'), `states seen: ${[...seen]}`);
      await waitFor('the live site online after it reconnected', async () => (await state(live.handle.siteId)) === 'online', 20_000, 50);
      const listed = (await cloud.api('GET', '/api/v1/sites?state=offline')).body;
      assert.ok(JSON.stringify(listed).includes(deadId));
    } finally {
      dead.child.kill('SIGKILL');
      await live.stop();
      await cloud.stop();
    }
  });

  it('notices a silent partition within its keepalive, says so in /healthz, and reconnects when the path is back', async () => {
    const cloud = await startTestCloud();
    dirs.push(cloud.dataDir);
    const edge = await startTestEdge(cloud, { cloudKeepaliveS: 1 });
    dirs.push(edge.dataDir);
    const proxy = new StallProxy(Number(new URL(cloud.handle.mqttUrl).port));
    const port = await proxy.start();
    const health = async () =>
      (await (await fetch(`${edge.handle.apiUrl}/healthz`)).json()) as {
        ok: boolean;
        link: string;
        cloud: { keepaliveS: number; since: number; lastContactAt: number | null };
      };
    try {
      // Route the site's cloud link through the proxy.
      const credsFile = join(edge.dataDir, 'credentials.json');
      const creds = JSON.parse(readFileSync(credsFile, 'utf8')) as { url: string };
      creds.url = `mqtt://127.0.0.1:${port}`;
      writeFileSync(credsFile, JSON.stringify(creds));
      await edge.restart();
      await waitFor('connected through the proxy', async () => (await health()).link === 'connected', 15_000, 50);
      const before = await health();
      assert.equal(before.cloud.keepaliveS, 1);
      proxy.stalled = true;
      const stalledAt = Date.now();
      await waitFor('the partition noticed', async () => (await health()).link !== 'connected', 15_000, 50);
      const h = await health();
      assert.equal(h.ok, true, 'the site itself is healthy: it runs without its cloud');
      assert.ok(h.cloud.since >= stalledAt, 'the state says since when');
      proxy.heal();
      await waitFor('reconnected once the path is back', async () => (await health()).link === 'connected', 20_000, 50);
    } finally {
      proxy.close();
      await edge.stop();
      await cloud.stop();
    }
  });
});
