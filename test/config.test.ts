import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { cloudOptions, resolveCloudOptions } from '../src/cloud/config.ts';
import { edgeOptions, resolveEdgeOptions } from '../src/edge/config.ts';
import { startCloud } from '../src/cloud/main.ts';
import { startEdge } from '../src/edge/main.ts';
import { type EwError, exitCodeFor, isEwError } from '../src/contracts/errors.ts';
import { addSchemaOptions, schemaValues } from '../src/cli/schema-options.ts';
import { removeDirs, tempDir } from './support/harness.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { spawnCli } from './support/proc.ts';

/** One config schema per process: flags, environment, a YAML file and defaults, in that order. */
const dir = tempDir('config');
after(() => removeDirs(dir));
let n = 0;
const yaml = (text: string): string => {
  const f = join(dir, `c${n++}.yaml`);
  writeFileSync(f, text);
  chmodSync(f, 0o644); // as most config files are, whatever the umask
  return f;
};
const refused = (fn: () => unknown, message: RegExp, check?: (e: EwError) => void) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(isEwError(e, 'CONFIG_INVALID'), String(e));
    assert.equal(exitCodeFor(e.code), 2);
    assert.match(e.message, message);
    check?.(e);
    return true;
  });

describe('precedence: flag > environment > file > default', () => {
  const file = yaml('port: 1000\nregion: from-file\ninfer-rate: 7\n');
  it('takes each option from the highest source that sets it', () => {
    const all = resolveCloudOptions({ file, env: { EW_CLOUD_PORT: '2000', EW_CLOUD_REGION: 'from-env' }, flags: { httpPort: 3000 } });
    assert.equal(all.httpPort, 3000, 'the flag wins over the variable and the file');
    assert.equal(all.region, 'from-env', 'the variable wins over the file');
    assert.equal(all.inferRate, 7, 'the file wins over the default');
    assert.equal(all.inferBurst, 200, 'the default fills in the rest');
    assert.equal(resolveCloudOptions({ file, env: { EW_CLOUD_PORT: '2000' } }).httpPort, 2000);
    assert.equal(resolveCloudOptions({ file }).httpPort, 1000);
    assert.equal(resolveCloudOptions({}).httpPort, 8080);
  });
  it('maps switches, sizes, lists and the broker variables of earlier versions onto the same schema', () => {
    assert.equal(resolveCloudOptions({ file: yaml('console: false\n') }).console, false);
    assert.equal(resolveCloudOptions({ env: { EW_CLOUD_CONSOLE: 'no' } }).console, false);
    assert.equal(resolveCloudOptions({ env: { EW_CLOUD_CONSOLE: 'no' }, flags: { console: true } }).console, true);
    assert.equal(resolveCloudOptions({ env: { EW_BROKER_USERNAME: 'cloud' } }).brokerUsername, 'cloud');
    const edge = resolveEdgeOptions({
      file: yaml('data-dir: /var/lib/ew\nmodel-cache-max: 500M\nuplink-allow: [a, b]\ndevice-broker-mqtt-version: 5\n'),
      env: { EW_EDGE_OUTBOX_OVERFLOW: 'reject-new' },
    });
    assert.equal(edge.dataDir, '/var/lib/ew');
    assert.equal(edge.modelCacheBytes, 500 * 1024 ** 2);
    assert.deepEqual(edge.uplinkAllow, ['a', 'b']);
    assert.equal(edge.deviceBrokerMqttVersion, 5);
    assert.equal(edge.outboxOverflow, 'reject-new');
    assert.deepEqual(resolveEdgeOptions({ flags: { dataDir: 'd' }, env: { EW_EDGE_UPLINK_ALLOW: 'x, y' } }).uplinkAllow, ['x', 'y']);
    assert.equal(resolveEdgeOptions({ flags: { dataDir: 'd' } }).modelCacheBytes, 10 * 1024 ** 3);
  });
  it('takes from commander only what was given on the command line, so a default never hides a variable or the file', () => {
    const cmd = addSchemaOptions(new Command('cloud').exitOverride(), cloudOptions);
    cmd.parse(['--port', '3000', '--no-console', '--rate-limit', 'off'], { from: 'user' });
    assert.deepEqual(schemaValues(cmd, cloudOptions), { httpPort: 3000, console: false, rateLimits: 'off' });
    const bare = addSchemaOptions(new Command('cloud').exitOverride(), cloudOptions);
    bare.parse([], { from: 'user' });
    assert.deepEqual(schemaValues(bare, cloudOptions), {}, 'nothing given: the environment, the file and the defaults decide');
    const edge = addSchemaOptions(new Command('edge').exitOverride(), edgeOptions);
    edge.parse(['--data-dir', 'd', '--model-cache-max', '2G', '--device-shared-password'], { from: 'user' });
    assert.deepEqual(schemaValues(edge, edgeOptions), { dataDir: 'd', modelCacheBytes: 2 * 1024 ** 3, deviceSharedPassword: true });
    assert.equal(
      resolveEdgeOptions({ flags: { dataDir: 'd' }, env: { EW_EDGE_DEVICE_BROKER_MQTT_VERSION: '5' } }).deviceBrokerMqttVersion,
      5,
    );
  });
});

