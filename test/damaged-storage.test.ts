import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, openSync, readdirSync, statSync, truncateSync, writeSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { startTestCloud, tempDir, waitFor, removeDirs, type TestCloud } from './support/harness.ts';
import { ROOT, spawnCli } from './support/proc.ts';
import { newSecret } from '../src/lib/secrets.ts';

/**
 * Damaged storage is loud: an agent whose edge.db is empty, damaged, read-only or on a full disk
 * refuses to start with exit 2 and DATA_DIR_INVALID (what is wrong, how to recover — never a stack
 * trace, never a fresh site over a lost backlog); `edgeweave edge doctor` finds the same and
 * `--salvage` rebuilds edge.db from its readable rows, after which the agent starts with them.
 */
interface Exit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to its exit, optionally under a file-size limit (blocks of 512 B) that stands for a full disk. */
function cli(args: string[], fsizeBlocks?: number): Promise<Exit> {
  const node = [process.execPath, '--import', 'tsx', 'src/cli/main.ts', ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const child =
    fsizeBlocks === undefined
      ? spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
          cwd: ROOT,
          env: { ...process.env, EW_LOG_LEVEL: 'warn' },
        })
      : // SIGXFSZ ignored: a write past the limit fails with EFBIG, as one on a full disk fails with ENOSPC.
        spawn('bash', ['-c', `trap '' XFSZ; ulimit -f ${fsizeBlocks}; exec ${node}`], {
          cwd: ROOT,
          env: { ...process.env, EW_LOG_LEVEL: 'warn' },
        });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stdout, stderr })));
}

function assertLoudRefusal(r: Exit, what: RegExp): void {
  assert.equal(r.code, 2, `exit 2, got ${r.code}: ${r.stderr.slice(-500)}`);
  assert.match(r.stderr, /error DATA_DIR_INVALID: /);
  assert.match(r.stderr, what);
  assert.match(r.stderr, /edgeweave edge doctor|backup/, 'says how to recover');
  assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+/, 'no stack trace');
}

