import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { startTestCloud, startTestEdge, waitFor, type TestCloud, type TestEdge } from './support/harness.ts';
import { OnnxRuntime } from '../src/inference/onnx.ts';
import { promtoolCheck } from './support/promtool.ts';

const modelFile = new URL('../models/vibration-ae.onnx', import.meta.url).pathname;
const bytes = readFileSync(modelFile);
const sha = createHash('sha256').update(bytes).digest('hex');
const T0 = Date.UTC(2026, 10, 29, 9, 0, 0);

describe('inference at a site: artifact upload → download → ONNX Runtime → OIP and infer() in SQL', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  before(async () => {
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { industry: 'manufacturing' } });
  });
  after(async () => {
    await edge?.stop();
    await cloud?.stop();
  });

  const put = (s: string, body: Buffer, range?: string) =>
    fetch(`${cloud.url}/api/v1/artifacts/${s}`, {
      method: 'PUT',
      headers: {
        authorization: `Bearer ${cloud.adminKey}`,
        'content-type': 'application/octet-stream',
        ...(range ? { 'content-range': range } : {}),
      },
      body: new Uint8Array(body),
    });
  const local = (path: string, init: RequestInit = {}) =>
    fetch(`${edge.handle.apiUrl}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${edge.apiKey}`, ...(init.body ? { 'content-type': 'application/json' } : {}) },
    });

  it('uploads a model in resumable chunks and refuses bytes that do not match their name', async () => {
    const half = Math.floor(bytes.length / 2);
    const first = await put(sha, bytes.subarray(0, half), `bytes 0-${half - 1}/${bytes.length}`);
    assert.equal(first.status, 200);
    assert.deepEqual(await first.json(), { sha256: sha, complete: false, size: 0, received: half });
    const wrongOffset = await put(sha, bytes.subarray(half + 10), `bytes ${half + 10}-${bytes.length - 1}/${bytes.length}`);
    assert.equal(wrongOffset.status, 409);
    assert.equal(((await wrongOffset.json()) as any).code, 'ARTIFACT_OFFSET_MISMATCH');
    const rest = await put(sha, bytes.subarray(half), `bytes ${half}-${bytes.length - 1}/${bytes.length}`);
    assert.equal(rest.status, 201);
    assert.equal(((await rest.json()) as any).complete, true);
    const liar = await put('0'.repeat(64), Buffer.from('not the model'));
    assert.equal(liar.status, 400);
    assert.equal(((await liar.json()) as any).code, 'ARTIFACT_DIGEST_MISMATCH');
    const noKey = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`);
    assert.equal(noKey.status, 401);
  });

  it('refuses an app whose model file is not on the cloud', async () => {
    const r = await cloud.api('POST', '/api/v1/apps', { manifest: manifest('0.9.0', '1'.repeat(64)) });
    assert.equal(r.status, 404);
    assert.equal(r.body.code, 'ARTIFACT_NOT_FOUND');
    assert.equal(r.body.path, 'manifest.spec.models[0].sha256');
  });

  it('serves the deployed model over the Open Inference Protocol', async () => {
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest: manifest('1.0.0', sha) })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'vibration-guard', version: '1.0.0', selector: { industry: 'manufacturing' } });
    await waitFor('model ready', async () => (await local('/v2/models/score/ready')).status === 200, 20_000);
    assert.equal((await fetch(`${edge.handle.apiUrl}/v2/health/ready`)).status, 200, 'readiness needs no key');
    const meta = (await (await local('/v2/models/score')).json()) as any;
    assert.deepEqual(meta, {
      name: 'score',
      versions: ['1.0.0'],
      platform: 'onnxruntime_onnx',
      inputs: [{ name: 'features', datatype: 'FP32', shape: [-1, 3] }],
      outputs: [{ name: 'score', datatype: 'FP32', shape: [-1] }],
    });
    const rows = [
      [1.0, 3.0, 120],
      [1.6, 9.0, 150],
    ];
    const res = await local('/v2/models/score/versions/1.0.0/infer', {
      method: 'POST',
      body: JSON.stringify({ id: 'req-1', inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 3], data: rows.flat() }] }),
    });
    assert.equal(res.status, 200);
    const out = (await res.json()) as any;
    assert.equal(out.id, 'req-1');
    assert.equal(out.model_version, '1.0.0');
    assert.deepEqual(
      out.outputs.map((o: any) => [o.name, o.datatype, o.shape]),
      [['score', 'FP32', [2]]],
    );
    const direct = await directScores(rows);
    assert.deepEqual(out.outputs[0].data, direct);
    assert.ok(direct[0]! < 0.5 && direct[1]! > 0.9);
    // The site's status tells the cloud the model is ready.
    await waitFor(
      'model state at the cloud',
      async () => (await cloud.api('GET', `/api/v1/sites/${edge.handle.siteId}`)).body.status?.models?.[0]?.state === 'ready',
    );
  });

  it('answers bad tensors with 400s that name the input and what was expected', async () => {
    const bad = async (body: unknown) => {
      const r = await local('/v2/models/score/infer', { method: 'POST', body: JSON.stringify(body) });
      return { status: r.status, body: (await r.json()) as any };
    };
    const wrongShape = await bad({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] });
    assert.equal(wrongShape.status, 400);
    assert.equal(wrongShape.body.code, 'INFER_INPUT_INVALID');
    assert.equal(wrongShape.body.path, 'inputs[0].shape');
    // The Open Inference Protocol's error body: {"error": "<message>"}, our code and path as extras.
    assert.deepEqual(Object.keys(wrongShape.body).sort(), ['code', 'error', 'path']);
    assert.match(wrongShape.body.error, /takes \[-1, 3\]/);
    const wrongType = await bad({ inputs: [{ name: 'features', datatype: 'INT64', shape: [1, 3], data: [1, 2, 3] }] });
    assert.equal(wrongType.body.path, 'inputs[0].datatype');
    const wrongLen = await bad({ inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 3], data: [1, 2, 3] }] });
    assert.equal(wrongLen.body.path, 'inputs[0].data');
    const wrongName = await bad({ inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }] });
    assert.match(wrongName.body.error, /no input "x"; its inputs are features/);
    const unknown = await local('/v2/models/nope/infer', {
      method: 'POST',
      body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 2, 3] }] }),
    });
    assert.equal(unknown.status, 404);
    const unknownBody = (await unknown.json()) as any;
    assert.equal(unknownBody.code, 'MODEL_NOT_FOUND');
    assert.match(unknownBody.error, /no model "nope"/);
    // Every kind of failure on a /v2 route has the spec's shape: schema, not JSON, no key, no route, not ready.
    const noInputs = await bad({ inputs: [] });
    assert.equal(noInputs.status, 400);
    assert.equal(typeof noInputs.body.error, 'string');
    assert.equal(noInputs.body.code, 'VALIDATION_FAILED');
    const notJson = await local('/v2/models/score/infer', { method: 'POST', body: '{"inputs":' });
    assert.equal(((await notJson.json()) as any).code, 'INVALID_JSON');
    const noKey = await fetch(`${edge.handle.apiUrl}/v2/models/score/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    const noKeyBody = (await noKey.json()) as any;
    assert.equal(noKey.status, 401);
    assert.deepEqual(Object.keys(noKeyBody).sort(), ['code', 'error']);
    const noRoute = (await (await local('/v2/no/such/route')).json()) as any;
    assert.equal(noRoute.code, 'NOT_FOUND');
    assert.equal(typeof noRoute.error, 'string');
    assert.equal(noRoute.message, undefined);
    // Routes outside /v2 keep the project's {code, message} shape.
    const v1 = (await (await local('/api/v1/no/such/route')).json()) as any;
    assert.deepEqual(Object.keys(v1).sort(), ['code', 'message']);
    // The model still serves after the bad requests.
    const ok = await local('/v2/models/score/infer', {
      method: 'POST',
      body: JSON.stringify({ inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1, 3, 120] }] }),
    });
    assert.equal(ok.status, 200);
  });

  it('scores inside a SQL rule with the same numbers as a direct call, batched', async () => {
    const dev = await mqtt.connectAsync(edge.handle.deviceUrl, { username: 'device', password: edge.devicePassword, reconnectPeriod: 0 });
    const readings = [
      [1.0, 3.0, 120],
      [0.97, 3.1, 121],
      [1.6, 9.0, 150],
      [1.5, 7.0, 144],
    ];
    for (const [i, [rms, kurtosis, peakHz]] of readings.entries()) {
      await dev.publishAsync(`factory/m${i}/vibration`, JSON.stringify({ machineId: `m${i}`, rms, kurtosis, peakHz, ts: T0 + i }), {
        qos: 1,
      });
    }
    const got = await waitFor('scored results at the cloud', async () => {
      const r = await cloud.api('GET', `/api/v1/results?site=${edge.handle.siteId}&stream=scores&limit=10`);
      return r.body.items.length === 4 ? r.body.items.map((x: any) => x.data) : undefined;
    });
    const direct = await directScores(readings);
    assert.deepEqual(
      got.map((g: any) => g.score),
      direct,
    );
    // Close the first 10 s window: the anomaly rule and the window scoring emit.
    await dev.publishAsync('factory/m9/vibration', JSON.stringify({ machineId: 'm9', rms: 1, kurtosis: 3, peakHz: 120, ts: T0 + 20_000 }), {
      qos: 1,
    });
    const alerts = await waitFor('anomaly alerts', async () => {
      const r = await cloud.api('GET', `/api/v1/results?site=${edge.handle.siteId}&stream=alerts`);
      return r.body.items.length ? r.body.items.map((x: any) => x.data) : undefined;
    });
    assert.deepEqual(alerts.map((a: any) => a.machineId).sort(), ['m2', 'm3'], 'only the failing machines pass HAVING score > 0.8');
    assert.deepEqual(alerts.find((a: any) => a.machineId === 'm2').score, direct[2]);
    const ws = await waitFor('window scores', async () => {
      const r = await cloud.api('GET', `/api/v1/results?site=${edge.handle.siteId}&stream=window-scores`);
      return r.body.items.length >= 4 ? r.body.items.map((x: any) => x.data) : undefined;
    });
    const m2 = ws.find((w: any) => w.machineId === 'm2');
    assert.deepEqual(m2.windowScore, (await directScores([[1.6, 9.0, 150]]))[0], 'infer() over the window aggregates of m2');
    const metrics = await (await local('/metrics')).text();
    assert.match(metrics, /ew_infer_batch_size_count\{app="vibration-guard",model="vib-ae"\} [1-9]/);
    assert.match(metrics, /ew_infer_requests_total\{app="vibration-guard",model="vib-ae",outcome="ok"\}/);
    // Per-model latency by app, and the whole output clean for Prometheus's linter.
    assert.match(metrics, /ew_infer_request_duration_seconds_count\{app="vibration-guard",model="vib-ae"\} [1-9]/);
    assert.match(metrics, /ew_edge_rule_records_in_total\{app="vibration-guard",rule="[a-z-]+"\} [1-9]/);
    const lint = promtoolCheck(metrics);
    assert.equal(lint.output, '');
    await dev.endAsync();
  });
});

