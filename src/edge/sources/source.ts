import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';

/**
 * An industrial source: a connection to one machine (an OPC UA server, a Modbus TCP device)
 * that turns its values into records of one stream. The records go through the same door as
 * every device message (StreamRouter.push: schema check, dead letters, event time, rules), so
 * nothing downstream knows the protocol.
 * Lifecycle: construct → start() (connects in the background, reconnects with backoff) → close().
 */
export type SourceState = 'connecting' | 'connected' | 'disconnected' | 'closed';

/** What the site's status shows of a source. */
export interface SourceStatus {
  app: string;
  stream: string;
  protocol: 'opcua' | 'modbus';
  endpoint: string;
  state: SourceState;
  /** When the last value arrived (site clock, ms); null before the first. */
  lastValueAt: number | null;
  /** Values read (one per field per record) and records sent into the stream. */
  values: number;
  records: number;
  errors: number;
  reconnects: number;
  /** The most recent problem, with its stable code (docs/errors.md). */
  lastError?: { code: string; message: string; at: number };
}

export interface SourceDeps {
  app: string;
  stream: string;
  /** The stream's event-time field: the source stamps it (OPC UA: the server's source timestamp; Modbus: the poll time). */
  timestampField?: string;
  emit(rec: Record<string, unknown>): void;
  /** Counted in metrics and logged; also kept in the status. */
  onError(code: string, message: string): void;
  /** A site secret's value (a file in {dataDir}/secrets), undefined when missing. */
  secret(name: string): string | undefined;
  /** Where OPC UA keeps its PKI: the client certificate and the trust list ({dataDir}/pki/opcua). */
  pkiDir: string;
  clock: Clock;
  log: Logger;
}

export interface IndustrialSource {
  readonly status: SourceStatus;
  start(): void;
  close(): Promise<void>;
}

/** Reconnect delays: 0.5 s doubling to 30 s, with ±20 % jitter so a plant's sources do not stampede a restarted server. */
export function backoffMs(attempt: number, rand: () => number = Math.random): number {
  const base = Math.min(30_000, 500 * 2 ** Math.min(attempt, 10));
  return Math.round(base * (0.8 + 0.4 * rand()));
}

/** Base for both sources: status bookkeeping and the error path. */
export abstract class SourceBase implements IndustrialSource {
  readonly status: SourceStatus;
  protected closed = false;
  protected attempt = 0;
  private cancelTimer?: () => void;

  constructor(
    protocol: 'opcua' | 'modbus',
    endpoint: string,
    protected readonly d: SourceDeps,
  ) {
    this.status = {
      app: d.app,
      stream: d.stream,
      protocol,
      endpoint,
      state: 'connecting',
      lastValueAt: null,
      values: 0,
      records: 0,
      errors: 0,
      reconnects: 0,
    };
  }

  abstract start(): void;
  abstract close(): Promise<void>;

  protected fail(code: string, message: string): void {
    this.status.errors++;
    this.status.lastError = { code, message: message.slice(0, 500), at: this.d.clock.now() };
    this.d.onError(code, message);
  }

  protected send(rec: Record<string, unknown>, values: number, eventTime: number): void {
    if (this.d.timestampField) rec[this.d.timestampField] = eventTime;
    this.status.values += values;
    this.status.records++;
    this.status.lastValueAt = this.d.clock.now();
    this.d.emit(rec);
  }

  /** Runs `fn` after the backoff for the next attempt. */
  protected later(fn: () => void): void {
    if (this.closed) return;
    this.status.state = 'disconnected';
    const ms = backoffMs(this.attempt++);
    this.cancelTimer?.();
    this.cancelTimer = this.d.clock.setTimer(ms, () => {
      this.cancelTimer = undefined;
      if (this.closed) return;
      this.status.reconnects++;
      fn();
    });
  }

  protected stopTimers(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }
}

/** host and port of `scheme://host:port`. */
export function hostPort(url: string, defaultPort: number): { host: string; port: number } {
  const m = /^[a-z+.]+:\/\/([^/:]+)(?::(\d+))?/.exec(url);
  if (!m) throw new Error(`not an endpoint URL: ${url}`);
  return { host: m[1]!, port: m[2] ? Number(m[2]) : defaultPort };
}
