import type { Statement } from 'better-sqlite3';
import { Counter, type Registry } from 'prom-client';
import type { SinkSpec } from '../contracts/manifest.ts';
import type { Row } from '../stream/planner.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import type { EdgeDb } from './db.ts';
import type { Outbox } from './outbox.ts';
import { RESERVED_STREAMS, topics } from '../contracts/topics.ts';
import type { WritePolicy } from '../contracts/industrial.ts';
import { WriteSink, type WriteHost } from './writes.ts';
import { isWriteSink } from './write-guard.ts';

/**
 * Where a rule's results go. `uplink` (the durable outbox to the cloud) and `webhook` leave the
 * site: they pass the egress guard (only granted fields), are counted per destination and written
 * to the egress audit. `mqtt` (the site's device broker), `log` and `memory` stay on the site.
 */
export interface Sink {
  readonly kind: string;
  write(rows: Row[]): void;
  close(): void;
}

export interface SinkContext {
  siteId: string;
  app: string;
  rule: string;
  outbox: Outbox;
  publishLocal: (topic: string, payload: string) => void;
  audit: EgressAudit;
  log: Logger;
  /**
   * Where the `log` sink writes results: the site's own output only. It never feeds the ring the
   * cloud reads (`edgeweave logs`), because results may be raw device data that no egress policy
   * granted — kept apart by which logger they go to, not by filtering message texts.
   */
  siteLog: Logger;
  clock: Clock;
  /** Per uplink/webhook stream: the fields the egress grant lets out (undefined: all). */
  allowedFields: (stream: string) => string[] | undefined;
  /**
   * When set, the rule host commits durable sinks (uplink) itself, in one transaction with the
   * rule's journal cursor; a sink with rows waiting calls this instead of committing alone.
   */
  dirty?: () => void;
  /** Write-back to machines (opcua/modbus sinks): the site's write host and the app's write policy. */
  writes?: WriteHost;
  writePolicy?: WritePolicy;
}

/**
 * Deterministic ids of window results (set by the rule host when it emits them); an uplink sink
 * stores a result under its id, so one emitted again by a replay after a crash is stored once.
 */
export const resultIds = new WeakMap<Row, string>();

/** A sink whose rows are committed by the rule host (see SinkContext.dirty). */
export interface DurableSink extends Sink {
  /** Rows waiting for the next commit. */
  readonly waiting: number;
  /** Writes the waiting rows (inside the caller's transaction); throws (OUTBOX_FULL, a storage error) writing none. */
  commit(): number;
  /** Discards the waiting rows; returns how many. */
  discard(): number;
}

export const isDurableSink = (s: Sink): s is DurableSink => typeof (s as DurableSink).commit === 'function';

/** Records kept by `memory` sinks, by name: for tests and the `edgeweave sql` tool. */
export const memorySinks = new Map<string, Row[]>();

const pick = (rows: Row[], fields: string[] | undefined): Row[] =>
  fields ? rows.map((r) => Object.fromEntries(fields.filter((f) => f in r).map((f) => [f, r[f]]))) : rows;

/**
 * Counts what leaves the site per destination (Prometheus) and keeps a per-minute audit in the
 * site's SQLite; `report()` sends closed minutes to the cloud on the reserved `_egress-audit`
 * stream (through the outbox, like any result), so the cloud can read the audit too.
 */
