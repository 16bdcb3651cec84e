import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import mqtt, { type MqttClient } from 'mqtt';
import { startTestCloud, tempDir, waitFor, removeDirs, type TestCloud } from './support/harness.ts';
import { spawnCli, type CliProcess } from './support/proc.ts';
import { newSecret } from '../src/lib/secrets.ts';

/**
 * No acknowledged record is lost: a real MQTT client publishes QoS 1 records into a site's device
 * broker and records every PUBACK while the agent is killed with SIGKILL — the instant a PUBACK
 * arrives, and at random moments. After a last restart the cloud holds every acknowledged record
 * exactly once (and no record twice). Sizes are small so the test stays well under a minute on a
 * loaded 2-core machine.
 */
const APP = (name: string) => ({
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name, version: '1.0.0' },
  spec: {
    streams: [{ name: 'recs', topic: 'dur/+/rec', format: 'json', schema: { dev: 'string', n: 'int' } }],
    rules: [{ name: 'pass', sql: 'SELECT dev, n FROM recs', sinks: [{ uplink: 'out' }] }],
    policy: { egress: { allow: ['out'] } },
  },
});

const WINDOW_APP = {
  apiVersion: 'edgeweave/v1',
  kind: 'App',
  metadata: { name: 'durable-win', version: '1.0.0' },
  spec: {
    streams: [{ name: 'events', topic: 'win/+/rec', format: 'json', timestamp: 'ts', schema: { n: 'int', ts: 'timestamp' } }],
    rules: [
      {
        name: 'win',
        sql: 'SELECT window_start() AS ws, count(*) AS c, collect(n) AS ns FROM events GROUP BY TUMBLINGWINDOW(ms, 500)',
        sinks: [{ uplink: 'wins' }],
      },
    ],
    policy: { egress: { allow: ['wins'] } },
  },
};

