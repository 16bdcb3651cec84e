import { after } from 'node:test';
import { runStoreConformance } from './store.conformance.ts';
import { openPostgresStore, openSqliteStore } from '../src/cloud/store/open.ts';
import { PG_URL, freshSchema, pgAvailable } from './support/pg.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'ew-store-'));
after(() => rmSync(dir, { recursive: true, force: true }));
runStoreConformance('sqlite (file)', async () => openSqliteStore(join(dir, 'cloud.db')));

const skip = await pgAvailable();
const drops: Array<() => Promise<void>> = [];
after(async () => {
  for (const d of drops) await d();
});
runStoreConformance(
  'postgres',
  async () => {
    const s = await freshSchema();
    drops.push(s.drop);
    return openPostgresStore(PG_URL, { schema: s.schema });
  },
  skip,
);