export class EgressAudit {
  private readonly upsert: Statement;
  private readonly counter: Counter<'destination' | 'stream'>;
  constructor(
    private readonly db: EdgeDb,
    private readonly clock: Clock,
    registry: Registry,
  ) {
    this.upsert = db.prepare(`INSERT INTO egress_audit (minute, app, rule, stream, destination, records, bytes) VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (minute, app, rule, stream, destination) DO UPDATE SET records = records + excluded.records, bytes = bytes + excluded.bytes`);
    this.counter = new Counter({
      name: 'ew_edge_egress_records_total',
      help: 'Records that left the site, by destination and result stream',
      labelNames: ['destination', 'stream'],
      registers: [registry],
    });
  }
  record(app: string, rule: string, stream: string, destination: string, records: number, bytes: number): void {
    this.counter.inc({ destination, stream }, records);
    this.upsert.run(Math.floor(this.clock.now() / 60_000) * 60_000, app, rule, stream, destination, records, bytes);
  }
  list(limit: number): Row[] {
    return this.db
      .prepare('SELECT minute, app, rule, stream, destination, records, bytes FROM egress_audit ORDER BY minute DESC LIMIT ?')
      .all(limit) as Row[];
  }
  /** Sends every closed, unreported minute up; returns how many rows it sent. */
  report(outbox: Outbox, siteId: string): number {
    const current = Math.floor(this.clock.now() / 60_000) * 60_000;
    const rows = this.db
      .prepare(
        'SELECT minute, app, rule, stream, destination, records, bytes FROM egress_audit WHERE reported = 0 AND minute < ? ORDER BY minute',
      )
      .all(current) as Row[];
    if (rows.length === 0) return 0;
    this.db.transaction(() => {
      outbox.enqueue(topics.up(siteId, RESERVED_STREAMS.egressAudit), RESERVED_STREAMS.egressAudit, rows);
      this.db.prepare('UPDATE egress_audit SET reported = 1 WHERE reported = 0 AND minute < ?').run(current);
    })();
    return rows.length;
  }
}

/**
 * Results into the outbox. Rows emitted in one turn of the event loop are committed in one
 * transaction (a stateless rule emits per record; a commit, with its fsync, per record would cap
 * the site at a few hundred results a second).
 */
class UplinkSink implements DurableSink {
  readonly kind = 'uplink';
  private pending: Row[] = [];
  private ids: (string | undefined)[] = [];
  private scheduled = false;
  constructor(
    private readonly name: string,
    private readonly c: SinkContext,
  ) {}
  get waiting(): number {
    return this.pending.length;
  }
  write(rows: Row[]): void {
    const picked = pick(rows, this.c.allowedFields(this.name));
    for (let i = 0; i < picked.length; i++) {
      this.pending.push(picked[i]!);
      this.ids.push(resultIds.get(rows[i]!));
    }
    if (this.c.dirty) {
      this.c.dirty();
      return;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }
  commit(): number {
    const out = this.pending;
    if (out.length === 0) return 0;
    const ids = this.ids;
    this.c.outbox.enqueue(topics.up(this.c.siteId, this.name), this.name, out, { app: this.c.app, rule: this.c.rule }, (_r, i) => ids[i]);
    this.c.audit.record(this.c.app, this.c.rule, this.name, 'cloud', out.length, Buffer.byteLength(JSON.stringify(out)));
    this.pending = [];
    this.ids = [];
    return out.length;
  }
  discard(): number {
    const n = this.pending.length;
    this.pending = [];
    this.ids = [];
    return n;
  }
  private flush(): void {
    this.scheduled = false;
    const n = this.pending.length;
    try {
      this.commit(); // the outbox tells the pump itself
    } catch (e) {
      this.discard();
      this.c.log.warn({ app: this.c.app, rule: this.c.rule, err: (e as Error).message, lost: n }, 'results not written to the outbox');
    }
  }
  close(): void {
    if (!this.c.dirty) this.flush();
  }
}

class MqttSink implements Sink {
  readonly kind = 'mqtt';
  constructor(
    private readonly topic: string,
    private readonly c: SinkContext,
  ) {}
  write(rows: Row[]): void {
    for (const r of rows) this.c.publishLocal(this.topic, JSON.stringify(r));
  }
  close(): void {}
}

class LogSink implements Sink {
  readonly kind = 'log';
  constructor(
    private readonly level: 'info' | 'warn',
    private readonly c: SinkContext,
  ) {}
  write(rows: Row[]): void {
    for (const r of rows) this.c.siteLog[this.level]({ app: this.c.app, rule: this.c.rule, result: r }, 'rule result');
  }
  close(): void {}
}

class MemorySink implements Sink {
  readonly kind = 'memory';
  constructor(private readonly name: string) {
    if (!memorySinks.has(name)) memorySinks.set(name, []);
  }
  write(rows: Row[]): void {
    const buf = memorySinks.get(this.name)!;
    buf.push(...rows);
    if (buf.length > 100_000) buf.splice(0, buf.length - 100_000);
  }
  close(): void {}
}

/**
 * POSTs each batch of results as JSON to a URL. One request in flight; failures (network, 5xx,
 * 429) are retried with exponential backoff (0.5 s doubling, at most 30 s) up to maxRetries; a
 * 4xx drops the batch. At most 1,000 batches wait; past that the oldest is dropped. Everything
 * dropped is counted and logged.
 */
export class WebhookSink implements Sink {
  readonly kind = 'webhook';
  private queue: Row[][] = [];
  private busy = false;
  private closed = false;
  private cancel?: () => void;
  readonly stats = { sent: 0, failed: 0, dropped: 0, retries: 0 };
  constructor(
    private readonly spec: Extract<SinkSpec, { webhook: unknown }>['webhook'],
    private readonly c: SinkContext,
    private readonly fetchImpl: typeof fetch = fetch,
  ) {}

