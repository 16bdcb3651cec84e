import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { parquetReadObjects } from 'hyparquet';
import { startTestCloud, tempDir, removeDirs, type TestCloud } from './support/harness.ts';
import { spawnCli } from './support/proc.ts';
import { PG_URL, freshSchema, pgAvailable } from './support/pg.ts';
import { addSite as addSiteAt } from './support/store.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { ResultsMaintenance } from '../src/cloud/results/maintenance.ts';
import { DAY_MS, dayStart, partitionName } from '../src/cloud/results/retention.ts';
import type { Store, UplinkRecord } from '../src/cloud/store/store.ts';
import { openPostgresStore } from '../src/cloud/store/open.ts';
import { migrationNames, type SqlStore } from '../src/cloud/store/sql-store.ts';

/**
 * Results at volume (issue 17.4), end to end on both stores: a time range exported as JSON lines
 * and as Parquet (read back with hyparquet, a third-party reader), retention per tenant and stream
 * applied by the maintenance pass, PostgreSQL's daily partitions (stray days split out of the
 * default partition, old days dropped whole), and the bad inputs of the API.
 */
const NOW = Date.now();
const addSite = (store: Store, tenantId: string, id: string) => addSiteAt(store, tenantId, id, NOW);

const rec = (siteId: string, stream: string, daysAgo: number, n: number): UplinkRecord => ({
  siteId,
  msgId: `${stream}-${daysAgo}-${n}`,
  stream,
  app: 'app',
  rule: 'r1',
  at: NOW - daysAgo * DAY_MS - n,
  receivedAt: NOW,
  data: { n, daysAgo, text: `v${n}` },
});

