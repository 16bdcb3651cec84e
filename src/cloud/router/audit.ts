import { createWriteStream, existsSync, mkdirSync, renameSync, statSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';

/**
 * The routing audit: one record per routed request — the residency constraint in force and where
 * it came from, every target tried and the outcome, and why the other candidates were left out.
 * Kept as JSON lines in `{dataDir}/router-audit.jsonl` (rotated to `.1` past `maxFileBytes`, so
 * disk use is bounded at twice that) and the last `ringSize` in memory for
 * `GET /api/v1/router/decisions`. Records hold no request payload — only where it went and why.
 */
export interface AuditRecord {
  at: number;
  requestId: string;
  tenantId: string;
  keyId: string;
  endpoint: string;
  protocol: 'oip' | 'openai';
  constraint: { regions: string[] | null; sites: string[] | null; cloud: boolean; sources: string[] };
  dataClass?: string;
  attempts: { target: string; region: string; outcome: string; ms: number }[];
  rejected: { target: string; reason: string }[];
  rejectedCounts: Record<string, number>;
  outcome: 'ok' | 'error';
  code?: string;
  answeredBy?: string;
  cascade?: { escalated: boolean; why: string; to?: string };
}

export class RouterAudit {
  private readonly ring: AuditRecord[] = [];
  private out?: WriteStream;
  private written = 0;
  /** Records not written because the file stream was backed up (counted, never blocking a request). */
  dropped = 0;

  constructor(private readonly o: { file?: string; ringSize?: number; maxFileBytes?: number }) {
    if (o.file) {
      mkdirSync(dirname(o.file), { recursive: true });
      this.written = existsSync(o.file) ? statSync(o.file).size : 0;
      this.out = createWriteStream(o.file, { flags: 'a' });
    }
  }

  record(r: AuditRecord): void {
    this.ring.push(r);
    if (this.ring.length > (this.o.ringSize ?? 10_000)) this.ring.shift();
    if (!this.out) return;
    if (this.out.writableLength > 8 * 1024 * 1024) {
      this.dropped++;
      return;
    }
    const line = `${JSON.stringify(r)}\n`;
    this.written += Buffer.byteLength(line);
    this.out.write(line);
    if (this.written > (this.o.maxFileBytes ?? 64 * 1024 * 1024)) this.rotate();
  }

  private rotate(): void {
    const file = this.o.file!;
    const old = this.out!;
    old.end();
    renameSync(file, `${file}.1`);
    this.out = createWriteStream(file, { flags: 'a' });
    this.written = 0;
  }

  /** Newest first, one tenant's. */
  list(tenantId: string, q: { endpoint?: string; limit: number }): AuditRecord[] {
    const out: AuditRecord[] = [];
    for (let i = this.ring.length - 1; i >= 0 && out.length < q.limit; i--) {
      const r = this.ring[i]!;
      if (r.tenantId === tenantId && (!q.endpoint || r.endpoint === q.endpoint)) out.push(r);
    }
    return out;
  }

  async close(): Promise<void> {
    const o = this.out;
    this.out = undefined;
    if (o) await new Promise<void>((r) => o.end(() => r()));
  }
}
