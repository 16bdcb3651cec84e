import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Statement } from 'better-sqlite3';
import { kvGet, kvSet, type EdgeDb } from './db.ts';
import { EwError } from '../contracts/errors.ts';
import { envelope, PAYLOAD_LIMITS } from '../contracts/messages.ts';
import type { Clock } from '../lib/clock.ts';

export type OverflowPolicy = 'drop-oldest' | 'reject-new';

export interface OutboxOptions {
  /** Most messages kept; default 100,000. */
  maxMessages: number;
  /**
   * What happens when a write would pass the bound:
   *  - `drop-oldest` (default): the oldest unsent messages are deleted to make room and counted
   *    in `dropped` — a site that is offline for days keeps its freshest results;
   *  - `reject-new`: the write fails with OUTBOX_FULL and nothing stored is touched.
   */
  overflow: OverflowPolicy;
}

export interface OutboxRow {
  seq: number;
  id: string;
  topic: string;
  payload: Buffer;
}

/**
 * The durable uplink queue. Every message is committed here before anything is sent, keeps its
 * id for life (the cloud stores each id once), and is deleted only when the broker acknowledged
 * it. Rows are read back in `seq` order, so a restart resends in the order they were written.
 *
 * It says when rows were added with an `added` event, so whoever sends them (the pump) hears of
 * every writer — a sink, the local API, the egress audit — without each having to call it. The
 * event comes once per turn of the event loop, after the writer's transaction (a rule commits
 * its results with its journal cursor in one) has finished, so it never announces a row that a
 * rollback takes back.
 */
export class Outbox extends EventEmitter<{ added: [] }> {
  private readonly insert: Statement;
  private readonly peekStmt: Statement;
  private readonly del: Statement;
  private readonly dropOldest: Statement;
  private count: number;
  private droppedTotal: number;
  private announcing = false;

  constructor(
    private readonly db: EdgeDb,
    private readonly clock: Clock,
    private readonly opts: OutboxOptions,
  ) {
    super();
    if (!(opts.maxMessages >= 1)) throw new EwError('CONFIG_INVALID', 'outbox maxMessages must be at least 1', { path: 'outboxMax' });
    this.insert = db.prepare('INSERT INTO outbox (id, topic, payload, created_at) VALUES (?, ?, ?, ?)');
    this.peekStmt = db.prepare('SELECT seq, id, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?');
    this.del = db.prepare('DELETE FROM outbox WHERE seq = ?');
    this.dropOldest = db.prepare('DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)');
    this.count = (db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n;
    this.droppedTotal = Number(kvGet(db, 'outbox.dropped') ?? '0');
  }

  get pending(): number {
    return this.count;
  }

  /** Messages deleted unsent by the overflow policy, or refused by it, over the site's lifetime. */
  get dropped(): number {
    return this.droppedTotal;
  }

  get policy(): OverflowPolicy {
    return this.opts.overflow;
  }

  /** Whether a reject-new outbox is at its bound (new results would be refused). */
  get full(): boolean {
    return this.opts.overflow === 'reject-new' && this.count >= this.opts.maxMessages;
  }

  /** Messages the bound still has room for. */
  get room(): number {
    return Math.max(0, this.opts.maxMessages - this.count);
  }

  /** Counts results the reject-new policy refused (they are in `dropped` too). */
  countRefused(n: number): void {
    if (n <= 0) return;
    this.droppedTotal += n;
    kvSet(this.db, 'outbox.dropped', String(this.droppedTotal));
  }

  /**
   * Writes uplink messages for one stream in one transaction; returns their ids.
   * Throws OUTBOX_FULL (policy reject-new) without writing any of them.
   */
  enqueue(
    topic: string,
    stream: string,
    records: readonly unknown[],
    origin?: { app: string; rule: string },
    idOf?: (record: never, i: number) => string | undefined,
  ): string[] {
    if (records.length === 0) return [];
    const now = this.clock.now();
    const ids: string[] = [];
    // Each record is checked before anything is written: the cloud refuses a message over its
    // bound, and one left in the outbox would be resent for ever.
    const encoded = records.map((data, i) => {
      // A deterministic id (a window result's rule, epoch and emission) lets the cloud store a
      // result replayed after a crash once; anything else gets a fresh one.
      const id = idOf?.(data as never, i) ?? randomUUID();
      const msg = envelope('uplink', { stream, at: now, ...origin, data }, { now: () => now }, id);
      const payload = Buffer.from(JSON.stringify(msg) ?? 'null');
      if (payload.length > PAYLOAD_LIMITS.up) {
        throw new EwError(
          'VALIDATION_FAILED',
          `records[${i}] is ${payload.length} bytes as an uplink message; one result may be at most ${PAYLOAD_LIMITS.up} bytes (split it into several records)`,
          { path: `records[${i}]` },
        );
      }
      return { id, payload };
    });
    this.db.transaction(() => {
      const over = this.count + records.length - this.opts.maxMessages;
      if (over > 0) {
        if (this.opts.overflow === 'reject-new') {
          throw new EwError(
            'OUTBOX_FULL',
            `the outbox holds ${this.count} of ${this.opts.maxMessages} messages and its policy is reject-new; wait for the cloud link, or raise --outbox-max`,
          );
        }
        const removed = this.dropOldest.run(over).changes;
        this.count -= removed;
        this.droppedTotal += removed;
        kvSet(this.db, 'outbox.dropped', String(this.droppedTotal));
        // More records than the whole bound: only the newest maxMessages are kept.
        const skip = Math.max(0, records.length - this.opts.maxMessages);
        if (skip > 0) {
          this.droppedTotal += skip;
          kvSet(this.db, 'outbox.dropped', String(this.droppedTotal));
        }
        records = records.slice(skip);
      }
      for (const { id, payload } of encoded.slice(encoded.length - records.length)) {
        this.insert.run(id, topic, payload, now);
        ids.push(id);
      }
      this.count += records.length;
    })();
    if (ids.length > 0) this.announce();
    return ids;
  }

  private announce(): void {
    if (this.announcing) return;
    this.announcing = true;
    queueMicrotask(() => {
      this.announcing = false;
      this.emit('added');
    });
  }

  /** The next rows after `afterSeq`, oldest first. */
  peek(afterSeq: number, limit: number): OutboxRow[] {
    return this.peekStmt.all(afterSeq, limit) as OutboxRow[];
  }

  /** Deletes acknowledged rows in one transaction; returns how many were still there. */
  ack(seqs: readonly number[]): number {
    if (seqs.length === 0) return 0;
    let n = 0;
    this.db.transaction(() => {
      for (const s of seqs) n += this.del.run(s).changes;
    })();
    this.count -= n;
    return n;
  }
}
