import type { Statement } from 'better-sqlite3';
import type { EdgeDb } from './db.ts';
import type { StreamDef } from '../stream/planner.ts';
import type { FieldType } from '../contracts/manifest.ts';
import type { Clock } from '../lib/clock.ts';
import { propertyFields, type Mqtt5Properties } from './mqtt5.ts';
import { TopicIndex, TopicSet } from '../lib/topic-filter.ts';

/**
 * Device data into rules. A stream is an MQTT topic filter on the site's device broker (or
 * records pushed over the local HTTP API); each message is decoded as JSON and checked against
 * the stream's schema. A message that cannot be decoded or does not fit goes to the dead letters
 * (a bounded table in the site's SQLite, readable over the local API) and is counted; it never
 * reaches a rule and never stops one.
 */
export type Record_ = Record<string, unknown>;
export interface Subscriber {
  app: string;
  stream: StreamDef & { topic: string; properties?: Record<string, string> };
  deliver(rec: Record_, meta: { topic: string; seq?: number }): void;
}

/**
 * Records pushed into one app's stream (the local HTTP push API, an industrial source) are
 * journaled under this topic, so they are made durable and replayed like device messages. The
 * leading `$` keeps every device filter (`#`, `+/…`) from matching it and devices from publishing it.
 */
export const PUSH_PREFIX = '$push/';
export const pushTopic = (app: string, stream: string): string => `${PUSH_PREFIX}${app}/${stream}`;

/**
 * Whether `app`'s stream reads a (journaled) record of `topic`: its MQTT filter, or its push
 * topic. `filter`: the stream's filter compiled once, where this is asked often.
 */
export function streamReads(app: string, stream: { name: string; topic: string }, topic: string, filter?: TopicSet): boolean {
  if (topic.startsWith(PUSH_PREFIX)) return topic === pushTopic(app, stream.name);
  return stream.topic !== '' && (filter ?? new TopicSet([stream.topic])).test(topic);
}

const TYPE_CHECKS: Record<FieldType, (v: unknown) => boolean> = {
  string: (v) => typeof v === 'string',
  int: (v) => Number.isInteger(v),
  bigint: (v) => Number.isInteger(v),
  float: (v) => typeof v === 'number' && Number.isFinite(v),
  number: (v) => typeof v === 'number' && Number.isFinite(v),
  double: (v) => typeof v === 'number' && Number.isFinite(v),
  bool: (v) => typeof v === 'boolean',
  boolean: (v) => typeof v === 'boolean',
  timestamp: (v) => (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && !Number.isNaN(Date.parse(v))),
  datetime: (v) => (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && !Number.isNaN(Date.parse(v))),
  object: (v) => typeof v === 'object' && v !== null && !Array.isArray(v),
  struct: (v) => typeof v === 'object' && v !== null && !Array.isArray(v),
  array: (v) => Array.isArray(v),
  any: () => true,
};

/** Bytes of a value's JSON text: how dead-letter reasons size a value without showing it. */
const jsonBytes = (v: unknown): number => Buffer.byteLength(JSON.stringify(v) ?? '');
/** The JSON type of a value, as a reason names it ("a string", "an array"). */
const kindOf = (v: unknown): string =>
  v === null
    ? 'null'
    : Array.isArray(v)
      ? 'an array'
      : typeof v === 'object'
        ? 'an object'
        : typeof v === 'number'
          ? Number.isInteger(v)
            ? 'an integer'
            : 'a number'
          : `a ${typeof v}`;

/**
 * Why a record was refused. `reason` names the field, the expected type and sizes — never any
 * content, because it is what the cloud is shown (raw device data stays on the site). `detail`
 * may quote the content (a parser's message, a rule's error) and stays in the site's SQLite.
 */
export interface Refusal {
  ok: false;
  reason: string;
  detail?: string;
}

