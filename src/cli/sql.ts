import { createReadStream, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { planQuery, type StreamDef } from '../stream/planner.ts';
import { ModelRule } from '../stream/model-rule.ts';
import { OnnxRuntime } from '../inference/onnx.ts';
import { typedFrom } from '../inference/tensor.ts';
import { parse } from '../stream/parser.ts';
import { systemClock } from '../lib/clock.ts';
import { EwError } from '../contracts/errors.ts';
import { GgufRuntime } from '../inference/llm/gguf.ts';
import { RuleLlmCalls } from '../inference/llm/rule-calls.ts';
import { checkJsonSchema } from '../inference/llm/json-schema.ts';
import type { LoadedModel } from '../inference/runtime.ts';
import { silentLogger } from '../lib/logger.ts';

export interface SqlCommandOptions {
  input?: string;
  stream?: string;
  schema?: string;
  timestamp?: string;
  lateness?: number;
  explain?: boolean;
  /** `name=file.onnx` (infer()) or `name=file.gguf` (llm()): models the query may call, loaded locally. */
  model?: string[];
}

/**
 * `edgeweave sql "<query>"`: runs a rule over JSON-lines records (a file or stdin) and prints
 * its results as JSON lines; at the end of the input every open window closes and emits. Bad
 * lines are reported on stderr with their line number and skipped, as a rule would send them to
 * its dead-letter sink. Event time comes from `--timestamp` (default `ts` when the first record
 * has it), else processing time.
 */
export async function runSql(
  sql: string,
  o: SqlCommandOptions,
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): Promise<{ in: number; out: number; bad: number; late: number; errors: number }> {
  const q = parse(sql);
  let schema: Record<string, string> | undefined;
  if (o.schema) {
    const text = o.schema.trim().startsWith('{') ? o.schema : readFileSync(o.schema, 'utf8');
    try {
      schema = JSON.parse(text) as Record<string, string>;
    } catch (e) {
      throw new EwError('CONFIG_INVALID', `--schema is neither a JSON object nor a readable JSON file: ${(e as Error).message}`, {
        path: 'schema',
      });
    }
  }
  // Local models for infer(): loaded with the site's runtime and batcher.
  const models = new Map<string, { run: (args: unknown[]) => Promise<unknown>; close: () => Promise<void> }>();
  // Language models for llm('name', …): a .gguf file in its own supervised runtime process.
  const llms = new Map<string, LoadedModel>();
  for (const m of o.model ?? []) {
    const eq = m.indexOf('=');
    if (eq <= 0) throw new EwError('CONFIG_INVALID', `--model "${m}" is not name=file.onnx or name=file.gguf`, { path: 'model' });
    const name = m.slice(0, eq);
    if (m.endsWith('.gguf')) {
      llms.set(
        name,
        await new GgufRuntime({ log: silentLogger(), clock: systemClock }).load({
          name,
          format: 'gguf',
          file: m.slice(eq + 1),
          options: { parallel: 2, contextSize: 2048 },
        }),
      );
      continue;
    }
    const loaded = await new OnnxRuntime().load({ name, format: 'onnx', file: m.slice(eq + 1) });
    const input = loaded.inputs[0]!;
    models.set(name, {
      async run(args) {
        const nums = args.map(Number);
        const out = await loaded.run({
          [input.name]: {
            datatype: input.datatype,
            shape: input.shape[0] === -1 ? [1, nums.length] : [nums.length],
            data: typedFrom(input.datatype, nums),
          },
        });
        const vals = Object.entries(out).map(
          ([n, t]) => [n, t.shape.length <= 1 ? Number(t.data[0]) : Array.from(t.data as ArrayLike<number>)] as const,
        );
        return vals.length === 1 ? vals[0]![1] : Object.fromEntries(vals);
      },
      close: () => loaded.close(),
    });
  }
  const ruleLlm = new RuleLlmCalls(systemClock, async (c) => {
    const m = llms.get(c.endpoint);
    if (!m?.llm) throw new Error(`no language model "${c.endpoint}" here: pass --model ${c.endpoint}=file.gguf`);
    if (c.opts.jsonSchema) checkJsonSchema(c.opts.jsonSchema, 'json_schema');
    for await (const ev of m.llm.generate(
      { kind: 'chat', messages: [{ role: 'user', content: c.prompt }] },
      { ...c.opts, maxTokens: c.maxTokens ?? 256 },
    )) {
      if (ev.type === 'done') return { text: ev.text, usage: ev.usage };
    }
    throw new Error('the model ended without a result');
  });
  const infer = async (model: string, args: unknown[]) => {
    if (model.startsWith('llm:')) return ruleLlm.call('local', 'sql', {}, model.slice(4), args);
    const m = models.get(model);
    if (!m) throw new Error(`no model "${model}" here: pass --model ${model}=file.onnx`);
    return m.run(args);
  };
  const input = o.input && o.input !== '-' ? createReadStream(o.input) : process.stdin;
  const lines = createInterface({ input, crlfDelay: Infinity });
  let rule: ModelRule | undefined;
  let lineNo = 0;
  let bad = 0;
  const write = (rows: Record<string, unknown>[]) => {
    for (const r of rows) out.write(`${JSON.stringify(r)}\n`);
  };
  const start = (first: Record<string, unknown> | undefined) => {
    const stream: StreamDef = {
      name: o.stream ?? q.from.name,
      schema,
      timestamp: o.timestamp ?? (first && 'ts' in first ? 'ts' : undefined),
    };
    const plan = planQuery(sql, stream, { ...(models.size ? { models: [...models.keys()] } : {}), lateness: o.lateness ?? 0 });
    if (o.explain || q.explain) out.write(`${plan.explain()}\n`);
    rule = new ModelRule(
      plan,
      {
        clock: systemClock,
        lateness: o.lateness ?? 0,
        latePolicy: 'side',
        emit: write,
        // The input ends: a plain query with ORDER BY or LIMIT sorts and cuts the whole output.
        collect: plan.order.length > 0,
        onLate: (r) => err.write(`late record dropped: ${JSON.stringify(r)}\n`),
        onError: (r, e) => err.write(`record failed (${e.message}): ${JSON.stringify(r)}\n`),
        onEmitError: (e) => err.write(`infer() on window results failed: ${e.message}\n`),
      },
      models.size || llms.size ? infer : undefined,
    );
  };
  if (q.explain) {
    start(undefined);
    return { in: 0, out: 0, bad: 0, late: 0, errors: 0 };
  }
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
    if (!rule) start(rec as Record<string, unknown>);
    rule!.push(rec as Record<string, unknown>);
    // Keep the input in step with the model calls (records arrive in order anyway).
    if (models.size || llms.size) await rule!.settle();
  }
  if (!rule) start(undefined);
  await rule!.finish();
  rule!.stop();
  for (const m of models.values()) await m.close();
  for (const m of llms.values()) await m.close();
  const s = rule!.runtime.stats;
  err.write(
    `${s.in} records in, ${s.out} results out, ${s.filtered} filtered, ${s.late} late, ${s.errors} failed, ${bad} unreadable lines\n`,
  );
  return { in: s.in, out: s.out, bad, late: s.late, errors: s.errors };
}