function suite(kind: 'sqlite' | 'postgres', skip?: string): void {
  describe(`results at volume on ${kind}`, { skip }, () => {
    let cloud: TestCloud;
    let store: Store;
    let tenant: string;
    let other: string;
    let dropSchema: (() => Promise<void>) | undefined;
    let pgSchema = '';
    const cliDir = tempDir('results-cli');

    before(async () => {
      let db: string | undefined;
      if (kind === 'postgres') {
        const s = await freshSchema();
        dropSchema = s.drop;
        pgSchema = s.schema;
        db = `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}options=${encodeURIComponent(`-c search_path=${s.schema}`)}`;
      }
      cloud = await startTestCloud({ db });
      store = cloud.handle.store;
      tenant = (await store.listTenants())[0]!.id;
      other = 'ten-other';
      await store.createTenant({ id: other, name: 'other', createdAt: NOW });
      await addSite(store, tenant, 'site-a');
      await addSite(store, tenant, 'site-b');
      await addSite(store, other, 'site-x');
      const recs: UplinkRecord[] = [];
      for (const d of [0, 3, 10, 40])
        for (let n = 0; n < 5; n++) {
          recs.push(rec('site-a', 'alerts', d, n), rec('site-b', 'readings', d, n), rec('site-x', 'alerts', d, n));
        }
      assert.equal(await store.insertUplink(recs), recs.length);
      assert.equal(await store.insertUplink(recs.slice(0, 10)), 0, 'a retried batch is stored once');
    });
    after(async () => {
      await cloud?.stop();
      await dropSchema?.();
      removeDirs(cloud?.dataDir ?? '', cliDir);
    });

    async function exportLines(q: string, key?: string): Promise<{ status: number; lines: any[]; type: string | null }> {
      const res = await fetch(new URL(`/api/v1/results/export?${q}`, cloud.url), {
        headers: { authorization: `Bearer ${key ?? cloud.adminKey}` },
      });
      const text = await res.text();
      return {
        status: res.status,
        type: res.headers.get('content-type'),
        lines: res.ok
          ? text
              .split('\n')
              .filter(Boolean)
              .map((l) => JSON.parse(l))
          : [JSON.parse(text)],
      };
    }

    it("exports one stream in a site-time range as JSON lines, oldest site time first, only the tenant's own", async () => {
      const since = NOW - 11 * DAY_MS;
      const until = NOW - 2 * DAY_MS;
      const r = await exportLines(`stream=alerts&since=${since}&until=${until}`);
      assert.equal(r.status, 200);
      assert.match(r.type ?? '', /application\/x-ndjson/);
      assert.deepEqual(r.lines.map((x) => x.id).sort(), [...[3, 10].flatMap((d) => [0, 1, 2, 3, 4].map((n) => `alerts-${d}-${n}`))].sort());
      assert.ok(
        r.lines.every((x) => x.siteId === 'site-a' && x.at >= since && x.at < until),
        'site-x belongs to another tenant',
      );
      const keys = r.lines.map((x) => [x.at, x.seq] as const);
      assert.deepEqual(
        keys,
        [...keys].sort((a, b) => a[0] - b[0] || a[1] - b[1]),
        'oldest site time first, then seq',
      );
      assert.ok(r.lines[0].seq > r.lines[r.lines.length - 1].seq, 'stored newest-first here, exported oldest-first by site time');
      assert.deepEqual(r.lines[0].data, { n: r.lines[0].data.n, daysAgo: r.lines[0].data.daysAgo, text: `v${r.lines[0].data.n}` });
    });

    it('writes Parquet that a third-party reader reads back row for row', async () => {
      const out = join(cliDir, 'alerts.parquet');
      const p = spawnCli(
        ['results', 'export', 'alerts', '--since', new Date(NOW - 50 * DAY_MS).toISOString(), '--format', 'parquet', '--out', out],
        { EW_CLOUD: cloud.url, EW_API_KEY: cloud.adminKey, EDGEWEAVE_CONFIG: join(cliDir, 'none.json') },
      );
      assert.equal(await p.exited, 0, p.stderr());
      assert.equal(existsSync(`${out}.partial`), false);
      const buf = readFileSync(out);
      const rows = await parquetReadObjects({ file: buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) });
      assert.equal(rows.length, 20);
      const json = await exportLines(`stream=alerts&since=${NOW - 50 * DAY_MS}`);
      for (const [i, row] of rows.entries()) {
        const j = json.lines[i];
        assert.equal(Number(row.seq), j.seq);
        assert.equal(row.site_id, j.siteId);
        assert.equal(row.id, j.id);
        assert.equal(row.app, 'app');
        assert.equal(new Date(row.at as Date).getTime(), j.at);
        const data = typeof row.data === 'string' ? JSON.parse(row.data) : row.data;
        assert.deepEqual(data, j.data);
      }
    });

    it('refuses bad export and retention input with stable codes, and anonymous callers', async () => {
      const a = await exportLines(`stream=alerts&since=${NOW}&until=${NOW - 1}`);
      assert.equal(a.status, 400);
      assert.equal(a.lines[0].code, 'VALIDATION_FAILED');
      assert.equal(a.lines[0].path, 'until');
      assert.equal((await exportLines('site=site-a')).status, 400, 'the stream is required');
      assert.equal((await exportLines('stream=alerts', 'ewk_not-a-key-at-all-0000000000000000')).status, 401);
      for (const [stream, body] of [
        ['alerts', { days: 0 }],
        ['alerts', { days: 36_501 }],
        ['alerts', { days: 1.5 }],
        ['bad name', { days: 3 }],
        ['alerts', {}],
      ] as const) {
        const r = await cloud.api('PUT', `/api/v1/retention/${encodeURIComponent(stream)}`, body);
        assert.equal(r.status, 400, `${stream} ${JSON.stringify(body)}`);
        assert.equal(r.body.code, 'VALIDATION_FAILED');
      }
      const gone = await cloud.api('DELETE', '/api/v1/retention/never_set');
      assert.equal(gone.status, 404);
      assert.deepEqual((await cloud.api('GET', '/api/v1/retention')).body, { policies: [], cloudDefaultDays: null });
    });

    it('applies retention per stream, per tenant and by the cloud default, never touching another tenant', async () => {
      assert.equal((await cloud.api('PUT', '/api/v1/retention/readings', { days: 2 })).status, 200);
      assert.equal((await cloud.api('PUT', '/api/v1/retention/*', { days: 20 })).status, 200);
      const listed = (await cloud.api('GET', '/api/v1/retention')).body;
      assert.deepEqual(
        listed.policies.map((p: any) => [p.stream, p.days]),
        [
          ['*', 20],
          ['readings', 2],
        ],
      );
      const clock = new ManualClock(NOW);
      const m = new ResultsMaintenance({ store, clock, log: silentLogger(), holder: cloud.handle.maintenance.holder });
      const report = await m.runOnce();
      // tenant: readings older than 2 days (3, 10, 40 → 15), alerts older than 20 days (40 → 5).
      assert.equal(report?.deleted, 20);
      assert.equal(report?.dropped, 0, 'no cloud default: days are deleted, never dropped whole');
      const left = await store.queryUplink(tenant, { limit: 1000 });
      assert.deepEqual(
        left
          .filter((x) => x.stream === 'readings')
          .map((x) => Math.round((NOW - x.at) / DAY_MS))
          .sort(),
        [0, 0, 0, 0, 0],
      );
      assert.deepEqual(
        [...new Set(left.filter((x) => x.stream === 'alerts').map((x) => Math.round((NOW - x.at) / DAY_MS)))].sort((a, b) => a - b),
        [0, 3, 10],
      );
      assert.equal((await store.queryUplink(other, { limit: 1000 })).length, 20, 'the other tenant keeps all of its results');

      // A cloud default now covers the other tenant too, and whole days older than every policy go.
      const m2 = new ResultsMaintenance({ store, clock, log: silentLogger(), holder: cloud.handle.maintenance.holder, defaultDays: 5 });
      const r2 = await m2.runOnce();
      assert.equal(
        (await store.queryUplink(other, { limit: 1000 })).length,
        10,
        'the other tenant: 10 and 40 days old are past the cloud default',
      );
      assert.equal((await store.queryUplink(tenant, { limit: 1000 })).length, 20, 'its own `*` (20 days) wins over the cloud default');
      if (kind === 'postgres') assert.ok((r2?.dropped ?? 0) >= 1, 'the 40-day-old partition is dropped whole');
      else assert.equal(r2?.dropped, 0);
    });

    // PostgreSQL only (SQLite keeps one table): registered only in the PostgreSQL suite.
    (kind === 'postgres' ? it : () => {})(
      'postgres: results live in daily partitions; a stray old day leaves the default partition and dedupe still holds',
      async () => {
        const c = new pg.Client({ connectionString: PG_URL });
        await c.connect();
        try {
          const q = async (text: string) => (await c.query(text)).rows;
          const stray = rec('site-x', 'late', 200, 1); // the other tenant: no policy of its own, no cloud default here
          assert.equal(await store.insertUplink([stray]), 1);
          const inDefault = async () =>
            Number((await q(`SELECT count(*) AS n FROM ${pgSchema}.uplink_default WHERE msg_id = '${stray.msgId}'`))[0].n);
          assert.equal(await inDefault(), 1, 'a day without a partition lands in the default');
          const m = new ResultsMaintenance({
            store,
            clock: new ManualClock(NOW),
            log: silentLogger(),
            holder: cloud.handle.maintenance.holder,
          });
          // Readers running through the move never miss the row (a query planned before the new
          // partition was attached but run after would, without the lock on the parent).
          const expected = await store.countUplink('site-x');
          let moving = true;
          const seen: number[] = [];
          const reader = async () => {
            while (moving) seen.push(await store.countUplink('site-x'));
          };
          const readers = [reader(), reader()];
          const r = await m.runOnce().finally(() => {
            moving = false;
          });
          await Promise.all(readers);
          assert.ok(seen.length > 0);
          assert.deepEqual(
            seen.filter((n) => n !== expected),
            [],
            `every one of ${seen.length} reads during the move counts ${expected}`,
          );
          assert.ok((r?.created ?? 0) >= 1);
          assert.equal(await inDefault(), 0);
          const part = partitionName(dayStart(stray.at));
          assert.equal(Number((await q(`SELECT count(*) AS n FROM ${pgSchema}.${part}`))[0].n), 1, `the row moved to ${part}`);
          assert.equal(await store.insertUplink([stray]), 0, 'still stored once after the move');
          const today = partitionName(dayStart(NOW));
          assert.equal(
            (
              await q(
                `SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '${pgSchema}' AND c.relname = '${today}'`,
              )
            ).length,
            1,
          );
          const plan = (await q(`EXPLAIN SELECT * FROM ${pgSchema}.uplink WHERE at >= ${NOW - 3_600_000} AND at < ${NOW}`))
            .map((x) => x['QUERY PLAN'])
            .join('\n');
          assert.ok(!plan.includes(part), `a time range reads only its days:\n${plan}`);
        } finally {
          await c.end();
        }
      },
    );
  });
}

