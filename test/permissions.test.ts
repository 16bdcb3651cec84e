import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { startTestCloud, startTestEdge, tempDir, removeDirs, waitFor } from './support/harness.ts';
import { openEdgeDb } from '../src/edge/db.ts';

const mode = (p: string) => statSync(p).mode & 0o777;

/** The attack: state left readable by others (made by hand, copied in, an older version). */
function loosen(...paths: string[]): void {
  for (const p of paths) if (existsSync(p)) chmodSync(p, statSync(p).isDirectory() ? 0o755 : 0o644);
}

describe('state on disk is private: data dirs 0700, databases and credentials 0600, whatever existed before', () => {
  const dirs: string[] = [];
  after(() => removeDirs(...dirs));

  it('the site database, reopened after someone made it world-readable', () => {
    const dir = tempDir('perm-db');
    dirs.push(dir);
    const sub = join(dir, 'site');
    mkdirSync(sub, { mode: 0o755 });
    assert.equal(mode(sub), 0o755 & ~process.umask());
    const db = openEdgeDb(sub);
    db.prepare("INSERT INTO kv (key, value) VALUES ('x', 'y')").run();
    const files = ['edge.db', 'edge.db-wal', 'edge.db-shm'].map((f) => join(sub, f)).filter(existsSync);
    assert.ok(files.length >= 2, 'the database and its WAL');
    loosen(sub, ...files);
    db.close();
    loosen(sub, ...files.filter(existsSync));
    openEdgeDb(sub).close();
    assert.equal(mode(sub), 0o700);
    for (const f of files.filter(existsSync)) assert.equal(mode(f), 0o600, f);
  });

  it('a cloud and a site restarted on loosened state tighten it again', async () => {
    const cloud = await startTestCloud();
    dirs.push(cloud.dataDir);
    const edge = await startTestEdge(cloud, {});
    dirs.push(edge.dataDir);
    await waitFor('connected', () => edge.handle.linkState() === 'connected');
    const cloudFiles = [
      cloud.dataDir,
      join(cloud.dataDir, 'cloud.db'),
      join(cloud.dataDir, 'cloud.db-wal'),
      join(cloud.dataDir, 'artifacts'),
    ];
    const siteFiles = [
      edge.dataDir,
      join(edge.dataDir, 'edge.db'),
      join(edge.dataDir, 'edge.db-wal'),
      join(edge.dataDir, 'credentials.json'),
      join(edge.dataDir, 'models'),
    ];
    for (const p of [...cloudFiles, ...siteFiles]) assert.ok(existsSync(p), p);
    await edge.stop();
    await cloud.stop();
    loosen(...cloudFiles, ...siteFiles);
    assert.equal(mode(join(edge.dataDir, 'credentials.json')), 0o644);
    await cloud.restart();
    await edge.restart();
    try {
      for (const p of [...cloudFiles, ...siteFiles]) {
        if (!existsSync(p)) continue;
        assert.equal(mode(p), statSync(p).isDirectory() ? 0o700 : 0o600, p);
      }
    } finally {
      await edge.stop();
      await cloud.stop();
    }
  });
});