describe('damaged storage is loud', () => {
  let cloud: TestCloud;
  const base = tempDir('damaged');
  const copies: string[] = [];
  const apiKey = newSecret('ewl');
  let siteId = '';

  /** A copy of the enrolled site's data dir, with 300 unsent results in its outbox. */
  const copy = (name: string): string => {
    const d = join(tempDir(`damaged-${name}`), 'data');
    cpSync(base, d, { recursive: true });
    copies.push(d);
    return d;
  };
  const agentArgs = (dir: string) => [
    'edge',
    '--data-dir',
    dir,
    '--api-port',
    '0',
    '--device-port',
    '0',
    '--device-host',
    '127.0.0.1',
    '--api-key-file',
    join(dir, 'api.key'),
    '--device-password-file',
    join(dir, 'device.pw'),
  ];

  before(async () => {
    cloud = await startTestCloud();
    writeFileSync(join(base, 'api.key'), apiKey, { mode: 0o600 });
    writeFileSync(join(base, 'device.pw'), newSecret('ewd'), { mode: 0o600 });
    const agent = spawnCli([...agentArgs(base), '--cloud', cloud.url, '--uplink-allow', 'kept'], { EW_JOIN_TOKEN: await cloud.token() });
    const ready = await agent.ready;
    siteId = ready.siteId as string;
    await cloud.stop(); // results stay in the outbox
    const records = Array.from({ length: 300 }, (_, n) => ({ n, pad: 'x'.repeat(200) }));
    const res = await fetch(`${ready.apiUrl}/api/v1/uplink/kept`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ records }),
    });
    assert.equal(res.status, 202);
    agent.child.kill('SIGTERM');
    assert.equal(await agent.exited, 0);
  });
  after(async () => {
    for (const d of copies) spawnSync('chattr', ['-i', join(d, 'edge.db')]);
    await cloud?.stop();
    removeDirs(base, ...copies.map((d) => join(d, '..')));
  });

  it('an empty edge.db beside the credentials: refuses to start as a new site; doctor --salvage lets it go on', async () => {
    const d = copy('empty');
    truncateSync(join(d, 'edge.db'), 0);
    for (const f of ['edge.db-wal', 'edge.db-shm']) rmSync(join(d, f), { force: true });
    assertLoudRefusal(await cli(agentArgs(d)), /empty \(0 bytes\).*credentials.*lost backlog/s);
    assert.equal(statSync(join(d, 'edge.db')).size, 0, 'nothing written over it');
    const check = await cli(['edge', 'doctor', '--data-dir', d]);
    assert.equal(check.code, 2);
    assert.match(check.stdout, /FAIL edge\.db present: 0 bytes/);
    const fix = await cli(['edge', 'doctor', '--data-dir', d, '--salvage']);
    assert.equal(fix.code, 0, fix.stdout + fix.stderr);
    const agent = spawnCli(agentArgs(d));
    assert.equal((await agent.ready).siteId, siteId, 'the same site, told its backlog is gone');
    agent.child.kill('SIGKILL');
    await agent.exited;
  });

  it('a damaged page: quick_check at start refuses it; doctor --salvage keeps every readable outbox row', async () => {
    const d = copy('corrupt');
    const file = join(d, 'edge.db');
    const pages = statSync(file).size / 4096;
    assert.ok(pages > 10);
    // Garbage over a page in the middle of the outbox's rows.
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, Math.floor(pages / 2) * 4096);
    closeSync(fd);
    assertLoudRefusal(await cli(agentArgs(d)), /is damaged \(PRAGMA quick_check: |: damaged \(database disk image is malformed/);
    const check = await cli(['edge', 'doctor', '--data-dir', d]);
    assert.equal(check.code, 2);
    assert.match(check.stdout, /FAIL quick_check: /);
    const fix = await cli(['edge', 'doctor', '--data-dir', d, '--salvage', '--json']);
    assert.equal(fix.code, 0, fix.stderr);
    const report = JSON.parse(fix.stdout) as { salvaged: { tables: Record<string, { copied: number; damaged: boolean }>; keptAs: string } };
    const out = report.salvaged.tables.outbox!;
    assert.ok(out.copied > 0 && out.copied <= 300, `salvaged ${out.copied} outbox rows`);
    assert.ok(existsSync(report.salvaged.keptAs), 'the damaged file is kept');
    const db = new Database(file, { readonly: true });
    assert.equal((db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n, out.copied);
    assert.deepEqual(db.pragma('quick_check'), [{ quick_check: 'ok' }]);
    db.close();
    // The agent starts on the salvaged database and sends what was kept, each once.
    await cloud.restart();
    const agent = spawnCli(agentArgs(d));
    await agent.ready;
    await waitFor(
      'the salvaged results at the cloud',
      async () => (await cloud.handle.store.countUplink(siteId, 'kept')) >= out.copied,
      30_000,
      50,
    );
    agent.child.kill('SIGKILL');
    await agent.exited;
    await cloud.stop();
  });

  it('a read-only edge.db: refuses to start, says it cannot be written', async (t) => {
    const d = copy('readonly');
    // As root, permissions do not stop a write; the immutable attribute does (ext4 and the like).
    if (spawnSync('chattr', ['+i', join(d, 'edge.db')]).status !== 0) return t.skip('chattr +i is not available on this file system');
    for (const f of readdirSync(d)) if (f.startsWith('edge.db-')) rmSync(join(d, f), { force: true });
    assertLoudRefusal(await cli(agentArgs(d)), /read-only|operation not permitted/);
    spawnSync('chattr', ['-i', join(d, 'edge.db')]);
  });

  it('a full disk (writes fail): refuses to start with the storage error, not a stack trace', async () => {
    const d = copy('full');
    assertLoudRefusal(await cli(agentArgs(d), 1), /disk I\/O error|disk is full/);
  });
});
