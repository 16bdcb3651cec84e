import type { Statement } from 'better-sqlite3';
import { Counter, type Registry } from 'prom-client';
import { EwError } from '../contracts/errors.ts';
import type { WriteGrant, WritePolicy } from '../contracts/industrial.ts';
import type { Row } from '../stream/planner.ts';
import { compileValue, findGrant, guardWrite, targetName, type WriteSinkSpec } from './write-guard.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import type { EdgeDb } from './db.ts';
import { encodeValue } from './sources/modbus-codec.ts';
import { ModbusConnection, type ModbusFailure } from './sources/modbus.ts';
import { openSession, type OpcuaFailure } from './sources/opcua.ts';

export { isWriteSink } from './write-guard.ts';

/**
 * Write-back: a rule's result acts on a machine (an OPC UA node, a Modbus register or coil).
 * Every write is guarded by the app's policy (spec.policy.writes): the target must be granted,
 * with an allowed range (or set of values) and a maximum rate. A sink whose target no grant
 * covers is refused when the app is pushed (checkWriteSinks); at run time each value is checked
 * again (guardWrite, a pure function) and the write, the refusal or the dry run is written to
 * the site's write audit with the rule, the value and the result.
 */
export type WriteResult = 'written' | 'dry-run' | 'refused' | 'failed' | 'superseded';
export interface WriteAuditRow {
  id: number;
  at: number;
  app: string;
  rule: string;
  target: string;
  value: string;
  result: WriteResult;
  detail: string | null;
}

/**
 * The site's write audit: every write, refusal and dry run, newest kept (at most `max` rows).
 * Rows recorded in one turn of the event loop are committed in one transaction (a rule refused
 * at every record would otherwise cost a synchronous commit each). At most `max` rows wait for
 * a commit; refusals past that are counted into one summary row, never dropped silently, and a
 * write that reached a machine is always recorded.
 */
export class WriteAudit {
  private readonly insert: Statement;
  private readonly trim: Statement;
  private count: number;
  private readonly counter: Counter<'protocol' | 'result'>;
  private pending: unknown[][] = [];
  private scheduled = false;
  private overflow = new Map<string, { app: string; rule: string; target: string; n: number }>();
  private closed = false;

