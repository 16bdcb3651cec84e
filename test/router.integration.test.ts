import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestCloud, startTestEdge, waitFor, removeDirs, tempDir, type TestCloud, type TestEdge } from './support/harness.ts';
import { ROOT } from './support/proc.ts';
import { OnnxRuntime } from '../src/inference/onnx.ts';

/**
 * One endpoint for the whole fleet: a real cloud and four real agents on loopback —
 *   fast      eu-west, serves the model at once;
 *   slow      eu-west, the same app at a version whose batcher waits 8 s for a batch (a real slow site);
 *   offline   eu-west, enrolled and serving, then stopped;
 *   forbidden us-east, serving, but outside what the requests allow.
 * Requests go through the cloud's OIP v2 endpoint (plain HTTP with fetch: no OIP client library
 * is installed here) and are checked against the same model run directly.
 */
const run = promisify(execFile);
const modelFile = new URL('../models/vibration-ae.onnx', import.meta.url).pathname;
const bytes = readFileSync(modelFile);
const sha = createHash('sha256').update(bytes).digest('hex');

function manifest(version: string, delayMs: number) {
  return {
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'vib-router', version },
    spec: {
      models: [
        { name: 'vib-ae', format: 'onnx', path: 'm.onnx', sha256: sha, batching: { maxBatchSize: 64, maxQueueDelayMs: delayMs } },
        // The cascade's larger model: only the cloud-side runtime loads it (the same file here).
        { name: 'vib-big', format: 'onnx', path: 'm.onnx', sha256: sha, tier: 'cloud' },
      ],
      endpoints: [
        { name: 'score', model: 'vib-ae', fallback: 'cloud' },
        { name: 'score-cascade', model: 'vib-ae', cascade: { to: 'vib-big', when: { score: { output: 'score', above: 0.9 } } } },
      ],
      policy: { residency: { classes: { pii: { regions: ['eu-west'], cloud: false }, public: {} } } },
    },
  };
}

async function directScores(rows: number[][]): Promise<number[]> {
  const m = await new OnnxRuntime().load({ name: 'ref', format: 'onnx', file: modelFile });
  const out = await m.run({ features: { datatype: 'FP32', shape: [rows.length, 3], data: Float32Array.from(rows.flat()) } });
  await m.close();
  return Array.from(out.score!.data as Float32Array);
}

