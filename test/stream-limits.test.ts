import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Registry } from 'prom-client';
import { parseManifest } from '../src/contracts/manifest.ts';
import { isEwError, type EwError } from '../src/contracts/errors.ts';
import { checkApp } from '../src/stream/app.ts';
import { openEdgeDb, type EdgeDb } from '../src/edge/db.ts';
import { DeadLetters, StreamRouter } from '../src/edge/record-router.ts';
import { RuleHost } from '../src/edge/rules.ts';
import { EgressAudit, memorySinks } from '../src/edge/sinks.ts';
import { Outbox } from '../src/edge/outbox.ts';
import { ManualClock } from '../src/lib/clock.ts';
import { silentLogger } from '../src/lib/logger.ts';
import { runSql } from '../src/cli/sql.ts';

/**
 * Issue 8, points 3 and 4, as attacks on a site's rule host (real SQLite dead letters, the real
 * router and rule host): a window spec that would exhaust the site is refused at push with its
 * position; a rule whose state grows with its input is stopped at its budget while the site and
 * its other rules run on (heap measured after a forced GC); one record from the far future goes
 * to the dead letters instead of making every honest record late.
 */
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heapMb = () => {
  gc();
  gc();
  return process.memoryUsage().heapUsed / 1e6;
};

const NOW = Date.UTC(2026, 10, 30, 4, 0, 0);

function manifest(rules: { name: string; sql: string; options?: Record<string, unknown> }[]) {
  return parseManifest({
    apiVersion: 'edgeweave/v1',
    kind: 'App',
    metadata: { name: 'attack', version: '1.0.0' },
    spec: {
      streams: [{ name: 's', topic: 'dev/+/s', timestamp: 'ts', schema: { k: 'string', v: 'float', ts: 'timestamp' } }],
      rules: rules.map((r) => ({ ...r, sinks: [{ memory: `limits_${r.name}` }] })),
      policy: {},
    },
  });
}

