import type { Outbox } from './outbox.ts';

/**
 * Moves outbox rows to the cloud link: up to `window` messages in flight, in seq order, each
 * row deleted only after its PUBACK. On every (re)connect it starts again from the oldest row
 * still stored, so nothing sent-but-unacknowledged is lost; the duplicates that this can cause
 * (a PUBACK lost with the connection) are removed by the cloud, which stores each id once.
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

  constructor(
    private readonly outbox: Outbox,
    private readonly publish: (topic: string, payload: Buffer) => Promise<void>,
    private readonly window = 256,
    private readonly onAcked?: (n: number) => void,
  ) {
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

  connectedChanged(up: boolean): void {
    this.connected = up;
    this.epoch++;
    this.inflight = 0;
    this.cursor = 0;
    if (up) this.pump();
  }

  /** Sends what fits in the window (the outbox's `added` event calls this). */
  notify(): void {
    if (this.connected) this.pump();
  }

  private pump(): void {
    while (this.connected && this.inflight < this.window) {
      const rows = this.outbox.peek(this.cursor, this.window - this.inflight);
      if (rows.length === 0) return;
      const epoch = this.epoch;
      for (const row of rows) {
        this.cursor = row.seq;
        this.inflight++;
        this.publish(row.topic, row.payload).then(
          () => {
            // An ack from an older connection still proves the broker has the message.
            this.acked.push(row.seq);
            this.scheduleAck();
            if (epoch === this.epoch) {
              this.inflight--;
              this.pump();
            }
          },
          () => {
            if (epoch === this.epoch) this.inflight--;
          },
        );
      }
    }
  }

  /** Deletes acknowledged rows in batches: one transaction per turn of the event loop. */
  private scheduleAck(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    setImmediate(() => {
      this.ackScheduled = false;
      const seqs = this.acked;
      this.acked = [];
      this.outbox.ack(seqs);
      this.sent += seqs.length;
      this.onAcked?.(seqs.length);
    });
  }

  /** Deletes whatever acknowledgements are waiting (before a clean shutdown). */
  flushAcks(): void {
    const seqs = this.acked;
    this.acked = [];
    this.outbox.ack(seqs);
    this.sent += seqs.length;
  }
}
