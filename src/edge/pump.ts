import type { Outbox } from './outbox.ts';
import { systemClock, type Clock } from '../lib/clock.ts';

export interface PumpOptions {
  /** Most messages sent and not yet confirmed. Default 256. */
  window?: number;
  /** Called with how many rows were deleted as delivered. */
  onAcked?: (n: number) => void;
  /**
   * Whether the cloud confirms storage end to end (`ew/{site}/ack`): then a row is deleted when
   * the cloud says it STORED it, and the broker's PUBACK only frees the publish. Default: never
   * (PUBACK deletes — the embedded hub acknowledges after its commit).
   */
  storeAck?: () => boolean;
  /** A sent message with no store acknowledgement after this long is sent again (ms). Default 10,000. */
  storeAckTimeoutMs?: number;
  clock?: Clock;
}

interface Sent {
  seq: number;
  epoch: number;
  at: number;
  done: boolean;
}

/**
 * Moves outbox rows to the cloud link: up to `window` messages unconfirmed, in seq order. On
 * every (re)connect it starts again from the oldest row still stored, so nothing
 * sent-but-unconfirmed is lost; the duplicates that this can cause are removed by the cloud,
 * which stores each id once.
 *
 * Confirmation is the broker's PUBACK (embedded hub: it follows the cloud's commit) or, when the
 * cloud says it sends them, the cloud's own store acknowledgement: with an external broker the
 * replica that received a message may die before storing it, and its (clean) broker session dies
 * with it — the site is then the one place the result still exists, and it sends it again when
 * no acknowledgement came within `storeAckTimeoutMs`.
 *
 * `publish` resolves on the broker's acknowledgement and rejects when the connection fails.
 * New rows are heard of through the outbox's `added` event; `close()` stops listening.
 */
export class OutboxPump {
  private connected = false;
  private epoch = 0;
  private cursor = 0;
  private inflight = 0;
  private acked: number[] = [];
  private ackScheduled = false;
  private sent = 0;
  /** Rows sent on the link and not yet confirmed, by message id (at most `window`). */
  private readonly unconfirmed = new Map<string, Sent>();
  private stopCheck?: () => void;
  private readonly window: number;
  private readonly clock: Clock;
  private readonly timeoutMs: number;

  constructor(
    private readonly outbox: Outbox,
    private readonly publish: (topic: string, payload: Buffer) => Promise<void>,
    private readonly o: PumpOptions = {},
  ) {
    this.window = o.window ?? 256;
    this.clock = o.clock ?? systemClock;
    this.timeoutMs = o.storeAckTimeoutMs ?? 10_000;
    outbox.on('added', this.onAdded);
  }

  private readonly onAdded = (): void => this.notify();

  /** Stops listening to the outbox (the agent is closing). */
  close(): void {
    this.outbox.off('added', this.onAdded);
  }

  get sentTotal(): number {
    return this.sent;
  }

  /** Messages sent and waiting for their confirmation. */
  get awaiting(): number {
    return this.unconfirmed.size;
  }

  connectedChanged(up: boolean): void {
    this.connected = up;
    this.restart();
  }

  /** Sends what fits in the window (the outbox's `added` event calls this). */
  notify(): void {
    if (this.connected) this.pump();
  }

  /** The cloud stored these uplink message ids (UplinkAck): their rows go. */
  storeAcked(ids: readonly string[]): void {
    for (const id of ids) {
      const e = this.unconfirmed.get(id);
      if (e) this.confirm(id, e);
    }
    if (this.connected) this.pump();
  }

  /** Stops the resend check (shutdown). */
  stop(): void {
    this.stopCheck?.();
    this.stopCheck = undefined;
  }

  /** Starts again from the oldest stored row: after a (re)connect, or when confirmations are overdue. */
  private restart(): void {
    this.epoch++;
    this.inflight = 0;
    this.cursor = 0;
    // Acknowledgements for rows sent before still arrive and still delete (confirm() by id),
    // but the window starts empty: the rows are sent again.
    for (const e of this.unconfirmed.values()) e.epoch = -1;
    if (this.connected) this.pump();
  }

