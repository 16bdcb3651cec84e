import type { Counter } from 'prom-client';
import { decodePayload, DesiredState } from '../contracts/messages.ts';
import { isEwError } from '../contracts/errors.ts';
import { topics } from '../contracts/topics.ts';
import type { Clock } from '../lib/clock.ts';
import type { Logger } from '../lib/logger.ts';
import type { EdgeDb } from './db.ts';
import type { AppSupervisor } from './apps.ts';

/**
 * The site's desired state: each message from the cloud is checked, stored before its PUBACK
 * (once the cloud's broker sees the ack, the state survives a crash) and applied in order, one
 * apply at a time; at start the stored one runs at once, cloud or no cloud.
 */
export class DesiredStateHandler {
  private applying: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly d: {
      db: EdgeDb;
      siteId: string;
      clock: Clock;
      log: Logger;
      supervisor: AppSupervisor;
      /** Malformed desired-state messages (acknowledged, counted, logged). */
      invalid: Counter;
      /** After each apply: the status goes up at once, not at the next heartbeat. */
      onApplied: () => void;
    },
  ) {}

  /** Applies the state stored by an earlier run, if any (before anything else is accepted). */
  async resume(): Promise<void> {
    const stored = this.d.db.prepare('SELECT generation, body FROM desired WHERE id = 1').get() as
      | { generation: number; body: string }
      | undefined;
    if (!stored) return;
    const s = JSON.parse(stored.body) as DesiredState;
    await this.d.supervisor.apply(s.body.generation, s.body.apps);
    this.d.log.info({ generation: s.body.generation, apps: s.body.apps.length }, 'resumed last desired state from disk');
  }

  /** The link's handler for `ew/{site}/desired`; its PUBACK waits for this promise. */
  readonly onDesired = async (payload: Buffer): Promise<void> => {
    const { db, siteId, clock, log, supervisor } = this.d;
    if (payload.length === 0) return; // retained state cleared (site revoked)
    let s: DesiredState;
    try {
      s = decodePayload(DesiredState, payload, topics.desired(siteId));
    } catch (e) {
      this.d.invalid.inc();
      log.error({ code: isEwError(e) ? e.code : undefined, path: isEwError(e) ? e.path : undefined }, (e as Error).message);
      return; // acknowledged: redelivering a malformed message would not make it valid
    }
    const cur = (db.prepare('SELECT generation FROM desired WHERE id = 1').get() as { generation: number } | undefined)?.generation ?? 0;
    if (s.body.generation <= cur || s.body.siteId !== siteId) return;
    db.prepare(
      'INSERT INTO desired (id, generation, body, received_at) VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET generation = excluded.generation, body = excluded.body, received_at = excluded.received_at',
    ).run(s.body.generation, payload.toString('utf8'), clock.now());
    this.applying = this.applying.then(async () => {
      const r = await supervisor.apply(s.body.generation, s.body.apps);
      log.info({ generation: r.generation, apps: s.body.apps.length, error: r.error }, 'desired state applied');
      this.d.onApplied();
    });
  };

  /** Waits for the apply in progress (a clean stop). */
  settled(): Promise<unknown> {
    return this.applying;
  }
}
