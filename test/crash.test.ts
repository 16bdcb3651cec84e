import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { startTestCloud, tempDir, waitFor, removeDirs, type TestCloud } from './support/harness.ts';
import { spawnCli, type CliProcess } from './support/proc.ts';
import { newSecret } from '../src/lib/secrets.ts';

/**
 * kill -9 an agent while it sends 10,000 uplink messages, restart it: the cloud holds exactly
 * those 10,000, each once.
 */
describe('crash: kill -9 during a 10,000-message uplink', () => {
  let cloud: TestCloud;
  let agent: CliProcess | undefined;
  const dataDir = tempDir('crash');
  const apiKey = newSecret('ewl');
  before(async () => {
    cloud = await startTestCloud();
    writeFileSync(join(dataDir, 'api.key'), apiKey, { mode: 0o600 });
    writeFileSync(join(dataDir, 'device.pw'), newSecret('ewd'), { mode: 0o600 });
  });
  after(async () => {
    agent?.child.kill('SIGKILL');
    await cloud?.stop();
    removeDirs(dataDir);
  });

  const start = (extra: string[], env: NodeJS.ProcessEnv = {}) =>
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
        '--uplink-allow',
        'vibration',
        ...extra,
      ],
      env,
    );

  it('delivers every message exactly once after a crash and a restart', async () => {
    agent = start(['--cloud', cloud.url], { EW_JOIN_TOKEN: await cloud.token() });
    const ready = await agent.ready;
    const siteId = ready.siteId as string;
    const records = Array.from({ length: 10_000 }, (_, i) => ({ n: i, machine: `m${i % 50}`, rms: (i % 97) / 10 }));
    const res = await fetch(`${ready.apiUrl}/api/v1/uplink/vibration`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ records }),
    });
    assert.equal(res.status, 202);
    const { ids } = (await res.json()) as { ids: string[] };
    assert.equal(ids.length, 10_000);

    // Kill as soon as the cloud has some but (on any sane machine) not all of them.
    await waitFor('first messages at the cloud', async () => (await cloud.handle.store.countUplink(siteId)) > 0, 30_000, 5);
    agent.child.kill('SIGKILL');
    await agent.exited;
    const atKill = await cloud.handle.store.countUplink(siteId);
    assert.ok(atKill < 10_000, `the agent was killed mid-send (cloud had ${atKill})`);
    // The broker publishes the dead agent's last will: offline at once, no heartbeat budget needed.
    await waitFor(
      'offline from the last will',
      async () => (await cloud.api('GET', `/api/v1/sites/${siteId}`)).body.state === 'offline',
      5000,
    );

    agent = start([]);
    const again = await agent.ready;
    await waitFor('all 10,000 at the cloud', async () => (await cloud.handle.store.countUplink(siteId)) >= 10_000, 60_000, 50);
    const tenantId = (await cloud.handle.store.getSiteById(siteId))!.tenantId;
    const stored = await cloud.handle.store.queryUplink(tenantId, { siteId, limit: 20_000 });
    assert.equal(stored.length, 10_000, 'each message once');
    assert.deepEqual(new Set(stored.map((r) => r.msgId)), new Set(ids), 'exactly the messages that were accepted');
    assert.deepEqual(
      stored.map((r) => (r.data as { n: number }).n).sort((a, b) => a - b),
      records.map((r) => r.n),
    );
    await waitFor('the outbox empties', async () => {
      const metrics = await (await fetch(`${again.apiUrl}/metrics`, { headers: { authorization: `Bearer ${apiKey}` } })).text();
      return /^ew_edge_outbox_pending 0$/m.test(metrics);
    });
  });
});