  write(rows: Row[]): void {
    if (this.closed) return;
    this.queue.push(pick(rows, this.c.allowedFields(this.spec.stream)));
    if (this.queue.length > 1000) {
      const lost = this.queue.shift()!;
      this.stats.dropped += lost.length;
      this.c.log.warn({ app: this.c.app, rule: this.c.rule, url: this.spec.url }, 'webhook queue full: oldest batch dropped');
    }
    this.pump();
  }

  private pump(): void {
    if (this.busy || this.closed || this.queue.length === 0) return;
    this.busy = true;
    const batch = this.queue[0]!;
    void this.send(batch, 0);
  }

  private async send(batch: Row[], attempt: number): Promise<void> {
    const body = JSON.stringify({ site: this.c.siteId, app: this.c.app, rule: this.c.rule, stream: this.spec.stream, results: batch });
    let retry = false;
    try {
      const res = await this.fetchImpl(this.spec.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...this.spec.headers },
        body,
        signal: AbortSignal.timeout(this.spec.timeoutMs),
      });
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) {
        this.stats.sent += batch.length;
        this.c.audit.record(
          this.c.app,
          this.c.rule,
          this.spec.stream,
          new URL(this.spec.url).origin,
          batch.length,
          Buffer.byteLength(body),
        );
      } else if (res.status >= 500 || res.status === 429) {
        retry = true;
      } else {
        this.stats.failed += batch.length;
        this.c.log.warn({ app: this.c.app, rule: this.c.rule, url: this.spec.url, status: res.status }, 'webhook refused a batch; dropped');
      }
    } catch {
      retry = true;
    }
    if (retry && attempt < this.spec.maxRetries && !this.closed) {
      this.stats.retries++;
      const delay = Math.min(30_000, 500 * 2 ** attempt);
      this.cancel = this.c.clock.setTimer(delay, () => {
        void this.send(batch, attempt + 1);
      });
      return;
    }
    if (retry) {
      this.stats.failed += batch.length;
      this.c.log.warn(
        { app: this.c.app, rule: this.c.rule, url: this.spec.url, attempts: attempt + 1 },
        'webhook unreachable; batch dropped after retries',
      );
    }
    this.queue.shift();
    this.busy = false;
    this.pump();
  }

  close(): void {
    this.closed = true;
    this.cancel?.();
  }
}

export function makeSink(spec: SinkSpec, c: SinkContext): Sink {
  if ('uplink' in spec) return new UplinkSink(spec.uplink, c);
  if ('mqtt' in spec) return new MqttSink(spec.mqtt, c);
  if ('webhook' in spec) return new WebhookSink(spec.webhook, c);
  if ('log' in spec) return new LogSink(spec.log === true ? 'info' : spec.log.level, c);
  if (isWriteSink(spec)) {
    if (!c.writes) throw new Error('this agent has no write-back support configured');
    return new WriteSink(spec, { app: c.app, rule: c.rule, writes: c.writes, policy: c.writePolicy });
  }
  return new MemorySink(spec.memory);
}
