import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseTopic, topics } from './topics.ts';
import { matches, parseSelector, validateLabels } from './selector.ts';
import { parseManifest } from './manifest.ts';
import { decodePayload, UplinkMessage } from './messages.ts';
import { type EwError, formatPath, isEwError } from './errors.ts';

describe('topics', () => {
  it('round-trips every builder through the parser', () => {
    assert.deepEqual(parseTopic(topics.desired('s-1')), { kind: 'desired', siteId: 's-1' });
    assert.deepEqual(parseTopic(topics.reported('s-1')), { kind: 'reported', siteId: 's-1' });
    assert.deepEqual(parseTopic(topics.up('s-1', 'alerts')), { kind: 'up', siteId: 's-1', stream: 'alerts' });
    assert.deepEqual(parseTopic(topics.rpcResponse('s-1', 'r9')), { kind: 'rpc-res', siteId: 's-1', id: 'r9' });
  });
  it('rejects topics outside the contract', () => {
    for (const t of [
      'ew',
      'ew/s-1',
      'ew/S_1/desired',
      'x/s-1/desired',
      'ew/s-1/up',
      'ew/s-1/up/a/b',
      'ew/s-1/desired/x',
      'ew/s-1/up/$bad',
    ]) {
      assert.equal(parseTopic(t), undefined, t);
    }
  });
});

describe('selectors and labels', () => {
  it('parses the CLI form and matches labels and region', () => {
    const sel = parseSelector('city=hangzhou, industry=manufacturing');
    assert.deepEqual(sel, { city: 'hangzhou', industry: 'manufacturing' });
    assert.equal(matches(sel, { labels: { city: 'hangzhou', industry: 'manufacturing', x: 'y' }, region: 'r' }), true);
    assert.equal(matches(sel, { labels: { city: 'hangzhou' }, region: 'r' }), false);
    assert.equal(matches({ region: 'eu' }, { labels: {}, region: 'eu' }), true);
    assert.deepEqual(parseSelector(''), {});
  });
  it('names the bad key', () => {
    assert.throws(
      () => parseSelector('city'),
      (e: unknown) => isEwError(e, 'INVALID_SELECTOR') && /key=value/.test((e as Error).message),
    );
    assert.throws(
      () => validateLabels({ 'bad key': 'x' }, 'labels'),
      (e: unknown) => isEwError(e, 'INVALID_SELECTOR') && (e as EwError).path === 'labels.bad key',
    );
    assert.throws(
      () => validateLabels({ ok: 'spaces no' }, 'labels'),
      (e: unknown) => isEwError(e, 'INVALID_SELECTOR'),
    );
  });
});

describe('app manifest', () => {
  const good = {
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'vibration-guard', version: '1.0.0' },
    spec: { models: [{ name: 'vib-ae', format: 'onnx', path: 'm.onnx', sha256: 'a'.repeat(64) }] },
  };
  it("accepts the brief's shape and fills defaults", () => {
    const m = parseManifest(good);
    assert.deepEqual(m.spec.rules, []);
    assert.equal(m.spec.models[0]!.name, 'vib-ae');
  });
  const bad: [string, unknown, string, RegExp][] = [
    ['wrong apiVersion', { ...good, apiVersion: 'v2' }, 'apiVersion', /edgeweave\/v1/],
    ['bad version', { ...good, metadata: { name: 'x', version: '1.0' } }, 'metadata.version', /semantic version/],
    ['bad model name', { ...good, spec: { models: [{ name: 'Vib AE', format: 'onnx' }] } }, 'spec.models[0].name', /lower-case/],
    ['unknown format', { ...good, spec: { models: [{ name: 'a', format: 'pt' }] } }, 'spec.models[0].format', /onnx/],
    ['unknown top-level key', { ...good, extra: 1 }, '', /extra/],
    [
      'duplicate model',
      {
        ...good,
        spec: {
          models: [
            { name: 'a', format: 'onnx', sha256: 'b'.repeat(64) },
            { name: 'a', format: 'onnx', sha256: 'b'.repeat(64) },
          ],
        },
      },
      'spec.models[1].name',
      /twice/,
    ],
    [
      'a model without its sha256',
      { ...good, spec: { models: [{ name: 'a', format: 'onnx', path: 'a.onnx' }] } },
      'spec.models[0].sha256',
      /app push fills it in/,
    ],
  ];
  for (const [name, input, path, msg] of bad) {
    it(`refuses ${name} with the field path`, () => {
      assert.throws(
        () => parseManifest(input),
        (e: unknown) => isEwError(e, 'INVALID_MANIFEST') && (e as EwError).path === path && msg.test((e as Error).message),
      );
    });
  }
});

describe('payload decoding', () => {
  it('gives MQTT_PAYLOAD_INVALID with a path for bad JSON and bad shapes', () => {
    assert.throws(
      () => decodePayload(UplinkMessage, Buffer.from('{nope'), 't'),
      (e: unknown) => isEwError(e, 'MQTT_PAYLOAD_INVALID') && /not valid JSON/.test((e as Error).message),
    );
    assert.throws(
      () => decodePayload(UplinkMessage, '{"v":1,"id":"x","ts":1,"type":"uplink","body":{"stream":1,"at":1}}', 't'),
      (e: unknown) => isEwError(e, 'MQTT_PAYLOAD_INVALID') && (e as EwError).path === 'body.stream',
    );
  });
  it('formats paths', () => {
    assert.equal(formatPath(['spec', 'models', 0, 'name']), 'spec.models[0].name');
    assert.equal(formatPath([]), '');
  });
});
