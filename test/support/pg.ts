import pg from 'pg';
import { randomBytes } from 'node:crypto';

/**
 * PostgreSQL for tests: EW_TEST_PG (default postgres://postgres@127.0.0.1:5432/test, the CI
 * server). Each caller gets its own schema, dropped on cleanup, so test files never collide.
 * `EW_TEST_PG=off` skips the PostgreSQL runs, with the reason printed.
 */
export const PG_URL = process.env.EW_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/test';

export async function pgAvailable(): Promise<string | undefined> {
  if (PG_URL === 'off') return 'EW_TEST_PG=off: no PostgreSQL server configured';
  const c = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query('select 1');
    return undefined;
  } catch (e) {
    if (process.env.CI) throw new Error(`PostgreSQL at ${PG_URL} is required in CI: ${(e as Error).message}`);
    return `PostgreSQL at ${PG_URL} unreachable: ${(e as Error).message}`;
  } finally {
    await c.end().catch(() => {});
  }
}

export async function freshSchema(): Promise<{ schema: string; drop: () => Promise<void> }> {
  const schema = `ew_test_${randomBytes(6).toString('hex')}`;
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  await c.query(`create schema ${schema}`);
  await c.end();
  return {
    schema,
    async drop() {
      const d = new pg.Client({ connectionString: PG_URL });
      await d.connect();
      await d.query(`drop schema if exists ${schema} cascade`);
      await d.end();
    },
  };
}
