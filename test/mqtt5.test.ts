import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import mqtt from 'mqtt';
import { openEdgeDb, type EdgeDb } from '../src/edge/db.ts';
import { DeadLetters, StreamRouter, type Record_ } from '../src/edge/record-router.ts';
import { ExternalDeviceSource } from '../src/edge/external-devices.ts';
import { propertyFields } from '../src/edge/mqtt5.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import { systemClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { MOSQUITTO_URL, mosquittoAvailable } from './support/mosquitto.ts';
import { tempDir, waitFor } from './support/harness.ts';

const run = promisify(execFile);

describe('MQTT 5 properties into records (pure)', () => {
  it('maps user properties, expiry and content type; absent properties give no field', () => {
    const map = {
      line: 'user:line',
      all: 'user',
      ttl: 'message-expiry',
      expiresAt: 'expires-at',
      ct: 'content-type',
      reply: 'response-topic',
      fw: 'user:fw',
    };
    assert.deepEqual(
      propertyFields(map, {
        userProperties: { line: 'L7', shift: ['a', 'b'] },
        messageExpiryInterval: 30,
        contentType: 'application/json',
        receivedAt: 1000,
      }),
      { line: 'L7', all: { line: 'L7', shift: ['a', 'b'] }, ttl: 30, expiresAt: 31_000, ct: 'application/json' },
    );
    assert.equal(propertyFields(map, undefined), undefined, 'an MQTT 3.1.1 message has none');
  });
  it('the manifest accepts only known properties, and only on MQTT streams', () => {
    const m = (stream: Record<string, unknown>) =>
      parseManifest({
        apiVersion: 'edgeweave/v1',
        kind: 'App',
        metadata: { name: 'x', version: '1.0.0' },
        spec: { streams: [{ name: 's', ...stream }] },
      });
    assert.doesNotThrow(() => m({ topic: 'a/+', properties: { line: 'user:line', exp: 'expires-at' } }));
    assert.throws(
      () => m({ topic: 'a/+', properties: { line: 'payload-format' } }),
      /spec\.streams\[0\]\.properties\.line: one of user:<name>/,
    );
  });
});

/**
 * MQTT 5 devices through the site's Mosquitto (the embedded aedes broker speaks 3.1.1 only):
 * the agent reads the broker as an MQTT 5 client, and the devices are the real mosquitto_pub
 * with -V mqttv5. Topics and the client id are unique per run (the broker is shared).
 */
describe('MQTT 5 devices through Mosquitto (mosquitto_pub -V mqttv5)', async () => {
  const skip = await mosquittoAvailable();
  const prefix = `ew-mqtt5-${randomUUID().slice(0, 8)}`;
  const clientId = `ew-test-${prefix}`;
  const dir = tempDir('mqtt5');
  let db: EdgeDb;
  let devices: ExternalDeviceSource;
  let dead: DeadLetters;
  const got: Record_[] = [];
  const { hostname, port } = new URL(MOSQUITTO_URL);

  before(async () => {
    if (skip) return;
    db = openEdgeDb(dir);
    dead = new DeadLetters(db, systemClock);
    const router = new StreamRouter(dead);
    devices = new ExternalDeviceSource({ url: MOSQUITTO_URL, clientId, protocolVersion: 5, log: silentLogger() });
    devices.onMessage((m) => router.onMessage(m.topic, m.payload, m.properties));
    router.subscribe({
      app: 'plant',
      deliver: (rec) => got.push(rec),
      stream: {
        name: 'temps',
        topic: `${prefix}/+/temp`,
        schema: { temp: 'float', line: 'string', ttl: 'int', expiresAt: 'timestamp', meta: 'object', batch: 'int' },
        properties: {
          line: 'user:line',
          ttl: 'message-expiry',
          expiresAt: 'expires-at',
          meta: 'user',
          ct: 'content-type',
          batch: 'user:batch',
        },
      },
    });
    await devices.start();
    await devices.setFilters([`${prefix}/+/temp`]);
  });
  after(async () => {
    if (skip) return;
    await devices?.close();
    // The agent's session is persistent: end it so that later runs do not inherit it.
    const c = await mqtt.connectAsync(MOSQUITTO_URL, {
      clientId,
      clean: true,
      protocolVersion: 5,
      properties: { sessionExpiryInterval: 0 },
      reconnectPeriod: 0,
    });
    await c.endAsync();
    db?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const pub = (args: string[]) => run('mosquitto_pub', ['-h', hostname, '-p', port || '1883', '-q', '1', ...args]);

  it('user properties and message expiry reach the record, typed by the schema', { skip }, async () => {
    const t0 = Date.now();
    await pub([
      '-V',
      'mqttv5',
      '-t',
      `${prefix}/m1/temp`,
      '-m',
      '{"temp":21.5}',
      '-D',
      'publish',
      'user-property',
      'line',
      'L7',
      '-D',
      'publish',
      'user-property',
      'shift',
      'night',
      '-D',
      'publish',
      'message-expiry-interval',
      '60',
      '-D',
      'publish',
      'content-type',
      'application/json',
    ]);
    const rec = await waitFor('the record', () => got.find((r) => r.temp === 21.5));
    assert.equal(rec.line, 'L7');
    assert.deepEqual(rec.meta, { line: 'L7', shift: 'night' });
    assert.equal(rec.ct, 'application/json');
    assert.ok((rec.ttl as number) > 0 && (rec.ttl as number) <= 60, `ttl ${rec.ttl}`);
    assert.ok((rec.expiresAt as number) >= t0 + 50_000 && (rec.expiresAt as number) <= Date.now() + 60_000, `expiresAt ${rec.expiresAt}`);
  });

  it('a property that does not fit the schema sends the message to the dead letters', { skip }, async () => {
    await pub([
      '-V',
      'mqttv5',
      '-t',
      `${prefix}/m2/temp`,
      '-m',
      '{"temp":22.5}',
      '-D',
      'publish',
      'user-property',
      'batch',
      'not-a-number',
    ]);
    const dl = await waitFor('the dead letter', () => dead.list({ app: 'plant', limit: 10 }).find((d) => d.reason.includes('"batch"')));
    assert.match(dl.reason, /field "batch" should be int/);
    assert.equal(
      got.some((r) => r.temp === 22.5),
      false,
    );
  });

  it('MQTT 3.1.1 devices on the same stream still work (no properties, no fields)', { skip }, async () => {
    await pub(['-V', 'mqttv311', '-t', `${prefix}/m3/temp`, '-m', '{"temp":23.5}']);
    const rec = await waitFor('the record', () => got.find((r) => r.temp === 23.5));
    assert.deepEqual(rec, { temp: 23.5 });
  });
});
