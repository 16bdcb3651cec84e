import { Registry } from 'prom-client';
import { openEdgeDb } from '../../src/edge/db.ts';
import { Outbox } from '../../src/edge/outbox.ts';
import { Journal } from '../../src/edge/journal.ts';
import { DeadLetters, StreamRouter } from '../../src/edge/record-router.ts';
import { EgressAudit } from '../../src/edge/sinks.ts';
import { RuleHost, type RuleHostDeps } from '../../src/edge/rules.ts';
import { ManualClock } from '../../src/lib/clock.ts';
import { silentLogger } from '../../src/lib/logger.ts';

/**
 * A site's rule host under acknowledge-after-durability, without the rest of the agent: a real
 * SQLite journal, outbox and dead letters in `dir`, the real router, a manual clock. `feed`
 * journals and delivers records as the intake does (in one turn: append, then deliver each).
 */
export function durableRuleHost(
  dir: string,
  opts: {
    outbox?: { maxMessages: number; overflow: 'drop-oldest' | 'reject-new' };
    modelState?: RuleHostDeps['modelState'];
    infer?: RuleHostDeps['infer'];
  } = {},
) {
  const db = openEdgeDb(dir);
  const clock = new ManualClock(0);
  const outbox = new Outbox(db, clock, opts.outbox ?? { maxMessages: 100_000, overflow: 'drop-oldest' });
  const journal = new Journal(db, clock);
  const dead = new DeadLetters(db, clock);
  const router = new StreamRouter(dead);
  const host = new RuleHost({
    router,
    dead,
    clock,
    log: silentLogger(),
    ...(opts.modelState ? { modelState: opts.modelState } : {}),
    ...(opts.infer ? { infer: opts.infer } : {}),
    sinkContext: (app, rule, allowedFields) => ({
      siteId: 's',
      app,
      rule,
      outbox,
      audit: new EgressAudit(db, clock, new Registry()),
      log: silentLogger(),
      clock,
      allowedFields,
      siteLog: silentLogger(),
      publishLocal: () => {},
    }),
    durable: { journal, db, outbox },
  });
  const feed = (recs: { topic: string; payload: Buffer }[]) => {
    const seqs = journal.append(recs);
    seqs.forEach((seq, i) => {
      router.onMessage(recs[i]!.topic, recs[i]!.payload, undefined, seq);
    });
    host.delivered(seqs.at(-1)!);
  };
  return { db, clock, outbox, journal, dead, router, host, feed };
}
