import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The last N log lines of a process, in memory: what an operator reads with `edgeweave logs`
 * (the site's logs stay on the site until someone asks). Lines are the JSON pino writes, so they
 * are already redacted.
 */
export class LogRing extends Writable {
  private lines: { time: number; line: string }[] = [];
  constructor(private readonly max = 2000) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (!line) continue;
      let time = Date.now();
      try {
        time = (JSON.parse(line) as { time?: number }).time ?? time;
      } catch {
        /* not JSON */
      }
      this.lines.push({ time, line });
    }
    if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
    cb();
  }
  /** Lines after `since` (ms), oldest first, at most `limit` (the newest ones). */
  since(since: number, limit: number): { time: number; line: string }[] {
    const out = this.lines.filter((l) => l.time > since);
    return out.slice(Math.max(0, out.length - limit));
  }
}

/**
 * Structured JSON logs. Anything that could carry a secret is redacted by path, so a secret
 * never reaches a log line even when a whole request or config object is logged.
 */
export function createLogger(opts: { name: string; level?: string; destination?: NodeJS.WritableStream; ring?: LogRing }): Logger {
  const dest = (opts.destination as pino.DestinationStream | undefined) ?? pino.destination({ fd: 2, sync: false });
  return pino(
    {
      name: opts.name,
      level: opts.level ?? process.env.EW_LOG_LEVEL ?? 'info',
      redact: {
        paths: [
          'req.headers.authorization',
          'headers.authorization',
          '*.password',
          '*.secret',
          '*.token',
          '*.apiKey',
          'password',
          'secret',
          'token',
          'apiKey',
        ],
        censor: '[redacted]',
      },
    },
    opts.ring ? pino.multistream([{ stream: dest }, { stream: opts.ring as unknown as pino.DestinationStream }]) : dest,
  );
}

/** A logger that drops everything: for tests and benchmarks that do not read logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