describe('OCR at a city site: the built-in PP-OCRv4 pipeline behind an endpoint', () => {
  let cloud: TestCloud;
  let edge: TestEdge;
  const png = readFileSync(new URL('./fixtures/ocr-sign.png', import.meta.url));
  before(async () => {
    cloud = await startTestCloud();
    edge = await startTestEdge(cloud, { labels: { city: 'hangzhou' } });
    const manifest = {
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'sign-reader', version: '1.0.0' },
      spec: { models: [{ name: 'ocr', format: 'builtin', builtin: 'pp-ocrv4' }], endpoints: [{ name: 'plates', model: 'ocr' }] },
    };
    assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
    await cloud.api('POST', '/api/v1/deployments', { app: 'sign-reader', version: '1.0.0', selector: { city: 'hangzhou' } });
  });
  after(async () => {
    await edge?.stop();
    await cloud?.stop();
  });

  it('reads an uploaded image (raw PNG body) and over OIP (base64 BYTES)', async () => {
    const headers = { authorization: `Bearer ${edge.apiKey}` };
    await waitFor(
      'ocr ready',
      async () => (await fetch(`${edge.handle.apiUrl}/v2/models/plates/ready`, { headers })).status === 200,
      30_000,
    );
    const raw = await fetch(`${edge.handle.apiUrl}/api/v1/ocr/plates`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'image/png' },
      body: new Uint8Array(png),
    });
    assert.equal(raw.status, 200);
    const r = (await raw.json()) as any;
    assert.equal(r.text, 'SPEED LIMIT 60\nZHE A12345');
    assert.equal(r.lines[1].box.length, 4);
    const oip = await fetch(`${edge.handle.apiUrl}/v2/models/plates/infer`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: 'image', datatype: 'BYTES', shape: [1], data: [png.toString('base64')] }] }),
    });
    const o = (await oip.json()) as any;
    assert.deepEqual(o.outputs.find((x: any) => x.name === 'text').data, ['SPEED LIMIT 60', 'ZHE A12345']);
    assert.deepEqual(o.outputs.find((x: any) => x.name === 'boxes').shape, [2, 4]);
    const bad = await fetch(`${edge.handle.apiUrl}/api/v1/ocr/plates`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'image/png' },
      body: 'not an image',
    });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as any).code, 'INFER_INPUT_INVALID');
  });
});

