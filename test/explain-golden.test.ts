import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { planQuery } from '../src/stream/planner.ts';

/**
 * EXPLAIN golden files: each test/golden/explain/NAME.sql starts with a comment line
 * `-- stream: NAME [schema-json] [timestamp-field]`; its plan must equal NAME.txt.
 * A missing .txt fails (a new .sql must come with its expected plan, reviewed); after an intended
 * change, `UPDATE_GOLDEN=1 node scripts/test.mjs explain-golden` writes them (EW_UPDATE_GOLDEN=1 too).
 */
const dir = fileURLToPath(new URL('./golden/explain/', import.meta.url));

describe('EXPLAIN golden files', () => {
  for (const f of readdirSync(dir)
    .filter((x) => x.endsWith('.sql'))
    .sort()) {
    it(f, () => {
      const text = readFileSync(join(dir, f), 'utf8');
      const m = /^-- stream: (\S+)(?: (\{.*\}))?(?: (\S+))?\n/.exec(text);
      assert.ok(m, `${f} starts with "-- stream: name [schema] [timestamp]"`);
      const plan = planQuery(text, { name: m[1]!, schema: m[2] ? JSON.parse(m[2]) : undefined, timestamp: m[3] });
      const golden = join(dir, f.replace(/\.sql$/, '.txt'));
      const got = `${plan.explain()}\n`;
      if (process.env.UPDATE_GOLDEN || process.env.EW_UPDATE_GOLDEN) writeFileSync(golden, got);
      assert.ok(
        existsSync(golden),
        `${golden} is missing: write it with UPDATE_GOLDEN=1 node scripts/test.mjs explain-golden, and review it`,
      );
      assert.equal(got, readFileSync(golden, 'utf8'));
    });
  }
});
