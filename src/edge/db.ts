import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { EwError } from '../contracts/errors.ts';

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
  // The intake journal (device records acknowledged but not yet turned into every rule's
  // results), each rule's cursor into it with its window checkpoint, and the model cache's
  // verified marker (size, mtime, inode at the last full sha256 check).
  `CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL, at INTEGER NOT NULL);
   CREATE TABLE journal_cursor (rule TEXT PRIMARY KEY, seq INTEGER NOT NULL, state BLOB, at INTEGER NOT NULL);
   ALTER TABLE artifacts ADD COLUMN verified TEXT;`,
];

export function openEdgeDb(dataDir: string): EdgeDb {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  let db: EdgeDb;
  try {
    db = new Database(join(dataDir, 'edge.db'));
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('busy_timeout = 5000');
    const version = db.pragma('user_version', { simple: true }) as number;
    for (let v = version; v < MIGRATIONS.length; v++) {
      db.transaction(() => {
        db.exec(MIGRATIONS[v]!);
        db.pragma(`user_version = ${v + 1}`);
      })();
    }
  } catch (e) {
    throw new EwError('DATA_DIR_INVALID', `cannot open the site database in ${dataDir}: ${(e as Error).message}; check permissions, or move a corrupt edge.db aside`, { cause: e });
  }
  return db;
}

export function kvGet(db: EdgeDb, key: string): string | undefined {
  return (db.prepare('SELECT value FROM kv WHERE key = ?').get(key) as { value: string } | undefined)?.value;
}

export function kvSet(db: EdgeDb, key: string, value: string): void {
  db.prepare('INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
}
