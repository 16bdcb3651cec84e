import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { spawnCli } from './support/proc.ts';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestCloud, tempDir, removeDirs, type TestCloud } from './support/harness.ts';

/** The exit codes scripts rely on, from the real command. */
describe('edgeweave edge: exit codes and messages', () => {
  let cloud: TestCloud;
  const dirs: string[] = [];
  before(async () => {
    cloud = await startTestCloud();
  });
  after(async () => {
    await cloud.stop();
    removeDirs(...dirs);
  });
  const dir = () => {
    const d = tempDir('cli');
    dirs.push(d);
    return d;
  };
  const edge = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    spawnCli(['edge', '--api-port', '0', '--device-port', '0', '--device-host', '127.0.0.1', ...args], env);

  it('exits 2 when not enrolled and no token is given', async () => {
    const p = edge(['--data-dir', dir()]);
    assert.equal(await p.exited, 2);
    assert.match(p.stderr(), /error NOT_ENROLLED: .*--token/);
  });

  it('exits 3 with TOKEN_USED for a used token, and 3 with TOKEN_INVALID for an unknown one', async () => {
    const token = await cloud.token();
    assert.equal((await cloud.api('POST', '/api/v1/enroll', { token }, '')).status, 201);
    const used = edge(['--data-dir', dir(), '--cloud', cloud.url], { EW_JOIN_TOKEN: token });
    assert.equal(await used.exited, 3);
    assert.match(used.stderr(), /error TOKEN_USED: .*new one/);
    const unknownFile = join(dir(), 'token');
    writeFileSync(unknownFile, 'ewj_unknown\n', { mode: 0o600 });
    const unknown = edge(['--data-dir', dir(), '--cloud', cloud.url, '--token-file', unknownFile]);
    assert.equal(await unknown.exited, 3);
    assert.match(unknown.stderr(), /error TOKEN_INVALID/);
  });

  it('exits 4 when the cloud cannot be reached', async () => {
    // A port that was free a moment ago: nothing listens there.
    const port = await new Promise<number>((r) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => r(p));
      });
    });
    const p = edge(['--data-dir', dir(), '--cloud', `http://127.0.0.1:${port}`], { EW_JOIN_TOKEN: 'ewj_x' });
    assert.equal(await p.exited, 4);
    assert.match(p.stderr(), /error CLOUD_UNREACHABLE: cannot reach the cloud/);
  });

  it('refuses a join token on the command line (ps shows it), and enrolls with one from the environment that ps never shows', async () => {
    const token = await cloud.token();
    const sitesBefore = (await cloud.api('GET', '/api/v1/sites')).body.items.length;
    const argv = edge(['--data-dir', dir(), '--cloud', cloud.url, '--token', token]);
    assert.equal(await argv.exited, 2);
    assert.match(
      argv.stderr(),
      /error CONFIG_INVALID: a join token on the command line is visible to every user .*--token-file .*EW_JOIN_TOKEN/,
    );
    assert.equal((await cloud.api('GET', '/api/v1/sites')).body.items.length, sitesBefore, 'the refused start did not enroll');
    const d = dir();
    const agent = edge(['--data-dir', d, '--cloud', cloud.url], { EW_JOIN_TOKEN: token });
    try {
      const ready = await agent.ready;
      assert.ok(ready.siteId);
      // What any user of the machine can read about the process: its command line.
      const cmdline = readFileSync(`/proc/${agent.child.pid}/cmdline`, 'utf8');
      assert.ok(cmdline.includes(d), "this is the agent's command line");
      assert.ok(!cmdline.includes(token), 'the token is not in the command line');
    } finally {
      agent.child.kill('SIGTERM');
      await agent.exited;
    }
  });

  it('exits 2 on a bad flag value, naming it', async () => {
    const p = edge(['--data-dir', dir(), '--outbox-overflow', 'sometimes']);
    assert.equal(await p.exited, 2);
    assert.match(p.stderr(), /outbox-overflow/);
  });
});

describe('edgeweave sql: try a rule on JSON lines', () => {
  const dir = tempDir('sql');
  after(() => removeDirs(dir));

  it('prints results as JSON lines, closes open windows at the end, and reports bad lines', async () => {
    const input = join(dir, 'records.jsonl');
    writeFileSync(
      input,
      [
        { machineId: 'm1', rms: 1, ts: 1000 },
        { machineId: 'm2', rms: 3, ts: 2000 },
        'garbage',
        { machineId: 'm1', rms: 2, ts: 3000 },
        { machineId: 'm1', rms: 5, ts: 12_000 },
      ]
        .map((r) => (typeof r === 'string' ? r : JSON.stringify(r)))
        .join('\n'),
    );
    const p = spawnCli([
      'sql',
      'SELECT machineId, avg(rms) AS rms, count(*) AS n FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 10)',
      '--input',
      input,
    ]);
    assert.equal(await p.exited, 0, p.stderr());
    assert.deepEqual(p.stdoutLines, [
      { machineId: 'm1', rms: 1.5, n: 2 },
      { machineId: 'm2', rms: 3, n: 1 },
      { machineId: 'm1', rms: 5, n: 1 },
    ]);
    assert.match(p.stderr(), /line 3: not JSON/);
    assert.match(p.stderr(), /4 records in, 3 results out, 0 filtered, 0 late, 0 failed, 1 unreadable lines/);
  });

  it('runs infer() with a local model given by --model', async () => {
    const input = join(dir, 'vib.jsonl');
    writeFileSync(
      input,
      [
        { m: 'ok', rms: 1.0, kurtosis: 3.0, peakHz: 120 },
        { m: 'bad', rms: 1.6, kurtosis: 9.0, peakHz: 150 },
      ]
        .map((r) => JSON.stringify(r))
        .join('\n'),
    );
    const model = new URL('../models/vibration-ae.onnx', import.meta.url).pathname;
    const p = spawnCli([
      'sql',
      "SELECT m, infer('vib-ae', rms, kurtosis, peakHz) AS score FROM v",
      '--input',
      input,
      '--model',
      `vib-ae=${model}`,
    ]);
    assert.equal(await p.exited, 0, p.stderr());
    assert.deepEqual(
      p.stdoutLines.map((r) => r.m),
      ['ok', 'bad'],
    );
    assert.ok(p.stdoutLines[0]!.score < 0.5 && p.stdoutLines[1]!.score > 0.9);
    const missing = spawnCli(['sql', "SELECT infer('vib-ae', rms) AS s FROM v", '--input', input]);
    assert.equal(await missing.exited, 0);
    assert.match(missing.stderr(), /no models here: infer\(\) needs a site's models \(or edgeweave sql --model\)/);
  });

  it('exits 2 with line and column for a bad query', async () => {
    const p = spawnCli(['sql', 'SELECT a FORM s', '--input', '/dev/null']);
    assert.equal(await p.exited, 2);
    assert.match(p.stderr(), /error SQL_SYNTAX: line 1, column 10: .*did you mean FROM\?/);
  });
});
