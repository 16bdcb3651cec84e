import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { startTestCloud, tempDir, waitFor, removeDirs } from './support/harness.ts';
import { spawnCli, type CliProcess } from './support/proc.ts';
import { newSecret } from '../src/lib/secrets.ts';
import { GraphBuilder, int, ints } from '../src/inference/train/onnx-build.ts';

/**
 * Nothing is accepted before it can be handled, and a large model's loading loses nothing: records
 * published while a new app's 24 MiB model is still being fetched are journaled (their rule has
 * claimed its stream) and acknowledged; the agent is killed with SIGKILL then, and again during
 * its start-up (which waits for the model: its device broker is not open meanwhile); once the model
 * arrives every acknowledged record reaches the cloud exactly once.
 *
 * The model download goes through an HTTP proxy that holds artifact requests until the test lets
 * them through, so "while the model loads" is a state the test controls, not a race.
 */
function bigModel(): Buffer {
  // features [batch, 3] · W [3, 2M] → mean over 2M columns: 24 MiB of weights.
  const g = new GraphBuilder('big');
  const x = g.input('features', ['batch', 3]);
  const cols = 2 * 1024 * 1024;
  const w = new Float32Array(3 * cols).fill(0.5);
  const m = g.op('ReduceMean', [g.op('MatMul', [x, g.const(w, [3, cols], 'W')])], [ints('axes', [1]), int('keepdims', 0)]);
  g.output(m, 'score', ['batch']);
  return Buffer.from(g.encode('a large model for the start-up test'));
}

