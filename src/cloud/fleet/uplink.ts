import { Counter, type Registry } from 'prom-client';
import type { Store, UplinkRecord } from '../store/store.ts';
import type { Hub } from '../hub/hub.ts';
import { envelope, UPLINK_ACK_MAX_IDS, type UplinkMessage } from '../../contracts/messages.ts';
import { topics } from '../../contracts/topics.ts';
import { isEwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';

type Waiting = { rec: UplinkRecord; resolve: () => void; reject: (e: unknown) => void };

/**
 * Uplink storage, each message once: messages are stored in small batches and each caller
 * resolves once its batch committed (the hub acknowledges the delivery only then, so the queue
 * holds only unacknowledged deliveries: MQTT's in-flight window per connection bounds it).
 */
export class UplinkWriter {
  private queue: Waiting[] = [];
  private flushing?: Promise<void>;
  private readonly m;

  /**
   * `storeAcks`: tell each site on `ew/{site}/ack` which of its messages are stored (external
   * brokers, whose PUBACK does not mean stored; see ackStored).
   */
  constructor(private readonly o: { store: Store; clock: Clock; log: Logger; registry: Registry; hub?: Hub; storeAcks?: boolean }) {
    const r = o.registry;
    this.m = {
      stored: new Counter({ name: 'ew_cloud_uplink_stored_total', help: 'Uplink messages stored (first delivery)', registers: [r] }),
      duplicates: new Counter({
        name: 'ew_cloud_uplink_duplicates_total',
        help: 'Uplink messages received again and ignored (already stored)',
        registers: [r],
      }),
      storeAcks: new Counter({
        name: 'ew_cloud_uplink_store_acks_total',
        help: 'Store acknowledgements sent to sites (ew/{site}/ack), each naming up to 500 stored messages',
        registers: [r],
      }),
      refused: new Counter({
        name: 'ew_cloud_uplink_refused_total',
        help: 'Uplink messages the store refused on their own (poison values); acknowledged and dropped so they never block other messages',
        registers: [r],
      }),
    };
  }

  /** Resolves once the message is stored (or was already); rejects when the store failed (the site resends). */
  store(siteId: string, stream: string, msg: UplinkMessage): Promise<void> {
    const rec: UplinkRecord = {
      siteId,
      msgId: msg.id,
      stream,
      app: msg.body.app,
      rule: msg.body.rule,
      at: msg.body.at,
      receivedAt: this.o.clock.now(),
      data: msg.body.data,
    };
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ rec, resolve, reject });
      if (!this.flushing) this.flushing = this.flush();
    });
  }

  /** Waits for the messages queued now to be stored (at stop). */
  async drain(): Promise<void> {
    await this.flushing;
  }

  private async flush(): Promise<void> {
    // Yield once so that messages arriving in the same tick share one INSERT.
    await new Promise<void>((r) => setImmediate(r));
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, 1000);
      try {
        const n = await this.o.store.insertUplink(batch.map((b) => b.rec));
        this.m.stored.inc(n);
        this.m.duplicates.inc(batch.length - n);
        this.ackStored(batch.map((b) => b.rec));
        for (const b of batch) b.resolve();
      } catch (e) {
        if (isEwError(e, 'VALIDATION_FAILED')) {
          // One poisonous message must not fail its neighbours (other sites' messages share the
          // batch): the batch is retried one message at a time.
          await this.insertOneByOne(batch, e);
        } else {
          // Not acknowledged: the sites keep the messages in their outboxes and send them again.
          this.o.log.error({ err: e }, 'storing uplink failed');
          for (const b of batch) b.reject(e);
        }
      }
    }
    this.flushing = undefined;
  }

  /**
   * After a failed batch: each message alone. A message the store refuses as invalid
   * (VALIDATION_FAILED: a value it cannot hold) is acknowledged, counted and dropped — its site
   * would otherwise resend it for ever; any other failure (the store is down) leaves it
   * unacknowledged, so the site keeps it in its outbox and sends it again.
   */
  private async insertOneByOne(batch: Waiting[], batchError: unknown): Promise<void> {
    this.o.log.warn({ err: batchError, messages: batch.length }, 'storing an uplink batch failed; storing its messages one by one');
    const done: UplinkRecord[] = [];
    for (const b of batch) {
      const resolve = b.resolve;
      b.resolve = () => {
        done.push(b.rec);
        resolve();
      };
      try {
        const n = await this.o.store.insertUplink([b.rec]);
        this.m.stored.inc(n);
        this.m.duplicates.inc(1 - n);
        b.resolve();
      } catch (e) {
        if (isEwError(e, 'VALIDATION_FAILED')) {
          this.m.refused.inc();
          this.o.log.warn(
            { siteId: b.rec.siteId, msgId: JSON.stringify(b.rec.msgId).slice(0, 140), err: (e as Error).message },
            'uplink message refused by the store and dropped',
          );
          b.resolve();
        } else {
          this.o.log.error({ err: e, siteId: b.rec.siteId }, 'storing uplink failed; the site will resend');
          b.reject(e);
        }
      }
    }
    this.ackStored(done);
  }

  /**
   * Tells each site which of its messages are stored (or were already, or were refused for
   * good): only then does it delete them from its outbox. QoS 0 and not awaited: a lost
   * acknowledgement makes the site send the message again, which is stored once and
   * acknowledged again.
   */
  private ackStored(recs: readonly UplinkRecord[]): void {
    const hub = this.o.hub;
    if (!this.o.storeAcks || !hub || recs.length === 0) return;
    const bySite = new Map<string, string[]>();
    for (const r of recs) {
      const ids = bySite.get(r.siteId);
      if (ids) ids.push(r.msgId);
      else bySite.set(r.siteId, [r.msgId]);
    }
    for (const [siteId, ids] of bySite) {
      for (let i = 0; i < ids.length; i += UPLINK_ACK_MAX_IDS) {
        const msg = envelope('uplink-ack', { ids: ids.slice(i, i + UPLINK_ACK_MAX_IDS) }, this.o.clock);
        hub.publish(topics.ack(siteId), JSON.stringify(msg), { qos: 0 }).then(
          () => this.m.storeAcks.inc(),
          (e: Error) => this.o.log.debug({ siteId, err: e.message }, 'store acknowledgement not sent; the site will resend'),
        );
      }
    }
  }
}