  constructor(
    private readonly db: EdgeDb,
    private readonly clock: Clock,
    registry: Registry | undefined,
    private readonly max = 10_000,
  ) {
    // Created here (not in db.ts's migrations): the table belongs to this module alone.
    db.exec(`CREATE TABLE IF NOT EXISTS write_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, app TEXT NOT NULL, rule TEXT NOT NULL,
      target TEXT NOT NULL, value TEXT NOT NULL, result TEXT NOT NULL, detail TEXT)`);
    this.insert = db.prepare('INSERT INTO write_audit (at, app, rule, target, value, result, detail) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.trim = db.prepare('DELETE FROM write_audit WHERE id <= (SELECT max(id) FROM write_audit) - ?');
    this.count = (db.prepare('SELECT count(*) AS n FROM write_audit').get() as { n: number }).n;
    this.counter = new Counter({
      name: 'ew_edge_writes_total',
      help: 'Writes to machines by rules, by protocol and result (written, dry-run, refused, failed, superseded)',
      labelNames: ['protocol', 'result'],
      registers: registry ? [registry] : [],
    });
  }

  record(app: string, rule: string, protocol: string, target: string, value: unknown, result: WriteResult, detail?: string): void {
    this.counter.inc({ protocol, result });
    if (this.pending.length >= this.max && (result === 'refused' || result === 'superseded' || result === 'dry-run')) {
      const k = `${app}|${rule}|${target}`;
      const o = this.overflow.get(k) ?? { app, rule, target, n: 0 };
      o.n++;
      this.overflow.set(k, o);
    } else {
      this.pending.push([
        this.clock.now(),
        app,
        rule,
        target,
        (JSON.stringify(value) ?? 'undefined').slice(0, 200),
        result,
        detail?.slice(0, 1000) ?? null,
      ]);
    }
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Commits what waits (also done before every read). */
  flush(): void {
    this.scheduled = false;
    if (this.closed || (this.pending.length === 0 && this.overflow.size === 0)) return;
    const rows = this.pending;
    const over = [...this.overflow.values()];
    this.pending = [];
    this.overflow = new Map();
    const now = this.clock.now();
    this.db.transaction(() => {
      for (const r of rows) this.insert.run(...r);
      for (const o of over)
        this.insert.run(
          now,
          o.app,
          o.rule,
          o.target,
          'null',
          'refused',
          `${o.n} more refusals in one burst, counted here rather than recorded one by one`,
        );
      this.count += rows.length + over.length;
      if (this.count > this.max * 1.1) {
        this.trim.run(this.max);
        this.count = this.max;
      }
    })();
  }

  /** Commits what waits and stops recording (before the database closes). */
  close(): void {
    this.flush();
    this.closed = true;
  }

  list(q: { app?: string; result?: string; limit: number }): WriteAuditRow[] {
    this.flush();
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.app) {
      where.push('app = ?');
      args.push(q.app);
    }
    if (q.result) {
      where.push('result = ?');
      args.push(q.result);
    }
    return this.db
      .prepare(
        `SELECT id, at, app, rule, target, value, result, detail FROM write_audit ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`,
      )
      .all(...args, q.limit) as WriteAuditRow[];
  }
}

/** What the site's status shows of a write sink. */
export interface WriteSinkStatus {
  app: string;
  rule: string;
  protocol: 'opcua' | 'modbus';
  target: string;
  dryRun: boolean;
  written: number;
  refused: number;
  failed: number;
  dryRuns: number;
  superseded: number;
  lastWriteAt: number | null;
  /** The last write the machine refused or that could not reach it. */
  lastError?: { code: string; message: string; at: number };
  /** The last value the write policy refused (WRITE_DENIED), with the guard's reason. */
  lastRefusal?: { reason: string; at: number };
}

/** What write sinks share on a site: the audit, the guard's history per target, secrets and PKI. */
export class WriteHost {
  private readonly histories = new Map<string, number[]>();
  readonly sinks = new Set<WriteSink>();
  statuses(): WriteSinkStatus[] {
    return [...this.sinks].map((s) => s.status());
  }
  constructor(
    readonly audit: WriteAudit,
    readonly clock: Clock,
    readonly log: Logger,
    readonly pkiDir: string,
    readonly secret: (name: string) => string | undefined,
  ) {}
  history(app: string, target: string): number[] {
    return this.histories.get(`${app}|${target}`) ?? [];
  }
  setHistory(app: string, target: string, h: number[]): void {
    this.histories.set(`${app}|${target}`, h);
  }
  /** Forgets an app's rate history (the app stopped). */
  forget(app: string): void {
    for (const k of this.histories.keys()) if (k.startsWith(`${app}|`)) this.histories.delete(k);
  }
}

/** The I/O half of a write sink: one machine target. */
interface Target {
  write(value: number | boolean): Promise<void>;
  close(): Promise<void>;
}

class OpcuaTarget implements Target {
  private opened?: Awaited<ReturnType<typeof openSession>>;
  private dataType?: number;
  constructor(
    private readonly s: Extract<WriteSinkSpec, { opcua: unknown }>['opcua'],
    private readonly host: WriteHost,
  ) {}
  async write(value: number | boolean): Promise<void> {
    try {
      this.opened ??= await openSession(this.s, this.host.pkiDir, this.host.secret);
    } catch (e) {
      throw Object.assign(new Error((e as OpcuaFailure).message), { code: (e as OpcuaFailure).code });
    }
    const { ua, session } = this.opened;
    try {
      if (this.dataType === undefined) {
        // Write with the node's own type (a Double setpoint refuses an Int32 variant).
        const dv = await session.read({ nodeId: this.s.node, attributeId: ua.AttributeIds.Value });
        if (dv.statusCode.value === ua.StatusCodes.BadNodeIdUnknown.value)
          throw Object.assign(new Error(`node ${this.s.node} does not exist on ${this.s.endpoint}`), {
            code: 'SOURCE_ADDRESS_INVALID',
            keep: true,
          });
        this.dataType =
          dv.value.dataType === ua.DataType.Null
            ? typeof value === 'boolean'
              ? ua.DataType.Boolean
              : ua.DataType.Double
            : dv.value.dataType;
      }
      const status = await session.write({
        nodeId: this.s.node,
        attributeId: ua.AttributeIds.Value,
        value: { value: new ua.Variant({ dataType: this.dataType, value }) },
      });
      if (!status.isGood())
        throw Object.assign(new Error(`${this.s.endpoint} refused the write to ${this.s.node}: ${status.name}`), {
          code: 'WRITE_FAILED',
          keep: true,
        });
    } catch (e) {
      if (!(e as { keep?: boolean }).keep) await this.close(); // reconnect next time
      throw e;
    }
  }
  async close(): Promise<void> {
    const o = this.opened;
    this.opened = undefined;
    this.dataType = undefined;
    await o?.session.close().catch(() => {});
    await o?.client.disconnect().catch(() => {});
  }
}

class ModbusTarget implements Target {
  private conn?: ModbusConnection;
  constructor(private readonly s: Extract<WriteSinkSpec, { modbus: unknown }>['modbus']) {}
  async write(value: number | boolean): Promise<void> {
    const s = this.s;
    let words: number[] | undefined;
    if (s.register !== undefined) {
      try {
        words = encodeValue(value, {
          type: s.type ?? 'uint16',
          byteOrder: s.byteOrder ?? 'big',
          wordOrder: s.wordOrder ?? 'big',
          scale: s.scale ?? 1,
          offset: s.offset ?? 0,
        });
      } catch (e) {
        throw Object.assign(new Error((e as Error).message), { code: 'WRITE_DENIED' });
      }
    }
    try {
      if (!this.conn?.open) {
        this.conn = new ModbusConnection(s.endpoint, s.unit, s.timeoutMs);
        await this.conn.connect();
      }
      if (words) await this.conn.writeRegisters(s.register!, words);
      else await this.conn.writeCoil(s.coil!, value === true || value === 1);
    } catch (e) {
      const f = e as ModbusFailure;
      throw Object.assign(new Error(f.message), { code: f.code === 'SOURCE_UNREACHABLE' ? 'SOURCE_UNREACHABLE' : 'WRITE_FAILED' });
    }
  }
  async close(): Promise<void> {
    await this.conn?.close();
    this.conn = undefined;
  }
}

export interface WriteSinkContext {
  app: string;
  rule: string;
  writes: WriteHost;
  policy?: WritePolicy;
}

/**
 * A rule's write-back sink. Each result row gives a value (the sink's expression); the guard
 * decides; granted values are written one at a time, and while one write is in flight only the
 * newest waiting value is kept (a setpoint's older values are stale: they are audited as
 * superseded, never written late).
 */
export class WriteSink {
  readonly kind: 'opcua' | 'modbus';
  private readonly value: (row: Row, now: () => number) => unknown;
  private readonly grant: WriteGrant;
  private readonly target: Target;
  private readonly name: string;
  private readonly dryRun: boolean;
  private busy = false;
  private waiting?: number | boolean;
  private closed = false;
  /** Refusals are all audited, but logged at most once per 10 s per sink (a flood would drown the log). */
  private lastRefusalLog = Number.NEGATIVE_INFINITY;
  private refusalsUnlogged = 0;
  private lastWriteAt: number | null = null;
  private lastError?: { code: string; message: string; at: number };
  private lastRefusal?: { reason: string; at: number };
  readonly stats = { written: 0, refused: 0, failed: 0, dryRun: 0, superseded: 0 };

