import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { EwError } from '../contracts/errors.ts';

/**
 * State directories and databases hold secrets' hashes, credentials and device data: only the
 * process's own user may read them. These set the modes every start, whatever existed before
 * (a directory made by hand with 0755, a database copied in with 0644), not only on creation.
 */
export function privateDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  } catch (e) {
    throw new EwError(
      'DATA_DIR_INVALID',
      `cannot make ${dir} private to this user (mode 0700): ${(e as Error).message}; the process's user must own it (chown it, or choose another --data-dir)`,
      { cause: e },
    );
  }
}

/** Mode 0600 on each file that exists (a database, its -wal and -shm files, credentials). */
export function privateFiles(...files: string[]): void {
  for (const f of files) {
    if (!existsSync(f)) continue;
    try {
      chmodSync(f, 0o600);
    } catch (e) {
      throw new EwError(
        'DATA_DIR_INVALID',
        `cannot make ${f} private to this user (mode 0600): ${(e as Error).message}; the process's user must own it`,
        { cause: e },
      );
    }
  }
}

/** A SQLite database file and the WAL files next to it. */
export const sqliteFiles = (file: string): string[] => [file, `${file}-wal`, `${file}-shm`, `${file}-journal`];
