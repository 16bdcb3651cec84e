import type { Statement } from 'better-sqlite3';
import { EwError } from '../contracts/errors.ts';
import { checkDeviceRequest, DEVICE_PAGE, MAX_DEVICES, SHARED_USERNAME, type DeviceGrants } from '../contracts/devices.ts';
import type { Clock } from '../lib/clock.ts';
import { hashSecret, newSecret, verifySecret } from '../lib/secrets.ts';
import type { EdgeDb } from './db.ts';
import { TopicSet } from '../lib/topic-filter.ts';

/**
 * Who may use the site's device broker, and on which topics. Each device has its own
 * credentials (username = device id, a generated secret stored as a sha256 digest) and topic
 * grants: filters it may publish to and filters it may subscribe within. A device must connect
 * with its id as its MQTT client id, so no device can take another's session (MQTT lets the
 * newest connection with a client id cut the older one). The old shared password (username
 * `device`, every non-reserved topic) is kept only as an opt-in; a shared connection may not use a
 * registered device's id either.
 *
 * The checks are pure functions of the grants (`filterCovers`, `grantsAllow…`); the registry is a
 * thin shell over the site's SQLite.
 */
export type { DeviceGrants };

export interface DeviceIdentity extends DeviceGrants {
  id: string;
  /** Connected with the shared device password (opt-in): every non-reserved topic. */
  shared: boolean;
}

export interface DeviceView extends DeviceGrants {
  id: string;
  createdAt: number;
  description?: string;
}

/** Whether every topic `filter` can match is matched by `grant` (so subscribing to it reveals nothing more). */
export function filterCovers(grant: string, filter: string): boolean {
  const g = grant.split('/');
  const f = filter.split('/');
  for (let i = 0; i < f.length; i++) {
    const gl = g[i];
    if (gl === '#') return true;
    if (gl === undefined) return false;
    const fl = f[i]!;
    if (fl === '#') return false; // the filter reaches deeper or wider than a non-# grant level
    if (gl === '+') continue;
    if (fl === '+' || fl !== gl) return false;
  }
  // `a/#` also matches `a` itself.
  return f.length === g.length || (g.length === f.length + 1 && g[f.length] === '#');
}

/**
 * A device's grants compiled once into topic sets: checked on every message it publishes or is
 * sent. Keyed by the grants object (an identity's grants do not change while it is connected),
 * so the compiled sets go with it.
 */
const compiled = new WeakMap<DeviceGrants, { publish: TopicSet; subscribe: TopicSet }>();
function sets(g: DeviceGrants): { publish: TopicSet; subscribe: TopicSet } {
  let c = compiled.get(g);
  if (!c) compiled.set(g, (c = { publish: new TopicSet(g.publish), subscribe: new TopicSet(g.subscribe) }));
  return c;
}

export function grantsAllowPublish(g: DeviceGrants, topic: string): boolean {
  return sets(g).publish.test(topic);
}
export function grantsAllowSubscribe(g: DeviceGrants, filter: string): boolean {
  return g.subscribe.some((s) => filterCovers(s, filter));
}
/** Whether a message on `topic` may be delivered to the device (whatever it subscribed to). */
export function grantsAllowReceive(g: DeviceGrants, topic: string): boolean {
  return sets(g).subscribe.test(topic);
}

export type AuthResult = { ok: true; who: DeviceIdentity } | { ok: false; reason: string; returnCode: 2 | 4 | 5 };

export class DeviceRegistry {
  private readonly get: Statement;
  constructor(
    private readonly db: EdgeDb,
    private readonly clock: Clock,
    private readonly sharedHash: () => string | undefined,
  ) {
    // Its own table, created here: the device registry is one self-contained module.
    db.exec(`CREATE TABLE IF NOT EXISTS devices (id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, publish TEXT NOT NULL, subscribe TEXT NOT NULL,
      description TEXT, created_at INTEGER NOT NULL)`);
    this.get = db.prepare('SELECT id, secret_hash, publish, subscribe FROM devices WHERE id = ?');
  }

