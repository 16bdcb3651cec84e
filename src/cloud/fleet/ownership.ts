import type { Store } from '../store/store.ts';
import type { Clock } from '../../lib/clock.ts';
import type { Logger } from '../../lib/logger.ts';

/**
 * Which replica handles each site's heartbeats. Every replica still receives every heartbeat
 * (a plain subscription: a shared one hands each message to any member, so a replica would hear
 * a site only now and then), but only the site's owner parses it; the others drop it after
 * reading the site id from the topic. The owner runs the site's liveness and tells the other
 * replicas when it changes (fleet/status.ts). So heartbeat parsing, validation and status writes
 * split between replicas, and every replica still agrees on which sites are online.
 *
 * Ownership is rendezvous hashing over the live members: each site goes to the member with the
 * highest hash of (site, member). Every replica computes the same owner from the same members,
 * and a member joining or leaving moves only its own share of sites.
 */
export function ownerOf(siteId: string, members: readonly string[]): string | undefined {
  const site = fnv1a(siteId);
  let best: string | undefined;
  let bestScore = -1;
  for (const m of members) {
    // The site's and the member's hashes combined and mixed: each (site, member) pair gets an
    // independent-looking score, at the cost of one hash of the site id per call.
    const score = mix(site ^ Math.imul(fnv1a(m), 0x9e3779b1));
    if (score > bestScore || (score === bestScore && best !== undefined && m < best)) {
      best = m;
      bestScore = score;
    }
  }
  return best;
}

/** 32-bit FNV-1a. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** murmur3's finaliser: similar inputs, unrelated outputs. */
function mix(x: number): number {
  let h = x;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * This replica's view of the members and of which sites it owns. Alone — the embedded hub, or one
 * replica — it owns every site. Not cached per site: a site id comes from a topic, which anyone
 * on an open broker can make up, and a hash per member costs well under a microsecond.
 */
export class Ownership {
  private members: readonly string[];

  constructor(readonly self: string) {
    this.members = [self];
  }

  get memberList(): readonly string[] {
    return this.members;
  }

  /** True when this replica is the only member (nothing to tell anyone). */
  get alone(): boolean {
    return this.members.length === 1 && this.members[0] === this.self;
  }

  owns(siteId: string): boolean {
    return this.members.length <= 1 || ownerOf(siteId, this.members) === this.self;
  }

  /** New members (this replica is always one). Returns whether they changed. */
  setMembers(members: readonly string[]): boolean {
    const next = [...new Set([...members, this.self])].sort();
    if (next.join('\n') === this.members.join('\n')) return false;
    this.members = next;
    return true;
  }
}

/**
 * The shell: every `everyMs` this replica renews its member lease in the store (`replica:{id}`,
 * `ttlMs` long) and reads the others'. A replica that dies stops renewing; after `ttlMs` the
 * others own its sites. A clean stop gives its lease back at once.
 */
export class Membership {
  private stopTimer?: () => void;
  private running?: Promise<void>;
  private readonly name: string;
  private failing = false;

  constructor(
    private readonly o: {
      store: Pick<Store, 'acquireLease' | 'listLeases' | 'releaseLease'>;
      clock: Clock;
      log: Logger;
      ownership: Ownership;
      /** A unique name for this process (the replica id and a per-start suffix). */
      holder: string;
      everyMs?: number;
      ttlMs?: number;
      /** Called after the members changed (ownership of some sites moved). */
      onChange: (members: readonly string[]) => void;
    },
  ) {
    this.name = `replica:${o.ownership.self}`;
  }

  /** Joins (first renewal and read, awaited), then keeps renewing. */
  async start(): Promise<void> {
    await this.renew();
    const every = this.o.everyMs ?? 1000;
    const tick = () => {
      this.stopTimer = this.o.clock.setTimer(every, tick);
      this.running ??= this.renew().finally(() => {
        this.running = undefined;
      });
    };
    this.stopTimer = this.o.clock.setTimer(every, tick);
  }

  async stop(): Promise<void> {
    this.stopTimer?.();
    await this.running;
    await this.o.store.releaseLease(this.name, this.o.holder).catch(() => {});
  }

  /** One renewal and read of the members. A store error keeps the last view (logged). */
  async renew(): Promise<void> {
    const { store, clock, ownership, log } = this.o;
    try {
      const now = clock.now();
      const mine = await store.acquireLease(this.name, this.o.holder, now, this.o.ttlMs ?? 5000);
      if (!mine)
        log.warn({ replicaId: ownership.self }, 'another live process holds this replica id: give each replica its own --replica-id');
      const members = (await store.listLeases('replica:', now)).map((l) => l.name.slice('replica:'.length));
      if (ownership.setMembers(members)) {
        log.info({ members: ownership.memberList }, 'cloud replicas changed; heartbeat ownership moved');
        this.o.onChange(ownership.memberList);
      }
      if (this.failing) log.info('replica membership renewed again');
      this.failing = false;
    } catch (e) {
      // Said once per outage, not every second.
      if (!this.failing) log.warn({ err: (e as Error).message }, 'could not renew replica membership; keeping the last view');
      this.failing = true;
    }
  }
}
