import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, mkdirSync, writeFileSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { openEdgeDb, type EdgeDb } from '../src/edge/db.ts';
import { DeadLetters, StreamRouter } from '../src/edge/record-router.ts';
import { EgressAudit, memorySinks } from '../src/edge/sinks.ts';
import { RuleHost } from '../src/edge/rules.ts';
import { Outbox } from '../src/edge/outbox.ts';
import { SourceHost } from '../src/edge/sources/host.ts';
import { WriteAudit, WriteHost, WriteSink } from '../src/edge/writes.ts';
import { systemClock } from '../src/lib/clock.ts';
import { createLogger, silentLogger } from '../src/lib/logger.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import { checkApp } from '../src/stream/app.ts';
import type { DesiredApp } from '../src/contracts/messages.ts';
import { OpcuaSource } from '../src/edge/sources/opcua.ts';
import { OpcuaSourceSpec } from '../src/contracts/industrial.ts';
import { ModbusMachineSim, OPCUA_NODES, OpcuaMachineSim, freePort } from '../src/sim/industrial.ts';
import { tempDir, waitFor } from './support/harness.ts';

/**
 * Industrial sources and write-back against the real protocol servers: one node-opcua server
 * (started once for the file: it takes seconds) and a modbus-serial TCP server, both with the
 * machine model of src/sim/industrial.ts. The site side is the real RuleHost, StreamRouter,
 * dead letters, SourceHost and write sinks over a real SQLite; only the cloud is left out.
 */