  constructor(
    spec: WriteSinkSpec,
    private readonly c: WriteSinkContext,
  ) {
    this.kind = 'opcua' in spec ? 'opcua' : 'modbus';
    this.name = targetName(spec);
    const found = findGrant(spec, c.policy?.allow ?? []);
    // checkWriteSinks refused this at push; a manifest that skipped the cloud is refused here.
    if (!found) throw new EwError('WRITE_DENIED', `rule ${c.rule} writes to ${this.name}, which spec.policy.writes.allow does not grant`);
    this.grant = found.grant;
    const inner = 'opcua' in spec ? spec.opcua : spec.modbus;
    this.value = compileValue(inner.value);
    this.dryRun = inner.dryRun || (c.policy?.dryRun ?? false);
    this.target = 'opcua' in spec ? new OpcuaTarget(spec.opcua, c.writes) : new ModbusTarget(spec.modbus);
    c.writes.sinks.add(this);
  }

  status(): WriteSinkStatus {
    const s = this.stats;
    return {
      app: this.c.app,
      rule: this.c.rule,
      protocol: this.kind,
      target: this.name,
      dryRun: this.dryRun,
      written: s.written,
      refused: s.refused,
      failed: s.failed,
      dryRuns: s.dryRun,
      superseded: s.superseded,
      lastWriteAt: this.lastWriteAt,
      ...(this.lastError ? { lastError: { ...this.lastError } } : {}),
      ...(this.lastRefusal ? { lastRefusal: { ...this.lastRefusal } } : {}),
    };
  }

