import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { loadConfig } from '../client.ts';
import { ERROR_CODES, EwError, type ErrorCode } from '../../contracts/errors.ts';
import { fetchTrusting } from '../../lib/fetch.ts';

/** `edgeweave infer` and `edgeweave chat` (declared in ../infer.ts). */

type Routing = { region?: string; dataClass?: string; site?: string; timeout?: number; explain?: boolean };

function routingHeaders(o: {
  region?: string;
  dataClass?: string;
  site?: string;
  timeout?: number;
  explain?: boolean;
}): Record<string, string> {
  if (o.timeout !== undefined && !(Number.isInteger(o.timeout) && o.timeout > 0))
    throw new EwError('CONFIG_INVALID', '--timeout must be a positive number of milliseconds', { path: 'timeout' });
  return {
    ...(o.region ? { 'x-edgeweave-regions': o.region } : {}),
    ...(o.dataClass ? { 'x-edgeweave-data-class': o.dataClass } : {}),
    ...(o.site ? { 'x-edgeweave-site': o.site } : {}),
    ...(o.timeout ? { 'x-edgeweave-timeout-ms': String(o.timeout) } : {}),
    ...(o.explain ? { 'x-edgeweave-explain': '1' } : {}),
  };
}

function readInput(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    throw new EwError('CONFIG_INVALID', `cannot read --input ${file}: ${(e as Error).message}`, { path: 'input' });
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (e) {
    throw new EwError('CONFIG_INVALID', `--input ${file} is not JSON: ${(e as Error).message}`, { path: 'input' });
  }
  if (!body || typeof body !== 'object' || !Array.isArray((body as { inputs?: unknown }).inputs)) {
    throw new EwError(
      'CONFIG_INVALID',
      `--input ${file} must be an Open Inference Protocol request: {"inputs": [{"name", "datatype", "shape", "data"}]}`,
      { path: 'input' },
    );
  }
  return body;
}

export async function infer(endpoint: string, o: Routing & { input: string; version?: string; output: string }): Promise<void> {
  const cfg = loadConfig();
  const body = readInput(o.input);
  const path = `/v2/models/${encodeURIComponent(endpoint)}${o.version ? `/versions/${encodeURIComponent(o.version)}` : ''}/infer`;
  let res: Response;
  try {
    res = await fetchTrusting(cfg.ca)(new URL(path, cfg.cloud), {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { authorization: `Bearer ${cfg.apiKey}`, 'content-type': 'application/json', ...routingHeaders(o) },
    });
  } catch (e) {
    throw new EwError(
      'CLOUD_UNREACHABLE',
      `cannot reach ${cfg.cloud}: ${((e as Error).cause as Error | undefined)?.message ?? (e as Error).message}`,
    );
  }
  const json = (await res.json().catch(() => ({}))) as Record<string, any>;
  if (!res.ok) {
    const code = (typeof json.code === 'string' && json.code in ERROR_CODES ? json.code : 'INTERNAL') as ErrorCode;
    const retry = res.headers.get('retry-after');
    throw new EwError(code, `${json.error ?? `HTTP ${res.status}`}${retry ? ` (retry after ${retry} s)` : ''}`, { path: json.path });
  }
  if (o.output === 'json') {
    process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
    return;
  }
  const ew = json.parameters?.edgeweave ?? {};
  for (const out of json.outputs ?? [])
    process.stdout.write(`${out.name} ${out.datatype} [${out.shape.join(', ')}] ${JSON.stringify(out.data)}\n`);
  process.stderr.write(
    `answered by ${ew.site} (${ew.region}) with model ${ew.model} in ${ew.ms} ms${ew.cascade ? `; cascade: ${ew.cascade.escalated ? 'escalated' : 'not escalated'} (${ew.cascade.why})` : ''}\n`,
  );
  if (o.explain && ew.explain) process.stderr.write(`${JSON.stringify(ew.explain, null, 2)}\n`);
}

export async function chat(endpoint: string, o: Routing & { message?: string; system?: string; maxTokens?: number }): Promise<void> {
  const cfg = loadConfig();
  const { default: OpenAI } = await import('openai');
  const client = new OpenAI({
    baseURL: new URL('/v1', cfg.cloud).toString(),
    apiKey: cfg.apiKey,
    defaultHeaders: routingHeaders(o),
    fetch: fetchTrusting(cfg.ca) as never,
    maxRetries: 2,
  });
  const history: { role: 'system' | 'user' | 'assistant'; content: string }[] = o.system ? [{ role: 'system', content: o.system }] : [];
  const ask = async (text: string) => {
    history.push({ role: 'user', content: text });
    let answer = '';
    try {
      const stream = await client.chat.completions.create({
        model: endpoint,
        messages: history,
        stream: true,
        ...(o.maxTokens ? { max_tokens: o.maxTokens } : {}),
      });
      for await (const chunk of stream) {
        const t = chunk.choices[0]?.delta?.content ?? '';
        answer += t;
        process.stdout.write(t);
      }
    } catch (e) {
      const err = e as { status?: number; error?: { code?: string; message?: string }; message: string };
      // OpenAI's shape carries our code in lower case.
      const upper = err.error?.code?.toUpperCase();
      const code = (upper && upper in ERROR_CODES ? upper : err.status === undefined ? 'CLOUD_UNREACHABLE' : 'INTERNAL') as ErrorCode;
      throw new EwError(code, err.error?.message ?? err.message);
    }
    process.stdout.write('\n');
    history.push({ role: 'assistant', content: answer });
  };
  if (o.message) return ask(o.message);
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY });
  try {
    for (;;) {
      let line: string;
      try {
        line = await rl.question('> ');
      } catch {
        return;
      }
      if (!line.trim()) return;
      await ask(line);
    }
  } finally {
    rl.close();
  }
}