describe('industrial sources and guarded write-back (real OPC UA and Modbus TCP servers)', () => {
  const dir = tempDir('plc');
  let db: EdgeDb;
  let opc: OpcuaMachineSim;
  let mb: ModbusMachineSim;
  let rules: RuleHost;
  let sources: SourceHost;
  let audit: WriteAudit;
  let dead: DeadLetters;
  let writes: WriteHost;
  const log = process.env.PLC_DEBUG ? createLogger({ name: 'plc-test' }) : silentLogger();
  let version = 0;
  const registry = new Registry();
  const metric = async (name: string, labels: Record<string, string>) =>
    (await registry.getSingleMetric(name)!.get()).values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ??
    0;

  before(async () => {
    db = openEdgeDb(dir);
    dead = new DeadLetters(db, systemClock);
    const router = new StreamRouter(dead);
    const outbox = new Outbox(db, systemClock, { maxMessages: 1000, overflow: 'drop-oldest' });
    const egress = new EgressAudit(db, systemClock, new Registry());
    audit = new WriteAudit(db, systemClock, new Registry());
    mkdirSync(join(dir, 'secrets'), { recursive: true });
    writeFileSync(join(dir, 'secrets', 'plc-password'), 'op3rator\n');
    writes = new WriteHost(audit, systemClock, log, join(dir, 'pki', 'opcua'), (n) => (n === 'plc-password' ? 'op3rator' : undefined));
    rules = new RuleHost({
      router,
      dead,
      clock: systemClock,
      log,
      sinkContext: (app, rule, allowedFields) => ({
        siteId: 's1',
        app,
        rule,
        outbox,
        audit: egress,
        log,
        clock: systemClock,
        allowedFields,
        siteLog: log,
        publishLocal: () => {},
        writes,
      }),
    });
    sources = new SourceHost({ router, dataDir: dir, clock: systemClock, log, registry });
    opc = new OpcuaMachineSim({ pkiDir: join(dir, 'sim-pki'), tickMs: 0, users: { operator: 'op3rator' } });
    mb = new ModbusMachineSim({ tickMs: 0, unit: 1 });
    await Promise.all([opc.start(), mb.start()]);
  });
  after(async () => {
    await sources?.close();
    rules?.close();
    audit?.close();
    await opc?.stop();
    await mb?.stop();
    db?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs an app the way the supervisor does (rules first, then sources) after the push-time check. */
  async function run(name: string, spec: Record<string, unknown>): Promise<DesiredApp> {
    const v = `1.0.${version++}`;
    const manifest = parseManifest({ apiVersion: 'edgeweave/v1', kind: 'App', metadata: { name, version: v }, spec });
    checkApp(manifest);
    const app: DesiredApp = { name, version: v, deploymentId: `d-${v}`, manifest };
    await rules.start(app);
    await sources.start(app);
    return app;
  }
  async function stop(app: DesiredApp): Promise<void> {
    await sources.stop(app);
    await rules.stop(app);
  }
  const statusOf = (app: string) => sources.statuses().find((s) => s.app === app)!;
  const mem = (name: string) => memorySinks.get(name) ?? [];

  it("an OPC UA subscription delivers typed records stamped with the server's source timestamp", async () => {
    const app = await run('opc-sub', {
      streams: [
        {
          name: 'machine',
          timestamp: 'ts',
          schema: { speed: 'float', vibration: 'float', running: 'bool', ts: 'timestamp' },
          source: {
            opcua: {
              endpoint: opc.endpoint,
              samplingIntervalMs: 50,
              publishingIntervalMs: 100,
              fields: { speed: OPCUA_NODES.spindleSpeed, vibration: OPCUA_NODES.vibration, running: OPCUA_NODES.running },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT speed, vibration, running, ts FROM machine', sinks: [{ memory: 'opc_sub' }] }],
    });
    await waitFor('connected', () => statusOf('opc-sub').state === 'connected');
    // A PLC clock a little ahead of ours (later than the server's first values, which carry its
    // start-up time: earlier stamps would be late for the rule's event time).
    const stamp = new Date(Date.now() + 2345);
    // Set on the server until the subscription has reported it: the first set may race the
    // monitored items' creation, and a server reports a change of value, not of timestamp alone.
    let n = 0;
    const rec = await waitFor(
      'the stamped record',
      () => {
        const r = mem('opc_sub').find((x) => x.ts === stamp.getTime());
        if (!r) opc.set('vibration', 7.25 + ++n / 1000, stamp);
        return r;
      },
      20_000,
      200,
    );
    assert.ok((rec.vibration as number) > 7.25 && (rec.vibration as number) < 7.5);
    assert.equal(typeof rec.speed, 'number');
    assert.equal(rec.running, true);
    const st = statusOf('opc-sub');
    assert.equal(st.protocol, 'opcua');
    assert.ok(st.values >= 1 && st.records >= 1 && st.lastValueAt !== null);
    await stop(app);
  });

  it('polling reads every node each interval, with source timestamps', async () => {
    const stamp = new Date(Date.UTC(2026, 0, 3, 0, 0, 0, 0));
    opc.set('temperature', 55.5, stamp);
    const app = await run('opc-poll', {
      streams: [
        {
          name: 'm',
          timestamp: 'ts',
          schema: { temperature: 'float', ts: 'timestamp' },
          source: { opcua: { endpoint: opc.endpoint, mode: 'poll', intervalMs: 100, fields: { temperature: OPCUA_NODES.temperature } } },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT temperature, ts FROM m', sinks: [{ memory: 'opc_poll' }] }],
    });
    await waitFor('three polls', () => mem('opc_poll').length >= 3);
    for (const r of mem('opc_poll').slice(0, 3)) assert.deepEqual(r, { temperature: 55.5, ts: stamp.getTime() });
    await stop(app);
  });

  it('a node id that does not exist is reported; the other fields keep flowing; a wrong type goes to the dead letters', async () => {
    const app = await run('opc-bad', {
      streams: [
        {
          name: 'm',
          schema: { speed: 'string', nope: 'float' },
          source: {
            opcua: {
              endpoint: opc.endpoint,
              mode: 'poll',
              intervalMs: 100,
              user: { username: 'operator', passwordSecret: 'plc-password' },
              fields: { speed: OPCUA_NODES.spindleSpeed, nope: 'ns=1;s=Machine1.DoesNotExist' },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT * FROM m', sinks: [{ memory: 'opc_bad' }] }],
    });
    const err = await waitFor('the node error', () =>
      statusOf('opc-bad').lastError?.code === 'SOURCE_ADDRESS_INVALID' ? statusOf('opc-bad').lastError : undefined,
    ).catch((e) => {
      console.error(JSON.stringify(statusOf('opc-bad')));
      throw e;
    });
    assert.match(err.message, /field nope: node ns=1;s=Machine1\.DoesNotExist does not exist/);
    assert.ok(
      (await metric('ew_edge_source_errors_total', { protocol: 'opcua', code: 'SOURCE_ADDRESS_INVALID' })) >= 1,
      'counted in metrics',
    );
    // speed is a Double, the schema says string: every record is refused into the dead letters.
    const dl = await waitFor('a dead letter', () => dead.list({ app: 'opc-bad', limit: 5 })[0]);
    assert.match(dl.reason, /field "speed" should be string/);
    assert.equal(mem('opc_bad').length, 0);
    await stop(app);
  });

  it('an unreachable endpoint and refused credentials are clear errors in the status; nothing else stops', async () => {
    const closed = await freePort();
    const a = await run('opc-down', {
      streams: [{ name: 'm', source: { opcua: { endpoint: `opc.tcp://127.0.0.1:${closed}`, fields: { x: OPCUA_NODES.vibration } } } }],
      rules: [{ name: 'all', sql: 'SELECT * FROM m', sinks: [{ memory: 'opc_down' }] }],
    });
    const b = await run('opc-badpw', {
      streams: [
        {
          name: 'm',
          source: {
            opcua: {
              endpoint: opc.endpoint,
              user: { username: 'operator', passwordSecret: 'missing-secret' },
              fields: { x: OPCUA_NODES.vibration },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT * FROM m', sinks: [{ memory: 'opc_badpw' }] }],
    });
    const down = await waitFor('unreachable', () => statusOf('opc-down').lastError);
    assert.equal(down.code, 'SOURCE_UNREACHABLE');
    assert.match(down.message, new RegExp(`127\\.0\\.0\\.1:${closed}`));
    assert.notEqual(statusOf('opc-down').state, 'connected');
    const pw = await waitFor('secret missing', () => statusOf('opc-badpw').lastError);
    assert.equal(pw.code, 'SOURCE_SECURITY');
    assert.match(pw.message, /site secret "missing-secret"/);
    await stop(a);
    await stop(b);
  });

  it('a server certificate not in the trust list is refused (SignAndEncrypt) until the operator trusts it', async () => {
    const fields = { vibration: OPCUA_NODES.vibration };
    const app = await run('opc-secure', {
      streams: [
        {
          name: 'm',
          source: {
            opcua: {
              endpoint: opc.endpoint,
              securityMode: 'SignAndEncrypt',
              securityPolicy: 'Basic256Sha256',
              mode: 'poll',
              intervalMs: 100,
              fields,
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT * FROM m', sinks: [{ memory: 'opc_secure' }] }],
    });
    const err = await waitFor('the refusal', () => statusOf('opc-secure').lastError, 30_000);
    assert.equal(err.code, 'SOURCE_SECURITY', err.message);
    assert.match(err.message, /not trusted.*move it from .*pki\/opcua\/rejected to .*pki\/opcua\/trusted\/certs/);
    assert.equal(mem('opc_secure').length, 0, 'nothing read from an untrusted server');
    // The operator trusts it: the rejected certificate moves to trusted/certs; the next retry connects.
    const pki = join(dir, 'pki', 'opcua');
    const rejected = await waitFor('the rejected certificate', () =>
      readdirSync(join(pki, 'rejected')).find((f) => f.endsWith('.pem') || f.endsWith('.der')),
    );
    renameSync(join(pki, 'rejected', rejected), join(pki, 'trusted', 'certs', rejected));
    await waitFor('records over SignAndEncrypt', () => mem('opc_secure').length > 0, 60_000);
    await stop(app);
  });

  /** A SignAndEncrypt poll of the vibration node into `got`, its PKI in `pkiDir`. */
  const secureSource = (app: string, pkiDir: string, got: Record<string, unknown>[], trustOnFirstUse = false) => {
    const src = new OpcuaSource(
      OpcuaSourceSpec.parse({
        endpoint: opc.endpoint,
        securityMode: 'SignAndEncrypt',
        trustOnFirstUse,
        mode: 'poll',
        intervalMs: 100,
        fields: { vibration: OPCUA_NODES.vibration },
      }),
      { app, stream: 'm', emit: (r) => got.push(r), onError: () => {}, secret: () => undefined, pkiDir, clock: systemClock, log },
    );
    src.start();
    return src;
  };

  it('trustOnFirstUse: true accepts an unknown server certificate at once (and trusts it from then on)', async () => {
    const pkiDir = join(dir, 'pki-tofu');
    const got: Record<string, unknown>[] = [];
    const src = secureSource('tofu', pkiDir, got, true);
    try {
      await waitFor('records over SignAndEncrypt', () => got.length > 0, 60_000);
      assert.equal(src.status.lastError, undefined, 'never refused');
      assert.ok(readdirSync(join(pkiDir, 'trusted', 'certs')).length >= 1, 'the server certificate is in the trust list now');
    } finally {
      await src.close();
    }
  });

  it("a certificate the operator trusts is seen on the next retry even when node-opcua's folder watchers miss the move", async () => {
    // node-opcua's trust list is in memory, fed by file watchers that start without waiting to be
    // ready; with the watchers off (their worst case) it never sees the operator's move by itself.
    const pkiDir = join(dir, 'pki-nowatch');
    const before = process.env.OPCUA_PKI_DISABLE_FILE_WATCHERS;
    process.env.OPCUA_PKI_DISABLE_FILE_WATCHERS = 'true';
    const got: Record<string, unknown>[] = [];
    let src: OpcuaSource | undefined;
    try {
      src = secureSource('nowatch', pkiDir, got);
      const err = await waitFor('the refusal', () => src!.status.lastError, 30_000);
      assert.equal(err.code, 'SOURCE_SECURITY');
    } finally {
      // (Read when the manager for this folder was made: the other tests keep their watchers.)
      if (before === undefined) delete process.env.OPCUA_PKI_DISABLE_FILE_WATCHERS;
      else process.env.OPCUA_PKI_DISABLE_FILE_WATCHERS = before;
    }
    try {
      const rejected = await waitFor('the rejected certificate', () =>
        readdirSync(join(pkiDir, 'rejected')).find((f) => f.endsWith('.pem') || f.endsWith('.der')),
      );
      renameSync(join(pkiDir, 'rejected', rejected), join(pkiDir, 'trusted', 'certs', rejected));
      await waitFor('records over SignAndEncrypt', () => got.length > 0, 60_000);
    } finally {
      await src.close();
    }
  });

  it('a server restart mid-stream reconnects and the subscription delivers again', async () => {
    const app = await run('opc-restart', {
      streams: [
        {
          name: 'm',
          timestamp: 'ts',
          schema: { vibration: 'float', ts: 'timestamp' },
          source: {
            opcua: {
              endpoint: opc.endpoint,
              samplingIntervalMs: 50,
              publishingIntervalMs: 100,
              fields: { vibration: OPCUA_NODES.vibration },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT vibration, ts FROM m', sinks: [{ memory: 'opc_restart' }] }],
    });
    await waitFor('connected', () => statusOf('opc-restart').state === 'connected');
    const before = new Date(Date.UTC(2026, 0, 4));
    let m = 0;
    await waitFor(
      'a value before the restart',
      () => mem('opc_restart').some((r) => r.ts === before.getTime()) || (opc.set('vibration', 3.5 + ++m / 1000, before), false),
      20_000,
      200,
    );
    await opc.restart();
    await waitFor(
      'reconnected',
      () => statusOf('opc-restart').reconnects >= 1 && statusOf('opc-restart').state === 'connected',
      60_000,
      100,
    );
    // The restarted server stamps its first values with its own clock (now): what follows must be
    // later in event time, or the rule drops it as late.
    const after = new Date(Date.now() + 2000);
    // A new value each try: a server only reports a change of value, not a new timestamp alone.
    let n = 0;
    const rec = await waitFor(
      'a value after the restart',
      () => mem('opc_restart').find((r) => r.ts === after.getTime()) ?? (opc.set('vibration', 4.5 + ++n / 1000, after), undefined),
      30_000,
      200,
    ).catch((e) => {
      console.error(JSON.stringify(rules.statuses().find((r) => r.app === 'opc-restart')), JSON.stringify(statusOf('opc-restart')));
      throw e;
    });
    assert.ok((rec.vibration as number) > 4.5 && (rec.vibration as number) < 5);
    await stop(app);
  });

  it('Modbus polling decodes every table and type, stamped with the poll time', async () => {
    mb.put('holding', 100, -12_345.5, { type: 'float64', wordOrder: 'little' });
    mb.put('holding', 104, -7, { type: 'int32', byteOrder: 'little', wordOrder: 'little' });
    mb.put('holding', 106, 4_000_000_000, { type: 'uint32' });
    mb.put('input', 20, 1234, { type: 'int16' });
    mb.coils[7] = true;
    mb.discrete[3] = false;
    const t0 = Date.now();
    const app = await run('mb-types', {
      streams: [
        {
          name: 'regs',
          timestamp: 'ts',
          schema: { f64: 'float', i32: 'int', u32: 'int', t: 'float', c7: 'bool', d3: 'bool', speed: 'float', ts: 'timestamp' },
          source: {
            modbus: {
              endpoint: mb.endpoint,
              unit: 1,
              intervalMs: 100,
              fields: {
                f64: { table: 'holding', address: 100, type: 'float64', wordOrder: 'little' },
                i32: { table: 'holding', address: 104, type: 'int32', byteOrder: 'little', wordOrder: 'little' },
                u32: { table: 'holding', address: 106, type: 'uint32' },
                t: { table: 'input', address: 20, type: 'int16', scale: 0.1, offset: -40 },
                c7: { table: 'coil', address: 7 },
                d3: { table: 'discrete', address: 3 },
                speed: { table: 'input', address: 0, type: 'float32' },
              },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT * FROM regs', sinks: [{ memory: 'mb_types' }] }],
    });
    const r = await waitFor('a record', () => mem('mb_types')[0]);
    assert.deepEqual(
      { ...r, ts: 0, speed: 0 },
      { f64: -12_345.5, i32: -7, u32: 4_000_000_000, t: 83.4, c7: true, d3: false, ts: 0, speed: 0 },
    );
    assert.ok(Math.abs((r.speed as number) - 1200) < 1e-3, `speed ${r.speed}`);
    assert.ok((r.ts as number) >= t0 && (r.ts as number) <= Date.now(), 'event time is the poll time');
    await waitFor('more polls', () => mem('mb_types').length >= 3);
    await stop(app);
  });

  it('an absolute deadband drops changes smaller than it', async () => {
    const t = (s: number) => new Date(Date.UTC(2026, 0, 6, 0, 0, s));
    opc.set('temperature', 50, t(0));
    const app = await run('opc-deadband', {
      streams: [
        {
          name: 'm',
          timestamp: 'ts',
          schema: { temperature: 'float', ts: 'timestamp' },
          source: {
            opcua: {
              endpoint: opc.endpoint,
              samplingIntervalMs: 50,
              publishingIntervalMs: 100,
              fields: { temperature: { node: OPCUA_NODES.temperature, deadband: 1 } },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT temperature, ts FROM m', sinks: [{ memory: 'opc_deadband' }] }],
    });
    await waitFor('the first value', () => mem('opc_deadband').length >= 1);
    // Small steps (each 0.3 from the last reported value's neighbourhood), then one big step; the
    // big one's timestamp is what the test waits for, so the small ones were sampled before it.
    let n = 0;
    const big = await waitFor(
      'the big change',
      () =>
        mem('opc_deadband').find((r) => r.ts === t(59).getTime()) ??
        (n < 3 ? (opc.set('temperature', 50 + 0.3 * ++n, t(n)), undefined) : (opc.set('temperature', 60 + ++n / 100, t(59)), undefined)),
      20_000,
      200,
    );
    assert.ok((big.temperature as number) > 60);
    const seen = mem('opc_deadband').map((r) => r.temperature as number);
    assert.deepEqual(
      seen.filter((x) => x > 50 && x < 51),
      [],
      `changes under the deadband were not reported: ${seen.join(', ')}`,
    );
    await stop(app);
  });

  it('a Modbus device that restarts is polled again after a reconnect', async () => {
    const app = await run('mb-restart', {
      streams: [
        {
          name: 'regs',
          source: {
            modbus: {
              endpoint: mb.endpoint,
              intervalMs: 100,
              timeoutMs: 300,
              retries: 0,
              fields: { sp: { table: 'holding', address: 10 } },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT sp FROM regs', sinks: [{ memory: 'mb_restart' }] }],
    });
    await waitFor('a record', () => mem('mb_restart').length > 0);
    await mb.stop();
    await waitFor('the outage in the status', () => statusOf('mb-restart').lastError?.code === 'SOURCE_UNREACHABLE');
    mb.holding[10] = 777;
    await mb.start();
    await waitFor('records again', () => mem('mb_restart').some((r) => r.sp === 777), 60_000, 100);
    assert.ok(statusOf('mb-restart').reconnects >= 1);
    await stop(app);
    mb.holding[10] = 1200;
  });

  it('a register out of range and an unknown unit id are reported; the good fields keep flowing', async () => {
    const app = await run('mb-bad', {
      streams: [
        {
          name: 'regs',
          source: {
            modbus: {
              endpoint: mb.endpoint,
              unit: 1,
              intervalMs: 100,
              retries: 0,
              fields: { ok: { table: 'holding', address: 10 }, far: { table: 'holding', address: 5000 } },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT * FROM regs', sinks: [{ memory: 'mb_bad' }] }],
    });
    const e = await waitFor('range error', () => statusOf('mb-bad').lastError);
    assert.equal(e.code, 'SOURCE_ADDRESS_INVALID');
    assert.match(e.message, /illegal data address.*fields far/);
    const r = await waitFor('good field', () => mem('mb_bad')[0]);
    assert.deepEqual(r, { ok: 1200 });
    const other = await run('mb-unit', {
      streams: [
        {
          name: 'regs',
          source: {
            modbus: {
              endpoint: mb.endpoint,
              unit: 9,
              intervalMs: 100,
              timeoutMs: 200,
              retries: 0,
              fields: { ok: { table: 'holding', address: 10 } },
            },
          },
        },
      ],
      rules: [{ name: 'all', sql: 'SELECT * FROM regs', sinks: [{ memory: 'mb_unit' }] }],
    });
    const t = await waitFor('timeout', () => statusOf('mb-unit').lastError);
    assert.equal(t.code, 'SOURCE_UNREACHABLE');
    assert.match(t.message, /unit 9.*check the unit id/);
    await stop(app);
    await stop(other);
  });

  const setpointGrant = () => ({ opcua: opc.endpoint, node: OPCUA_NODES.setpoint, min: 600, max: 1500, maxPerMinute: 2 });

  it('a write that the machine refuses or cannot take is audited as failed, with its code', async () => {
    const closed = await freePort();
    const app = await run('bad-targets', {
      streams: [
        { name: 'regs', source: { modbus: { endpoint: mb.endpoint, intervalMs: 100, fields: { sp: { table: 'holding', address: 10 } } } } },
      ],
      rules: [
        {
          name: 'act',
          sql: 'SELECT sp FROM regs',
          sinks: [
            { opcua: { endpoint: opc.endpoint, node: 'ns=1;s=Machine1.NoSuchNode', value: 'sp' } },
            { modbus: { endpoint: mb.endpoint, register: 5000, value: 'sp' } },
            { modbus: { endpoint: `tcp://127.0.0.1:${closed}`, register: 1, value: 'sp' } },
          ],
        },
      ],
      policy: {
        writes: {
          allow: [
            { opcua: opc.endpoint, node: 'ns=1;s=Machine1.NoSuchNode', min: 0, max: 5000, maxPerMinute: 1 },
            { modbus: mb.endpoint, register: 5000, min: 0, max: 5000, maxPerMinute: 1 },
            { modbus: `tcp://127.0.0.1:${closed}`, register: 1, min: 0, max: 5000, maxPerMinute: 1 },
          ],
        },
      },
    });
    const failed = await waitFor('three failures', () => {
      const f = audit.list({ app: 'bad-targets', result: 'failed', limit: 10 });
      return f.length >= 3 ? f : undefined;
    });
    const byTarget = Object.fromEntries(failed.map((f) => [f.target, f.detail]));
    // The sinks' status says the same, with codes.
    const st = writes.statuses().filter((w) => w.app === 'bad-targets');
    assert.deepEqual(st.map((w) => w.lastError?.code).sort(), ['SOURCE_ADDRESS_INVALID', 'SOURCE_UNREACHABLE', 'WRITE_FAILED']);
    assert.match(
      byTarget[`${opc.endpoint}#ns=1;s=Machine1.NoSuchNode`]!,
      /^SOURCE_ADDRESS_INVALID: node ns=1;s=Machine1\.NoSuchNode does not exist/,
    );
    assert.match(byTarget[`${mb.endpoint}/unit1/holding5000`]!, /^WRITE_FAILED: .*illegal data address/);
    assert.match(byTarget[`tcp://127.0.0.1:${closed}/unit1/holding1`]!, /^SOURCE_UNREACHABLE: /);
    await stop(app);
  });

  it('a flood of results at a rate-limited target: a bounded audit, one write in flight, memory flat', async () => {
    mb.writes.length = 0;
    const app = await run('flood', {
      streams: [
        {
          name: 'regs',
          source: { modbus: { endpoint: mb.endpoint, intervalMs: 1000, fields: { sp: { table: 'holding', address: 10 } } } },
        },
      ],
      rules: [{ name: 'act', sql: 'SELECT sp FROM regs', sinks: [{ modbus: { endpoint: mb.endpoint, register: 40, value: 'sp' } }] }],
      policy: { writes: { allow: [{ modbus: mb.endpoint, register: 40, min: 0, max: 5000, maxPerMinute: 5 }] } },
    });
    const sink = new WriteSink(
      { modbus: { endpoint: mb.endpoint, unit: 1, register: 41, value: 'sp', timeoutMs: 1000, dryRun: false } },
      {
        app: 'flood',
        rule: 'direct',
        writes: new WriteHost(audit, systemClock, log, join(dir, 'pki', 'opcua'), () => undefined),
        policy: { dryRun: false, allow: [{ modbus: mb.endpoint, unit: 1, register: 41, min: 0, max: 5000, maxPerMinute: 5 }] },
      },
    );
    const heap0 = process.memoryUsage().heapUsed;
    for (let i = 0; i < 50; i++) sink.write(Array.from({ length: 1000 }, (_, j) => ({ sp: (i * 1000 + j) % 5000 })));
    const grown = process.memoryUsage().heapUsed - heap0;
    await waitFor('the granted writes', () => sink.stats.written + sink.stats.failed >= 2);
    assert.equal(sink.stats.refused, 50_000 - 5, 'all but the granted five refused by the rate');
    assert.ok(sink.stats.written + sink.stats.superseded + sink.stats.failed <= 5);
    const rows = (db.prepare('SELECT count(*) AS n FROM write_audit').get() as { n: number }).n;
    assert.ok(rows <= 11_000, `audit rows bounded: ${rows}`);
    assert.ok(grown < 64 * 1024 * 1024, `heap grew ${Math.round(grown / 1e6)} MB for 50,000 results`);
    sink.close();
    await stop(app);
  });

  it('the write audit is bounded: the newest rows are kept', () => {
    const small = new WriteAudit(db, systemClock, undefined, 100);
    // Committed one by one: the table keeps the newest `max`.
    for (let i = 0; i < 1000; i++) {
      small.record('flood', 'r', 'modbus', 't', i, 'refused', 'x');
      small.flush();
    }
    const n = (db.prepare('SELECT count(*) AS n FROM write_audit').get() as { n: number }).n;
    assert.ok(n <= 110, `rows kept: ${n}`);
    assert.equal(small.list({ app: 'flood', limit: 1 })[0]!.value, '999');
    // In one burst: `max` rows wait for the commit, the other refusals are counted in one row.
    for (let i = 0; i < 1000; i++) small.record('burst', 'r', 'modbus', 't', i, 'refused', 'x');
    const burst = small.list({ app: 'burst', limit: 1000 });
    assert.equal(burst.length, 100, 'the table keeps its newest 100');
    assert.match(burst[0]!.detail ?? '', /^900 more refusals in one burst/);
    small.close();
  });

  it('a rule lowers the setpoint over OPC UA: the server sees the write, the audit records it', async () => {
    opc.writes.length = 0;
    opc.model.setpoint = 1200;
    const app = await run('slow-down', {
      streams: [
        {
          name: 'm',
          timestamp: 'ts',
          schema: { vibration: 'float', speed: 'float', ts: 'timestamp' },
          source: {
            opcua: {
              endpoint: opc.endpoint,
              samplingIntervalMs: 50,
              publishingIntervalMs: 100,
              fields: { vibration: OPCUA_NODES.vibration, speed: OPCUA_NODES.spindleSpeed },
            },
          },
        },
      ],
      rules: [
        {
          name: 'protect',
          sql: 'SELECT vibration, speed FROM m WHERE vibration > 8',
          sinks: [{ opcua: { endpoint: opc.endpoint, node: OPCUA_NODES.setpoint, value: 'round(speed * 0.8)' } }],
        },
      ],
      policy: { writes: { allow: [setpointGrant()] } },
    });
    await waitFor('connected', () => statusOf('slow-down').state === 'connected');
    opc.model.spindleSpeed = 1200;
    const w = await waitFor(
      'the write at the server',
      () => opc.writes[0] ?? (opc.set('vibration', 9.5, new Date()), undefined),
      20_000,
      200,
    );
    assert.deepEqual({ node: w.node, value: w.value }, { node: OPCUA_NODES.setpoint, value: 960 });
    const row = await waitFor('audited', () => audit.list({ app: 'slow-down', result: 'written', limit: 5 })[0]);
    assert.deepEqual(
      { rule: row.rule, value: row.value, target: row.target },
      { rule: 'protect', value: '960', target: `${opc.endpoint}#${OPCUA_NODES.setpoint}` },
    );
    await stop(app);
  });

  it('a write outside the granted range is refused and audited; the machine is not touched', async () => {
    opc.writes.length = 0;
    const app = await run('too-low', {
      streams: [
        {
          name: 'm',
          source: {
            opcua: {
              endpoint: opc.endpoint,
              samplingIntervalMs: 50,
              publishingIntervalMs: 100,
              fields: { vibration: OPCUA_NODES.vibration },
            },
          },
        },
      ],
      rules: [
        {
          name: 'stop-it',
          sql: 'SELECT vibration FROM m WHERE vibration > 8',
          sinks: [{ opcua: { endpoint: opc.endpoint, node: OPCUA_NODES.setpoint, value: 'vibration * 10' } }],
        },
      ],
      policy: { writes: { allow: [setpointGrant()] } },
    });
    await waitFor('connected', () => statusOf('too-low').state === 'connected');
    const row = await waitFor(
      'the refusal in the audit',
      () => audit.list({ app: 'too-low', limit: 5 })[0] ?? (opc.set('vibration', 9 + Math.random(), new Date()), undefined),
      20_000,
      200,
    );
    assert.equal(row.result, 'refused');
    assert.match(row.detail ?? '', /^WRITE_DENIED: .* is below the granted minimum 600/);
    assert.deepEqual(opc.writes, []);
    await stop(app);
  });

  it('dry run audits without writing; Modbus registers and coils are written through the guard, with the rate enforced', async () => {
    mb.writes.length = 0;
    const app = await run('mb-act', {
      streams: [
        { name: 'regs', source: { modbus: { endpoint: mb.endpoint, intervalMs: 100, fields: { sp: { table: 'holding', address: 10 } } } } },
      ],
      rules: [
        {
          name: 'act',
          sql: 'SELECT sp FROM regs',
          sinks: [
            { modbus: { endpoint: mb.endpoint, unit: 1, register: 20, type: 'float32', wordOrder: 'little', value: 'sp / 2' } },
            { modbus: { endpoint: mb.endpoint, unit: 1, coil: 5, value: true } },
            { modbus: { endpoint: mb.endpoint, unit: 1, register: 30, value: 'sp', dryRun: true } },
          ],
        },
      ],
      policy: {
        writes: {
          allow: [
            { modbus: mb.endpoint, unit: 1, register: 20, min: 0, max: 2000, maxPerMinute: 1 },
            { modbus: mb.endpoint, unit: 1, coil: 5, maxPerMinute: 1 },
            { modbus: mb.endpoint, unit: 1, register: 30, min: 0, max: 2000, maxPerMinute: 100 },
          ],
        },
      },
    });
    await waitFor('both writes', () => mb.writes.some((w) => w.table === 'coil') && mb.writes.some((w) => w.address === 21));
    assert.equal(mb.coils[5], true);
    // 600 as a float32 with the low word first.
    assert.deepEqual([mb.holding[20], mb.holding[21]], [0x0000, 0x4416]);
    await waitFor('rate refusals', () => audit.list({ app: 'mb-act', result: 'refused', limit: 5 }).length >= 2);
    assert.match(
      audit.list({ app: 'mb-act', result: 'refused', limit: 1 })[0]!.detail ?? '',
      /rate: 1 writes in the last minute, the grant allows 1/,
    );
    const dry = audit.list({ app: 'mb-act', result: 'dry-run', limit: 1 })[0];
    assert.equal(dry?.value, '1200');
    assert.equal(mb.holding[30], 0, 'a dry run never reaches the device');
    assert.equal(mb.writes.filter((w) => w.table === 'holding').length, 2, 'one granted float32 write (two registers), nothing more');
    await stop(app);
  });
});
