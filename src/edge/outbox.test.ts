import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openEdgeDb, type EdgeDb } from './db.ts';
import { Outbox } from './outbox.ts';
import { OutboxPump } from './pump.ts';
import { ManualClock } from '../lib/clock.ts';
import { isEwError } from '../contracts/errors.ts';

const dirs: string[] = [];
const dbs: EdgeDb[] = [];
function fresh(): { dir: string; db: EdgeDb } {
  const dir = mkdtempSync(join(tmpdir(), 'ew-outbox-'));
  dirs.push(dir);
  const db = openEdgeDb(dir);
  dbs.push(db);
  return { dir, db };
}
afterEach(() => {
  for (const db of dbs.splice(0)) if (db.open) db.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const data = (o: Outbox) => o.peek(0, 1e6).map((r) => JSON.parse(r.payload.toString()).body.data);
const tick = () => new Promise((r) => setImmediate(r));

describe('Outbox', () => {
  it('keeps messages, in order, with stable ids, across a reopen', () => {
    const { dir, db } = fresh();
    const clock = new ManualClock(1000);
    const o = new Outbox(db, clock, { maxMessages: 100, overflow: 'drop-oldest' });
    const ids = o.enqueue('ew/s/up/a', 'a', [1, 2, 3]);
    assert.equal(new Set(ids).size, 3);
    db.close();
    const db2 = openEdgeDb(dir);
    dbs.push(db2);
    const o2 = new Outbox(db2, clock, { maxMessages: 100, overflow: 'drop-oldest' });
    assert.equal(o2.pending, 3);
    assert.deepEqual(data(o2), [1, 2, 3]);
    assert.deepEqual(
      o2.peek(0, 10).map((r) => r.id),
      ids,
    );
    const first = JSON.parse(o2.peek(0, 1)[0]!.payload.toString());
    assert.deepEqual({ type: first.type, stream: first.body.stream, at: first.body.at }, { type: 'uplink', stream: 'a', at: 1000 });
  });

  it('drop-oldest: makes room by deleting the oldest and counts them, durably', () => {
    const { dir, db } = fresh();
    const o = new Outbox(db, new ManualClock(), { maxMessages: 5, overflow: 'drop-oldest' });
    o.enqueue('t', 's', [1, 2, 3, 4]);
    o.enqueue('t', 's', [5, 6, 7]);
    assert.deepEqual(data(o), [3, 4, 5, 6, 7]);
    assert.equal(o.dropped, 2);
    o.enqueue('t', 's', [8, 9, 10, 11, 12, 13, 14]);
    assert.deepEqual(data(o), [10, 11, 12, 13, 14], 'a batch larger than the bound keeps its newest');
    assert.equal(o.dropped, 9);
    db.close();
    const db2 = openEdgeDb(dir);
    dbs.push(db2);
    assert.equal(new Outbox(db2, new ManualClock(), { maxMessages: 5, overflow: 'drop-oldest' }).dropped, 9);
  });

  it('reject-new: refuses the whole write with OUTBOX_FULL and keeps what it had', () => {
    const { db } = fresh();
    const o = new Outbox(db, new ManualClock(), { maxMessages: 3, overflow: 'reject-new' });
    o.enqueue('t', 's', [1, 2]);
    assert.throws(
      () => o.enqueue('t', 's', [3, 4]),
      (e: unknown) => isEwError(e, 'OUTBOX_FULL'),
    );
    assert.deepEqual(data(o), [1, 2]);
    assert.equal(o.dropped, 0);
    o.enqueue('t', 's', [3]);
    assert.equal(o.pending, 3);
  });

  it('acknowledges by seq', () => {
    const { db } = fresh();
    const o = new Outbox(db, new ManualClock(), { maxMessages: 10, overflow: 'drop-oldest' });
    o.enqueue('t', 's', [1, 2, 3]);
    const rows = o.peek(0, 10);
    o.ack([rows[0]!.seq, rows[2]!.seq, 99999]);
    assert.deepEqual(data(o), [2]);
    assert.equal(o.pending, 1);
  });
});

describe('OutboxPump', () => {
  /** A fake link: records publishes and lets the test ack or fail each one. */
  function fakeLink() {
    const calls: { payload: Buffer; resolve: () => void; reject: (e: Error) => void }[] = [];
    return {
      calls,
      publish: (_t: string, payload: Buffer) => new Promise<void>((resolve, reject) => calls.push({ payload, resolve, reject })),
      dataOf: (i: number) => JSON.parse(calls[i]!.payload.toString()).body.data,
    };
  }

  it('sends in order within the window, deletes only acknowledged rows', async () => {
    const { db } = fresh();
    const o = new Outbox(db, new ManualClock(), { maxMessages: 100, overflow: 'drop-oldest' });
    o.enqueue('t', 's', [1, 2, 3, 4, 5]);
    const link = fakeLink();
    const p = new OutboxPump(o, link.publish, { window: 2 });
    p.notify();
    assert.equal(link.calls.length, 0, 'nothing while disconnected');
    p.connectedChanged(true);
    assert.deepEqual([link.dataOf(0), link.dataOf(1)], [1, 2]);
    assert.equal(link.calls.length, 2, 'window of 2');
    link.calls[0]!.resolve();
    await tick();
    await tick();
    assert.equal(link.calls.length, 3);
    assert.equal(link.dataOf(2), 3);
    assert.deepEqual(data(o), [2, 3, 4, 5]);
  });

  it('after a reconnect resends from the oldest unacknowledged row', async () => {
    const { db } = fresh();
    const o = new Outbox(db, new ManualClock(), { maxMessages: 100, overflow: 'drop-oldest' });
    o.enqueue('t', 's', [1, 2, 3]);
    const link = fakeLink();
    const p = new OutboxPump(o, link.publish, { window: 10 });
    p.connectedChanged(true);
    link.calls[0]!.resolve();
    p.connectedChanged(false);
    link.calls[1]!.reject(new Error('closed'));
    link.calls[2]!.reject(new Error('closed'));
    await tick();
    await tick();
    p.connectedChanged(true);
    assert.deepEqual(
      link.calls.slice(3).map((_, i) => link.dataOf(3 + i)),
      [2, 3],
    );
    // New writes follow once connected.
    o.enqueue('t', 's', [4]);
    p.notify();
    assert.equal(link.dataOf(link.calls.length - 1), 4);
    for (const c of link.calls.slice(3)) c.resolve();
    await tick();
    await tick();
    assert.equal(o.pending, 0);
    assert.equal(p.sentTotal, 4);
  });

  it('with store acknowledgements, keeps a PUBACKed row until the cloud says it stored it', async () => {
    const { db } = fresh();
    const clock = new ManualClock(1000);
    const o = new Outbox(db, clock, { maxMessages: 100, overflow: 'drop-oldest' });
    const ids = o.enqueue('t', 's', [1, 2, 3]);
    const link = fakeLink();
    const p = new OutboxPump(o, link.publish, { window: 3, storeAck: () => true, storeAckTimeoutMs: 5000, clock });
    p.connectedChanged(true);
    for (const c of link.calls) c.resolve();
    await tick();
    await tick();
    assert.equal(o.pending, 3, "the broker's PUBACK deletes nothing");
    assert.equal(p.awaiting, 3);
    o.enqueue('t', 's', [4]);
    p.notify();
    assert.equal(link.calls.length, 3, 'unconfirmed rows hold the window');
    p.storeAcked([ids[0]!, 'not-ours']);
    await tick();
    await tick();
    assert.deepEqual(data(o), [2, 3, 4]);
    assert.equal(link.dataOf(3), 4, 'a stored row frees its place in the window');
    // The replica that took 2 and 3 died: no acknowledgement comes; after the timeout they go again.
    link.calls[3]!.resolve();
    await tick();
    clock.advance(5000);
    await tick();
    assert.deepEqual(
      link.calls.slice(4).map((_, i) => link.dataOf(4 + i)),
      [2, 3, 4],
    );
    for (const c of link.calls.slice(4)) c.resolve();
    await tick();
    p.storeAcked(ids.slice(1).concat(o.peek(0, 10).map((r) => r.id)));
    await tick();
    await tick();
    assert.equal(o.pending, 0);
    assert.equal(p.sentTotal, 4, 'each row counted once');
    p.stop();
  });

  it('resends an unstored row one timeout after its PUBACK, not up to two', async () => {
    const { db } = fresh();
    const clock = new ManualClock(1000);
    const o = new Outbox(db, clock, { maxMessages: 100, overflow: 'drop-oldest' });
    const [a] = o.enqueue('t', 's', [1]);
    const link = fakeLink();
    const p = new OutboxPump(o, link.publish, { window: 4, storeAck: () => true, storeAckTimeoutMs: 5000, clock });
    p.connectedChanged(true);
    link.calls[0]!.resolve(); // PUBACK at 1000: the check is set for 6000
    await tick();
    p.storeAcked([a!]);
    clock.advance(1000);
    o.enqueue('t', 's', [2]);
    p.notify();
    link.calls[1]!.resolve(); // PUBACK at 2000; its replica dies: no store acknowledgement comes
    await tick();
    await tick();
    clock.advance(4000); // 6000: the first check finds row 2 not yet due
    await tick();
    assert.equal(link.calls.length, 2);
    clock.advance(1000); // 7000: one timeout after its PUBACK
    await tick();
    assert.equal(link.calls.length, 3, 'sent again when due, not at the next whole check (11000)');
    assert.equal(link.dataOf(2), 2);
    p.stop();
  });

  it('forgets rows of an earlier round that the outbox no longer holds', async () => {
    const { db } = fresh();
    const clock = new ManualClock(1000);
    const o = new Outbox(db, clock, { maxMessages: 100, overflow: 'drop-oldest' });
    o.enqueue('t', 's', [1, 2]);
    const link = fakeLink();
    const p = new OutboxPump(o, link.publish, { window: 4, storeAck: () => true, storeAckTimeoutMs: 5000, clock });
    p.connectedChanged(true);
    for (const c of link.calls) c.resolve();
    await tick();
    await tick();
    assert.equal(p.awaiting, 2);
    p.connectedChanged(false);
    o.ack(o.peek(0, 10).map((r) => r.seq)); // gone meanwhile (the overflow policy dropped them, say)
    p.connectedChanged(true);
    assert.equal(link.calls.length, 2, 'nothing left to send');
    clock.advance(5000);
    await tick();
    assert.equal(p.awaiting, 0, 'not held for ever');
    p.stop();
  });

  it('a store acknowledgement that overtakes the PUBACK deletes the row once', async () => {
    const { db } = fresh();
    const clock = new ManualClock(0);
    const o = new Outbox(db, clock, { maxMessages: 100, overflow: 'drop-oldest' });
    const ids = o.enqueue('t', 's', [1]);
    const link = fakeLink();
    const p = new OutboxPump(o, link.publish, { window: 4, storeAck: () => true, clock });
    p.connectedChanged(true);
    p.storeAcked(ids);
    link.calls[0]!.resolve();
    await tick();
    await tick();
    assert.equal(o.pending, 0);
    assert.equal(p.awaiting, 0);
    assert.equal(p.sentTotal, 1);
    p.stop();
  });
});