  /** Registers a device; returns its secret (shown once, only its digest is kept). */
  add(req: { id?: unknown; publish?: unknown; subscribe?: unknown; description?: unknown }): DeviceView & { secret: string } {
    const { id, grants, description } = checkDeviceRequest(req);
    const secret = newSecret('ewd');
    const now = this.clock.now();
    this.db.transaction(() => {
      if (this.get.get(id))
        throw new EwError('DEVICE_EXISTS', `device "${id}" is already registered on this site; revoke it first to issue new credentials`, {
          path: 'id',
        });
      const n = (this.db.prepare('SELECT count(*) AS n FROM devices').get() as { n: number }).n;
      if (n >= MAX_DEVICES)
        throw new EwError('VALIDATION_FAILED', `this site already has ${MAX_DEVICES} devices, the most it keeps`, { path: 'id' });
      this.db
        .prepare('INSERT INTO devices (id, secret_hash, publish, subscribe, description, created_at) VALUES (?, ?, ?, ?, ?, ?)')
        .run(id, hashSecret(secret), JSON.stringify(grants.publish), JSON.stringify(grants.subscribe), description ?? null, now);
    })();
    return { id, ...grants, createdAt: now, ...(description ? { description } : {}), secret };
  }

  /**
   * One page of devices in id order, after the cursor `after`: at most `limit` (and
   * DEVICE_PAGE.maxItems) devices and DEVICE_PAGE.maxBytes of JSON; `next` is the cursor of the
   * following page, null at the end.
   */
  list(q: { after?: string; limit?: number } = {}): { items: DeviceView[]; next: string | null } {
    const limit = Math.max(1, Math.min(q.limit ?? DEVICE_PAGE.maxItems, DEVICE_PAGE.maxItems));
    const rows = this.db
      .prepare('SELECT id, publish, subscribe, description, created_at AS createdAt FROM devices WHERE id > ? ORDER BY id LIMIT ?')
      .all(q.after ?? '', limit + 1) as { id: string; publish: string; subscribe: string; description: string | null; createdAt: number }[];
    const items: DeviceView[] = [];
    let bytes = 0;
    for (const r of rows.slice(0, limit)) {
      const d: DeviceView = {
        id: r.id,
        publish: JSON.parse(r.publish),
        subscribe: JSON.parse(r.subscribe),
        createdAt: r.createdAt,
        ...(r.description ? { description: r.description } : {}),
      };
      bytes += Buffer.byteLength(JSON.stringify(d)) + 1;
      if (bytes > DEVICE_PAGE.maxBytes && items.length > 0) return { items, next: items[items.length - 1]!.id };
      items.push(d);
    }
    return { items, next: rows.length > limit ? items[items.length - 1]!.id : null };
  }

  /** Removes a device; its credentials stop working (the broker also cuts its live connection). */
  revoke(id: string): void {
    if (this.db.prepare('DELETE FROM devices WHERE id = ?').run(id).changes === 0) {
      throw new EwError('DEVICE_NOT_FOUND', `no device "${id}" on this site; \`edgeweave devices list\` shows them`, { path: 'id' });
    }
  }

  /** The CONNECT check: credentials, and the client id a device must use. */
  authenticate(username: string | undefined, password: string | undefined, clientId: string): AuthResult {
    if (!username || password === undefined) return { ok: false, reason: 'no username or password', returnCode: 4 };
    if (username === SHARED_USERNAME) {
      const h = this.sharedHash();
      if (!h || !verifySecret(password, h))
        return {
          ok: false,
          reason: h ? 'bad shared device password' : "the shared device password is off on this site; use the device's own credentials",
          returnCode: 4,
        };
      if (this.get.get(clientId)) return { ok: false, reason: `client id "${clientId}" belongs to a registered device`, returnCode: 2 };
      return { ok: true, who: { id: SHARED_USERNAME, shared: true, publish: ['#'], subscribe: ['#'] } };
    }
    const row = this.get.get(username) as { id: string; secret_hash: string; publish: string; subscribe: string } | undefined;
    if (!row || !verifySecret(password, row.secret_hash)) return { ok: false, reason: 'bad username or password', returnCode: 4 };
    if (clientId !== row.id)
      return { ok: false, reason: `device "${row.id}" must connect with client id "${row.id}", not "${clientId}"`, returnCode: 2 };
    return { ok: true, who: { id: row.id, shared: false, publish: JSON.parse(row.publish), subscribe: JSON.parse(row.subscribe) } };
  }
}
