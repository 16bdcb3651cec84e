import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { planQuery, type StreamDef } from '../stream/planner.ts';
import { RuleRuntime } from '../stream/runtime.ts';
import { parse } from '../stream/parser.ts';
import { systemClock } from '../lib/clock.ts';
import { EwError } from '../contracts/errors.ts';

export interface SqlCommandOptions {
  input?: string;
  stream?: string;
  schema?: string;
  timestamp?: string;
  lateness?: number;
  explain?: boolean;
}

/**
 * `edgeweave sql "<query>"`: runs a rule over JSON-lines records (a file or stdin) and prints
 * its results as JSON lines; at the end of the input every open window closes and emits. Bad
 * lines are reported on stderr with their line number and skipped, as a rule would send them to
 * its dead-letter sink. Event time comes from `--timestamp` (default `ts` when the first record
 * has it), else processing time.
 */
export async function runSql(sql: string, o: SqlCommandOptions, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<{ in: number; out: number; bad: number; late: number; errors: number }> {
  const q = parse(sql);
  let schema: Record<string, string> | undefined;
  if (o.schema) {
    const text = o.schema.trim().startsWith('{') ? o.schema : readFileSync(o.schema, 'utf8');
    try {
      schema = JSON.parse(text) as Record<string, string>;
    } catch (e) {
      throw new EwError('CONFIG_INVALID', `--schema is neither a JSON object nor a readable JSON file: ${(e as Error).message}`, { path: 'schema' });
    }
  }
  const input = o.input && o.input !== '-' ? createReadStream(o.input) : process.stdin;
  const lines = createInterface({ input, crlfDelay: Infinity });
  let runtime: RuleRuntime | undefined;
  let lineNo = 0;
  let bad = 0;
  const write = (rows: Record<string, unknown>[]) => { for (const r of rows) out.write(`${JSON.stringify(r)}\n`); };
  const start = (first: Record<string, unknown> | undefined) => {
    const stream: StreamDef = { name: o.stream ?? q.from.name, schema, timestamp: o.timestamp ?? (first && 'ts' in first ? 'ts' : undefined) };
    const plan = planQuery(sql, stream);
    if (o.explain || q.explain) out.write(`${plan.explain()}\n`);
    runtime = new RuleRuntime(plan, {
      clock: systemClock, lateness: o.lateness ?? 0, latePolicy: 'side', emit: write,
      onLate: (r) => err.write(`late record dropped: ${JSON.stringify(r)}\n`),
      onError: (r, e) => err.write(`record failed (${e.message}): ${JSON.stringify(r)}\n`),
    });
  };
  if (q.explain) { start(undefined); return { in: 0, out: 0, bad: 0, late: 0, errors: 0 }; }
  for await (const line of lines) {
    lineNo++;
    if (line.trim() === '') continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      bad++;
      err.write(`line ${lineNo}: not JSON (${(e as Error).message}); skipped\n`);
      continue;
    }
    if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) {
      bad++;
      err.write(`line ${lineNo}: a record must be a JSON object; skipped\n`);
      continue;
    }
    if (!runtime) start(rec as Record<string, unknown>);
    runtime!.push(rec as Record<string, unknown>);
  }
  if (!runtime) start(undefined);
  runtime!.flush();
  runtime!.stop();
  const s = runtime!.stats;
  err.write(`${s.in} records in, ${s.out} results out, ${s.filtered} filtered, ${s.late} late, ${s.errors} failed, ${bad} unreadable lines\n`);
  return { in: s.in, out: s.out, bad, late: s.late, errors: s.errors };
}