  private confirm(id: string, e: Sent): void {
    e.done = true;
    if (this.unconfirmed.get(id) === e) this.unconfirmed.delete(id);
    this.acked.push(e.seq);
    this.scheduleAck();
    if (e.epoch === this.epoch) this.inflight--;
  }

  private pump(): void {
    while (this.connected && this.inflight < this.window) {
      const rows = this.outbox.peek(this.cursor, this.window - this.inflight);
      if (rows.length === 0) return;
      const epoch = this.epoch;
      for (const row of rows) {
        this.cursor = row.seq;
        this.inflight++;
        const e: Sent = { seq: row.seq, epoch, at: this.clock.now(), done: false };
        this.unconfirmed.set(row.id, e);
        this.publish(row.topic, row.payload).then(
          () => {
            if (e.done) return;
            // An ack from an older connection still proves the broker has the message; with
            // store acknowledgements on, only the cloud's own word deletes it.
            if (this.o.storeAck?.()) {
              e.at = this.clock.now();
              this.armCheck();
              return;
            }
            this.confirm(row.id, e);
            if (this.connected) this.pump();
          },
          () => {
            if (e.done) return;
            e.done = true;
            if (this.unconfirmed.get(row.id) === e) this.unconfirmed.delete(row.id);
            if (e.epoch === this.epoch) this.inflight--;
          },
        );
      }
    }
  }

  /**
   * One timer while anything waits for a store acknowledgement, set for when the oldest falls
   * due: a replica that died holding messages costs one timeout before they go again, not up to
   * two (a check every timeout would find a message sent just after it not yet due).
   */
  private armCheck(): void {
    if (this.stopCheck || !this.connected) return;
    let oldest = Number.POSITIVE_INFINITY;
    // Rows sent before the last restart are sent again as the cursor reaches them: only this
    // round's count (a stale one would make the check fire at once after every reconnect).
    for (const e of this.unconfirmed.values()) if (!e.done && e.epoch === this.epoch && e.at < oldest) oldest = e.at;
    if (oldest === Number.POSITIVE_INFINITY) return;
    const wait = Math.max(50, oldest + this.timeoutMs - this.clock.now());
    this.stopCheck = this.clock.setTimer(wait, () => {
      this.stopCheck = undefined;
      const now = this.clock.now();
      // Entries of an earlier round whose rows are gone (the outbox dropped the oldest) would stay
      // for ever: past a timeout they go (a late acknowledgement then finds nothing, and a row
      // still stored is sent again as the cursor reaches it).
      for (const [id, e] of this.unconfirmed) if (e.epoch !== this.epoch && now - e.at >= this.timeoutMs) this.unconfirmed.delete(id);
      let overdue = false;
      for (const e of this.unconfirmed.values()) {
        if (!e.done && e.epoch === this.epoch && now - e.at >= this.timeoutMs) {
          overdue = true;
          break;
        }
      }
      if (overdue && this.connected) {
        // The replica that took them died before storing them (or the ack was lost): again.
        this.unconfirmed.clear();
        this.restart();
      }
      // Disconnected: nothing is re-armed; the reconnect sends everything again.
      this.armCheck();
    });
  }

  /** Deletes confirmed rows in batches: one transaction per turn of the event loop. */
  private scheduleAck(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      const seqs = this.acked;
      this.acked = [];
      const n = this.outbox.ack(seqs);
      this.sent += n;
      this.o.onAcked?.(n);
    });
  }

  /** Deletes whatever confirmations are waiting (before a clean shutdown). */
  flushAcks(): void {
    this.stop();
    const seqs = this.acked;
    this.acked = [];
    this.sent += this.outbox.ack(seqs);
  }
}
