import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEdgeDb, type EdgeDb } from './db.ts';
import { DeadLetters } from './record-router.ts';
import { WriteAudit } from './writes.ts';
import { DeviceRegistry } from './device-auth.ts';
import { createRpc } from './rpc.ts';
import { readRpcAnswer } from '../cloud/fleet/rpc-answer.ts';
import {
  CONTRACT,
  checkContractVersion,
  decodePayload,
  envelope,
  RpcRequest,
  RpcResponse,
  UplinkMessage,
  type Envelopes,
} from '../contracts/messages.ts';
import { RPC, type RpcMethod } from '../contracts/rpc.ts';
import { isEwError, EwError } from '../contracts/errors.ts';
import { LogRing, createLogger, silentLogger } from '../lib/logger.ts';
import { ManualClock } from '../lib/clock.ts';

/**
 * The request/response contract both ways, with the real builders: what the cloud sends
 * (envelope('rpc-request')) the agent's table parses; what the agent answers the cloud's one
 * reader (readRpcAnswer) accepts, each through JSON as on the wire.
 */
const wire = <T>(x: T): Buffer => Buffer.from(JSON.stringify(x));
const clock = new ManualClock(1_700_000_000_000);

describe('the RPC contract, cloud ↔ agent', () => {
  let dir: string;
  let db: EdgeDb;
  let agent: (method: string, params: unknown) => Promise<unknown>;
  const ring = new LogRing(100);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ew-rpc-'));
    db = openEdgeDb(dir);
    const dead = new DeadLetters(db, clock);
    dead.add('app1', 's', 'not JSON', '{"secret": 1', 'quoted content');
    dead.add('app1', 's', 'x'.repeat(5000), 'long reason');
    const writeAudit = new WriteAudit(db, clock, undefined);
    writeAudit.record('app1', 'r', 'modbus', 'hr:1', 42, 'written');
    writeAudit.record('app1', 'r', 'modbus', 'hr:1', 'v'.repeat(20_000), 'refused', 'd'.repeat(9000));
    const registry = new DeviceRegistry(db, clock, () => undefined);
    const log = createLogger({ name: 'edge', destination: ring, ring: undefined });
    log.info('hello');
    agent = createRpc({ ring, dead, writeAudit, devices: { registry, disconnect: () => {}, log: silentLogger() }, log: silentLogger() });
  });
  after(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** One request as the cloud builds it, answered as the agent's link does, read as Fleet.rpc does. */
  async function roundTrip<M extends RpcMethod>(method: M, params: Record<string, unknown>) {
    const req = decodePayload(RpcRequest, wire(envelope('rpc-request', { method, params }, clock)), 'ew/s/rpc/req/1');
    let res: Envelopes['rpc-response'];
    try {
      res = envelope('rpc-response', { ok: true, result: await agent(req.body.method, req.body.params) }, clock);
    } catch (e) {
      res = envelope(
        'rpc-response',
        {
          ok: false,
          error: {
            code: isEwError(e) ? e.code : 'INTERNAL',
            message: (e as Error).message,
            ...(isEwError(e) && e.path ? { path: e.path } : {}),
          },
        },
        clock,
      );
    }
    return readRpcAnswer('s', method, decodePayload(RpcResponse, wire(res), 'ew/s/rpc/res/1'));
  }

  it('every method round-trips: the cloud parses what the agent answers', async () => {
    const logs = await roundTrip('logs', { since: 0, limit: 10 });
    assert.ok(logs.lines.some((l) => l.line.includes('"hello"')));
    const dl = await roundTrip('dead-letters', { limit: 10 });
    assert.equal(dl.total, 2);
    assert.ok(
      dl.items.every((i) => !('payload' in i) && !('detail' in i)),
      'raw content stays on the site',
    );
    assert.ok(dl.items[0]!.reason.length <= 2000 && dl.items[0]!.reason.includes('…[cut'), 'a long reason is cut, not refused');
    const w = await roundTrip('writes', { app: 'app1' });
    assert.equal(w.items.length, 2);
    assert.ok(w.items[0]!.value.length <= 10_000 && (w.items[0]!.detail ?? '').length <= 2000);
    const added = await roundTrip('devices.add', { id: 'cam-1', publish: ['cams/1/#'] });
    assert.equal(added.username, 'cam-1');
    assert.ok(added.secret.startsWith('ewd_'));
    const list = await roundTrip('devices.list', {});
    assert.deepEqual(
      list.items.map((d) => d.id),
      ['cam-1'],
    );
    assert.deepEqual(await roundTrip('devices.revoke', { id: 'cam-1' }), { revoked: 'cam-1' });
    // Every method of the contract was exercised.
    assert.deepEqual(Object.keys(RPC).sort(), ['dead-letters', 'devices.add', 'devices.list', 'devices.revoke', 'logs', 'writes']);
  });

  it("the site's own refusal code reaches the cloud with its field", async () => {
    await assert.rejects(roundTrip('devices.add', { id: 'dup' }), (e) => isEwError(e, 'VALIDATION_FAILED'), 'no grants');
    await roundTrip('devices.add', { id: 'dup', subscribe: ['a/#'] });
    await assert.rejects(
      roundTrip('devices.add', { id: 'dup', subscribe: ['a/#'] }),
      (e) => isEwError(e, 'DEVICE_EXISTS') && e.path === 'id',
    );
    await assert.rejects(roundTrip('devices.revoke', { id: 'nobody' }), (e) => isEwError(e, 'DEVICE_NOT_FOUND'));
  });

  it('the agent refuses params that break the schema (VALIDATION_FAILED with the field) and methods it lacks (NOT_FOUND)', async () => {
    await assert.rejects(roundTrip('logs', { limit: 5000 }), (e) => isEwError(e, 'VALIDATION_FAILED') && e.path === 'params.limit');
    await assert.rejects(agent('reboot', {}), (e) => isEwError(e, 'NOT_FOUND'));
  });

  it('a malformed answer is SITE_ANSWER_INVALID with the field, never a crash', () => {
    const answer = (result: unknown) => decodePayload(RpcResponse, wire(envelope('rpc-response', { ok: true, result }, clock)), 't');
    assert.throws(
      () => readRpcAnswer('s', 'dead-letters', answer({ total: 1, items: [{ id: 'x' }] })),
      (e) => isEwError(e, 'SITE_ANSWER_INVALID') && /items\[0\]\.id/.test(e.message),
    );
    assert.throws(
      () => readRpcAnswer('s', 'writes', answer(undefined)),
      (e) => isEwError(e, 'SITE_ANSWER_INVALID'),
    );
    assert.throws(
      () => readRpcAnswer('s', 'logs', answer('lines')),
      (e) => isEwError(e, 'SITE_ANSWER_INVALID'),
    );
  });

  it('a refusal code this cloud does not know is SITE_REFUSED carrying it; a known one is passed on', () => {
    const refused = (code: string) =>
      decodePayload(RpcResponse, wire(envelope('rpc-response', { ok: false, error: { code, message: 'no' } }, clock)), 't');
    assert.throws(
      () => readRpcAnswer('s', 'logs', refused('QUANTUM_FLUX')),
      (e) => isEwError(e, 'SITE_REFUSED') && /QUANTUM_FLUX/.test(e.message),
    );
    assert.throws(
      () => readRpcAnswer('s', 'logs', refused('NOT_FOUND')),
      (e) => isEwError(e, 'NOT_FOUND'),
    );
    // `toString` is not an error code, whatever `in` says.
    assert.throws(
      () => readRpcAnswer('s', 'logs', refused('toString')),
      (e) => isEwError(e, 'SITE_REFUSED'),
    );
  });
});