describe('bad values are refused at start, naming the flag, the value and where it came from', () => {
  it('names a flag', () =>
    refused(
      () => resolveCloudOptions({ flags: { httpPort: 70000 } }),
      /^--port 70000: a port number 0-65535/,
      (e) => assert.equal(e.path, '--port'),
    ));
  it('names the environment variable', () =>
    refused(
      () => resolveCloudOptions({ env: { EW_CLOUD_INFER_RATE: 'fast' } }),
      /^--infer-rate "fast" \(from EW_CLOUD_INFER_RATE\): a positive number/,
    ));
  it('names the file, line and column, and carries them as pos', () => {
    const f = yaml('region: eu\nheartbeat-interval: 0\n');
    refused(
      () => resolveCloudOptions({ file: f }),
      new RegExp(`^--heartbeat-interval 0 \\(from ${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2:21\\): must be 1 to 3600 seconds`),
      (e) => assert.deepEqual(e.pos, { file: f, line: 2, col: 21 }),
    );
  });
  it('refuses an unknown key and a file that is not a map, at their place', () => {
    const f = yaml('port: 1\nprot: 2\n');
    refused(
      () => resolveCloudOptions({ file: f }),
      /:2:1: unknown option "prot" for edgeweave cloud; the options are data-dir, host, port/,
    );
    refused(() => resolveCloudOptions({ file: yaml('- port\n') }), /a config file is a map of option names to values/);
    refused(() => resolveCloudOptions({ file: yaml('port: [1\n') }), /not valid YAML/);
    refused(() => resolveCloudOptions({ file: join(dir, 'missing.yaml') }), /^--config .*missing\.yaml: ENOENT/);
    refused(() => resolveCloudOptions({ file: yaml(`# ${'x'.repeat(300 * 1024)}\n`) }), /larger than 256 KiB/);
  });
  it('refuses a secret in a config file other users can read, and takes it from a private one', () => {
    const open = yaml('broker: mqtt://emqx:1883\nbroker-password: hunter2\n');
    chmodSync(open, 0o644);
    refused(
      () => resolveCloudOptions({ file: open }),
      /:2:1: broker-password is a secret, and this file can be read by other users of the machine; chmod 600 .* or pass it in EW_BROKER_PASSWORD/,
      (e) => assert.ok(!e.message.includes('hunter2')),
    );
    chmodSync(open, 0o600);
    assert.equal(resolveCloudOptions({ file: open }).brokerPassword, 'hunter2');
    chmodSync(open, 0o644);
    assert.equal(
      resolveCloudOptions({ file: yaml('port: 1\ndb: postgres://edgeweave@db:5432/ew\n') }).httpPort,
      1,
      'a file without secrets may be readable',
    );
    refused(() => resolveCloudOptions({ file: yaml('db: postgres://edgeweave:pw@db:5432/ew\n') }), /db is a secret/);
  });
  it('names the choices of an enum and never shows a secret', () => {
    refused(
      () => resolveEdgeOptions({ flags: { dataDir: 'd', outboxOverflow: 'sometimes' } }),
      /--outbox-overflow "sometimes": .*"drop-oldest".*"reject-new"/,
    );
    refused(
      () => resolveEdgeOptions({ flags: { dataDir: 'd', deviceBrokerMqttVersion: 3 } }),
      /--device-broker-mqtt-version 3: MQTT version 4 or 5/,
    );
    refused(
      () =>
        resolveCloudOptions({ env: { EW_BROKER_PASSWORD: 'hunter2', EW_CLOUD_DB: 'postgres://u:pw@h/db' }, flags: { brokerPassword: '' } }),
      /^--broker-password \(value not shown\): must not be empty/,
      (e) => assert.ok(!e.message.includes('hunter2')),
    );
    refused(
      () => resolveEdgeOptions({ flags: { dataDir: 'd', modelCacheBytes: '5Q' } }),
      /--model-cache-max "5Q": a positive whole number/,
    );
    refused(() => resolveEdgeOptions({}), /^--data-dir is required/);
  });
  it('startCloud and startEdge parse their options themselves: nothing is created for a refused start', async () => {
    const cloudDir = join(dir, 'never-cloud');
    await assert.rejects(
      startCloud({ dataDir: cloudDir, httpPort: -1, log: silentLogger() }),
      (e: unknown) => isEwError(e, 'CONFIG_INVALID') && /^--port -1:/.test(e.message),
    );
    await assert.rejects(
      startCloud({ dataDir: cloudDir, rateLimits: 'key=lots', log: silentLogger() }),
      (e: unknown) => isEwError(e, 'CONFIG_INVALID') && /--rate-limit/.test(e.message),
    );
    await assert.rejects(
      startCloud({ dataDir: cloudDir, mqttLimits: { maxPacketBytez: 1 }, log: silentLogger() }),
      (e: unknown) => isEwError(e, 'CONFIG_INVALID') && /--mqtt-limits: "maxPacketBytez=1"/.test(e.message),
    );
    assert.ok(!existsSync(cloudDir), 'no data dir for a refused start');
    const edgeDir = join(dir, 'never-edge');
    await assert.rejects(
      startEdge({ dataDir: edgeDir, journalMax: 0.5, log: silentLogger() }),
      (e: unknown) => isEwError(e, 'CONFIG_INVALID') && /^--journal-max 0\.5: a positive whole number/.test(e.message),
    );
    await assert.rejects(
      startEdge({ dataDir: edgeDir, deviceLimits: 'maxPacketBytes=-1', log: silentLogger() }),
      (e: unknown) => isEwError(e, 'CONFIG_INVALID') && /--device-mqtt-limits/.test(e.message),
    );
    assert.ok(!existsSync(edgeDir), 'no data dir for a refused start');
  });
});

