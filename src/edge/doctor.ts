import Database from 'better-sqlite3';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describeStorageError, openEdgeDb } from './db.ts';
import { loadCredentials } from './enroll.ts';

/**
 * `edgeweave edge doctor`: checks a site's data directory the way the agent does at start
 * (credentials, edge.db present and not empty, PRAGMA quick_check, a write) and reports what it
 * holds; with `salvage`, copies every readable row of a damaged (or missing) edge.db into a fresh
 * one — the outbox and journal first of all, rows on damaged pages skipped and counted — and
 * keeps the damaged file beside it (`edge.db.damaged-<time>`).
 */
export interface DoctorCheck {
  name: string;
  ok: boolean;
  detail: string;
}
export interface DoctorReport {
  dataDir: string;
  ok: boolean;
  siteId?: string;
  checks: DoctorCheck[];
  counts?: { outbox: number; journal: number; deadLetters: number; desiredGeneration: number | null };
  salvaged?: { tables: Record<string, { copied: number; damaged: boolean }>; keptAs?: string };
}

/** Tables in the order they are salvaged: what cannot be got back elsewhere first. */
const TABLES = ['outbox', 'journal', 'journal_cursor', 'desired', 'kv', 'dead_letters', 'egress_audit', 'artifacts'];

export function doctor(dataDir: string, opts: { salvage?: boolean; now?: () => number } = {}): DoctorReport {
  const now = opts.now ?? Date.now;
  const checks: DoctorCheck[] = [];
  const report: DoctorReport = { dataDir, ok: false, checks };
  const file = join(dataDir, 'edge.db');
  try {
    const creds = loadCredentials(dataDir);
    report.siteId = creds?.siteId;
    checks.push({ name: 'credentials', ok: true, detail: creds ? `site ${creds.siteId}` : 'none (not enrolled yet)' });
  } catch (e) {
    checks.push({ name: 'credentials', ok: false, detail: (e as Error).message });
  }
  const size = existsSync(file) ? statSync(file).size : -1;
  const wal = existsSync(`${file}-wal`) ? statSync(`${file}-wal`).size : 0;
  const present = size > 0 || wal > 0;
  checks.push({
    name: 'edge.db present',
    ok: present || !report.siteId,
    detail: size < 0 ? 'missing' : `${size} bytes${wal ? ` (+${wal} in the WAL)` : ''}`,
  });
  let healthy = present;
  if (present) {
    let db: Database.Database | undefined;
    try {
      db = new Database(file, { fileMustExist: true });
      let problems: string[];
      try {
        problems = (db.pragma('quick_check(20)') as { quick_check: string }[]).map((r) => r.quick_check).filter((x) => x !== 'ok');
      } catch (e) {
        problems = [describeStorageError(e)]; // damaged past what quick_check can walk
      }
      checks.push({ name: 'quick_check', ok: problems.length === 0, detail: problems.length ? problems.slice(0, 5).join('; ') : 'ok' });
      healthy = problems.length === 0;
      if (healthy) {
        const n = (sql: string) => (db!.prepare(sql).get() as { n: number | null }).n;
        report.counts = {
          outbox: n('SELECT count(*) AS n FROM outbox') ?? 0,
          journal: tableExists(db, 'journal') ? (n('SELECT count(*) AS n FROM journal') ?? 0) : 0,
          deadLetters: n('SELECT count(*) AS n FROM dead_letters') ?? 0,
          desiredGeneration: n('SELECT max(generation) AS n FROM desired'),
        };
        db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(
          'doctor.lastRun',
          String(now()),
        );
        checks.push({ name: 'writable', ok: true, detail: 'a test write committed' });
      }
    } catch (e) {
      healthy = false;
      checks.push({ name: 'open', ok: false, detail: describeStorageError(e) });
    } finally {
      db?.close();
    }
  }
  report.ok = checks.every((c) => c.ok) && (healthy || !report.siteId);
  if (!opts.salvage || report.ok) return report;

  // Salvage: a fresh database beside the damaged one, every readable row copied into it.
  const work = join(dataDir, `.salvage-${now()}`);
  mkdirSync(work, { recursive: true });
  const fresh = openEdgeDb(work, { check: false });
  const salvaged: NonNullable<DoctorReport['salvaged']> = { tables: {} };
  if (present) {
    let src: Database.Database | undefined;
    try {
      src = new Database(file, { readonly: true, fileMustExist: true });
      for (const t of TABLES) salvaged.tables[t] = copyTable(src, fresh, t);
    } catch (e) {
      checks.push({ name: 'salvage', ok: false, detail: `edge.db could not be read at all: ${describeStorageError(e)}` });
    } finally {
      src?.close();
    }
  }
  fresh
    .prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value')
    .run('doctor.salvagedAt', String(now()));
  fresh.pragma('wal_checkpoint(TRUNCATE)');
  fresh.close();
  if (existsSync(file) || existsSync(`${file}-wal`)) {
    salvaged.keptAs = `${file}.damaged-${now()}`;
    for (const suffix of ['', '-wal', '-shm'])
      if (existsSync(`${file}${suffix}`)) renameSync(`${file}${suffix}`, `${salvaged.keptAs}${suffix}`);
  }
  renameSync(join(work, 'edge.db'), file);
  rmSync(work, { recursive: true, force: true });
  report.salvaged = salvaged;
  checks.push({
    name: 'salvage',
    ok: true,
    detail: `a new edge.db holds ${
      Object.entries(salvaged.tables)
        .map(([t, r]) => `${r.copied} ${t}${r.damaged ? ' (some rows unreadable)' : ''}`)
        .join(', ') || 'nothing (no readable database)'
    }${salvaged.keptAs ? `; the damaged file is kept as ${salvaged.keptAs}` : ''}`,
  });
  report.ok = true;
  return report;
}

