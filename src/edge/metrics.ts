import { Gauge, type Registry } from 'prom-client';
import { counterFrom } from '../lib/metrics.ts';
import type { Outbox } from './outbox.ts';
import type { DeadLetters } from './record-router.ts';
import type { RuleHost } from './rules.ts';

/**
 * The site's counters read from state kept elsewhere: dead letters, outbox drops, and per-rule
 * records in, out and failed (by app and rule). Counters, as their `_total` names promise.
 */
export function registerEdgeMetrics(registry: Registry, d: { outbox: Outbox; dead: DeadLetters; rules: RuleHost }): void {
  counterFrom(registry, 'ew_edge_outbox_dropped_total', 'Uplink messages dropped unsent by the outbox overflow policy', [], () => [
    { labels: {}, value: d.outbox.dropped },
  ]);
  counterFrom(registry, 'ew_edge_dead_letters_total', 'Records that did not fit their stream or failed in a rule', [], () => [
    { labels: {}, value: d.dead.total },
  ]);
  const per = (pick: (s: ReturnType<RuleHost['statuses']>[number]) => number) => () =>
    d.rules.statuses().map((s) => ({ labels: { app: s.app, rule: s.rule }, value: pick(s) }));
  counterFrom(
    registry,
    'ew_edge_rule_records_in_total',
    'Records that reached a rule',
    ['app', 'rule'],
    per((s) => s.in),
  );
  counterFrom(
    registry,
    'ew_edge_rule_records_out_total',
    'Result rows a rule emitted',
    ['app', 'rule'],
    per((s) => s.out),
  );
  counterFrom(
    registry,
    'ew_edge_rule_errors_total',
    'Records a rule failed on',
    ['app', 'rule'],
    per((s) => s.errors),
  );
  counterFrom(
    registry,
    'ew_edge_rule_late_total',
    "Records that arrived too late for a rule's windows",
    ['app', 'rule'],
    per((s) => s.late),
  );
  counterFrom(
    registry,
    'ew_edge_rule_sink_errors_total',
    "Results a rule's sinks failed to take",
    ['app', 'rule'],
    per((s) => s.sinkErrors),
  );
  new Gauge({
    name: 'ew_edge_rule_backlog_records',
    help: 'Records a rule has taken in or that wait for it in the journal, not yet through it (waiting for a model, or not read yet while it catches up)',
    labelNames: ['app', 'rule'],
    registers: [registry],
    collect() {
      this.reset();
      for (const b of d.rules.backlogs()) this.set({ app: b.app, rule: b.rule }, b.records);
    },
  });
}
