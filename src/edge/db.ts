import Database from 'better-sqlite3';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { EwError } from '../contracts/errors.ts';
import { privateDir, privateFiles, sqliteFiles } from '../lib/private-fs.ts';

/**
 * The site's own SQLite (`{dataDir}/edge.db`): desired state, outbox, small settings. This is
 * what lets a site restarted while offline come back to its last desired state and keep every
 * unsent result. WAL with synchronous=FULL: a committed outbox row survives a power cut, not
 * just a process crash, and the outbox is the one place a result exists before the cloud has it.
 */
export type EdgeDb = Database.Database;

const MIGRATIONS: string[] = [
  `CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
   CREATE TABLE desired (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL, body TEXT NOT NULL, received_at INTEGER NOT NULL);
   CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL, created_at INTEGER NOT NULL);`,
  // Streaming rules: records that did not fit their stream, and what left the site (per minute).
  `CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, app TEXT NOT NULL, stream TEXT NOT NULL, reason TEXT NOT NULL, payload TEXT NOT NULL);
   CREATE TABLE egress_audit (minute INTEGER NOT NULL, app TEXT NOT NULL, rule TEXT NOT NULL, stream TEXT NOT NULL, destination TEXT NOT NULL,
     records INTEGER NOT NULL, bytes INTEGER NOT NULL, reported INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (minute, app, rule, stream, destination));`,
  // The model cache's index (files live in {dataDir}/models, named by sha256).
  `CREATE TABLE artifacts (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, last_used INTEGER NOT NULL);`,
  // A dead letter's reason is what the cloud sees (no content); the detail may quote content and stays here.
  `ALTER TABLE dead_letters ADD COLUMN detail TEXT;`,
  // The intake journal (device records acknowledged but not yet turned into every rule's
  // results), each rule's cursor into it with its window checkpoint, and the model cache's
  // verified marker (size, mtime, inode at the last full sha256 check).
  `CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL, props TEXT, at INTEGER NOT NULL);
   CREATE TABLE journal_cursor (rule TEXT PRIMARY KEY, seq INTEGER NOT NULL, state BLOB, at INTEGER NOT NULL);
   ALTER TABLE artifacts ADD COLUMN verified TEXT;`,
];

const doctorHint = (dataDir: string) =>
  `run \`edgeweave edge doctor --data-dir ${dataDir}\` to check it and salvage what can be read (--salvage)`;

/**
 * Opens the site's database, refusing loudly (DATA_DIR_INVALID, exit 2) rather than starting as
 * a brand-new site over a lost backlog: an empty or missing edge.db beside existing credentials,
 * a file that is not a database or fails `PRAGMA quick_check`, a disk that is read-only or full.
 * A supervisor restarting the agent gets the same clear line every time, not a crash loop of
 * stack traces.
 */
export function openEdgeDb(dataDir: string, opts: { check?: boolean } = {}): EdgeDb {
  const check = opts.check ?? true;
  privateDir(dataDir);
  const file = join(dataDir, 'edge.db');
  if (check && existsSync(join(dataDir, 'credentials.json'))) {
    const size = existsSync(file) ? statSync(file).size : -1;
    const wal = existsSync(`${file}-wal`) ? statSync(`${file}-wal`).size : 0;
    if (size <= 0 && wal === 0) {
      throw new EwError(
        'DATA_DIR_INVALID',
        `${file} is ${size < 0 ? 'missing' : 'empty (0 bytes)'} but ${dataDir} holds this site's credentials: its outbox, journal and desired state are gone. The agent will not start as a new site over a lost backlog. Restore edge.db from a backup; or, to go on with an empty backlog, ${doctorHint(dataDir)}`,
        { path: file },
      );
    }
  }
  try {
    privateFiles(...sqliteFiles(file));
  } catch (e) {
    // A read-only file system (or an immutable file) refuses the chmod first: say what to do.
    throw new EwError(
      'DATA_DIR_INVALID',
      `${(e as Error).message}; if the file or its disk is read-only, make it writable; ${doctorHint(dataDir)}`,
      { cause: e, path: file },
    );
  }
  let db: EdgeDb;
  try {
    db = new Database(file);
  } catch (e) {
    throw new EwError(
      'DATA_DIR_INVALID',
      `cannot open the site database ${file}: ${(e as Error).message}; check the directory's permissions and free space`,
      { cause: e, path: file },
    );
  }
  try {
    if (check) {
      // A damaged page is found now, not by the first query that happens to touch it.
      const rows = db.pragma('quick_check(20)', { simple: false }) as { quick_check: string }[];
      const problems = rows.map((r) => r.quick_check).filter((x) => x !== 'ok');
      if (problems.length)
        throw new EwError(
          'DATA_DIR_INVALID',
          `${file} is damaged (PRAGMA quick_check: ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? '; …' : ''}); ${doctorHint(dataDir)}`,
          { path: file },
        );
    }
    db.pragma('journal_mode = WAL');
    // The WAL files are created with the database's mode: 0600 from here on.
    privateFiles(...sqliteFiles(file));
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 5000');
    const version = db.pragma('user_version', { simple: true }) as number;
    for (let v = version; v < MIGRATIONS.length; v++) {
      db.transaction(() => {
        db.exec(MIGRATIONS[v]!);
        db.pragma(`user_version = ${v + 1}`);
      })();
    }
    // A read-only or full disk is found at start, where it can be fixed, not at the first
    // device record (whose acknowledgement it would then withhold).
    if (check)
      db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(
        'agent.lastOpen',
        String(Date.now()),
      );
  } catch (e) {
    db.close();
    if (e instanceof EwError) throw e;
    throw new EwError('DATA_DIR_INVALID', `${file}: ${describeStorageError(e)}; ${doctorHint(dataDir)}`, { cause: e, path: file });
  }
  return db;
}

/** What a SQLite error means for the operator. */
export function describeStorageError(e: unknown): string {
  const code = String((e as { code?: string }).code ?? '');
  const msg = (e as Error).message;
  if (code === 'SQLITE_NOTADB') return `not a SQLite database (${msg})`;
  if (code.startsWith('SQLITE_CORRUPT')) return `damaged (${msg})`;
  if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_PERM')
    return `cannot be written: the file or its disk is read-only (${msg}); make it writable`;
  if (code === 'SQLITE_FULL') return `the disk is full (${msg}); free space on it`;
  if (code.startsWith('SQLITE_IOERR')) return `a disk I/O error (${msg}); check the disk (full, failing, or a file-size limit)`;
  return msg;
}

export function kvGet(db: EdgeDb, key: string): string | undefined {
  return (db.prepare('SELECT value FROM kv WHERE key = ?').get(key) as { value: string } | undefined)?.value;
}

export function kvSet(db: EdgeDb, key: string, value: string): void {
  db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
}
