import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import Database from 'better-sqlite3';
import pg from 'pg';
import { SqlStore } from './sql-store.ts';
import type { Store } from './store.ts';
import { EwError } from '../../contracts/errors.ts';
import { privateFiles, sqliteFiles } from '../../lib/private-fs.ts';

/**
 * SQLite file under the data dir: WAL so API reads never wait behind heartbeat writes, and
 * synchronous=FULL: an uplink batch is acknowledged to the site (which then deletes it from its
 * outbox) only after a commit that survives a power cut, not just a process crash. Uplink and
 * status writes are group-committed (src/cloud/fleet.ts), so this costs one fsync per batch —
 * measured by `npm run bench:durability`.
 */
export function openSqliteStore(file: string): Store {
  if (file !== ':memory:') {
    mkdirSync(join(file, '..'), { recursive: true, mode: 0o700 });
    privateFiles(...sqliteFiles(file));
  }
  let db: Database.Database;
  try {
    db = new Database(file);
  } catch (e) {
    throw new EwError('DATA_DIR_INVALID', `cannot open SQLite database ${file}: ${(e as Error).message}`, { cause: e });
  }
  db.pragma('journal_mode = WAL');
  // Created 0644 by SQLite under the usual umask; 0600 also makes the WAL files 0600.
  if (file !== ':memory:') privateFiles(...sqliteFiles(file));
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  return new SqlStore('sqlite', new Kysely({ dialect: new SqliteDialect({ database: db }) }));
}

/**
 * PostgreSQL through a pg pool. BIGINT columns come back as numbers: every one of ours holds
 * milliseconds or counters far below 2^53. `schema` confines the store to one schema (tests).
 */
export function openPostgresStore(url: string, opts: { schema?: string; max?: number } = {}): Store {
  const int8 = 20;
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.max ?? 10,
    options: opts.schema ? `-c search_path=${opts.schema}` : undefined,
    types: {
      getTypeParser: ((oid: number, format?: string) =>
        oid === int8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
    },
  });
  // A broken idle connection must not crash the process; the next query reports it.
  pool.on('error', () => {});
  // Nor a connection that breaks while checked out (the database went away mid-query): pg emits
  // 'error' on the client, which nobody else listens to, and that crashed the cloud (test/
  // database-loss.test.ts). The query in flight fails on its own, as STORE_UNAVAILABLE.
  pool.on('connect', (client) => {
    client.on('error', () => {});
  });
  return new SqlStore('postgres', new Kysely({ dialect: new PostgresDialect({ pool }) }));
}

/** `--db` accepts `sqlite:` (default, under the data dir), a path to a .db file, or a postgres:// URL. */
export function openStore(db: string | undefined, dataDir: string): Store {
  if (db === undefined || db === '' || db === 'sqlite') return openSqliteStore(join(dataDir, 'cloud.db'));
  if (/^postgres(ql)?:\/\//.test(db)) return openPostgresStore(db);
  if (db.startsWith('sqlite:')) return openSqliteStore(db.slice('sqlite:'.length));
  throw new EwError('CONFIG_INVALID', `--db "${db.replace(/\/\/[^@]*@/, '//***@')}" is neither sqlite:<file> nor a postgres:// URL`, {
    path: 'db',
  });
}