/** Decodes and checks one payload; returns the record or why it does not fit. */
export function decodeRecord(payload: Buffer | string | Record_, def: StreamDef, extra?: Record_): { ok: true; rec: Record_ } | Refusal {
  let v: unknown = payload;
  if (typeof payload === 'string' || Buffer.isBuffer(payload)) {
    try {
      v = JSON.parse(payload.toString());
    } catch (e) {
      return { ok: false, reason: `not JSON (${Buffer.byteLength(payload)} bytes)`, detail: (e as Error).message };
    }
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    return { ok: false, reason: `not a JSON object but ${kindOf(v)} (${jsonBytes(v)} bytes)` };
  // Fields from outside the payload (MQTT 5 properties) are checked like the payload's own.
  const rec = extra ? { ...(v as Record_), ...extra } : (v as Record_);
  if (def.schema) {
    for (const [field, type] of Object.entries(def.schema)) {
      const x = rec[field];
      if (x === undefined || x === null) continue;
      // Schemas are checked when planned (unknown types refused there), in any case, as the planner reads them.
      const check = TYPE_CHECKS[type.toLowerCase() as FieldType] ?? TYPE_CHECKS.any;
      if (!check(x))
        return {
          ok: false,
          reason: `field "${field}" should be ${type} but is ${kindOf(x)} of ${jsonBytes(x)} bytes`,
          detail: `${field} = ${JSON.stringify(x)?.slice(0, 200)}`,
        };
    }
  }
  if (def.timestamp) {
    const t = rec[def.timestamp];
    if (t === undefined || t === null) return { ok: false, reason: `event-time field "${def.timestamp}" is missing` };
    if (!TYPE_CHECKS.timestamp!(t))
      return {
        ok: false,
        reason: `event-time field "${def.timestamp}" should be timestamp but is ${kindOf(t)} of ${jsonBytes(t)} bytes`,
        detail: `${def.timestamp} = ${JSON.stringify(t)?.slice(0, 200)}`,
      };
  }
  return { ok: true, rec };
}

/** A dead letter as the site's local API shows it; the cloud gets `reason` and the payload's size only. */
export interface DeadLetter {
  id: number;
  at: number;
  app: string;
  stream: string;
  reason: string;
  detail: string | null;
  payload: string;
}

/** The dead letters: newest kept, at most `max` rows. */
export class DeadLetters {
  private readonly insert: Statement;
  private readonly trim: Statement;
  private count = 0;
  total = 0;
  constructor(
    private readonly db: EdgeDb,
    private readonly clock: Clock,
    private readonly max = 10_000,
  ) {
    this.insert = db.prepare('INSERT INTO dead_letters (at, app, stream, reason, payload, detail) VALUES (?, ?, ?, ?, ?, ?)');
    this.trim = db.prepare('DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?');
    this.count = (db.prepare('SELECT count(*) AS n FROM dead_letters').get() as { n: number }).n;
  }
  /** `reason` must not quote content (the cloud sees it); `detail` may, and stays on the site. */
  add(app: string, stream: string, reason: string, payload: Buffer | string | Record_, detail?: string): void {
    const text = typeof payload === 'string' ? payload : Buffer.isBuffer(payload) ? payload.toString('utf8') : JSON.stringify(payload);
    this.insert.run(this.clock.now(), app, stream, reason, text.slice(0, 64 * 1024), detail?.slice(0, 4096) ?? null);
    this.total++;
    if (++this.count > this.max * 1.1) {
      this.trim.run(this.max);
      this.count = this.max;
    }
  }
  list(q: { app?: string; stream?: string; limit: number }): DeadLetter[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.app) {
      where.push('app = ?');
      args.push(q.app);
    }
    if (q.stream) {
      where.push('stream = ?');
      args.push(q.stream);
    }
    return this.db
      .prepare(
        `SELECT id, at, app, stream, reason, detail, payload FROM dead_letters ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ?`,
      )
      .all(...args, q.limit) as DeadLetter[];
  }
}

/**
 * Routes device messages to the streams that subscribe to their topic. Decoding happens once per
 * (message, stream definition); every subscriber of a stream gets the same decoded record.
 */
export class StreamRouter {
  /** Subscribers, each with its order of subscription (deliveries keep that order). */
  private readonly subs = new Map<Subscriber, number>();
  private seq = 0;
  /** The subscribers by topic filter: a message is matched against all of them in one walk. */
  private readonly byTopic = new TopicIndex<Subscriber>();
  readonly stats = new Map<string, { in: number; invalid: number }>();
  private filtersChanged?: (filters: string[]) => void;

  constructor(private readonly dead: DeadLetters) {}

  /** Told the set of topic filters whenever it changes (an external device broker subscribes to them). */
  onFiltersChanged(fn: (filters: string[]) => void): void {
    this.filtersChanged = fn;
  }

  private changed(): void {
    this.filtersChanged?.([...new Set([...this.subs.keys()].map((s) => s.stream.topic))]);
  }

  subscribe(s: Subscriber): () => void {
    this.byTopic.add(s.stream.topic, s);
    this.subs.set(s, this.seq++);
    this.changed();
    return () => {
      if (!this.subs.delete(s)) return;
      this.byTopic.remove(s.stream.topic, s);
      this.changed();
    };
  }

  /** The subscribers whose stream's topic filter matches, in the order they subscribed. */
  private matching(topic: string): Subscriber[] {
    // A pushed record goes to its one app's stream (no device filter matches `$push/…`).
    if (topic.startsWith(PUSH_PREFIX))
      return [...this.subs.keys()].filter((s) => streamReads(s.app, s.stream, topic)).sort((a, b) => this.subs.get(a)! - this.subs.get(b)!);
    const hits = [...this.byTopic.match(topic)];
    return hits.length > 1 ? hits.sort((a, b) => this.subs.get(a)! - this.subs.get(b)!) : hits;
  }