describe('the partitioning migration on PostgreSQL', { skip: await pgAvailable() }, () => {
  it('moves every stored result into daily partitions, keeps seq and dedupe', async () => {
    const s = await freshSchema();
    const store = openPostgresStore(PG_URL, { schema: s.schema }) as SqlStore;
    try {
      const names = migrationNames('postgres');
      await store.migrate(names[names.indexOf('0008_results_at_volume') - 1]);
      await store.createTenant({ id: 'ten', name: 't', createdAt: 1 });
      await addSite(store, 'ten', 'site-m');
      const before = [0, 1, 5].flatMap((d) => [0, 1].map((n) => rec('site-m', 'm', d, n)));
      assert.equal(await store.insertUplink(before), 6);
      const old = await store.queryUplink('ten', { limit: 100 });
      await store.migrate();
      const after = await store.queryUplink('ten', { limit: 100 });
      assert.deepEqual(after, old, 'every row, with its seq, survives the move');
      assert.equal(await store.insertUplink(before), 0, 'dedupe holds across the new partitions');
      assert.equal(await store.insertUplink([rec('site-m', 'm', 0, 9)]), 1);
      const newest = await store.queryUplink('ten', { limit: 100 });
      assert.ok(newest[newest.length - 1]!.seq > Math.max(...old.map((x) => x.seq)), 'seq continues after the copied rows');
    } finally {
      await store.close();
      await s.drop();
    }
  });
});

suite('sqlite');
suite('postgres', await pgAvailable());
