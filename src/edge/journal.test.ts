import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEdgeDb } from './db.ts';
import { Intake, Journal, type WithholdReason } from './journal.ts';
import { ManualClock } from '../lib/clock.ts';
import { silentLogger } from '../lib/logger.ts';

/** The intake's group commit against a real SQLite, with the tick and the clock driven by hand. */
function fixture(
  opts: { routes?: (t: string) => boolean; room?: () => number; maxHeld?: number; gate?: () => WithholdReason | undefined } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), 'ew-journal-'));
  const db = openEdgeDb(dir);
  const clock = new ManualClock(0);
  const journal = new Journal(db, clock);
  const ticks: (() => void)[] = [];
  const delivered: { seq: number; topic: string; payload: string }[] = [];
  const withheld: [WithholdReason, number][] = [];
  const unrouted: string[] = [];
  const intake = new Intake({
    journal,
    clock,
    log: silentLogger(),
    defer: (fn) => ticks.push(fn),
    retryMs: 100,
    maxHeld: opts.maxHeld,
    routes: opts.routes ?? (() => true),
    gate: opts.gate ?? (() => undefined),
    room: opts.room,
    deliver: (seq, topic, payload) => delivered.push({ seq, topic, payload: payload.toString() }),
    onUnrouted: (t) => unrouted.push(t),
    onWithheld: (r, n) => withheld.push([r, n]),
  });
  const tick = () => {
    for (const fn of ticks.splice(0)) fn();
  };
  const state = (p: Promise<void>) => {
    const s = { v: 'pending' as 'pending' | 'acked' | 'refused' };
    p.then(
      () => {
        s.v = 'acked';
      },
      () => {
        s.v = 'refused';
      },
    );
    return s;
  };
  return {
    dir,
    db,
    clock,
    journal,
    intake,
    tick,
    delivered,
    withheld,
    unrouted,
    state,
    close: () => {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const settle = () => new Promise((r) => setImmediate(r));
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const memory = () => {
  gc();
  return process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
};

describe('Intake: acknowledge after durability, group commit, back-pressure', () => {
  const closers: (() => void)[] = [];
  after(() => {
    for (const c of closers) c();
  });

  it("journals one turn's records in one commit, then releases them in order", async () => {
    const f = fixture();
    closers.push(f.close);
    const a = f.state(f.intake.accept('t/1', Buffer.from('a')));
    const b = f.state(f.intake.accept('t/2', Buffer.from('b')));
    await settle();
    assert.deepEqual([a.v, b.v], ['pending', 'pending'], 'nothing acknowledged before the commit');
    f.tick();
    await settle();
    assert.deepEqual([a.v, b.v], ['acked', 'acked']);
    assert.deepEqual(
      f.delivered.map((d) => [d.seq, d.payload]),
      [
        [1, 'a'],
        [2, 'b'],
      ],
    );
    assert.equal(f.intake.stats.batches, 1);
    assert.equal(f.journal.pending, 2);
    assert.deepEqual(
      f.journal.read(0, 10).map((r) => r.payload.toString()),
      ['a', 'b'],
    );
  });

  it('acknowledges and counts a record no stream reads, without journaling it', async () => {
    const f = fixture({ routes: (t) => t.startsWith('read/') });
    closers.push(f.close);
    const x = f.state(f.intake.accept('nobody/reads', Buffer.from('x')));
    f.tick();
    await settle();
    assert.equal(x.v, 'acked');
    assert.deepEqual(f.unrouted, ['nobody/reads']);
    assert.equal(f.journal.pending, 0);
  });

  it('a full disk (a real SQLITE_FULL) withholds the acknowledgements and retries; nothing is lost or reordered', async () => {
    const f = fixture();
    closers.push(f.close);
    f.intake.accept('t', Buffer.from('warm'));
    f.tick();
    // The database may not grow by one more page: the next commit fails with SQLITE_FULL.
    const pages = f.db.pragma('page_count', { simple: true }) as number;
    f.db.pragma(`max_page_count = ${pages}`);
    const big = Buffer.alloc(64 * 1024, 1);
    const r1 = f.state(f.intake.accept('t', big));
    const r2 = f.state(f.intake.accept('t', Buffer.from('after')));
    f.tick();
    await settle();
    assert.deepEqual([r1.v, r2.v], ['pending', 'pending']);
    assert.equal(f.intake.withholding, 'disk_full');
    assert.deepEqual(f.withheld, [['disk_full', 2]]);
    f.clock.advance(100); // the retry, still full
    f.tick();
    await settle();
    assert.equal(r1.v, 'pending');
    f.db.pragma('max_page_count = 1073741823'); // space freed
    f.clock.advance(100);
    f.tick();
    await settle();
    assert.deepEqual([r1.v, r2.v], ['acked', 'acked']);
    assert.deepEqual(
      f.delivered.slice(1).map((d) => d.payload.length),
      [big.length, 5],
    );
    assert.equal(f.intake.withholding, undefined);
  });

  it('takes only what the outbox has room for and holds the rest unacknowledged', async () => {
    let room = 2;
    const f = fixture({ room: () => room });
    closers.push(f.close);
    const s = [1, 2, 3, 4].map((n) => f.state(f.intake.accept('t', Buffer.from(String(n)))));
    f.tick();
    await settle();
    assert.deepEqual(
      s.map((x) => x.v),
      ['acked', 'acked', 'pending', 'pending'],
    );
    assert.deepEqual(f.withheld, [['outbox_full', 2]]);
    room = 10;
    f.intake.wake();
    f.tick();
    await settle();
    assert.deepEqual(
      s.map((x) => x.v),
      ['acked', 'acked', 'acked', 'acked'],
    );
    assert.deepEqual(
      f.delivered.map((d) => d.payload),
      ['1', '2', '3', '4'],
    );
  });

  it('is bounded: past maxHeld a publish is refused at once (the broker closes that connection unacknowledged), and memory stays flat', async () => {
    const f = fixture({ maxHeld: 1000, gate: () => 'journal_full' });
    closers.push(f.close);
    const payload = Buffer.alloc(1024, 2);
    const held = Array.from({ length: 1000 }, () => f.state(f.intake.accept('t', payload)));
    f.tick();
    const before = memory();
    const refused: ReturnType<typeof f.state>[] = [];
    for (let i = 0; i < 50_000; i++) refused.push(f.state(f.intake.accept('t', Buffer.alloc(1024, 3))));
    await settle();
    assert.ok(refused.every((r) => r.v === 'refused'));
    assert.ok(held.every((r) => r.v === 'pending'));
    assert.equal(f.intake.stats.refused, 50_000);
    refused.length = 0;
    const grew = memory() - before;
    // 50 MB were offered; none of it is kept.
    assert.ok(grew < 20 * 1024 * 1024, `heap grew ${Math.round(grew / 1024)} KiB`);
    f.intake.close();
    await settle();
    assert.ok(
      held.every((r) => r.v === 'refused'),
      'at shutdown the held records are refused, never acknowledged',
    );
  });
});
