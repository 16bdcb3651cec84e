import { createWriteStream, renameSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { ParquetWriter, fileWriter } from 'hyparquet-writer';
import { EwError } from '../../contracts/errors.ts';
import { client, print, type Format } from './output.ts';

/** One exported result, as GET /api/v1/results/export writes each line. */
export interface ExportedResult {
  seq: number;
  siteId: string;
  id: string;
  stream: string;
  app?: string;
  rule?: string;
  at: number;
  receivedAt: number;
  data: unknown;
}

/** Rows per Parquet row group: bounds the CLI's memory whatever the export's size. */
export const PARQUET_ROW_GROUP = 10_000;

/** Splits a byte stream into lines; the last line must end with a newline (else the export was cut). */
export async function* ndjsonLines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let rest = '';
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    rest += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line) yield line;
    }
  }
  rest += decoder.decode();
  if (rest.trim()) throw new EwError('INTERNAL', 'the export ended in the middle of a line: the connection was cut; run it again');
}

/**
 * Writes an export to a file as JSON lines or Parquet (columns seq, site_id, id, stream, app, rule,
 * at and received_at as UTC millisecond timestamps, and data as a JSON string). Written to
 * FILE.partial and renamed at the end, so a cut export never looks complete. Returns the row count.
 */
export async function writeExport(lines: AsyncIterable<string>, format: 'jsonl' | 'parquet', file: string | undefined): Promise<number> {
  if (format === 'jsonl' && file === undefined) {
    let n = 0;
    for await (const line of lines) {
      if (!process.stdout.write(`${line}\n`)) await once(process.stdout, 'drain');
      n++;
    }
    return n;
  }
  if (file === undefined) throw new EwError('VALIDATION_FAILED', 'Parquet is binary: name the file with --out FILE', { path: 'out' });
  const partial = `${file}.partial`;
  try {
    const n = format === 'jsonl' ? await writeJsonl(lines, partial) : await writeParquet(lines, partial);
    renameSync(partial, file);
    return n;
  } catch (e) {
    rmSync(partial, { force: true });
    throw e;
  }
}

async function writeJsonl(lines: AsyncIterable<string>, path: string): Promise<number> {
  const out = createWriteStream(path, { mode: 0o600 });
  let n = 0;
  try {
    for await (const line of lines) {
      if (!out.write(`${line}\n`)) await once(out, 'drain');
      n++;
    }
  } finally {
    out.end();
    await once(out, 'close');
  }
  return n;
}

async function writeParquet(lines: AsyncIterable<string>, path: string): Promise<number> {
  const writer = new ParquetWriter({
    writer: fileWriter(path),
    schema: [
      { name: 'root', num_children: 9 },
      { name: 'seq', type: 'INT64', repetition_type: 'REQUIRED' },
      { name: 'site_id', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
      { name: 'id', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
      { name: 'stream', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'REQUIRED' },
      { name: 'app', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      { name: 'rule', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      { name: 'at', type: 'INT64', converted_type: 'TIMESTAMP_MILLIS', repetition_type: 'REQUIRED' },
      { name: 'received_at', type: 'INT64', converted_type: 'TIMESTAMP_MILLIS', repetition_type: 'REQUIRED' },
      { name: 'data', type: 'BYTE_ARRAY', converted_type: 'JSON', repetition_type: 'REQUIRED' },
    ],
  });
  let rows: ExportedResult[] = [];
  let n = 0;
  const flush = () => {
    if (rows.length === 0) return;
    writer.write({
      rowGroupSize: rows.length,
      columnData: [
        { name: 'seq', data: rows.map((r) => BigInt(r.seq)) },
        { name: 'site_id', data: rows.map((r) => r.siteId) },
        { name: 'id', data: rows.map((r) => r.id) },
        { name: 'stream', data: rows.map((r) => r.stream) },
        { name: 'app', data: rows.map((r) => r.app ?? null) },
        { name: 'rule', data: rows.map((r) => r.rule ?? null) },
        { name: 'at', data: rows.map((r) => BigInt(r.at)) },
        { name: 'received_at', data: rows.map((r) => BigInt(r.receivedAt)) },
        { name: 'data', data: rows.map((r) => JSON.stringify(r.data ?? null)) },
      ],
    });
    rows = [];
  };
  for await (const line of lines) {
    rows.push(JSON.parse(line) as ExportedResult);
    n++;
    if (rows.length >= PARQUET_ROW_GROUP) flush();
  }
  flush();
  writer.finish();
  return n;
}

/** `edgeweave results export`. */
export async function exportResults(
  stream: string,
  o: { since?: number; until?: number; site?: string; app?: string; rule?: string; format: 'jsonl' | 'parquet'; out?: string },
): Promise<void> {
  const qs = new URLSearchParams({ stream });
  for (const k of ['since', 'until', 'site', 'app', 'rule'] as const) if (o[k] !== undefined) qs.set(k, String(o[k]));
  const res = await client().download(`/api/v1/results/export?${qs}`);
  const n = await writeExport(ndjsonLines(res.body!), o.format, o.out);
  if (o.out) process.stderr.write(`${n} results written to ${o.out}\n`);
}

/** `edgeweave results retention`. */
export async function listRetention(o: { output: Format }): Promise<void> {
  const r = await client().api('GET /api/v1/retention');
  await print(o.output, r, () =>
    [
      ...r.policies.map((p) => `${p.stream.padEnd(24)} ${p.days} days`),
      `${'(cloud default)'.padEnd(24)} ${r.cloudDefaultDays === null ? 'keep' : `${r.cloudDefaultDays} days`}`,
    ].join('\n'),
  );
}

export async function setRetention(stream: string, days: number): Promise<void> {
  await client().api('PUT /api/v1/retention/:stream', { params: { stream }, body: { days } });
  process.stdout.write(`${stream}: kept ${days} days\n`);
}

export async function unsetRetention(stream: string): Promise<void> {
  await client().api('DELETE /api/v1/retention/:stream', { params: { stream } });
  process.stdout.write(`${stream}: policy removed\n`);
}
