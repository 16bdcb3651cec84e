import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { spawnCli } from './support/proc.ts';
import { startTestCloud, tempDir, removeDirs, type TestCloud } from './support/harness.ts';

/** The exit codes scripts rely on, from the real command. */
describe('edgeweave edge: exit codes and messages', () => {
  let cloud: TestCloud;
  const dirs: string[] = [];
  before(async () => { cloud = await startTestCloud(); });
  after(async () => { await cloud.stop(); removeDirs(...dirs); });
  const dir = () => { const d = tempDir('cli'); dirs.push(d); return d; };
  const edge = (args: string[]) => spawnCli(['edge', '--api-port', '0', '--device-port', '0', '--device-host', '127.0.0.1', ...args]);

  it('exits 2 when not enrolled and no token is given', async () => {
    const p = edge(['--data-dir', dir()]);
    assert.equal(await p.exited, 2);
    assert.match(p.stderr(), /error NOT_ENROLLED: .*--token/);
  });

  it('exits 3 with TOKEN_USED for a used token, and 3 with TOKEN_INVALID for an unknown one', async () => {
    const token = await cloud.token();
    assert.equal((await cloud.api('POST', '/api/v1/enroll', { token }, '')).status, 201);
    const used = edge(['--data-dir', dir(), '--cloud', cloud.url, '--token', token]);
    assert.equal(await used.exited, 3);
    assert.match(used.stderr(), /error TOKEN_USED: .*new one/);
    const unknown = edge(['--data-dir', dir(), '--cloud', cloud.url, '--token', 'ewj_unknown']);
    assert.equal(await unknown.exited, 3);
    assert.match(unknown.stderr(), /error TOKEN_INVALID/);
  });

  it('exits 4 when the cloud cannot be reached', async () => {
    // A port that was free a moment ago: nothing listens there.
    const port = await new Promise<number>((r) => { const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => r(p)); }); });
    const p = edge(['--data-dir', dir(), '--cloud', `http://127.0.0.1:${port}`, '--token', 'ewj_x']);
    assert.equal(await p.exited, 4);
    assert.match(p.stderr(), /error CLOUD_UNREACHABLE: cannot reach the cloud/);
  });

  it('exits 2 on a bad flag value, naming it', async () => {
    const p = edge(['--data-dir', dir(), '--outbox-overflow', 'sometimes']);
    assert.equal(await p.exited, 2);
    assert.match(p.stderr(), /outbox-overflow/);
  });
});