describe('rule state is bounded at plan time and at run time (issue 8.3)', () => {
  it('refuses HOPPINGWINDOW(ms, 2000001, 2) at push, naming the rule, the limit and sql:line:col', () => {
    assert.throws(
      () => checkApp(manifest([{ name: 'greedy', sql: 'SELECT count(*) AS n\nFROM s GROUP BY HOPPINGWINDOW(ms, 2000001, 2)' }])),
      (e: unknown) => {
        assert.ok(isEwError(e));
        assert.equal((e as EwError).code, 'SQL_LIMIT');
        assert.equal((e as EwError).path, 'spec.rules[0].sql');
        assert.deepEqual((e as EwError).pos, { line: 2, col: 44 });
        assert.equal((e as EwError).where(), 'spec.rules[0].sql:2:44');
        assert.match((e as Error).message, /rule greedy.*a record falls in 1000001 windows/);
        return true;
      },
    );
  });

  it('refuses a lateness that would keep too many windows open', () => {
    assert.throws(
      () =>
        checkApp(
          manifest([
            { name: 'late', sql: 'SELECT count(*) AS n FROM s GROUP BY TUMBLINGWINDOW(ms, 10)', options: { lateness: 3_600_000 } },
          ]),
        ),
      /SQL_LIMIT|keeps up to 360002 windows open/,
    );
  });

  it('edgeweave sql refuses HOPPINGWINDOW(ms, 20000001, 2) instead of running out of memory', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ew-limits-'));
    const file = join(dir, 'in.jsonl');
    writeFileSync(file, '{"ts": 1, "v": 1}\n');
    const before = heapMb();
    await assert.rejects(
      runSql('SELECT count(*) AS n FROM s GROUP BY HOPPINGWINDOW(ms, 20000001, 2)', { input: file }),
      (e: unknown) => isEwError(e) && e.code === 'SQL_LIMIT',
    );
    assert.ok(heapMb() - before < 20, 'no window state was built');
    rmSync(dir, { recursive: true, force: true });
  });

  describe('at run time, on a site', () => {
    let dir: string;
    let db: EdgeDb;
    let dead: DeadLetters;
    let router: StreamRouter;
    let host: RuleHost;
    const clock = new ManualClock(NOW);
    before(() => {
      dir = mkdtempSync(join(tmpdir(), 'ew-limits-'));
      db = openEdgeDb(dir);
      dead = new DeadLetters(db, clock);
      router = new StreamRouter(dead);
      const outbox = new Outbox(db, clock, { maxMessages: 1000, overflow: 'drop-oldest' });
      const audit = new EgressAudit(db, clock, new Registry());
      host = new RuleHost({
        router,
        dead,
        clock,
        log: silentLogger(),
        sinkContext: (app, rule, allowedFields) => ({
          siteId: 'limits',
          app,
          rule,
          outbox,
          audit,
          log: silentLogger(),
          clock,
          allowedFields,
          siteLog: silentLogger(),
          publishLocal: () => {},
        }),
      });
    });
    after(() => {
      host.close();
      db.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('stops a rule over its state budget and keeps the site and the other rule running; the heap stays bounded', async () => {
      await host.start({
        name: 'attack',
        version: '1.0.0',
        deploymentId: 'd1',
        manifest: manifest([
          // One group per key for an hour, each keeping every value: state grows with the input.
          {
            name: 'greedy',
            sql: 'SELECT k, count(*) AS n, collect(v) AS vs FROM s GROUP BY k, TUMBLINGWINDOW(hh, 1)',
            options: { maxState: 200_000 },
          },
          { name: 'steady', sql: 'SELECT k, v FROM s WHERE v > 1000000' },
        ]),
      } as never);
      const before = heapMb();
      const batch = 5000;
      for (let i = 0; i < 300_000; i += batch) {
        router.push(
          'attack',
          's',
          Array.from({ length: batch }, (_, j) => ({ k: `key-${i + j}`, v: j, ts: NOW - 1000 })),
        );
      }
      const grew = heapMb() - before;
      const st = Object.fromEntries(host.statuses().map((s) => [s.rule, s]));
      assert.equal(st.greedy!.state, 'failed');
      assert.match(
        st.greedy!.error!,
        /^RULE_STATE_BUDGET: the rule held 20\d{4} cells of window state .* over its budget of 200000; it was stopped/,
      );
      assert.equal(st.steady!.state, 'running');
      assert.equal(st.steady!.in, 300_000, 'the other rule saw every record');
      assert.ok(grew < 40, `heap grew ${grew.toFixed(1)} MB (the greedy rule's 300,000 groups were never all held)`);
      assert.deepEqual(memorySinks.get('limits_greedy') ?? [], []);
    });

    it("a record that fails goes to the rule's errors and dead letters with the rule, position and values; the rule goes on; schemaless fields never seen are warned about", async () => {
      await host.start({
        name: 'types',
        version: '1.0.0',
        deploymentId: 'd3',
        manifest: parseManifest({
          apiVersion: 'edgeweave/v1',
          kind: 'App',
          metadata: { name: 'types', version: '1.0.0' },
          spec: {
            streams: [{ name: 'u', topic: 'dev/+/u' }],
            rules: [
              { name: 'overheat', sql: 'SELECT machine, temp FROM u\nWHERE temp > 80 OR tmep > 200', sinks: [{ memory: 'limits_types' }] },
            ],
            policy: {},
          },
        }),
      } as never);
      router.push('types', 'u', [
        { machine: 'm1', temp: 90 },
        { machine: 'm2', temp: 'hot' },
        { machine: 'm3', temp: 95 },
      ]);
      const st = host.statuses().find((s) => s.rule === 'overheat')!;
      assert.equal(st.state, 'running');
      assert.equal(st.errors, 1);
      assert.equal(st.out, 2, 'the records before and after the bad one came out');
      assert.deepEqual(st.warnings, ['field "tmep" (line 2, column 20) was in none of the first 3 records; check its spelling']);
      const letters = dead.list({ app: 'types', limit: 10 });
      assert.equal(letters.length, 1);
      // The reason (which may leave the site) names the rule and the kind of error, never content;
      // the detail (which stays on the site) has the position, the expression and the values.
      assert.match(letters[0]!.reason, /^rule overheat failed on this record \(RecordError; \d+ bytes\)$/);
      assert.equal(
        letters[0]!.detail,
        "line 2, column 12: cannot compare temp = \"hot\" (a string) with 80 = 80 (a number) using >; convert with cast(x, 'float') or cast(x, 'string')",
      );
    });

    it('sends one record from the far future to the dead letters; the next 1,000 honest records are not late (issue 8.4)', async () => {
      await host.start({
        name: 'clock',
        version: '1.0.0',
        deploymentId: 'd2',
        manifest: parseManifest({
          apiVersion: 'edgeweave/v1',
          kind: 'App',
          metadata: { name: 'clock', version: '1.0.0' },
          spec: {
            streams: [{ name: 't', topic: 'dev/+/t', timestamp: 'ts', schema: { v: 'float', ts: 'timestamp' } }],
            rules: [
              {
                name: 'per-minute',
                sql: 'SELECT count(*) AS n FROM t GROUP BY TUMBLINGWINDOW(mi, 1)',
                sinks: [{ memory: 'limits_clock' }],
                options: { maxFutureSkew: 60_000 },
              },
            ],
            policy: {},
          },
        }),
      } as never);
      router.push('clock', 't', [{ v: 1, ts: 8.64e15 }]);
      router.push(
        'clock',
        't',
        Array.from({ length: 1000 }, (_, i) => ({ v: 1, ts: NOW - 120_000 + i * 100 })),
      );
      const st = host.statuses().find((s) => s.rule === 'per-minute')!;
      assert.equal(st.late, 0);
      assert.equal(st.errors, 1);
      const letters = dead.list({ app: 'clock', limit: 10 });
      assert.equal(letters.length, 1);
      assert.match(letters[0]!.reason, /^rule per-minute failed on this record \(FutureEventError; \d+ bytes\)$/);
      assert.match(
        letters[0]!.detail!,
        /^event time in "ts" is \d+ s ahead of the site's clock \(at most 60 s allowed, options.maxFutureSkew\)/,
      );
    });
  });
});
