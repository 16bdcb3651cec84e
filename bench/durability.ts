/**
 * bench:durability — what acknowledge-after-durability costs on this machine's disk.
 *
 * The cloud's uplink path commits batches of uplink rows (group commit) before it acknowledges
 * them; the site's journal commits batches of device records before their PUBACKs. Both run
 * SQLite in WAL mode. This measures batched commits of 1 KB rows with synchronous=NORMAL (durable
 * across a process crash, not a power cut: the last commits can be lost) against FULL (an fsync
 * per commit: durable across a power cut), per batch size, in the same run.
 * BENCH_SECONDS (default 2) per case.
 */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 2);
const fmt = (x: number) => Math.round(x).toLocaleString('en-US');

function run(sync: 'NORMAL' | 'FULL', batch: number): { rows: number; commits: number } {
  const dir = mkdtempSync(join(tmpdir(), 'ew-bench-dur-'));
  const db = new Database(join(dir, 'b.db'));
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${sync}`);
  db.exec('CREATE TABLE up (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, body BLOB NOT NULL)');
  const ins = db.prepare('INSERT INTO up (id, body) VALUES (?, ?)');
  const body = Buffer.alloc(1024, 7);
  const commit = db.transaction((n: number, base: number) => { for (let i = 0; i < n; i++) ins.run(`m${base + i}`, body); });
  const end = performance.now() + SECONDS * 1000;
  let commits = 0;
  while (performance.now() < end) commit(batch, commits++ * batch);
  db.close();
  rmSync(dir, { recursive: true, force: true });
  return { rows: (commits * batch) / SECONDS, commits: commits / SECONDS };
}

console.log(`bench:durability on ${process.version}: batched SQLite commits of 1 KB rows, WAL, ${SECONDS} s per case`);
for (const batch of [1, 16, 256]) {
  const n = run('NORMAL', batch);
  const f = run('FULL', batch);
  console.log(`  batch ${String(batch).padStart(3)}: NORMAL ${fmt(n.rows).padStart(9)} rows/s (${fmt(n.commits)} commits/s) | FULL ${fmt(f.rows).padStart(9)} rows/s (${fmt(f.commits)} commits/s) | FULL/NORMAL ${((f.rows / n.rows) * 100).toFixed(0)} %`);
}
