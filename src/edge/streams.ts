import type { Statement } from 'better-sqlite3';
import type { EdgeDb } from './db.ts';
import type { StreamDef } from '../stream/planner.ts';
import type { Clock } from '../lib/clock.ts';

/**
 * Device data into rules. A stream is an MQTT topic filter on the site's device broker (or
 * records pushed over the local HTTP API); each message is decoded as JSON and checked against
 * the stream's schema. A message that cannot be decoded or does not fit goes to the dead letters
 * (a bounded table in the site's SQLite, readable over the local API) and is counted; it never
 * reaches a rule and never stops one.
 */
export type Record_ = Record<string, unknown>;
export interface Subscriber { app: string; stream: StreamDef & { topic: string }; deliver(rec: Record_, meta: { topic: string; seq?: number }): void }

/** MQTT topic-filter matching (`+` one level, `#` the rest). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return i === 0 ? !topic.startsWith('$') : true;
    if (i >= t.length) return false;
    if (f[i] === '+') { if (i === 0 && t[0]!.startsWith('$')) return false; continue; }
    if (f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

const TYPE_CHECKS: Record<string, (v: unknown) => boolean> = {
  string: (v) => typeof v === 'string',
  int: (v) => Number.isInteger(v), bigint: (v) => Number.isInteger(v),
  float: (v) => typeof v === 'number' && Number.isFinite(v), number: (v) => typeof v === 'number' && Number.isFinite(v), double: (v) => typeof v === 'number' && Number.isFinite(v),
  bool: (v) => typeof v === 'boolean', boolean: (v) => typeof v === 'boolean',
  timestamp: (v) => (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && !Number.isNaN(Date.parse(v))),
  datetime: (v) => (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && !Number.isNaN(Date.parse(v))),
  object: (v) => typeof v === 'object' && v !== null && !Array.isArray(v), struct: (v) => typeof v === 'object' && v !== null && !Array.isArray(v),
  array: (v) => Array.isArray(v), any: () => true,
};

/** Decodes and checks one payload; returns the record or the reason it does not fit. */
export function decodeRecord(payload: Buffer | string | Record_, def: StreamDef): { ok: true; rec: Record_ } | { ok: false; reason: string } {
  let v: unknown = payload;
  if (typeof payload === 'string' || Buffer.isBuffer(payload)) {
    try {
      v = JSON.parse(payload.toString());
    } catch (e) {
      return { ok: false, reason: `not JSON: ${(e as Error).message}` };
    }
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { ok: false, reason: 'not a JSON object' };
  const rec = v as Record_;
  if (def.schema) {
    for (const [field, type] of Object.entries(def.schema)) {
      const x = rec[field];
      if (x === undefined || x === null) continue;
      if (!TYPE_CHECKS[type]!(x)) return { ok: false, reason: `field "${field}" should be ${type} but is ${JSON.stringify(x)?.slice(0, 60)}` };
    }
  }
  if (def.timestamp) {
    const t = rec[def.timestamp];
    if (t === undefined || t === null) return { ok: false, reason: `event-time field "${def.timestamp}" is missing` };
    if (!TYPE_CHECKS.timestamp!(t)) return { ok: false, reason: `event-time field "${def.timestamp}" is not a time: ${JSON.stringify(t)?.slice(0, 60)}` };
  }
  return { ok: true, rec };
}

export interface DeadLetter { id: number; at: number; app: string; stream: string; reason: string; payload: string }

/** The dead letters: newest kept, at most `max` rows. */
export class DeadLetters {
  private readonly insert: Statement;
  private readonly trim: Statement;
  private count = 0;
  total = 0;
  constructor(private readonly db: EdgeDb, private readonly clock: Clock, private readonly max = 10_000) {
    this.insert = db.prepare('INSERT INTO dead_letters (at, app, stream, reason, payload) VALUES (?, ?, ?, ?, ?)');
    this.trim = db.prepare('DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?');
    this.count = (db.prepare('SELECT count(*) AS n FROM dead_letters').get() as { n: number }).n;
  }
  add(app: string, stream: string, reason: string, payload: Buffer | string | Record_): void {
    const text = typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : JSON.stringify(payload);
    this.insert.run(this.clock.now(), app, stream, reason, text.slice(0, 64 * 1024));
    this.total++;
    if (++this.count > this.max * 1.1) {
      this.trim.run(this.max);
      this.count = this.max;
    }
  }
  list(q: { app?: string; stream?: string; limit: number }): DeadLetter[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.app) { where.push('app = ?'); args.push(q.app); }
    if (q.stream) { where.push('stream = ?'); args.push(q.stream); }
    return this.db.prepare(`SELECT id, at, app, stream, reason, payload FROM dead_letters ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`).all(...args, q.limit) as DeadLetter[];
  }
}