/** Forwards everything to the cloud, but holds artifact downloads while `hold` is set. */
class HoldingProxy {
  hold = true;
  private held: (() => void)[] = [];
  private server = createServer((req, res) => {
    const go = () => this.forward(req, res);
    if (this.hold && req.url?.includes('/artifacts/')) this.held.push(go);
    else go();
  });
  constructor(private readonly target: URL) {}
  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    return `http://127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }
  get waiting(): number {
    return this.held.length;
  }
  release(): void {
    this.hold = false;
    for (const go of this.held.splice(0)) go();
  }
  private forward(req: IncomingMessage, res: ServerResponse): void {
    if (req.socket.destroyed) return; // its agent was killed while the request was held
    const up = request(
      { host: this.target.hostname, port: this.target.port, path: req.url, method: req.method, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    // A client gone mid-download must not leave the cloud streaming into a dead pipe.
    res.on('close', () => up.destroy());
    req.pipe(up);
  }
  close(): void {
    this.server.closeAllConnections();
    this.server.close();
  }
}

describe('start-up with a large model loses nothing', () => {
  const dirs: string[] = [];
  after(() => removeDirs(...dirs));

  it('journals records while the model loads, survives kill -9 then and during start-up, and delivers each acknowledged record once', async () => {
    const cloud = await startTestCloud();
    const dataDir = tempDir('durable-startup');
    dirs.push(cloud.dataDir, dataDir);
    const apiKey = newSecret('ewl');
    const devicePassword = newSecret('ewd');
    writeFileSync(join(dataDir, 'api.key'), apiKey);
    writeFileSync(join(dataDir, 'device.pw'), devicePassword);
    const proxy = new HoldingProxy(new URL(cloud.url));
    const proxyUrl = await proxy.start();
    const args = [
      'edge',
      '--data-dir',
      dataDir,
      '--api-port',
      '0',
      '--device-port',
      '0',
      '--device-host',
      '127.0.0.1',
      '--api-key-file',
      join(dataDir, 'api.key'),
      '--device-password-file',
      join(dataDir, 'device.pw'),
    ];
    let agent: CliProcess = spawnCli([...args, '--cloud', cloud.url], { EW_JOIN_TOKEN: await cloud.token({ labels: { big: 'yes' } }) });
    try {
      const first = await agent.ready;
      const siteId = first.siteId as string;
      const tenantId = (await cloud.handle.store.getSiteById(siteId))!.tenantId;
      agent.child.kill('SIGTERM');
      await agent.exited;
      // Model downloads go through the holding proxy from now on.
      const credsFile = join(dataDir, 'credentials.json');
      writeFileSync(credsFile, JSON.stringify({ ...JSON.parse(readFileSync(credsFile, 'utf8')), cloudUrl: proxyUrl }));
      agent = spawnCli(args);
      const ready = await agent.ready;

      const model = bigModel();
      const sha = createHash('sha256').update(model).digest('hex');
      const put = await fetch(`${cloud.url}/api/v1/artifacts/${sha}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${cloud.adminKey}`, 'content-type': 'application/octet-stream' },
        body: new Uint8Array(model),
      });
      assert.equal(put.status, 201);
      const manifest = {
        apiVersion: 'edgeweave/v1',
        kind: 'App',
        metadata: { name: 'big', version: '1.0.0' },
        spec: {
          models: [{ name: 'big', format: 'onnx', path: 'models/big.onnx', sha256: sha }],
          streams: [{ name: 'recs', topic: 'big/+/rec', format: 'json', schema: { n: 'int' } }],
          rules: [{ name: 'keep', sql: 'SELECT n FROM recs', sinks: [{ uplink: 'kept' }] }],
          endpoints: [{ name: 'big', model: 'big' }],
          policy: { egress: { allow: ['kept'] } },
        },
      };
      assert.equal((await cloud.api('POST', '/api/v1/apps', { manifest })).status, 201);
      assert.equal(
        (await cloud.api('POST', '/api/v1/deployments', { app: 'big', version: '1.0.0', selector: { big: 'yes' } })).status,
        201,
      );
      await waitFor('the model download held', () => proxy.waiting > 0, 30_000);
      const status = async () =>
        (await (await fetch(`${ready.apiUrl}/api/v1/status`, { headers: { authorization: `Bearer ${apiKey}` } })).json()) as {
          models: { state: string }[];
          rules: unknown[];
        };

      // The app is starting: its model is being fetched, its rule not running yet.
      const device = await mqtt.connectAsync(ready.deviceUrl as string, {
        username: 'device',
        password: devicePassword,
        reconnectPeriod: 0,
      });
      const acked: number[] = [];
      await Promise.all(
        Array.from({ length: 300 }, (_, n) =>
          device.publishAsync(`big/d${n % 5}/rec`, JSON.stringify({ n }), { qos: 1 }).then(() => {
            acked.push(n);
          }),
        ),
      );
      assert.equal(acked.length, 300);
      const during = await status();
      assert.equal(during.models[0]?.state, 'fetching', 'all 300 were acknowledged while the model was not loaded');
      const metrics = await (await fetch(`${ready.apiUrl}/metrics`, { headers: { authorization: `Bearer ${apiKey}` } })).text();
      assert.match(metrics, /ew_edge_journal_pending 300\b/, 'held in the journal, not in memory');
      assert.doesNotMatch(metrics, /ew_edge_records_unrouted_total\{topic="big\//, 'none unrouted: the rule had claimed its stream');
      device.end(true);

      // kill -9 with 300 acknowledged records waiting for a model.
      agent.child.kill('SIGKILL');
      await agent.exited;
      // A restart waits for the model (still held): its device broker does not open meanwhile.
      agent = spawnCli(args);
      await waitFor('the restarted agent waiting for the model', () => proxy.waiting > 0, 30_000);
      assert.equal(agent.stdoutLines.length, 0, 'not ready: nothing accepted before it can be handled');
      agent.child.kill('SIGKILL'); // killed during start-up
      await agent.exited;

      proxy.release();
      agent = spawnCli(args);
      await agent.ready;
      await waitFor('all 300 at the cloud', async () => (await cloud.handle.store.countUplink(siteId, 'kept')) >= 300, 60_000, 50);
      const ns = (await cloud.handle.store.queryUplink(tenantId, { siteId, stream: 'kept', limit: 1000 }))
        .map((r) => (r.data as { n: number }).n)
        .sort((a, b) => a - b);
      assert.deepEqual(
        ns,
        Array.from({ length: 300 }, (_, i) => i),
        'each acknowledged record exactly once',
      );
    } finally {
      agent.child.kill('SIGKILL');
      proxy.close();
      await cloud.stop();
    }
  });
});