  write(rows: Row[]): void {
    const { app, rule, writes } = this.c;
    const now = () => writes.clock.now();
    for (const row of rows) {
      if (this.closed) return;
      let value: unknown;
      try {
        value = this.value(row, now);
      } catch (e) {
        value = undefined;
        writes.log.warn({ app, rule, target: this.name, err: (e as Error).message }, 'write value could not be computed');
      }
      const g = guardWrite(this.grant, value, writes.history(app, this.name), now());
      writes.setHistory(app, this.name, g.history);
      if (!g.ok) {
        this.stats.refused++;
        this.lastRefusal = { reason: g.reason, at: now() };
        writes.audit.record(app, rule, this.kind, this.name, value, 'refused', `WRITE_DENIED: ${g.reason}`);
        if (now() - this.lastRefusalLog >= 10_000) {
          writes.log.warn(
            { app, rule, target: this.name, value, code: 'WRITE_DENIED', reason: g.reason, alsoRefusedSinceLastLog: this.refusalsUnlogged },
            "write refused by the app's write policy",
          );
          this.lastRefusalLog = now();
          this.refusalsUnlogged = 0;
        } else {
          this.refusalsUnlogged++;
        }
        continue;
      }
      if (this.dryRun) {
        this.stats.dryRun++;
        writes.audit.record(app, rule, this.kind, this.name, value, 'dry-run');
        writes.log.info({ app, rule, target: this.name, value }, 'dry run: write not sent');
        continue;
      }
      if (this.busy) {
        if (this.waiting !== undefined) {
          this.stats.superseded++;
          writes.audit.record(
            app,
            rule,
            this.kind,
            this.name,
            this.waiting,
            'superseded',
            'a newer value came while a write was in flight',
          );
        }
        this.waiting = value as number | boolean;
      } else {
        void this.send(value as number | boolean);
      }
    }
  }

  private async send(value: number | boolean): Promise<void> {
    const { app, rule, writes } = this.c;
    this.busy = true;
    try {
      await this.target.write(value);
      this.stats.written++;
      this.lastWriteAt = writes.clock.now();
      writes.audit.record(app, rule, this.kind, this.name, value, 'written');
      writes.log.info({ app, rule, target: this.name, value }, 'write sent to the machine');
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'WRITE_FAILED';
      this.stats.failed++;
      this.lastError = { code, message: (e as Error).message.slice(0, 500), at: writes.clock.now() };
      writes.audit.record(app, rule, this.kind, this.name, value, 'failed', `${code}: ${(e as Error).message}`);
      writes.log.warn({ app, rule, target: this.name, value, code, err: (e as Error).message }, 'write to the machine failed');
    }
    this.busy = false;
    const next = this.waiting;
    this.waiting = undefined;
    if (next !== undefined && !this.closed) void this.send(next);
  }

  close(): void {
    this.closed = true;
    this.c.writes.sinks.delete(this);
    void this.target.close();
  }
}