describe('the contract version', () => {
  const prev = (x: Record<string, unknown>) => {
    const { minor: _m, ...rest } = x; // a 1.0 sender had no `minor`
    return rest;
  };
  it('every envelope carries it; a 1.0 envelope (no minor) is read; a newer major is refused as such', () => {
    const up = envelope('uplink', { stream: 's', at: 1, data: { a: 1 } }, clock);
    assert.equal(up.v, CONTRACT.major);
    assert.equal(up.minor, CONTRACT.minor);
    assert.deepEqual(decodePayload(UplinkMessage, wire(prev(up)), 't').body.data, { a: 1 });
    // A later minor of the same major: read (its extra fields are ignored).
    assert.equal(decodePayload(UplinkMessage, wire({ ...up, minor: 9, extra: true }), 't').id, up.id);
    assert.throws(
      () => decodePayload(UplinkMessage, wire({ ...up, v: CONTRACT.major + 1 }), 't'),
      (e) => isEwError(e, 'CONTRACT_VERSION_UNSUPPORTED') && /upgrade this side first/.test(e.message),
    );
    assert.throws(
      () => decodePayload(UplinkMessage, wire({ ...up, v: 0 }), 't'),
      (e) => isEwError(e, 'CONTRACT_VERSION_UNSUPPORTED'),
    );
  });
  it('enrollment: absent is 1.0, same major read, newer major and garbage refused', () => {
    assert.deepEqual(checkContractVersion(undefined, 'e'), { major: 1, minor: 0 });
    assert.deepEqual(checkContractVersion('1.0', 'e'), { major: 1, minor: 0 });
    assert.deepEqual(checkContractVersion('1.7', 'e'), { major: 1, minor: 7 });
    for (const v of ['2.0', '1.x', '', 'latest'])
      assert.throws(
        () => checkContractVersion(v, 'e'),
        (e) => e instanceof EwError && e.code === 'CONTRACT_VERSION_UNSUPPORTED',
        v,
      );
  });
});

describe('desired state, as the cloud builds it, as the agent reads it', () => {
  it('the agent stores and applies an envelope("desired") and refuses a newer major without applying it', async () => {
    const { DesiredStateHandler } = await import('./desired.ts');
    const { AppSupervisor } = await import('./apps.ts');
    const { Counter, Registry } = await import('prom-client');
    const dir = mkdtempSync(join(tmpdir(), 'ew-desired-'));
    const db = openEdgeDb(dir);
    try {
      const supervisor = new AppSupervisor(silentLogger());
      const invalid = new Counter({ name: 'x_invalid', help: 'x', registers: [new Registry()] });
      let applied = 0;
      const h = new DesiredStateHandler({ db, siteId: 's1', clock, log: silentLogger(), supervisor, invalid, onApplied: () => applied++ });
      const msg = envelope('desired', { siteId: 's1', generation: 3, apps: [] }, clock);
      await h.onDesired(wire({ ...msg, v: CONTRACT.major + 1, id: 'future' }));
      assert.equal((await invalid.get()).values[0]!.value, 1, 'a newer major is counted, not applied');
      await h.onDesired(wire(msg));
      await h.settled();
      assert.equal(supervisor.generation, 3);
      assert.equal(applied, 1);
    } finally {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
