import { it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { RoutedInference } from './rpc-infer.ts';
import { ModelHost } from '../inference/host.ts';
import { RuntimeRegistry } from '../inference/runtime.ts';
import { OnnxRuntime } from '../inference/onnx.ts';
import { parseManifest } from '../contracts/manifest.ts';
import { decodeFrame, encodeFrame, packTensors, SiteToCloud, unpackTensors, WIRE_VERSION } from '../contracts/infer-wire.ts';
import { systemClock } from '../lib/clock.ts';
import { silentLogger } from '../lib/logger.ts';

const MODEL = fileURLToPath(new URL('../../models/vibration-ae.onnx', import.meta.url));

/** The site's handler on a real ModelHost and ONNX model; `publish` captures what would go on the link. */
async function setup(delayMs: number) {
  const host = new ModelHost({
    runtimes: new RuntimeRegistry().register(new OnnxRuntime()),
    clock: systemClock,
    log: silentLogger(),
    registry: new Registry(),
    fetchModel: async () => MODEL,
  });
  await host.start({
    name: 'a',
    version: '1.0.0',
    deploymentId: 'd',
    manifest: parseManifest({
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'a', version: '1.0.0' },
      spec: {
        models: [
          {
            name: 'm',
            format: 'onnx',
            sha256: '0'.repeat(64),
            batching: { maxBatchSize: 4096, maxQueueDelayMs: delayMs, maxQueueSize: 100_000 },
          },
        ],
        endpoints: [{ name: 'score', model: 'm' }],
      },
    }),
  });
  const sent: { topic: string; payload: Buffer }[] = [];
  const routed = new RoutedInference({
    siteId: 's1',
    models: host,
    clock: systemClock,
    log: silentLogger(),
    maxInFlight: 50,
    publish: async (topic, payload) => {
      sent.push({ topic, payload });
    },
  });
  const p = packTensors([{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 3, 120] }]);
  const req = (id: string) =>
    encodeFrame({ v: WIRE_VERSION, type: 'infer', id, endpoint: 'score', timeoutMs: 60_000, inputs: p.heads }, p.body);
  return { host, routed, sent, req };
}

it('answers a routed request with its outputs as bytes, and a bad one with an error frame', async () => {
  const { host, routed, sent, req } = await setup(0);
  routed.onFrame(req('ok-1'));
  routed.onFrame(
    encodeFrame(
      {
        v: WIRE_VERSION,
        type: 'infer',
        id: 'bad-1',
        endpoint: 'score',
        timeoutMs: 1000,
        inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 4], bytes: 16 }],
      },
      Buffer.alloc(16),
    ),
  );
  routed.onFrame(Buffer.from('EWF1\0\0\0\x02{}')); // no id: nothing to answer, nothing breaks
  while (sent.length < 2) await new Promise((r) => setImmediate(r));
  const byId = Object.fromEntries(
    sent.map((s) => {
      const f = decodeFrame(SiteToCloud, s.payload, 't');
      return [f.head.id, f];
    }),
  );
  assert.equal(byId['ok-1']!.head.type, 'result');
  const out = unpackTensors((byId['ok-1']!.head as any).outputs, byId['ok-1']!.body, 't');
  assert.equal(out[0]!.name, 'score');
  assert.equal(byId['bad-1']!.head.type, 'error');
  assert.equal((byId['bad-1']!.head as any).code, 'INFER_INPUT_INVALID');
  assert.equal(sent[0]!.topic.startsWith('ew/s1/rpc/res/'), true);
  await host.stop({ name: 'a' } as never);
});

it('refuses an answer larger than the cloud link takes, with PAYLOAD_TOO_LARGE instead of a cut connection', async () => {
  const { host, routed, sent } = await setup(0);
  const rows = 4000; // 4,000 scores: a 16 KB FP32 output
  const p = packTensors([
    { name: 'features', datatype: 'FP32', shape: [rows, 3], data: Array.from({ length: rows * 3 }, (_, i) => (i % 3 === 2 ? 120 : 1)) },
  ]);
  routed.onFrame(
    encodeFrame(
      { v: WIRE_VERSION, type: 'infer', id: 'big', endpoint: 'score', timeoutMs: 60_000, inputs: p.heads, maxAnswerBytes: 8 * 1024 },
      p.body,
    ),
  );
  routed.onFrame(
    encodeFrame(
      { v: WIRE_VERSION, type: 'infer', id: 'fits', endpoint: 'score', timeoutMs: 60_000, inputs: p.heads, maxAnswerBytes: 1024 * 1024 },
      p.body,
    ),
  );
  while (sent.length < 2) await new Promise((r) => setImmediate(r));
  const byId = Object.fromEntries(
    sent.map((x) => {
      const f = decodeFrame(SiteToCloud, x.payload, 't');
      return [f.head.id, f];
    }),
  );
  assert.equal((byId.big!.head as any).code, 'PAYLOAD_TOO_LARGE');
  assert.match((byId.big!.head as any).message, /the answer is \d+ bytes; the cloud's link takes at most 8192/);
  assert.equal(byId.fits!.head.type, 'result');
  assert.ok(sent.every((x) => x.payload.length <= 1024 * 1024));
  await host.stop({ name: 'a' } as never);
});

it('runs at most maxInFlight routed requests: the rest are refused at once, memory stays flat, cancelled ones are never answered', async () => {
  // A batcher that waits 10 s for a full batch: requests stay in flight until cancelled.
  const { host, routed, sent, req } = await setup(10_000);
  for (let i = 0; i < 50; i++) routed.onFrame(req(`held-${i}`));
  assert.equal(routed.inFlight, 50);
  globalThis.gc?.();
  const heap0 = process.memoryUsage().heapUsed;
  for (let i = 0; i < 20_000; i++) routed.onFrame(req(`flood-${i}`));
  assert.equal(routed.inFlight, 50);
  while (sent.length < 20_000) await new Promise((r) => setImmediate(r));
  assert.ok(
    sent.every((s) => {
      const f = decodeFrame(SiteToCloud, s.payload, 't');
      return f.head.type === 'error' && (f.head as any).code === 'QUEUE_FULL';
    }),
  );
  sent.length = 0;
  globalThis.gc?.();
  assert.ok(process.memoryUsage().heapUsed - heap0 < 32 * 1024 * 1024, 'refused requests leave nothing behind');
  for (let i = 0; i < 50; i++) routed.onFrame(encodeFrame({ v: WIRE_VERSION, type: 'cancel', id: `held-${i}` }));
  assert.equal(routed.stats.cancelled, 50);
  routed.close();
  await host.stop({ name: 'a' } as never);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(sent.length, 0, 'no answer for a cancelled request');
});