function tableExists(db: Database.Database, t: string): boolean {
  return !!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(t);
}

/**
 * Copies a table's readable rows in rowid order. A damaged page stops a scan part-way: the scan
 * starts again past the last row read, skipping ahead in growing steps until rows come back.
 */
function copyTable(src: Database.Database, dst: Database.Database, table: string): { copied: number; damaged: boolean } {
  let damaged = false;
  let copied = 0;
  try {
    if (!tableExists(src, table)) return { copied, damaged };
  } catch {
    return { copied, damaged: true };
  }
  const cols = (dst.pragma(`table_info(${table})`) as { name: string }[]).map((c) => c.name);
  const srcCols = new Set((src.pragma(`table_info(${table})`) as { name: string }[]).map((c) => c.name));
  const use = cols.filter((c) => srcCols.has(c));
  const ins = dst.prepare(`INSERT OR IGNORE INTO ${table} (${use.join(', ')}) VALUES (${use.map(() => '?').join(', ')})`);
  let last = Number.MIN_SAFE_INTEGER;
  let step = 1;
  let batch: Record<string, unknown>[] = [];
  const flush = () => {
    dst.transaction(() => {
      for (const row of batch) ins.run(...use.map((c) => row[c]));
    })();
    copied += batch.length;
    batch = [];
  };
  for (let failures = 0; failures < 64; ) {
    try {
      const sel = src.prepare(`SELECT rowid AS _rid, ${use.join(', ')} FROM ${table} WHERE rowid > ? ORDER BY rowid`);
      for (const row of sel.iterate(last) as Iterable<Record<string, unknown>>) {
        batch.push(row);
        last = row._rid as number;
        step = 1;
        if (batch.length >= 5000) flush();
      }
      break;
    } catch {
      damaged = true;
      failures++;
      last = (last === Number.MIN_SAFE_INTEGER ? 0 : last) + step;
      step *= 4;
    }
  }
  flush();
  return { copied, damaged };
}
