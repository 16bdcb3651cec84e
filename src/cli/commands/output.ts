import { EwError } from '../../contracts/errors.ts';
import { ApiClient, loadConfig } from '../client.ts';

/** What the partner commands share: output formats, colours, the logged-in client, durations, app@version. */

export type Format = 'table' | 'json' | 'yaml';

const tty = () => process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number, s: string) => (tty() ? `\u001b[${code}m${s}\u001b[0m` : s);
export const green = (s: string) => paint(32, s);
export const red = (s: string) => paint(31, s);
export const dim = (s: string) => paint(2, s);

/** The yaml library, loaded only when YAML is asked for (most commands print tables). */
export const yaml = () => import('yaml');

export async function print(format: Format, data: unknown, table: () => string): Promise<void> {
  if (format === 'json') process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  else if (format === 'yaml') process.stdout.write((await yaml()).stringify(data));
  else process.stdout.write(`${table()}\n`);
}

export function table(rows: Record<string, unknown>[], columns: string[]): string {
  if (rows.length === 0) return dim('(none)');
  const cells = rows.map((r) =>
    columns.map((c) => (r[c] === undefined || r[c] === null ? '' : typeof r[c] === 'object' ? JSON.stringify(r[c]) : String(r[c]))),
  );
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [dim(line(columns.map((c) => c.toUpperCase()))), ...cells.map(line)].join('\n');
}

export const client = () => new ApiClient(loadConfig());
export const labelsText = (l: Record<string, string>) =>
  Object.entries(l)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

export const parseDuration = (v: string): number => {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v);
  if (!m) throw new EwError('CONFIG_INVALID', `"${v}" is not a duration: use 30s, 5m, 1h`);
  const n = Number(m[1]);
  return Math.round(n * ({ ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] ?? 's'] ?? 1));
};

/** `app@version`, the way every command names an app version. */
export const ref = (s: string): { name: string; version: string } => {
  const m = /^([a-z0-9-]+)@(.+)$/.exec(s);
  if (!m) throw new EwError('CONFIG_INVALID', `"${s}" is not app@version`);
  return { name: m[1]!, version: m[2]! };
};