function manifest(version: string, sha256: string) {
  return {
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'vibration-guard', version },
    spec: {
      models: [
        { name: 'vib-ae', format: 'onnx', path: 'models/vibration-ae.onnx', sha256, batching: { maxBatchSize: 64, maxQueueDelayMs: 5 } },
      ],
      streams: [
        {
          name: 'vibration',
          topic: 'factory/+/vibration',
          timestamp: 'ts',
          schema: { machineId: 'string', rms: 'float', kurtosis: 'float', peakHz: 'float', ts: 'timestamp' },
        },
      ],
      rules: [
        {
          name: 'scoring',
          sql: "SELECT machineId, infer('vib-ae', rms, kurtosis, peakHz) AS score FROM vibration",
          sinks: [{ uplink: 'scores' }],
        },
        // The brief's example: the model inside an aggregate, its alias in HAVING.
        {
          name: 'anomalies',
          sql: "SELECT machineId, avg(rms) AS rms, max(infer('vib-ae', rms, kurtosis, peakHz)) AS score FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 10) HAVING score > 0.8",
          sinks: [{ uplink: 'alerts' }],
        },
        // The model over a closed window's aggregates.
        {
          name: 'window-scoring',
          sql: "SELECT machineId, avg(rms) AS rms, infer('vib-ae', avg(rms), max(kurtosis), avg(peakHz)) AS windowScore FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 10)",
          sinks: [{ uplink: 'window-scores' }],
        },
      ],
      endpoints: [{ name: 'score', model: 'vib-ae' }],
      policy: { egress: { allow: ['scores', 'alerts', 'window-scores'] } },
    },
  };
}

/** The same rows through a session of our own: the reference numbers. */
async function directScores(rows: number[][]): Promise<number[]> {
  const m = await new OnnxRuntime().load({ name: 'ref', format: 'onnx', file: modelFile });
  const out = await m.run({ features: { datatype: 'FP32', shape: [rows.length, 3], data: Float32Array.from(rows.flat()) } });
  await m.close();
  return Array.from(out.score!.data as Float32Array);
}