/** A deterministic random sequence (the kills are reproducible). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
}

describe('acknowledge after durability: kill -9 through the device broker', () => {
  let cloud: TestCloud;
  let agent: CliProcess | undefined;
  const dataDir = tempDir('durable');
  const apiKey = newSecret('ewl');
  const devicePassword = newSecret('ewd');
  let siteId = '';
  let tenantId = '';
  /** One publishing sequence: records `n` = 0, 1, … each published once, and those acknowledged. */
  interface Seq {
    acked: Set<number>;
    next: number;
    topic: (n: number) => string;
    payload: (n: number) => string;
  }
  const plain: Seq = {
    acked: new Set(),
    next: 0,
    topic: (n) => `dur/d${n % 7}/rec`,
    payload: (n) => JSON.stringify({ dev: `d${n % 7}`, n }),
  };
  // Event time 10 ms apart: 50 records per 500 ms tumbling window.
  const windowed: Seq = { acked: new Set(), next: 0, topic: (n) => `win/d${n % 3}/rec`, payload: (n) => JSON.stringify({ n, ts: n * 10 }) };
  const acked = plain.acked;

  before(async () => {
    cloud = await startTestCloud();
    writeFileSync(join(dataDir, 'api.key'), apiKey, { mode: 0o600 });
    writeFileSync(join(dataDir, 'device.pw'), devicePassword, { mode: 0o600 });
  });
  after(async () => {
    agent?.child.kill('SIGKILL');
    await cloud?.stop();
    removeDirs(dataDir);
  });

  const start = (extra: string[] = [], env: NodeJS.ProcessEnv = {}) =>
    spawnCli(
      [
        'edge',
        '--data-dir',
        dataDir,
        '--api-port',
        '0',
        '--device-port',
        '0',
        '--device-host',
        '127.0.0.1',
        '--api-key-file',
        join(dataDir, 'api.key'),
        '--device-password-file',
        join(dataDir, 'device.pw'),
        ...extra,
      ],
      env,
    );

  const localRules = async (apiUrl: string) => {
    const r = await fetch(`${apiUrl}/api/v1/rules`, { headers: { authorization: `Bearer ${apiKey}` } });
    return ((await r.json()) as { items: { rule: string; state: string }[] }).items;
  };

  /** The `n`s the cloud stored, with repeats. */
  const stored = async (): Promise<number[]> =>
    (await cloud.handle.store.queryUplink(tenantId, { siteId, stream: 'out', limit: 100_000 })).map((r) => (r.data as { n: number }).n);

  /**
   * Publishes QoS 1 records (at most `window` unacknowledged) and calls `kill` from the PUBACK
   * callback once `acks` more PUBACKs arrived (or, with `delayMs`, that long after). Each record
   * is published once and never resent: one the agent did not acknowledge may or may not arrive.
   */
  const publishUntilKilled = async (deviceUrl: string, acks: number, delayMs?: number, seq: Seq = plain): Promise<void> => {
    const device: MqttClient = await mqtt.connectAsync(deviceUrl, {
      username: 'device',
      password: devicePassword,
      reconnectPeriod: 0,
      clean: true,
      protocolVersion: 4,
    });
    device.on('error', () => {});
    let got = 0;
    let inFlight = 0;
    let killed = false;
    const kill = () => {
      if (killed) return;
      killed = true;
      agent!.child.kill('SIGKILL');
    };
    await new Promise<void>((resolve) => {
      device.once('close', () => {
        killed = true;
        resolve();
      });
      const pump = () => {
        while (!killed && inFlight < 20) {
          const n = seq.next++;
          inFlight++;
          device.publish(seq.topic(n), seq.payload(n), { qos: 1 }, (err) => {
            inFlight--;
            if (err) return;
            seq.acked.add(n);
            if (++got === acks) {
              if (delayMs === undefined)
                kill(); // the instant this PUBACK arrived
              else setTimeout(kill, delayMs);
            }
            setImmediate(pump);
          });
        }
      };
      pump();
    });
    device.end(true);
    await agent!.exited;
  };

  it('enrolls and runs a rule that sends every record up', async () => {
    agent = start(['--cloud', cloud.url], { EW_JOIN_TOKEN: await cloud.token({ labels: { durable: 'yes' } }) });
    const ready = await agent.ready;
    siteId = ready.siteId as string;
    tenantId = (await cloud.handle.store.getSiteById(siteId))!.tenantId;
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: APP('durable') })).status, 201);
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: WINDOW_APP })).status, 201);
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'durable-win', version: '1.0.0', selector: { durable: 'yes' } })).status,
      201,
    );
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'durable', version: '1.0.0', selector: { durable: 'yes' } })).status,
      201,
    );
    await waitFor(
      'both rules running',
      async () =>
        (await localRules(ready.apiUrl as string)).filter((r) => (r.rule === 'pass' || r.rule === 'win') && r.state === 'running')
          .length === 2,
      30_000,
      50,
    );
  });

  it('loses no acknowledged record when killed the instant a PUBACK arrives (3 kills)', async () => {
    for (let k = 0; k < 3; k++) {
      if (k > 0) agent = start();
      const ready = await agent!.ready;
      await publishUntilKilled(ready.deviceUrl as string, 40 + k * 30);
    }
    agent = start();
    await agent.ready;
    await waitFor(
      'every acknowledged record at the cloud',
      async () => {
        const got = new Set(await stored());
        return [...acked].every((n) => got.has(n));
      },
      30_000,
      50,
    );
    const ns = await stored();
    assert.equal(ns.length, new Set(ns).size, 'no record twice');
    for (const n of acked) assert.ok(ns.includes(n), `acknowledged record ${n} reached the cloud`);
    agent.child.kill('SIGKILL');
    await agent.exited;
  });

  it('loses none and doubles none over 5 kills at random moments', async () => {
    const rand = rng(42);
    for (let k = 0; k < 5; k++) {
      agent = start();
      const ready = await agent.ready;
      await publishUntilKilled(ready.deviceUrl as string, 50 + Math.floor(rand() * 200), Math.floor(rand() * 15));
    }
    agent = start();
    await agent.ready;
    await waitFor(
      'every acknowledged record at the cloud',
      async () => {
        const got = new Set(await stored());
        return [...acked].every((n) => got.has(n));
      },
      30_000,
      50,
    );
    const ns = await stored();
    assert.equal(ns.length, new Set(ns).size, 'no record twice');
    assert.ok(acked.size > 500, `a real load went through (${acked.size} acknowledged)`);
    // Everything the cloud has was published; what it has beyond the acknowledged ones are
    // records made durable whose PUBACK the kill cut off.
    for (const n of ns) assert.ok(n < plain.next);
    agent.child.kill('SIGKILL');
    await agent.exited;
  });

  it('a tumbling-window rule: over 5 kills (on PUBACK and at random), each window result reaches the cloud exactly once, holding every acknowledged record once', async () => {
    const rand = rng(7);
    for (let k = 0; k < 5; k++) {
      agent = start();
      const ready = await agent.ready;
      await publishUntilKilled(
        ready.deviceUrl as string,
        100 + Math.floor(rand() * 200),
        k % 2 ? Math.floor(rand() * 15) : undefined,
        windowed,
      );
    }
    agent = start();
    await agent.ready;
    const results = async () =>
      (await cloud.handle.store.queryUplink(tenantId, { siteId, stream: 'wins', limit: 100_000 })).map(
        (r) => r.data as { ws: number; c: number; ns: number[] },
      );
    const windowOf = (n: number) => Math.floor((n * 10) / 500) * 500;
    // Windows close as event time passes them: every window before the last acknowledged record's
    // must be at the cloud.
    const lastWindow = windowOf(Math.max(...windowed.acked));
    await waitFor(
      'every closed window at the cloud',
      async () => {
        const got = new Set((await results()).map((r) => r.ws));
        return [...windowed.acked].every((n) => windowOf(n) >= lastWindow || got.has(windowOf(n)));
      },
      30_000,
      50,
    );
    const rows = await results();
    const byWindow = new Map<number, number>();
    for (const r of rows) byWindow.set(r.ws, (byWindow.get(r.ws) ?? 0) + 1);
    assert.deepEqual(
      [...byWindow].filter(([, count]) => count > 1),
      [],
      'each window result once',
    );
    const seen = new Map<number, number>();
    for (const r of rows) {
      assert.equal(r.c, r.ns.length);
      for (const n of r.ns) {
        assert.equal(windowOf(n), r.ws, `record ${n} in its own window`);
        seen.set(n, (seen.get(n) ?? 0) + 1);
      }
    }
    assert.deepEqual(
      [...seen].filter(([, count]) => count > 1),
      [],
      'no record counted twice',
    );
    const missing = [...windowed.acked].filter((n) => windowOf(n) < lastWindow && !seen.has(n));
    assert.deepEqual(missing, [], 'no acknowledged record lost from its window');
    assert.ok(rows.length >= 10, `${rows.length} windows closed`);
    agent.child.kill('SIGKILL');
    await agent.exited;
  });

  it('the HTTP push source answers 202 only once its records are durable: killed the instant each 202 arrives, none is lost or doubled', async () => {
    const pushed: number[] = [];
    for (let k = 0; k < 3; k++) {
      agent = start();
      const ready = await agent.ready;
      const base = 1_000_000 + k * 1000;
      const records = Array.from({ length: 50 }, (_, i) => ({ dev: 'http', n: base + i }));
      const res = await fetch(`${ready.apiUrl}/api/v1/streams/durable/recs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ records }),
      });
      agent.child.kill('SIGKILL'); // the instant the answer arrived
      assert.equal(res.status, 202);
      assert.equal(((await res.json()) as { accepted: number }).accepted, 50);
      pushed.push(...records.map((r) => r.n));
      await agent.exited;
    }
    agent = start();
    await agent.ready;
    await waitFor(
      'every pushed record at the cloud',
      async () => {
        const got = new Set(await stored());
        return pushed.every((n) => got.has(n));
      },
      30_000,
      50,
    );
    const ns = (await stored()).filter((n) => n >= 1_000_000);
    assert.equal(ns.length, new Set(ns).size, 'no record twice');
    assert.deepEqual(
      ns.sort((a, b) => a - b),
      pushed,
    );
    agent.child.kill('SIGKILL');
    await agent.exited;
  });
});
