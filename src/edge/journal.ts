import type { Statement } from 'better-sqlite3';
import type { EdgeDb } from './db.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import type { Mqtt5Properties } from './mqtt5.ts';
import { EwError } from '../contracts/errors.ts';

/**
 * The site's durable intake journal: every device record a stream reads is committed here before
 * the device broker acknowledges it (QoS 1 PUBACK). Each rule keeps a cursor — the journal seq up
 * to which its effects (outbox rows, a window checkpoint) are committed, written in the same
 * transaction as those effects — and a restarted rule replays the records after its cursor. A
 * record leaves the journal once every live rule's cursor has passed it.
 *
 * This one path serves a crash (replay what was acknowledged but not yet turned into results), a
 * rule whose model is still loading (its input waits here, not in memory) and a window checkpoint
 * (state as of the cursor, then replay).
 */
/** `props`: the record's MQTT 5 properties with their receive time, so a replay maps them as the first delivery did. */
export interface JournalRecord {
  seq: number;
  topic: string;
  payload: Buffer;
  props?: Mqtt5Properties;
}

export interface RuleCheckpoint {
  seq: number;
  state?: Buffer;
}

export class Journal {
  private readonly insert: Statement;
  private readonly readStmt: Statement;
  private readonly getCursor: Statement;
  private readonly putCursor: Statement;
  private readonly delCursor: Statement;
  private readonly truncStmt: Statement;
  private last: number;
  private rows: number;

  constructor(
    private readonly db: EdgeDb,
    private readonly clock: Clock,
  ) {
    this.insert = db.prepare('INSERT INTO journal (topic, payload, props, at) VALUES (?, ?, ?, ?)');
    this.readStmt = db.prepare('SELECT seq, topic, payload, props FROM journal WHERE seq > ? ORDER BY seq LIMIT ?');
    this.getCursor = db.prepare('SELECT seq, state FROM journal_cursor WHERE rule = ?');
    this.putCursor = db.prepare(
      'INSERT INTO journal_cursor (rule, seq, state, at) VALUES (?, ?, ?, ?) ON CONFLICT(rule) DO UPDATE SET seq = excluded.seq, state = excluded.state, at = excluded.at',
    );
    this.delCursor = db.prepare('DELETE FROM journal_cursor WHERE rule = ?');
    this.truncStmt = db.prepare('DELETE FROM journal WHERE seq <= ?');
    // The highest seq ever handed out (AUTOINCREMENT keeps it even when the table is empty).
    const s = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'journal'").get() as { seq: number } | undefined;
    this.last = s?.seq ?? 0;
    this.rows = (db.prepare('SELECT count(*) AS n FROM journal').get() as { n: number }).n;
  }

  /** The seq of the newest record (0: none ever). */
  get lastSeq(): number {
    return this.last;
  }
  /** Records waiting for at least one rule. */
  get pending(): number {
    return this.rows;
  }

  /** Appends records in one transaction (one fsync) and returns their seqs. Throws on a storage error, writing none. */
  append(recs: readonly { topic: string; payload: Buffer; props?: Mqtt5Properties }[]): number[] {
    const now = this.clock.now();
    const seqs: number[] = [];
    this.db.transaction(() => {
      for (const r of recs)
        seqs.push(Number(this.insert.run(r.topic, r.payload, r.props ? JSON.stringify(r.props) : null, now).lastInsertRowid));
    })();
    this.rows += seqs.length;
    if (seqs.length) this.last = seqs[seqs.length - 1]!;
    return seqs;
  }

  read(afterSeq: number, limit: number): JournalRecord[] {
    return (this.readStmt.all(afterSeq, limit) as { seq: number; topic: string; payload: Buffer; props: string | null }[]).map((r) => ({
      seq: r.seq,
      topic: r.topic,
      payload: r.payload,
      ...(r.props ? { props: JSON.parse(r.props) as Mqtt5Properties } : {}),
    }));
  }

  cursor(rule: string): RuleCheckpoint | undefined {
    const r = this.getCursor.get(rule) as { seq: number; state: Buffer | null } | undefined;
    return r ? { seq: r.seq, ...(r.state ? { state: r.state } : {}) } : undefined;
  }

  /** Call inside the transaction that commits the rule's effects up to `seq`. */
  setCursor(rule: string, seq: number, state?: Buffer): void {
    this.putCursor.run(rule, seq, state ?? null, this.clock.now());
  }

  dropCursor(rule: string): void {
    this.delCursor.run(rule);
  }