/**
 * Routes device messages to the streams that subscribe to their topic. Decoding happens once per
 * (message, stream definition); every subscriber of a stream gets the same decoded record.
 */
export class StreamRouter {
  private readonly subs = new Set<Subscriber>();
  readonly stats = new Map<string, { in: number; invalid: number }>();
  private filtersChanged?: (filters: string[]) => void;

  constructor(private readonly dead: DeadLetters) {}

  /** Told the set of topic filters whenever it changes (an external device broker subscribes to them). */
  onFiltersChanged(fn: (filters: string[]) => void): void {
    this.filtersChanged = fn;
  }

  private changed(): void {
    this.filtersChanged?.([...new Set([...this.subs].map((s) => s.stream.topic))]);
  }

  subscribe(s: Subscriber): () => void {
    this.subs.add(s);
    this.changed();
    return () => {
      this.subs.delete(s);
      this.changed();
    };
  }

  private stat(app: string, stream: string) {
    const k = `${app}/${stream}`;
    let s = this.stats.get(k);
    if (!s) { s = { in: 0, invalid: 0 }; this.stats.set(k, s); }
    return s;
  }

  /** Whether any stream (of a running or starting rule) reads this topic. */
  routes(topic: string): boolean {
    for (const s of this.subs) if (topicMatches(s.stream.topic, topic)) return true;
    return false;
  }

  /** A device message from the broker; `seq` is its place in the intake journal. */
  onMessage(topic: string, payload: Buffer, seq?: number): void {
    const decoded = new Map<string, ReturnType<typeof decodeRecord>>();
    for (const s of this.subs) {
      if (!topicMatches(s.stream.topic, topic)) continue;
      const key = `${s.app}/${s.stream.name}`;
      let d = decoded.get(key);
      if (!d) {
        d = decodeRecord(payload, s.stream);
        decoded.set(key, d);
        const st = this.stat(s.app, s.stream.name);
        st.in++;
        if (!d.ok) { st.invalid++; this.dead.add(s.app, s.stream.name, `${d.reason} (topic ${topic})`, payload); }
      }
      if (d.ok) s.deliver(d.rec, { topic, seq });
    }
  }

  /** Records pushed over HTTP to one app's stream; returns how many were accepted. */
  push(app: string, stream: string, records: unknown[]): { accepted: number; rejected: { index: number; reason: string }[] } {
    const targets = [...this.subs].filter((s) => s.app === app && s.stream.name === stream);
    const rejected: { index: number; reason: string }[] = [];
    let accepted = 0;
    const def = targets[0]?.stream;
    records.forEach((r, index) => {
      const st = this.stat(app, stream);
      st.in++;
      const d = def ? decodeRecord(r as Record_, def) : { ok: false as const, reason: 'no running rule reads this stream' };
      if (!d.ok) {
        st.invalid++;
        rejected.push({ index, reason: d.reason });
        this.dead.add(app, stream, d.reason, (r ?? null) as Record_);
        return;
      }
      accepted++;
      for (const t of targets) t.deliver(d.rec, { topic: `http/${app}/${stream}` });
    });
    return { accepted, rejected };
  }
}
