import { EwError, isEwError } from '../contracts/errors.ts';
import type { AppManifest, EgressGrant, RuleSpec, SinkSpec } from '../contracts/manifest.ts';
import { parse, closest } from './parser.ts';
import { planQuery, type Plan, type StreamDef } from './planner.ts';
import { sqlError } from './lexer.ts';
import { checkWriteSinks } from '../edge/write-guard.ts';
import { checkStreamSources } from '../edge/sources/check.ts';

/**
 * An app's streams and rules, checked as a whole: every rule parses, reads a declared stream,
 * type-checks against its schema, and sends off the site only what the egress policy grants.
 * The cloud runs this when an app is pushed and each site again when it loads the app, so a
 * rule that would leak is refused twice. Errors carry the manifest path of the offending field
 * (and, for SQL, `:line:col` inside it).
 */
export interface CheckedRule {
  spec: RuleSpec;
  plan: Plan;
  index: number;
}
export interface CheckedApp {
  streams: Map<string, StreamDef>;
  rules: CheckedRule[];
}

/** Where a result leaves to: `cloud` (the uplink) or a webhook URL. */
export interface Egress {
  stream: string;
  destination: string;
  sinkPath: string;
}

export function leavingSinks(spec: RuleSpec, ruleIndex: number): Egress[] {
  const out: Egress[] = [];
  spec.sinks.forEach((s: SinkSpec, j) => {
    if ('uplink' in s) out.push({ stream: s.uplink, destination: 'cloud', sinkPath: `spec.rules[${ruleIndex}].sinks[${j}].uplink` });
    if ('webhook' in s)
      out.push({ stream: s.webhook.stream, destination: s.webhook.url, sinkPath: `spec.rules[${ruleIndex}].sinks[${j}].webhook` });
  });
  return out;
}

const grantOf = (g: EgressGrant) => (typeof g === 'string' ? { stream: g } : g);

/** The grant that lets `e` leave, with the fields it lets out (undefined: all of them). */
export function checkEgress(plan: Plan, e: Egress, allow: readonly EgressGrant[], ruleName: string): { fields?: string[] } {
  const idx = allow.findIndex((g) => grantOf(g).stream === e.stream);
  if (idx < 0) {
    throw new EwError(
      'EGRESS_DENIED',
      `rule ${ruleName} sends results "${e.stream}" to ${e.destination}, but spec.policy.egress.allow has no grant for "${e.stream}"; add it there if these results may leave the site`,
      { path: e.sinkPath },
    );
  }
  const g = grantOf(allow[idx]!);
  const where = `spec.policy.egress.allow[${idx}]`;
  const to = g.to ?? ['cloud'];
  const ok = e.destination === 'cloud' ? to.includes('cloud') : to.some((p) => p !== 'cloud' && e.destination.startsWith(p));
  if (!ok) {
    throw new EwError(
      'EGRESS_DENIED',
      `rule ${ruleName} sends "${e.stream}" to ${e.destination}, but ${where} lets it go only to ${to.join(', ')}`,
      { path: e.sinkPath },
    );
  }
  const star = plan.columns.some((c) => 'star' in c);
  if (star && !g.raw) {
    throw new EwError(
      'EGRESS_DENIED',
      `rule ${ruleName} selects * (raw device records) into "${e.stream}", but ${where} does not grant raw records; name the fields to send, or set raw: true in ${where}`,
      { path: e.sinkPath },
    );
  }
  if (g.fields) {
    for (const c of plan.columns) {
      if ('star' in c) continue;
      if (!g.fields.includes(c.name)) {
        throw new EwError(
          'EGRESS_DENIED',
          `rule ${ruleName} sends field "${c.name}" in "${e.stream}", but ${where} lets out only ${g.fields.join(', ')}`,
          { path: e.sinkPath },
        );
      }
    }
  }
  return { fields: g.fields };
}

/** Plans one rule against the app's streams and checks its egress; errors carry manifest paths. */
export function checkRule(
  spec: RuleSpec,
  i: number,
  streams: ReadonlyMap<string, StreamDef>,
  allow: readonly EgressGrant[],
  models: readonly string[] = [],
): CheckedRule {
  let plan: Plan;
  try {
    const q = parse(spec.sql);
    const def = streams.get(q.from.name);
    if (!def) {
      const guess = closest(q.from.name, streams.keys());
      throw sqlError(
        'SQL_INVALID',
        q.from.pos,
        `rule ${spec.name} reads stream "${q.from.name}", which spec.streams does not declare${guess ? `; did you mean ${guess}?` : streams.size ? `; declared: ${[...streams.keys()].join(', ')}` : ''}`,
      );
    }
    plan = planQuery(spec.sql, def, { models, lateness: spec.options.lateness });
  } catch (e) {
    // An error in the SQL text (it has a position and no field of its own) is the rule's sql field's.
    if (isEwError(e) && e.pos && e.path === undefined) throw e.within(`spec.rules[${i}].sql`, `spec.rules[${i}].sql (rule ${spec.name})`);
    throw e;
  }
  for (const e of leavingSinks(spec, i)) checkEgress(plan, e, allow, spec.name);
  return { spec, plan, index: i };
}

export function checkApp(m: AppManifest): CheckedApp {
  const streams = new Map<string, StreamDef>();
  m.spec.streams.forEach((s, i) => {
    if (streams.has(s.name))
      throw new EwError('INVALID_MANIFEST', `stream "${s.name}" is declared twice`, { path: `spec.streams[${i}].name` });
    if (s.timestamp && s.schema && !(s.timestamp in s.schema)) {
      throw new EwError('INVALID_MANIFEST', `stream ${s.name}'s timestamp field "${s.timestamp}" is not in its schema`, {
        path: `spec.streams[${i}].timestamp`,
      });
    }
    streams.set(s.name, { name: s.name, schema: s.schema, timestamp: s.timestamp });
  });
  const allow = m.spec.policy.egress?.allow ?? [];
  const names = new Set<string>();
  const rules = m.spec.rules.map((spec, i) => {
    if (names.has(spec.name))
      throw new EwError('INVALID_MANIFEST', `rule name "${spec.name}" is used twice`, { path: `spec.rules[${i}].name` });
    names.add(spec.name);
    return checkRule(
      spec,
      i,
      streams,
      allow,
      m.spec.models.map((x) => x.name),
    );
  });
  checkStreamSources(m);
  // Write-back sinks (opcua, modbus) need a grant in spec.policy.writes: refused here, at push.
  checkWriteSinks(rules, m.spec.policy.writes);
  return { streams, rules };
}
