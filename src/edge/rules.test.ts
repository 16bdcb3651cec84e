import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { openEdgeDb } from './db.ts';
import { DeadLetters, StreamRouter } from './record-router.ts';
import { topicMatches } from '../lib/topic-filter.ts';
import { EgressAudit, memorySinks } from './sinks.ts';
import { RuleHost } from './rules.ts';
import { Outbox } from './outbox.ts';
import { ManualClock } from '../lib/clock.ts';
import { silentLogger } from '../lib/logger.ts';
import { parseManifest } from '../contracts/manifest.ts';
import type { DesiredApp } from '../contracts/messages.ts';

describe('RuleHost', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ew-rules-'));
  const db = openEdgeDb(dir);
  after(() => {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const clock = new ManualClock(0);
  const dead = new DeadLetters(db, clock);
  const router = new StreamRouter(dead);
  const outbox = new Outbox(db, clock, { maxMessages: 1000, overflow: 'drop-oldest' });
  const audit = new EgressAudit(db, clock, new Registry());
  const host = new RuleHost({
    router,
    dead,
    clock,
    log: silentLogger(),
    sinkContext: (app, rule, allowedFields) => ({
      siteId: 's1',
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
  const desired = (version: string, rules: unknown[], egress: unknown[] = []): DesiredApp => ({
    name: 'meters',
    version,
    deploymentId: `d-${version}`,
    manifest: parseManifest({
      apiVersion: 'edgeweave/v1',
      kind: 'App',
      metadata: { name: 'meters', version },
      spec: {
        streams: [{ name: 'meter', topic: 'meters/+/kwh', schema: { id: 'string', kwh: 'float' } }],
        rules,
        policy: { egress: { allow: egress } },
      },
    }),
  });

  it('matches MQTT topic filters', () => {
    assert.equal(topicMatches('meters/+/kwh', 'meters/m1/kwh'), true);
    assert.equal(topicMatches('meters/+/kwh', 'meters/m1/x/kwh'), false);
    assert.equal(topicMatches('meters/#', 'meters/m1/x'), true);
    assert.equal(topicMatches('#', '$SYS/x'), false);
    assert.equal(topicMatches('a/b', 'a/b/c'), false);
  });

  it('runs good rules and reports a bad one as failed, with its error, without stopping the others', async () => {
    const app = desired('1.0.0', [
      { name: 'batches', sql: 'SELECT id, sum(kwh) AS kwh FROM meter GROUP BY id, COUNTWINDOW(2)', sinks: [{ memory: 'batches' }] },
      // Valid SQL but its egress is not granted here: the site refuses it as the cloud would have.
      { name: 'leak', sql: 'SELECT id, kwh FROM meter', sinks: [{ uplink: 'raw-kwh' }] },
    ]);
    await assert.rejects(host.start(app), /rule leak: EGRESS_DENIED/);
    const st = host.statuses();
    assert.deepEqual(
      st.map((s) => [s.rule, s.state]),
      [
        ['batches', 'running'],
        ['leak', 'failed'],
      ],
    );
    assert.match(st[1]!.error!, /no grant for "raw-kwh"/);
    router.onMessage('meters/m1/kwh', Buffer.from('{"id":"m1","kwh":1.5}'));
    router.onMessage('meters/m1/kwh', Buffer.from('{"id":"m1","kwh":2}'));
    router.onMessage('meters/m1/kwh', Buffer.from('{"id":"m1","kwh":"lots"}'));
    assert.deepEqual(memorySinks.get('batches'), [{ id: 'm1', kwh: 3.5 }]);
    assert.equal(dead.list({ stream: 'meter', limit: 10 }).length, 1);
  });

  it('keeps an unchanged rule running across an update and restarts a changed one', async () => {
    router.onMessage('meters/m2/kwh', Buffer.from('{"id":"m2","kwh":1}'));
    await host.update(
      desired('1.0.0', []),
      desired(
        '1.1.0',
        [
          { name: 'batches', sql: 'SELECT id, sum(kwh) AS kwh FROM meter GROUP BY id, COUNTWINDOW(2)', sinks: [{ memory: 'batches' }] },
          { name: 'granted', sql: 'SELECT id, kwh FROM meter WHERE kwh > 5', sinks: [{ uplink: 'big' }] },
        ],
        ['big'],
      ),
    );
    assert.deepEqual(
      host.statuses().map((s) => [s.rule, s.state]),
      [
        ['batches', 'running'],
        ['granted', 'running'],
      ],
    );
    router.onMessage('meters/m2/kwh', Buffer.from('{"id":"m2","kwh":9}'));
    assert.deepEqual(
      memorySinks.get('batches')!.slice(-1),
      [{ id: 'm2', kwh: 10 }],
      'the kept rule still had the record from before the update',
    );
    await new Promise((r) => setImmediate(r)); // uplink rows are committed once per event-loop turn
    assert.equal(outbox.pending, 1);
    const msg = JSON.parse(outbox.peek(0, 1)[0]!.payload.toString());
    assert.deepEqual([msg.body.app, msg.body.rule, msg.body.data], ['meters', 'granted', { id: 'm2', kwh: 9 }]);
    await host.stop(desired('1.1.0', []));
    assert.deepEqual(host.statuses(), []);
  });

  it('keeps a per-minute egress audit and sends closed minutes up on _egress-audit', () => {
    const before = outbox.pending;
    assert.equal(audit.report(outbox, 's1'), 0, 'the current minute is still open');
    clock.advance(60_000);
    assert.equal(audit.report(outbox, 's1'), 1);
    assert.equal(audit.report(outbox, 's1'), 0, 'each minute is reported once');
    const rows = outbox
      .peek(0, 100)
      .map((r) => JSON.parse(r.payload.toString()).body)
      .filter((b) => b.stream === '_egress-audit');
    assert.equal(outbox.pending, before + 1);
    assert.deepEqual(
      rows.map((b) => [b.data.app, b.data.rule, b.data.stream, b.data.destination, b.data.records]),
      [['meters', 'granted', 'big', 'cloud', 1]],
    );
  });
});