describe('edgeweave cloud reads --config and EW_CLOUD_* (the real command)', () => {
  it('starts with options from all three sources, the flag over the variable over the file', async () => {
    const fileDir = join(dir, 'from-file');
    const envDir = join(dir, 'from-env');
    const flagDir = join(dir, 'from-flag');
    const f = yaml(`data-dir: ${fileDir}\nhost: 127.0.0.1\nport: 1\nmqtt-host: 127.0.0.1\nmqtt-port: 0\nrate-limit: "off"\n`);
    const p = spawnCli(['cloud', '--config', f, '--data-dir', flagDir, '--no-console'], { EW_CLOUD_DATA_DIR: envDir, EW_CLOUD_PORT: '0' });
    try {
      const ready = await p.ready;
      assert.match(ready.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'the host from the file');
      assert.notEqual(new URL(ready.url).port, '1', 'the port from the variable, not the file');
      assert.ok(existsSync(join(flagDir, 'cloud.db')), 'the data dir from the flag');
      assert.ok(!existsSync(envDir) && !existsSync(fileDir), "not the variable's nor the file's");
    } finally {
      p.child.kill('SIGTERM');
      await p.exited;
    }
  });
  it('exits 2 naming the option for a bad value in the environment or the file', async () => {
    const env = spawnCli(['cloud', '--data-dir', join(dir, 'x')], { EW_CLOUD_MISSED_HEARTBEATS: '0' });
    assert.equal(await env.exited, 2);
    assert.match(env.stderr(), /error CONFIG_INVALID: --missed-heartbeats 0 \(from EW_CLOUD_MISSED_HEARTBEATS\): must be at least 1/);
    const file = spawnCli(['edge', '--config', yaml('data-dir: d\napi-port: http\n')]);
    assert.equal(await file.exited, 2);
    assert.match(file.stderr(), /error CONFIG_INVALID: --api-port "http" \(from .*:2:11\): a port number/);
  });
});