  /** Forgets cursors of rules that no longer run here (a removed app, a crash mid-update). */
  pruneCursors(live: ReadonlySet<string>): void {
    for (const { rule } of this.db.prepare('SELECT rule FROM journal_cursor').all() as { rule: string }[])
      if (!live.has(rule)) this.dropCursor(rule);
  }

  /** Deletes every record all rules are done with; returns how many. */
  truncate(): number {
    const m = (this.db.prepare('SELECT min(seq) AS m FROM journal_cursor').get() as { m: number | null }).m;
    const upTo = m ?? this.last;
    const n = this.truncStmt.run(upTo).changes;
    this.rows = Math.max(0, this.rows - n);
    return n;
  }
}

/** Why an intake batch was not made durable (its QoS 1 PUBACKs are withheld). */
export type WithholdReason = 'outbox_full' | 'journal_full' | 'disk_full' | 'read_only' | 'storage_error' | 'overload';

/** Maps a SQLite error to a reason: a full disk and a read-only one are told apart from the rest. */
export function storageReason(e: unknown): WithholdReason {
  const code = (e as { code?: string }).code ?? '';
  if (code === 'SQLITE_FULL' || /disk is full|database or disk is full/i.test(String((e as Error).message))) return 'disk_full';
  if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_PERM' || code === 'SQLITE_CANTOPEN') return 'read_only';
  return 'storage_error';
}

export interface IntakeDeps {
  journal: Journal;
  /** Whether any running (or starting) stream reads this topic. */
  routes(topic: string): boolean;
  /** A durable record, in seq order, after its PUBACK was released. */
  deliver(seq: number, topic: string, payload: Buffer, props?: Mqtt5Properties): void;
  /** A reason to hold every routed record now (journal at its bound), or undefined. */
  gate(): WithholdReason | undefined;
  /**
   * How many more results the outbox can take now (reject-new: its free room less what the rules
   * already owe it); records are admitted while the results they can produce (`cost`) fit, and
   * the rest are held as `outbox_full`. Default: no limit.
   */
  room?: () => number;
  /** The most results one record of this topic can put into the outbox (every rule that reads it, every uplink sink, every window it falls in). Default 1. */
  cost?: (topic: string) => number;
  onUnrouted(topic: string): void;
  onWithheld(reason: WithholdReason, records: number): void;
  clock: Clock;
  log: Logger;
  /** Runs `fn` after the current batch of I/O (setImmediate): the group-commit tick. */
  defer?: (fn: () => void) => void;
  /** Most records held unacknowledged in memory; past it a publish is refused (the device resends). Default 20,000. */
  maxHeld?: number;
  /** Retry of a held batch when nothing wakes it earlier, ms. Default 250. */
  retryMs?: number;
}

interface Held {
  topic: string;
  payload: Buffer;
  props?: Mqtt5Properties;
  resolve: () => void;
  reject: (e: Error) => void;
}

/**
 * Group commit between the device broker and the rules: publishes arriving in one turn of the
 * event loop are journaled in one transaction, and only then are their PUBACKs released and the
 * records handed to the rules. When the batch cannot be made durable (the outbox is full under
 * reject-new, the disk is full or read-only) the PUBACKs are withheld and the batch is retried;
 * aedes reads no more from a client whose publish is pending, so the device is slowed by TCP,
 * not dropped. At most `maxHeld` records wait; past that a publish is refused and the broker
 * closes that connection without acknowledging it (the device resends after reconnecting).
 */
export class Intake {
  private held: Held[] = [];
  private scheduled = false;
  private cancelRetry?: () => void;
  private readonly maxHeld: number;
  private readonly defer: (fn: () => void) => void;
  /** The reason the last batch was withheld, until a batch goes through. */
  withholding: WithholdReason | undefined;
  readonly stats = { accepted: 0, unrouted: 0, batches: 0, withheld: 0, refused: 0 };

  constructor(private readonly d: IntakeDeps) {
    this.maxHeld = d.maxHeld ?? 20_000;
    this.defer = d.defer ?? ((fn) => setImmediate(fn));
  }

  /**
   * Several records that are acknowledged together (an HTTP push): resolves once every one is
   * durable. A batch is refused whole when the held bound would be passed (unless nothing else
   * is held: one large request may then wait alone).
   */
  acceptMany(recs: readonly { topic: string; payload: Buffer; props?: Mqtt5Properties }[]): Promise<void> {
    if (recs.length === 0) return Promise.resolve();
    if (this.held.length > 0 && this.held.length + recs.length > this.maxHeld) {
      this.stats.refused += recs.length;
      this.d.onWithheld('overload', recs.length);
      return Promise.reject(
        new EwError(
          'INTAKE_FULL',
          `the site holds ${this.held.length} records not yet durable (bound ${this.maxHeld}); these ${recs.length} were not accepted: resend them later`,
        ),
      );
    }
    return new Promise<void>((resolve, reject) => {
      let left = recs.length;
      let failed = false;
      const one = () => {
        if (--left === 0 && !failed) resolve();
      };
      const fail = (e: Error) => {
        if (!failed) {
          failed = true;
          reject(e);
        }
      };
      for (const r of recs) this.held.push({ topic: r.topic, payload: r.payload, props: r.props, resolve: one, reject: fail });
      this.schedule();
    });
  }