  private stat(app: string, stream: string) {
    const k = `${app}/${stream}`;
    let s = this.stats.get(k);
    if (!s) {
      s = { in: 0, invalid: 0 };
      this.stats.set(k, s);
    }
    return s;
  }

  /** Whether any stream (of a running or starting rule) reads this topic. */
  routes(topic: string): boolean {
    if (topic.startsWith(PUSH_PREFIX)) return this.matching(topic).length > 0;
    return this.byTopic.match(topic).size > 0;
  }

  /** A device message from the broker; `seq` is its place in the intake journal. */
  onMessage(topic: string, payload: Buffer, props?: Mqtt5Properties, seq?: number): void {
    const decoded = new Map<string, ReturnType<typeof decodeRecord>>();
    // Pushed records keep the topic they always had for rules (`http/<app>/<stream>`).
    const shown = topic.startsWith(PUSH_PREFIX) ? `http/${topic.slice(PUSH_PREFIX.length)}` : topic;
    for (const s of this.matching(topic)) {
      const key = `${s.app}/${s.stream.name}`;
      let d = decoded.get(key);
      if (!d) {
        d = decodeRecord(payload, s.stream, s.stream.properties && propertyFields(s.stream.properties, props));
        decoded.set(key, d);
        const st = this.stat(s.app, s.stream.name);
        st.in++;
        if (!d.ok) {
          st.invalid++;
          this.dead.add(s.app, s.stream.name, d.reason, payload, `topic ${topic}${d.detail ? `: ${d.detail}` : ''}`);
        }
      }
      if (d.ok) s.deliver(d.rec, { topic: shown, seq });
    }
  }

  /** True when a running rule reads this app's stream (an industrial source sends nothing otherwise). */
  hasSubscriber(app: string, stream: string): boolean {
    for (const s of this.subs.keys()) if (s.app === app && s.stream.name === stream) return true;
    return false;
  }

  /**
   * Checks records pushed to one app's stream before they are journaled: those that do not fit
   * are counted and dead-lettered here; the rest are returned (as JSON) for the journal, and
   * reach the rules through onMessage under pushTopic(app, stream).
   */
  check(
    app: string,
    stream: string,
    records: readonly unknown[],
  ): { valid: Buffer[]; rejected: { index: number; reason: string; detail?: string }[] } {
    const def = [...this.subs.keys()].find((s) => s.app === app && s.stream.name === stream)?.stream;
    const rejected: { index: number; reason: string; detail?: string }[] = [];
    const valid: Buffer[] = [];
    records.forEach((r, index) => {
      const d: ReturnType<typeof decodeRecord> = def
        ? decodeRecord(r as Record_, def)
        : { ok: false, reason: 'no running rule reads this stream' };
      if (!d.ok) {
        const st = this.stat(app, stream);
        st.in++;
        st.invalid++;
        // The caller is on the site (the local API, a source): it may see the detail.
        rejected.push({ index, reason: d.reason, ...(d.detail ? { detail: d.detail } : {}) });
        this.dead.add(app, stream, d.reason, (r ?? null) as Record_, d.detail);
        return;
      }
      valid.push(Buffer.from(JSON.stringify(d.rec)));
    });
    return { valid, rejected };
  }

  /** Records pushed to one app's stream, straight to its rules (no journal: tools and tests); returns how many were accepted. */
  push(
    app: string,
    stream: string,
    records: unknown[],
  ): { accepted: number; rejected: { index: number; reason: string; detail?: string }[] } {
    const targets = [...this.subs.keys()].filter((s) => s.app === app && s.stream.name === stream);
    const rejected: { index: number; reason: string; detail?: string }[] = [];
    let accepted = 0;
    const def = targets[0]?.stream;
    records.forEach((r, index) => {
      const st = this.stat(app, stream);
      st.in++;
      const d: ReturnType<typeof decodeRecord> = def
        ? decodeRecord(r as Record_, def)
        : { ok: false, reason: 'no running rule reads this stream' };
      if (!d.ok) {
        st.invalid++;
        // The caller is on the site (the local API): it may see the detail.
        rejected.push({ index, reason: d.reason, ...(d.detail ? { detail: d.detail } : {}) });
        this.dead.add(app, stream, d.reason, (r ?? null) as Record_, d.detail);
        return;
      }
      accepted++;
      for (const t of targets) t.deliver(d.rec, { topic: `http/${app}/${stream}` });
    });
    return { accepted, rejected };
  }
}
