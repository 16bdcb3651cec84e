import { EwError } from '../contracts/errors.ts';
import type { WriteGrant, WritePolicy } from '../contracts/industrial.ts';
import type { SinkSpec } from '../contracts/manifest.ts';
import type { Plan, Row } from '../stream/planner.ts';
import { planQuery } from '../stream/planner.ts';

/**
 * The write policy's pure core: which grant covers a write sink's target, the push-time check of
 * an app's write sinks, and the run-time guard of each value (range, allowed values, rate).
 * No I/O, no clock of its own: `now` is passed in. The sinks that write live in writes.ts.
 */
export type WriteSinkSpec = Extract<SinkSpec, { opcua: unknown }> | Extract<SinkSpec, { modbus: unknown }>;

export function isWriteSink(s: SinkSpec): s is WriteSinkSpec {
  return 'opcua' in s || 'modbus' in s;
}

/** A stable name of a write target, as audits and metrics show it. */
export function targetName(s: WriteSinkSpec): string {
  if ('opcua' in s) return `${s.opcua.endpoint}#${s.opcua.node}`;
  const m = s.modbus;
  return `${m.endpoint}/unit${m.unit}/${m.coil !== undefined ? `coil${m.coil}` : `holding${m.register}`}`;
}

const normEndpoint = (u: string) => u.replace(/^modbus\+/, '').replace(/\/$/, '');

/** The grant (and its index in spec.policy.writes.allow) that covers a sink's target, if any. */
export function findGrant(s: WriteSinkSpec, allow: readonly WriteGrant[]): { grant: WriteGrant; index: number } | undefined {
  const index = allow.findIndex((g) => {
    if ('opcua' in s) return 'opcua' in g && g.opcua === s.opcua.endpoint && g.node === s.opcua.node;
    const m = s.modbus;
    return (
      'modbus' in g &&
      normEndpoint(g.modbus) === normEndpoint(m.endpoint) &&
      g.unit === m.unit &&
      (m.coil !== undefined ? g.coil === m.coil : g.register === m.register)
    );
  });
  return index < 0 ? undefined : { grant: allow[index]!, index };
}

/** Compiles a sink's value (a SQL expression over the rule's result columns, or a constant). */
export function compileValue(value: string | number | boolean, columns?: readonly string[]): (row: Row, now: () => number) => unknown {
  if (typeof value !== 'string') return () => value;
  const schema = columns ? Object.fromEntries(columns.map((c) => [c, 'any'])) : undefined;
  const plan = planQuery(`SELECT ${value} AS value FROM result`, { name: 'result', schema });
  const col = plan.columns[0];
  if (!col || 'star' in col) throw new EwError('SQL_INVALID', `value: not an expression: ${value}`);
  return (row, now) => col.fn(row, { now });
}

export type GuardResult = { ok: true; history: number[] } | { ok: false; reason: string; history: number[] };

/**
 * The run-time guard, pure: is `value` allowed for `grant` now, given the times of the granted
 * writes before it (`history`)? Returns the history to keep. Refuses a value of the wrong type,
 * outside [min, max], not among `values`, or over maxPerMinute in the last 60 s.
 */
export function guardWrite(grant: WriteGrant, value: unknown, history: readonly number[], now: number): GuardResult {
  const recent = history.filter((t) => t > now - 60_000);
  const coil = 'modbus' in grant && grant.coil !== undefined;
  const refuse = (reason: string): GuardResult => ({ ok: false, reason, history: recent });
  if (typeof value === 'boolean') {
    if (!coil && !(grant.values ?? []).includes(value))
      return refuse(`a boolean (${value}) where the grant allows ${grant.values ? `only ${JSON.stringify(grant.values)}` : 'a number'}`);
  } else if (typeof value === 'number' && Number.isFinite(value)) {
    if (coil && value !== 0 && value !== 1) return refuse(`${value} for a coil (true/false or 0/1)`);
    if (grant.min !== undefined && value < grant.min) return refuse(`${value} is below the granted minimum ${grant.min}`);
    if (grant.max !== undefined && value > grant.max) return refuse(`${value} is above the granted maximum ${grant.max}`);
    if (grant.values && !grant.values.includes(value))
      return refuse(`${value} is not one of the granted values ${JSON.stringify(grant.values)}`);
  } else {
    return refuse(`the value ${JSON.stringify(value)?.slice(0, 60) ?? 'undefined'} is not a ${coil ? 'boolean' : 'finite number'}`);
  }
  if (recent.length >= grant.maxPerMinute)
    return refuse(`rate: ${recent.length} writes in the last minute, the grant allows ${grant.maxPerMinute}`);
  return { ok: true, history: [...recent, now] };
}

/**
 * Push-time check of an app's write sinks: each needs a grant in spec.policy.writes.allow, a
 * value expression over the rule's result columns, and a constant value inside the range.
 * `rules` are the planned rules (stream/app.ts); errors carry the sink's manifest path.
 */
export function checkWriteSinks(
  rules: readonly { spec: { name: string; sinks: readonly SinkSpec[] }; plan: Plan; index: number }[],
  policy: WritePolicy | undefined,
): void {
  const allow = policy?.allow ?? [];
  for (const r of rules) {
    r.spec.sinks.forEach((s, j) => {
      if (!isWriteSink(s)) return;
      const kind = 'opcua' in s ? 'opcua' : 'modbus';
      const path = `spec.rules[${r.index}].sinks[${j}].${kind}`;
      const found = findGrant(s, allow);
      if (!found) {
        throw new EwError(
          'WRITE_DENIED',
          `rule ${r.spec.name} writes to ${targetName(s)}, but spec.policy.writes.allow grants no such target; add a grant with its allowed range and maxPerMinute if this rule may act on the machine`,
          { path },
        );
      }
      const star = r.plan.columns.some((c) => 'star' in c);
      const columns = star ? undefined : r.plan.columns.map((c) => (c as { name: string }).name);
      const value = 'opcua' in s ? s.opcua.value : s.modbus.value;
      try {
        compileValue(value, columns);
      } catch (e) {
        throw new EwError(
          'SQL_INVALID',
          `rule ${r.spec.name}, ${path}.value: ${(e as Error).message}${columns ? ` (the rule's result columns: ${columns.join(', ')})` : ''}`,
          { path: `${path}.value` },
        );
      }
      if (typeof value !== 'string') {
        const g = guardWrite(found.grant, value, [], 0);
        if (!g.ok)
          throw new EwError(
            'WRITE_DENIED',
            `rule ${r.spec.name} writes the constant ${value} to ${targetName(s)}: ${g.reason} (spec.policy.writes.allow[${found.index}])`,
            { path: `${path}.value` },
          );
      }
    });
  }
}
