import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { guardWrite, findGrant, checkWriteSinks } from '../src/edge/write-guard.ts';
import { checkApp } from '../src/stream/app.ts';
import { parseManifest } from '../src/contracts/manifest.ts';
import { isEwError } from '../src/contracts/errors.ts';
import type { WriteGrant } from '../src/contracts/industrial.ts';

const setpoint: WriteGrant = { opcua: 'opc.tcp://plc:4840', node: 'ns=1;s=Machine1.Setpoint', min: 500, max: 1500, maxPerMinute: 2 };
const coil: WriteGrant = { modbus: 'tcp://plc:502', unit: 1, coil: 4, maxPerMinute: 10 };

describe('write guard (pure)', () => {
  it('grants values inside the range and refuses those outside, saying why', () => {
    assert.equal(guardWrite(setpoint, 1000, [], 0).ok, true);
    const low = guardWrite(setpoint, 499, [], 0);
    assert.equal(low.ok, false);
    assert.match((low as { reason: string }).reason, /below the granted minimum 500/);
    assert.match((guardWrite(setpoint, 1501, [], 0) as { reason: string }).reason, /above the granted maximum 1500/);
  });
  it('refuses values of the wrong type', () => {
    for (const v of ['900', null, undefined, Number.NaN, Number.POSITIVE_INFINITY, { v: 1 }, true]) {
      assert.equal(guardWrite(setpoint, v, [], 0).ok, false, JSON.stringify(v));
    }
    assert.equal(guardWrite(coil, true, [], 0).ok, true);
    assert.equal(guardWrite(coil, 1, [], 0).ok, true);
    assert.equal(guardWrite(coil, 2, [], 0).ok, false);
    assert.equal(guardWrite(coil, 'on', [], 0).ok, false);
  });
  it('holds to the set of allowed values when the grant lists them', () => {
    const modes: WriteGrant = { ...setpoint, min: undefined, max: undefined, values: [0, 1, 3] };
    assert.equal(guardWrite(modes, 3, [], 0).ok, true);
    assert.equal(guardWrite(modes, 2, [], 0).ok, false);
  });
  it('limits the rate over a sliding minute', () => {
    let h: number[] = [];
    const at = (t: number) => {
      const r = guardWrite(setpoint, 1000, h, t);
      h = r.history;
      return r.ok;
    };
    assert.equal(at(0), true);
    assert.equal(at(10_000), true);
    assert.equal(at(20_000), false, 'a third write inside one minute');
    assert.equal(at(59_999), false);
    assert.equal(at(60_001), true, 'the first write left the window');
    assert.ok(h.length <= 2, 'history stays bounded by the rate');
  });
  it('finds the grant that covers a sink', () => {
    assert.equal(
      findGrant(
        {
          opcua: {
            endpoint: 'opc.tcp://plc:4840',
            node: 'ns=1;s=Machine1.Setpoint',
            value: 1,
            securityMode: 'None',
            trustOnFirstUse: false,
            dryRun: false,
          },
        },
        [coil, setpoint],
      )?.index,
      1,
    );
    assert.equal(
      findGrant({ modbus: { endpoint: 'tcp://plc:502/', unit: 1, coil: 4, value: true, timeoutMs: 1000, dryRun: false } }, [setpoint, coil])
        ?.index,
      1,
    );
    assert.equal(
      findGrant({ modbus: { endpoint: 'tcp://plc:502', unit: 2, coil: 4, value: true, timeoutMs: 1000, dryRun: false } }, [setpoint, coil]),
      undefined,
      'another unit id is another target',
    );
  });
});

describe('write policy at push', () => {
  const app = (sink: unknown, writes?: unknown) =>
    parseManifest({
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'guarded', version: '1.0.0' },
      spec: {
        streams: [
          {
            name: 'machine',
            source: {
              opcua: {
                endpoint: 'opc.tcp://plc:4840',
                fields: { vibration: 'ns=1;s=Machine1.Vibration', speed: 'ns=1;s=Machine1.SpindleSpeed' },
              },
            },
            timestamp: 'ts',
            schema: { vibration: 'float', speed: 'float', ts: 'timestamp' },
          },
        ],
        rules: [{ name: 'slow-down', sql: 'SELECT speed, vibration FROM machine WHERE vibration > 5', sinks: [sink] }],
        policy: writes === undefined ? {} : { writes },
      },
    });
  const refused = (f: () => unknown, code: string, path: RegExp) => {
    try {
      f();
    } catch (e) {
      assert.ok(isEwError(e), String(e));
      assert.equal(e.code, code, e.message);
      assert.match(e.path ?? '', path);
      return e.message;
    }
    assert.fail('not refused');
  };
  const sink = { opcua: { endpoint: 'opc.tcp://plc:4840', node: 'ns=1;s=Machine1.Setpoint', value: 'round(speed * 0.8)' } };

  it('refuses a write the policy does not grant, naming the sink', () => {
    const msg = refused(() => checkApp(app(sink)), 'WRITE_DENIED', /^spec\.rules\[0\]\.sinks\[0\]\.opcua$/);
    assert.match(msg, /spec\.policy\.writes\.allow grants no such target/);
    refused(() => checkApp(app(sink, { allow: [{ ...setpoint, node: 'ns=1;s=Machine1.Other' }] })), 'WRITE_DENIED', /sinks\[0\]\.opcua/);
  });
  it("accepts a granted write, and checks its expression against the rule's columns", () => {
    assert.doesNotThrow(() => checkApp(app(sink, { allow: [setpoint] })));
    const msg = refused(
      () => checkApp(app({ opcua: { ...sink.opcua, value: 'round(sped * 0.8)' } }, { allow: [setpoint] })),
      'SQL_INVALID',
      /sinks\[0\]\.opcua\.value$/,
    );
    assert.match(msg, /sped/);
  });
  it('refuses a constant outside the granted range at push', () => {
    refused(() => checkApp(app({ opcua: { ...sink.opcua, value: 2000 } }, { allow: [setpoint] })), 'WRITE_DENIED', /\.value$/);
  });
  it('refuses malformed industrial fields with their path', () => {
    assert.throws(
      () => app({ modbus: { endpoint: 'tcp://plc:502', register: 1, coil: 2, value: 1 } }, { allow: [] }),
      /sinks\[0\]\.modbus\.register: name exactly one of register or coil/,
    );
    assert.throws(() => app({ opcua: { ...sink.opcua, node: 'Setpoint' } }), /sinks\[0\]/);
    assert.throws(
      () =>
        parseManifest({
          apiVersion: 'edgeweave/v1',
          kind: 'App',
          metadata: { name: 'x', version: '1.0.0' },
          spec: { streams: [{ name: 's' }] },
        }),
      /give exactly one/,
    );
    // A schema field the source does not read is a typo caught at push.
    const typo = parseManifest({
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'x', version: '1.0.0' },
      spec: {
        streams: [
          {
            name: 's',
            source: { modbus: { endpoint: 'tcp://plc:502', fields: { t: { table: 'input', address: 0 } } } },
            schema: { temp: 'float' },
          },
        ],
        rules: [{ name: 'r', sql: 'SELECT * FROM s', sinks: [{ memory: 'm' }] }],
      },
    });
    refused(() => checkApp(typo), 'INVALID_MANIFEST', /^spec\.streams\[0\]\.schema\.temp$/);
    checkWriteSinks([], undefined); // nothing to check is fine
  });
});