describe('the cloud routes inference to the right site, by policy, over the MQTT link', () => {
  let cloud: TestCloud;
  const edges: Record<string, TestEdge> = {};
  const ids: Record<string, string> = {};
  const rows = [
    [1.0, 3.0, 120],
    [1.6, 9.0, 150],
  ];
  const body = { id: 'r1', inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 3], data: rows.flat() }] };

  const infer = async (endpoint: string, b: unknown, headers: Record<string, string> = {}, query = '') => {
    const res = await fetch(`${cloud.url}/v2/models/${endpoint}/infer${query}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify(b),
    });
    return { status: res.status, headers: res.headers, body: (await res.json()) as any };
  };
  const routedCount = async (e: TestEdge) => {
    const r = await fetch(`${e.handle.apiUrl}/api/v1/status`, { headers: { authorization: `Bearer ${e.apiKey}` } });
    return ((await r.json()) as any).routed.requests as number;
  };

  before(async () => {
    cloud = await startTestCloud({ region: 'eu-west' });
    const put = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(bytes),
    });
    assert.equal(put.status, 201);
    for (const v of ['1.0.0', '1.0.1']) {
      const r = await cloud.api('POST', '/api/v1/apps', { manifest: manifest(v, v === '1.0.1' ? 8000 : 0) });
      assert.equal(r.status, 201, JSON.stringify(r.body));
    }
    const sites: [string, string, string][] = [
      ['fast', 'eu-west', 'fast'],
      ['slow', 'eu-west', 'slow'],
      ['offline', 'eu-west', 'fast'],
      ['forbidden', 'us-east', 'fast'],
    ];
    for (const [name, region, role] of sites) {
      edges[name] = await startTestEdge(cloud, { region, labels: { fleet: 'router', role }, name });
      ids[name] = edges[name]!.handle.siteId;
    }
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'vib-router', version: '1.0.0', selector: { fleet: 'router' } })).status,
      201,
    );
    assert.equal(
      (await cloud.api('POST', '/api/v1/deployments', { app: 'vib-router', version: '1.0.1', selector: { role: 'slow' } })).status,
      201,
    );
    await waitFor(
      'every site reports its model ready',
      async () => {
        const all = (await cloud.api('GET', '/api/v1/sites')).body.items as any[];
        return Object.values(ids).every((id) =>
          all.find((s) => s.id === id)?.status?.models?.some((m: any) => m.name === 'vib-ae' && m.state === 'ready'),
        );
      },
      30_000,
    );
    await edges.offline!.stop();
    await waitFor(
      'the stopped site is offline at the cloud',
      async () => (await cloud.api('GET', `/api/v1/sites/${ids.offline}`)).body.state === 'offline',
    );
  });
  after(async () => {
    for (const e of Object.values(edges)) await e.stop().catch(() => {});
    await cloud?.stop();
    removeDirs(cloud.dataDir, ...Object.values(edges).map((e) => e.dataDir));
  });

  it("answers through the cloud with the model's own numbers, says who answered, and lists the endpoints as a site does", async () => {
    const r = await infer('score', body, { 'x-edgeweave-regions': 'eu-west' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.model_name, 'score');
    assert.equal(r.body.id, 'r1');
    assert.deepEqual(
      r.body.outputs.map((o: any) => [o.name, o.datatype, o.shape]),
      [['score', 'FP32', [2]]],
    );
    assert.deepEqual(r.body.outputs[0].data, await directScores(rows));
    assert.ok([ids.fast, ids.slow].includes(r.body.parameters.edgeweave.site));
    assert.equal(r.headers.get('x-edgeweave-site'), r.body.parameters.edgeweave.site);
    const list = (await (await fetch(`${cloud.url}/v2/models`, { headers: { authorization: `Bearer ${cloud.adminKey}` } })).json()) as any;
    assert.deepEqual(list.models.map((m: any) => [m.name, m.ready]).sort(), [
      ['score', true],
      ['score-cascade', true],
    ]);
    const meta = (await (
      await fetch(`${cloud.url}/v2/models/score`, {
        headers: { authorization: `Bearer ${cloud.adminKey}`, 'x-edgeweave-regions': 'eu-west' },
      })
    ).json()) as any;
    assert.deepEqual(meta.inputs, [{ name: 'features', datatype: 'FP32', shape: [-1, 3] }]);
    assert.deepEqual(meta.versions.sort(), ['1.0.0', '1.0.1']);
    assert.equal(
      (await fetch(`${cloud.url}/v2/models/score/ready`, { headers: { authorization: `Bearer ${cloud.adminKey}` } })).status,
      200,
    );
  });

  it('retries at the next eligible site when the preferred one is too slow, and explains every step', async () => {
    const r = await infer(
      'score',
      body,
      { 'x-edgeweave-regions': 'eu-west', 'x-edgeweave-site': ids.slow!, 'x-edgeweave-timeout-ms': '4000' },
      '?explain=1',
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const ex = r.body.parameters.edgeweave.explain;
    assert.deepEqual(
      ex.attempts.map((a: any) => [a.target, a.outcome]),
      [
        [ids.slow, 'INFER_DEADLINE_EXCEEDED'],
        [ids.fast, 'ok'],
      ],
    );
    assert.equal(r.body.parameters.edgeweave.site, ids.fast);
    assert.deepEqual(r.body.outputs[0].data, await directScores(rows));
    assert.deepEqual(ex.residency.regions, ['eu-west']);
    const rejected = Object.fromEntries(ex.rejected.map((x: any) => [x.target, x.reason]));
    assert.equal(rejected[ids.forbidden!], 'residency');
    assert.equal(rejected[ids.offline!], 'offline');
    assert.equal(ex.choices[0].target, ids.slow, 'the preference put the slow site first');
    assert.match(ex.choices[0].reasons.join('; '), /preferred by the request/);
    assert.ok(
      ex.choices.some((c: any) => c.target === 'cloud'),
      'the cloud fallback is the last resort',
    );
    assert.equal(r.headers.get('x-edgeweave-route'), `${ids.slow}=INFER_DEADLINE_EXCEEDED,${ids.fast}=ok`);
  });

  it("takes and returns raw tensor bytes (Triton's binary extension), forwarded to the site without re-encoding", async () => {
    const head = Buffer.from(
      JSON.stringify({
        inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 3], parameters: { binary_data_size: 24 } }],
        outputs: [{ name: 'score', parameters: { binary_data: true } }],
      }),
    );
    const tensor = Buffer.from(Float32Array.from(rows.flat()).buffer);
    const send = (h: Buffer, t: Buffer) =>
      fetch(`${cloud.url}/v2/models/score/infer`, {
        method: 'POST',
        body: new Uint8Array(Buffer.concat([h, t])),
        headers: {
          authorization: `Bearer ${cloud.adminKey}`,
          'content-type': 'application/octet-stream',
          'inference-header-content-length': String(h.length),
          'x-edgeweave-regions': 'eu-west',
        },
      });
    const res = await send(head, tensor);
    assert.equal(res.status, 200);
    const raw = Buffer.from(await res.arrayBuffer());
    const n = Number(res.headers.get('inference-header-content-length'));
    const json = JSON.parse(raw.subarray(0, n).toString('utf8'));
    assert.deepEqual(json.outputs, [{ name: 'score', datatype: 'FP32', shape: [2], parameters: { binary_data_size: 8 } }]);
    const scores = Array.from(new Float32Array(new Uint8Array(raw.subarray(n)).buffer));
    assert.deepEqual(scores, await directScores(rows));
    const short = await send(head, tensor.subarray(0, 20));
    assert.equal(short.status, 400);
    const err = (await short.json()) as any;
    assert.equal(err.code, 'INFER_INPUT_INVALID');
    assert.equal(err.path, 'inputs[0].parameters.binary_data_size');
  });

  it("refuses what residency forbids with a 4xx naming the constraint, in OIP's error shape", async () => {
    const r = await infer('score', body, { 'x-edgeweave-regions': 'us-east', 'x-edgeweave-data-class': 'pii' });
    assert.equal(r.status, 422);
    assert.equal(r.body.code, 'RESIDENCY_UNSATISFIABLE');
    assert.equal(typeof r.body.error, 'string');
    assert.match(r.body.error, /data class "pii" allows regions \[eu-west\].*the request allows regions \[us-east\]/);
    const unknownClass = await infer('score', body, { 'x-edgeweave-data-class': 'secret' });
    assert.equal(unknownClass.status, 422);
    assert.match(unknownClass.body.error, /data class "secret" is not declared by the endpoint \(declared: pii, public\)/);
    const badHeader = await infer('score', body, { 'x-edgeweave-regions': 'eu west!' });
    assert.equal(badHeader.status, 400);
    assert.equal(badHeader.body.path, 'headers.x-edgeweave-regions');
  });

  it("answers an unknown endpoint and bad tensors with clear errors, without retrying the client's mistake", async () => {
    const nope = await infer('nope', body);
    assert.equal(nope.status, 404);
    assert.deepEqual(Object.keys(nope.body).sort(), ['code', 'error', 'path']);
    assert.equal(nope.body.code, 'MODEL_NOT_FOUND');
    const wrongShape = await infer(
      'score',
      { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 4], data: [1, 2, 3, 4] }] },
      { 'x-edgeweave-regions': 'eu-west' },
    );
    assert.equal(wrongShape.status, 400);
    assert.equal(wrongShape.body.code, 'INFER_INPUT_INVALID');
    assert.match(wrongShape.body.error, /takes \[-1, 3\]/);
    assert.equal(wrongShape.headers.get('x-edgeweave-route')!.split(',').length, 1, 'a bad input is not retried elsewhere');
    const wrongLen = await infer('score', { inputs: [{ name: 'features', datatype: 'FP32', shape: [2, 3], data: [1, 2, 3] }] });
    assert.equal(wrongLen.status, 400);
    assert.equal(wrongLen.body.path, 'inputs[0].data');
    const noKey = await fetch(`${cloud.url}/v2/models/score/infer`, { method: 'POST', body: '{}' });
    assert.equal(noKey.status, 401);
    assert.equal(((await noKey.json()) as any).code, 'UNAUTHENTICATED');
  });

  it('cascades: normal rows stay at the edge, an anomalous one escalates to the larger model in the cloud', async () => {
    const normal = await infer(
      'score-cascade',
      { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1.0, 3.0, 120] }] },
      { 'x-edgeweave-regions': 'eu-west' },
    );
    assert.equal(normal.status, 200, JSON.stringify(normal.body));
    assert.equal(normal.body.parameters.edgeweave.cascade.escalated, false);
    assert.notEqual(normal.body.parameters.edgeweave.site, 'cloud');
    assert.equal(normal.body.parameters.edgeweave.model, 'vib-ae');
    const odd = await infer(
      'score-cascade',
      { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1.6, 9.0, 150] }] },
      { 'x-edgeweave-regions': 'eu-west' },
    );
    assert.equal(odd.status, 200, JSON.stringify(odd.body));
    assert.equal(odd.body.parameters.edgeweave.cascade.escalated, true);
    assert.match(odd.body.parameters.edgeweave.cascade.why, /score 0\.9\d+ > 0\.9/);
    assert.equal(odd.body.parameters.edgeweave.site, 'cloud');
    assert.equal(odd.body.parameters.edgeweave.model, 'vib-big');
    assert.equal(odd.headers.get('x-edgeweave-model'), 'vib-big');
    assert.deepEqual(odd.body.outputs[0].data, await directScores([[1.6, 9.0, 150]]));
    const pii = await infer(
      'score-cascade',
      { inputs: [{ name: 'features', datatype: 'FP32', shape: [1, 3], data: [1.6, 9.0, 150] }] },
      { 'x-edgeweave-data-class': 'pii' },
    );
    assert.equal(pii.status, 200, 'the edge answer stands when residency forbids the escalation');
    assert.equal(pii.body.parameters.edgeweave.cascade.escalated, false);
    assert.equal(pii.body.parameters.edgeweave.cascade.blocked.code, 'RESIDENCY_UNSATISFIABLE');
    assert.match(pii.body.parameters.edgeweave.cascade.blocked.message, /data class "pii" may not leave for the cloud/);
    assert.equal(pii.body.parameters.edgeweave.model, 'vib-ae');
    const metrics = await (await fetch(`${cloud.url}/metrics`, { headers: { authorization: `Bearer ${cloud.adminKey}` } })).text();
    assert.match(metrics, /ew_router_cascade_requests_total\{endpoint="score-cascade"\} 3/);
    assert.match(metrics, /ew_router_cascade_escalations_total\{endpoint="score-cascade"\} 2/);
    assert.match(metrics, /ew_router_cascade_added_seconds_count\{endpoint="score-cascade"\} 1/);
  });

  it('never sent a request to the forbidden site, and audited every decision', async () => {
    assert.equal(await routedCount(edges.forbidden!), 0);
    assert.ok((await routedCount(edges.fast!)) >= 3);
    const audit = (await cloud.api('GET', '/api/v1/router/decisions?limit=1000')).body.items as any[];
    assert.ok(audit.length >= 8);
    assert.ok(audit.every((a) => a.attempts.every((x: any) => x.target !== ids.forbidden)));
    const residencyRefusal = audit.find((a) => a.code === 'RESIDENCY_UNSATISFIABLE');
    assert.ok(residencyRefusal && residencyRefusal.constraint.sources.some((s: string) => /pii/.test(s)));
    const metrics = await (await fetch(`${cloud.url}/metrics`, { headers: { authorization: `Bearer ${cloud.adminKey}` } })).text();
    assert.match(metrics, /ew_router_rejections_total\{endpoint="score",reason="residency"\} \d+/);
    assert.match(metrics, /ew_router_errors_total\{endpoint="score",site="[^"]+",code="INFER_DEADLINE_EXCEEDED"\} 1/);
    assert.match(metrics, /ew_router_request_duration_seconds_bucket\{le="0\.1",endpoint="score",target="site"\}/);
    const dry = (await cloud.api('GET', '/api/v1/router/explain/score')).body;
    assert.equal(dry.ok, true);
  });

  it('edgeweave infer calls the endpoint through the cloud, and exits non-zero with the code on a refusal', async () => {
    const dir = tempDir('infer-cli');
    const input = join(dir, 'req.json');
    writeFileSync(input, JSON.stringify(body));
    const env = { ...process.env, EW_CLOUD: cloud.url, EW_API_KEY: cloud.adminKey, EDGEWEAVE_CONFIG: join(dir, 'none.json') };
    const ok = await run(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'infer', 'score', '--input', input, '--region', 'eu-west', '--explain', '-o', 'json'],
      { cwd: ROOT, env },
    );
    const out = JSON.parse(ok.stdout);
    assert.deepEqual(out.outputs[0].data, await directScores(rows));
    assert.ok(out.parameters.edgeweave.explain.rejected.some((r: any) => r.target === ids.forbidden && r.reason === 'residency'));
    const refused = await run(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'infer', 'score', '-i', input, '--region', 'us-east', '--data-class', 'pii'],
      { cwd: ROOT, env },
    ).catch((e) => e);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^error RESIDENCY_UNSATISFIABLE: no target for endpoint score satisfies data residency/m);
    removeDirs(dir);
  });

  it('falls back to the cloud when every site is down — only where the policy allows it', async () => {
    for (const n of ['fast', 'slow', 'forbidden']) await edges[n]!.stop();
    await waitFor('every site offline', async () => {
      const all = (await cloud.api('GET', '/api/v1/sites')).body.items as any[];
      return all.every((s) => s.state === 'offline');
    });
    const r = await infer('score', body, { 'x-edgeweave-data-class': 'public' }, '?explain=1');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.parameters.edgeweave.site, 'cloud');
    assert.equal(r.body.parameters.edgeweave.region, 'eu-west');
    assert.deepEqual(r.body.outputs[0].data, await directScores(rows));
    const pii = await infer('score', body, { 'x-edgeweave-data-class': 'pii' });
    assert.equal(pii.status, 503);
    assert.equal(pii.body.code, 'NO_SITE_AVAILABLE');
    assert.equal(pii.headers.get('retry-after'), '1');
    assert.match(pii.body.error, /offline/);
  });
});
