import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import mqtt, { type MqttClient } from 'mqtt';
import { removeDirs, startTestCloud, startTestEdge, tempDir, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { spawnCli } from './support/proc.ts';
import { DeviceRegistry, filterCovers } from '../src/edge/device-auth.ts';
import { openEdgeDb } from '../src/edge/db.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { hashSecret } from '../src/lib/secrets.ts';
import { PAYLOAD_LIMITS } from '../src/contracts/messages.ts';

/** Runs a Mosquitto command-line client (a real third-party MQTT client) to its exit; `limitMs` only bounds a hang. */
function mosquitto(
  cmd: 'mosquitto_sub' | 'mosquitto_pub',
  args: string[],
  limitMs = 10_000,
): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      err += d;
    });
    const t = setTimeout(() => p.kill('SIGKILL'), limitMs);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out, err });
    });
  });
}

describe("per-device credentials and topic ACLs on the site's device broker", () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  let host: string;
  let port: string;
  const secrets: Record<string, string> = {};
  const clients: MqttClient[] = [];

  const local = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${edge.handle.apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${edge.apiKey}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const connect = async (id: string, extra: mqtt.IClientOptions = {}) => {
    const c = await mqtt.connectAsync(edge.handle.deviceUrl, {
      username: id,
      password: secrets[id],
      clientId: id,
      reconnectPeriod: 0,
      ...extra,
    });
    clients.push(c);
    return c;
  };

  before(async () => {
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { acl: 'yes' }, sharedDevicePassword: false });
    await waitFor('connected', () => edge.handle.linkState() === 'connected');
    ({ hostname: host, port } = new URL(edge.handle.deviceUrl));
    for (const d of [
      { id: 'sensor-1', publish: ['plant/line1/sensor-1/#'] },
      { id: 'sensor-2', publish: ['plant/line1/sensor-2/#'], subscribe: ['plant/line1/sensor-2/cmd'] },
      { id: 'hmi', subscribe: ['plant/alerts', 'plant/line1/+/temp'] },
    ]) {
      const r = await local('POST', '/api/v1/devices', d);
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.clientId, d.id);
      secrets[d.id] = r.body.secret;
    }
  });
  after(async () => {
    for (const c of clients) c.end(true);
    await edge?.stop();
    await cloud?.stop();
  });

  it('keeps secrets hashed at rest and out of every listing', async () => {
    const list = await local('GET', '/api/v1/devices');
    assert.deepEqual(
      list.body.items.map((d: any) => d.id),
      ['hmi', 'sensor-1', 'sensor-2'],
    );
    assert.ok(list.body.items.every((d: any) => !('secret' in d)));
    const db = new Database(join(edge.dataDir, 'edge.db'), { readonly: true });
    const rows = db.prepare('SELECT id, secret_hash FROM devices').all() as { id: string; secret_hash: string }[];
    db.close();
    for (const r of rows) {
      assert.match(r.secret_hash, /^[0-9a-f]{64}$/);
      assert.ok(!JSON.stringify(rows).includes(secrets[r.id]!), 'the secret itself is not stored');
    }
  });

  it('refuses a device subscribing to # (mosquitto_sub), and delivers only what its grants cover', async () => {
    const attack = await mosquitto('mosquitto_sub', [
      '-h',
      host,
      '-p',
      port,
      '-u',
      'hmi',
      '-P',
      secrets.hmi!,
      '-i',
      'hmi',
      '-t',
      '#',
      '-v',
      '-C',
      '1',
    ]);
    assert.match(attack.err, /denied/i, JSON.stringify(attack));
    assert.equal(attack.out, '', 'nothing received');
    // The same device's granted subscription works; one outside its grants gets SUBACK 128.
    const hmi = await connect('hmi');
    const got: string[] = [];
    hmi.on('message', (t, m) => got.push(`${t} ${m}`));
    const granted = await hmi.subscribeAsync('plant/line1/+/temp');
    assert.deepEqual(
      granted.map((g) => g.qos),
      [0],
    );
    const refused = (await hmi.subscribeAsync(['plant/line1/sensor-1/secret', 'plant/#']).catch((e) => e)) as {
      packet?: { granted: number[] };
    };
    assert.deepEqual(refused.packet?.granted, [128, 128], "SUBACK 128: outside the device's grants");
    const s1 = await connect('sensor-1');
    await s1.publishAsync('plant/line1/sensor-1/secret', 'not for hmi', { qos: 1 });
    await s1.publishAsync('plant/line1/sensor-1/temp', '21.5', { qos: 1 });
    await waitFor('granted message delivered', () => got.length >= 1);
    assert.deepEqual(got, ['plant/line1/sensor-1/temp 21.5']);
  });

  it('cuts off a device publishing outside its grants, and the message goes nowhere', async () => {
    const hmi = await connect('hmi');
    const got: string[] = [];
    hmi.on('message', (t, m) => got.push(`${t} ${m}`));
    await hmi.subscribeAsync('plant/line1/+/temp');
    const before = edge.handle.devices.stats.messagesIn;
    const forged = await mosquitto('mosquitto_pub', [
      '-h',
      host,
      '-p',
      port,
      '-u',
      'sensor-2',
      '-P',
      secrets['sensor-2']!,
      '-i',
      'sensor-2',
      '-t',
      'plant/line1/sensor-1/temp',
      '-m',
      '99',
      '-q',
      '1',
    ]);
    assert.notEqual(forged.code, 0, 'the broker closed the connection instead of acknowledging');
    const own = await mosquitto('mosquitto_pub', [
      '-h',
      host,
      '-p',
      port,
      '-u',
      'sensor-2',
      '-P',
      secrets['sensor-2']!,
      '-i',
      'sensor-2',
      '-t',
      'plant/line1/sensor-2/temp',
      '-m',
      '20',
      '-q',
      '1',
    ]);
    assert.equal(own.code, 0, own.err);
    await waitFor('the granted publish delivered', () => got.length >= 1);
    assert.deepEqual(got, ['plant/line1/sensor-2/temp 20'], 'the forged reading never reached a subscriber');
    // The broker counts a message after it delivered it: wait for the count, then check it.
    await waitFor('counted', () => edge.handle.devices.stats.messagesIn >= before + 1);
    assert.equal(edge.handle.devices.stats.messagesIn, before + 1, 'only the granted publish reached the site');
  });

  it("refuses a device taking another device's client id; the victim stays connected", async () => {
    const victim = await connect('sensor-1');
    let cut = false;
    victim.on('close', () => {
      cut = true;
    });
    const takeover = await mosquitto('mosquitto_pub', [
      '-h',
      host,
      '-p',
      port,
      '-u',
      'sensor-2',
      '-P',
      secrets['sensor-2']!,
      '-i',
      'sensor-1',
      '-t',
      'plant/line1/sensor-2/x',
      '-m',
      '1',
      '-q',
      '1',
    ]);
    assert.notEqual(takeover.code, 0);
    assert.match(takeover.err, /identifier rejected/i, takeover.err);
    // The victim's session still works: a QoS 1 publish is acknowledged on the same connection.
    await victim.publishAsync('plant/line1/sensor-1/temp', '22', { qos: 1 });
    assert.equal(cut, false);
    assert.ok(victim.connected);
    // No shared password on this site: the old shared username is refused whatever the password.
    const shared = await mosquitto('mosquitto_pub', [
      '-h',
      host,
      '-p',
      port,
      '-u',
      'device',
      '-P',
      'anything',
      '-i',
      'x1',
      '-t',
      'plant/a',
      '-m',
      '1',
    ]);
    assert.notEqual(shared.code, 0);
  });

  it('adds, lists and revokes devices through the cloud; a revoked device is cut off at once', async () => {
    const added = await cloud.api('POST', `/api/v1/sites/${edge.handle.siteId}/devices`, {
      id: 'sensor-3',
      publish: ['plant/line2/sensor-3/#'],
    });
    assert.equal(added.status, 201, JSON.stringify(added.body));
    assert.match(added.body.secret, /^ewd_/);
    secrets['sensor-3'] = added.body.secret;
    const dup = await cloud.api('POST', `/api/v1/sites/${edge.handle.siteId}/devices`, { id: 'sensor-3', publish: ['x'] });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.code, 'DEVICE_EXISTS');
    const bad = await cloud.api('POST', `/api/v1/sites/${edge.handle.siteId}/devices`, { id: 'evil', subscribe: ['ew/#'] });
    assert.equal(bad.body.code, 'VALIDATION_FAILED');
    assert.equal(bad.body.path, 'subscribe[0]');
    const listed = await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}/devices`);
    assert.deepEqual(
      listed.body.items.map((d: any) => d.id),
      ['hmi', 'sensor-1', 'sensor-2', 'sensor-3'],
    );
    assert.ok(!JSON.stringify(listed.body).includes('ewd_'), 'no secret in a listing');

    const s3 = await connect('sensor-3');
    const closed = new Promise<void>((r) => s3.once('close', () => r()));
    const revoked = await cloud.api('DELETE', `/api/v1/sites/${edge.handle.siteId}/devices/sensor-3`);
    assert.equal(revoked.status, 204);
    await closed;
    const again = await mosquitto('mosquitto_pub', [
      '-h',
      host,
      '-p',
      port,
      '-u',
      'sensor-3',
      '-P',
      secrets['sensor-3']!,
      '-i',
      'sensor-3',
      '-t',
      'plant/line2/sensor-3/t',
      '-m',
      '1',
    ]);
    assert.notEqual(again.code, 0);
    assert.match(again.err, /not authori[sz]ed|bad user ?name or password/i, again.err);
    assert.equal((await cloud.api('DELETE', `/api/v1/sites/${edge.handle.siteId}/devices/sensor-3`)).body.code, 'DEVICE_NOT_FOUND');
  });

  it('edgeweave devices add|list|revoke on the site (local API key) and through the cloud (--site)', async () => {
    const keyFile = join(edge.dataDir, 'cli-api.key');
    writeFileSync(keyFile, edge.apiKey, { mode: 0o600 });
    const onSite = ['--local-api', edge.handle.apiUrl, '--api-key-file', keyFile];
    const add = spawnCli(['devices', 'add', 'cli-dev', '--publish', 'plant/cli/#', '--subscribe', 'plant/alerts', '-o', 'json', ...onSite]);
    assert.equal(await add.exited, 0, add.stderr());
    const mid = await local('GET', '/api/v1/devices');
    assert.deepEqual(mid.body.items.find((d: any) => d.id === 'cli-dev')?.publish, ['plant/cli/#']);
    const viaCloud = { EW_CLOUD: cloud.url, EW_API_KEY: cloud.adminKey };
    const list = spawnCli(['devices', 'list', '--site', edge.handle.siteId, '-o', 'json'], viaCloud);
    assert.equal(await list.exited, 0, list.stderr());
    const rev = spawnCli(['devices', 'revoke', 'cli-dev', '--site', edge.handle.siteId], viaCloud);
    assert.equal(await rev.exited, 0, rev.stderr());
    const after = await local('GET', '/api/v1/devices');
    assert.ok(!after.body.items.some((d: any) => d.id === 'cli-dev'));
  });
});

describe('topic grants (pure)', () => {
  it('a subscription is allowed only inside a grant', () => {
    const table: [string, string, boolean][] = [
      ['plant/#', 'plant/a/b', true],
      ['plant/#', 'plant', true],
      ['plant/#', '#', false],
      ['plant/+', 'plant/#', false],
      ['plant/+/temp', 'plant/x/temp', true],
      ['plant/+/temp', 'plant/+/temp', true],
      ['plant/x/temp', 'plant/+/temp', false],
      ['#', '#', true],
      ['a/b', 'a/b/c', false],
      ['a/b/c', 'a/b', false],
      ['+', 'a', true],
      ['+', 'a/b', false],
    ];
    for (const [grant, filter, want] of table) assert.equal(filterCovers(grant, filter), want, `${grant} covers ${filter}`);
  });

  it("the opt-in shared password cannot take a registered device's client id, nor log in when off", () => {
    const dir = tempDir('devreg');
    const db = openEdgeDb(dir);
    let shared: string | undefined = hashSecret('shared-secret-123456');
    const reg = new DeviceRegistry(db, new ManualClock(), () => shared);
    const d = reg.add({ id: 'pump-1', publish: ['pumps/1/#'] });
    assert.equal(reg.authenticate('pump-1', d.secret, 'pump-1').ok, true);
    assert.deepEqual(reg.authenticate('pump-1', d.secret, 'pump-2'), {
      ok: false,
      reason: 'device "pump-1" must connect with client id "pump-1", not "pump-2"',
      returnCode: 2,
    });
    assert.equal(reg.authenticate('device', 'shared-secret-123456', 'any-client').ok, true);
    const takeover = reg.authenticate('device', 'shared-secret-123456', 'pump-1');
    assert.equal(takeover.ok, false);
    assert.equal(!takeover.ok && takeover.returnCode, 2);
    shared = undefined;
    assert.equal(reg.authenticate('device', 'shared-secret-123456', 'any-client').ok, false);
    assert.throws(() => reg.add({ id: 'device', publish: ['x'] }), /shared password's username/);
    assert.throws(
      () => reg.add({ id: 'p', publish: ['a/#/b'] }),
      (e: any) => e.path === 'publish[0]',
    );
    assert.throws(() => reg.add({ id: 'p' }), /at least one topic filter/);
    db.close();
    removeDirs(dir);
  });

  it('lists devices a page at a time, each page within the bound of an answer to the cloud', () => {
    const dir = tempDir('devpage');
    const db = openEdgeDb(dir);
    const reg = new DeviceRegistry(db, new ManualClock(), () => undefined);
    // The attack: many devices with the widest grants the limits allow (32 filters of 256 characters each way).
    const wide = (i: number, k: string) =>
      Array.from({ length: 32 }, (_, j) => `${k}/${String(i).padStart(3, '0')}/${String(j).padStart(2, '0')}/${'x'.repeat(240)}`);
    for (let i = 0; i < 40; i++) reg.add({ id: `dev-${String(i).padStart(3, '0')}`, publish: wide(i, 'p'), subscribe: wide(i, 's') });
    assert.throws(
      () => reg.add({ id: 'too-long', publish: ['a/'.repeat(200)] }),
      (e: any) => e.path === 'publish[0]',
    );
    const seen: string[] = [];
    let pages = 0;
    for (let after: string | null = ''; after !== null; pages++) {
      const page: { items: { id: string }[]; next: string | null } = reg.list({ after });
      assert.ok(Buffer.byteLength(JSON.stringify(page)) < PAYLOAD_LIMITS['rpc-res'], 'fits an RPC answer');
      seen.push(...page.items.map((d) => d.id));
      after = page.next;
    }
    assert.ok(pages > 1);
    assert.deepEqual(
      seen,
      Array.from({ length: 40 }, (_, i) => `dev-${String(i).padStart(3, '0')}`),
      'every device once, in order',
    );
    assert.deepEqual(
      reg.list({ limit: 2 }).items.map((d) => d.id),
      ['dev-000', 'dev-001'],
    );
    assert.equal(reg.list({ limit: 2 }).next, 'dev-001');
    db.close();
    removeDirs(dir);
  });
});