  /** Resolves once the record is durable (or counted as unrouted): then, and only then, may the broker acknowledge it. */
  accept(topic: string, payload: Buffer, props?: Mqtt5Properties): Promise<void> {
    if (this.held.length >= this.maxHeld) {
      this.stats.refused++;
      this.d.onWithheld('overload', 1);
      return Promise.reject(
        new EwError(
          'INTAKE_FULL',
          `the site holds ${this.held.length} unacknowledged records (bound ${this.maxHeld}); publish refused, resend later`,
        ),
      );
    }
    return new Promise<void>((resolve, reject) => {
      this.held.push({ topic, payload, props, resolve, reject });
      this.schedule();
    });
  }

  /** Something that held a batch may have changed (outbox room, journal truncated): try again now. */
  wake(): void {
    if (this.held.length && this.withholding) this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.defer(() => this.flush());
  }

  /** Commits what is held; returns how many records were released. */
  flush(): number {
    this.scheduled = false;
    this.cancelRetry?.();
    this.cancelRetry = undefined;
    const batch = this.held;
    if (batch.length === 0) return 0;
    const routed: Held[] = [];
    const unrouted: Held[] = [];
    for (const h of batch) (this.d.routes(h.topic) ? routed : unrouted).push(h);
    // A record no stream reads has nothing to make durable: counted, acknowledged.
    for (const h of unrouted) {
      this.stats.unrouted++;
      this.d.onUnrouted(h.topic);
      h.resolve();
    }
    if (routed.length === 0) {
      this.held = [];
      this.withholding = undefined;
      return unrouted.length;
    }
    let reason = this.d.gate();
    let admit: Held[] = [];
    if (!reason) {
      const room = this.d.room?.() ?? Infinity;
      if (room === Infinity) admit = routed;
      else {
        // Records in order while the results they can produce fit: never more than the outbox can take.
        let owed = 0;
        let n = 0;
        for (; n < routed.length; n++) {
          const c = this.d.cost ? this.d.cost(routed[n]!.topic) : 1;
          if (owed + c > room) break;
          owed += c;
        }
        admit = n === routed.length ? routed : routed.slice(0, n);
      }
      if (admit.length < routed.length) reason = 'outbox_full';
    }
    let seqs: number[] = [];
    if (admit.length) {
      try {
        seqs = this.d.journal.append(admit);
      } catch (e) {
        reason = storageReason(e);
        admit = [];
        if (this.withholding !== reason)
          this.d.log.error(
            { err: (e as Error).message, reason, records: routed.length },
            'device records cannot be made durable; their acknowledgements are withheld',
          );
      }
    }
    const rest = routed.slice(admit.length);
    this.held = rest;
    if (admit.length) {
      this.stats.batches++;
      this.stats.accepted += admit.length;
      for (const h of admit) h.resolve();
      for (let i = 0; i < admit.length; i++) {
        try {
          this.d.deliver(seqs[i]!, admit[i]!.topic, admit[i]!.payload, admit[i]!.props);
        } catch (e) {
          this.d.log.error(
            { err: (e as Error).message, topic: admit[i]!.topic },
            'delivering a journaled record failed (it stays journaled and replays at restart)',
          );
        }
      }
    }
    if (reason && rest.length) {
      if (this.withholding !== reason) this.d.log.warn({ reason, records: rest.length }, 'device acknowledgements withheld');
      this.withholding = reason;
      this.stats.withheld += rest.length;
      this.d.onWithheld(reason, rest.length);
      this.cancelRetry = this.d.clock.setTimer(this.d.retryMs ?? 250, () => this.schedule());
    } else {
      this.withholding = undefined;
    }
    return unrouted.length + admit.length;
  }

  /** Refuses everything still held (shutdown): none of it was acknowledged. */
  close(): void {
    this.cancelRetry?.();
    for (const h of this.held)
      h.reject(new EwError('INTAKE_FULL', 'the site is shutting down; the records were not accepted: resend them'));
    this.held = [];
  }
}
