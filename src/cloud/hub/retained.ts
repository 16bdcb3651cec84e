import { Readable } from 'node:stream';
import { createRequire } from 'node:module';

/**
 * aedes's in-memory persistence, with retained messages indexed by their first two topic
 * levels (`ew/{siteId}`). The stock store scans every retained message for every subscription,
 * which makes a reconnect storm of N sites cost N² topic matches (each site has one retained
 * desired state); here an exact filter is one map lookup and `ew/{site}/…` filters scan only that
 * site's messages. Wildcards in the first two levels fall back to a full scan, as before.
 */
const require = createRequire(import.meta.url);
const MemoryPersistence = require('aedes-persistence/asyncPersistence.js') as new (opts?: object) => object;
const { CallBackPersistence } = require('aedes-persistence/callBackPersistence.js') as {
  CallBackPersistence: new (factory: (o: object) => object, opts?: object) => object;
};
const { QlobberTrue } = require('qlobber') as { QlobberTrue: new (o: object) => { add(p: string): void; test(t: string): boolean } };

interface RetainedPacket {
  topic: string;
  payload: Buffer;
}

const prefixOf = (topic: string): string => {
  const a = topic.indexOf('/');
  if (a < 0) return topic;
  const b = topic.indexOf('/', a + 1);
  return b < 0 ? topic : topic.slice(0, b);
};
const hasWildcard = (s: string) => s.includes('+') || s.includes('#');

class IndexedRetainedPersistence extends (MemoryPersistence as unknown as new (opts?: object) => Record<string, unknown>) {
  private readonly byPrefix = new Map<string, Map<string, RetainedPacket>>();

  async storeRetained(pkt: RetainedPacket): Promise<void> {
    const packet = { ...pkt };
    const key = prefixOf(packet.topic);
    let bucket = this.byPrefix.get(key);
    if (packet.payload.length === 0) {
      bucket?.delete(packet.topic);
      if (bucket?.size === 0) this.byPrefix.delete(key);
      return;
    }
    if (!bucket) this.byPrefix.set(key, (bucket = new Map()));
    bucket.set(packet.topic, packet);
  }

  private *match(pattern: string): Generator<RetainedPacket> {
    const levels = pattern.split('/');
    const scan = function* (bucket: Map<string, RetainedPacket>) {
      const q = new QlobberTrue({ wildcard_one: '+', wildcard_some: '#', separator: '/' });
      q.add(pattern);
      for (const [topic, p] of bucket) if (q.test(topic)) yield p;
    };
    if (levels.length >= 2 && !hasWildcard(levels[0]!) && !hasWildcard(levels[1]!)) {
      const bucket = this.byPrefix.get(`${levels[0]}/${levels[1]}`);
      if (!bucket) return;
      if (!hasWildcard(pattern)) {
        const p = bucket.get(pattern);
        if (p) yield p;
        return;
      }
      yield* scan(bucket);
      return;
    }
    if (levels.length === 1 && !hasWildcard(pattern)) {
      const p = this.byPrefix.get(pattern)?.get(pattern);
      if (p) yield p;
      return;
    }
    for (const bucket of this.byPrefix.values()) yield* scan(bucket);
  }

  /** Drops every retained message under `prefix` (the first two levels, `ew/{siteId}`); returns how many. */
  clearPrefix(prefix: string): number {
    const n = this.byPrefix.get(prefix)?.size ?? 0;
    this.byPrefix.delete(prefix);
    return n;
  }

  /** Retained messages and payload bytes held (for tests and metrics). */
  retainedStats(): { messages: number; bytes: number } {
    let messages = 0;
    let bytes = 0;
    for (const b of this.byPrefix.values())
      for (const p of b.values()) {
        messages++;
        bytes += p.payload.length;
      }
    return { messages, bytes };
  }

  createRetainedStream(pattern: string): Readable {
    return Readable.from(this.match(pattern));
  }

  createRetainedStreamCombi(patterns: string[]): Readable {
    const self = this;
    return Readable.from(
      (function* () {
        for (const p of patterns) yield* self.match(p);
      })(),
    );
  }
}

/**
 * `aedes` is the persistence object to hand to `Aedes.createBroker({ persistence })`; the other
 * two reach into its retained index (revocation clears a site's messages; tests measure it).
 */
export function indexedMemoryPersistence(): {
  aedes: unknown;
  clearRetained(prefix: string): number;
  retainedStats(): { messages: number; bytes: number };
} {
  let inner: IndexedRetainedPersistence | undefined;
  const aedes = new CallBackPersistence((opts) => (inner = new IndexedRetainedPersistence(opts)));
  return {
    aedes,
    clearRetained: (prefix) => inner?.clearPrefix(prefix) ?? 0,
    retainedStats: () => inner?.retainedStats() ?? { messages: 0, bytes: 0 },
  };
}
