import { type Command, Option } from 'commander';
import { createRequire } from 'node:module';
import { ApiClient, loadConfig } from './client.ts';
import { parseSelector } from '../contracts/selector.ts';
import { EwError } from '../contracts/errors.ts';
import { TENANT_ROLES } from '../contracts/permissions.ts';
import { escapeControl } from '../lib/text.ts';

/**
 * Tenancy commands: `tenants` (platform admins), `keys` (tenant admins: roles, limits, expiry)
 * and `audit` (the tenant's audit log as a table or JSON lines, optionally followed).
 */
type Format = 'table' | 'json' | 'yaml';
// Loaded when YAML is printed: this module is imported by every command's start (src/cli/main.ts).
const toYaml = (data: unknown): string => (createRequire(import.meta.url)('yaml') as typeof import('yaml')).stringify(data);
const outputOption = () => new Option('-o, --output <format>', 'table, json or yaml').choices(['table', 'json', 'yaml']).default('table');
const client = () => new ApiClient(loadConfig());

function print(format: Format, data: unknown, table: () => string): void {
  if (format === 'json') process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  else if (format === 'yaml') process.stdout.write(toYaml(data));
  else process.stdout.write(`${table()}\n`);
}

function table(rows: Record<string, unknown>[], columns: string[]): string {
  if (rows.length === 0) return '(none)';
  const cell = (v: unknown) => escapeControl(v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const cells = rows.map((r) => columns.map((c) => cell(r[c])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...cells.map(line)].join('\n');
}

const count =
  (flag: string) =>
  (v: string): number => {
    if (!/^\d+$/.test(v)) throw new EwError('CONFIG_INVALID', `${flag} must be a whole number, not "${v}"`, { path: flag });
    return Number(v);
  };

/** `--expires`: a duration from now (90d, 12h, 30m) or an ISO 8601 time; returns ms since epoch. */
export function parseExpiry(v: string, now = Date.now()): number {
  const m = /^(\d+)(m|h|d)$/.exec(v.trim());
  if (m) return now + Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
  const t = Date.parse(v);
  if (Number.isNaN(t) || !/^\d{4}-\d{2}-\d{2}/.test(v))
    throw new EwError('CONFIG_INVALID', `--expires "${v}" is neither a duration (90d, 12h, 30m) nor an ISO time (2027-01-31T00:00:00Z)`, {
      path: 'expires',
    });
  return t;
}

const quotaOptions = (c: Command) =>
  c
    .option('--max-sites <n>', 'most live sites', count('--max-sites'))
    .option('--max-apps <n>', 'most apps (versions of one app count once)', count('--max-apps'))
    .option('--max-artifact-bytes <n>', 'most bytes of model files', count('--max-artifact-bytes'))
    .option('--max-results-per-day <n>', 'most results stored per UTC day', count('--max-results-per-day'));
const quotasOf = (o: { maxSites?: number; maxApps?: number; maxArtifactBytes?: number; maxResultsPerDay?: number }) => ({
  ...(o.maxSites !== undefined ? { sites: o.maxSites } : {}),
  ...(o.maxApps !== undefined ? { apps: o.maxApps } : {}),
  ...(o.maxArtifactBytes !== undefined ? { artifactBytes: o.maxArtifactBytes } : {}),
  ...(o.maxResultsPerDay !== undefined ? { resultsPerDay: o.maxResultsPerDay } : {}),
});

export function registerTenancyCommands(program: Command): void {
  const tenants = program.command('tenants').description('Tenants of this cloud (platform admins).');
  tenants
    .command('list')
    .description('Every tenant with its state and quotas.')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave tenants list -o json')
    .action(async (o) => {
      const r = await client().api('GET /api/v1/tenants');
      print(o.output, r.items, () =>
        table(
          r.items.map((t) => ({ ...t, createdAt: new Date(t.createdAt).toISOString() })),
          ['id', 'name', 'state', 'quotas', 'createdAt'],
        ),
      );
    });
  tenants
    .command('show')
    .description('One tenant with what it holds.')
    .argument('<tenant>', 'id or name')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave tenants show city-of-hangzhou')
    .action(async (t: string, o) => {
      const r = await client().api('GET /api/v1/tenants/:id', { params: { id: t } });
      print(o.output, r, () => toYaml(r).trimEnd());
    });
  quotaOptions(tenants.command('create').description('Create a tenant and its first admin key (shown once).').argument('<name>'))
    .option('--dry-run', 'check the name and quotas; create nothing')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave tenants create city-of-hangzhou --max-sites 500 --max-results-per-day 5000000')
    .action(async (name: string, o) => {
      const quotas = quotasOf(o);
      if (o.dryRun) {
        const taken = (await client().api('GET /api/v1/tenants')).items.some((t) => t.name === name);
        if (taken) throw new EwError('TENANT_EXISTS', `a tenant named "${name}" already exists`, { path: 'name' });
        print(o.output, { dryRun: true, name, quotas }, () => `would create tenant ${name} with quotas ${JSON.stringify(quotas)}`);
        return;
      }
      const r = await client().api('POST /api/v1/tenants', { body: { name, quotas } });
      print(
        o.output,
        r,
        () => `tenant ${r.name} (${r.id}) created\nits admin key, shown once — hand it over securely:\n  ${r.adminKey.key}`,
      );
    });
  quotaOptions(
    tenants.command('quota').description("Replace a tenant's quotas (a quota not given is unlimited).").argument('<tenant>', 'id or name'),
  )
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave tenants quota city-of-hangzhou --max-sites 1000 --max-apps 50')
    .action(async (t: string, o) => {
      const r = await client().api('PUT /api/v1/tenants/:id/quotas', { params: { id: t }, body: quotasOf(o) });
      print(o.output, r, () => `${r.name}: ${JSON.stringify(r.quotas)}`);
    });
  for (const action of ['suspend', 'resume'] as const) {
    tenants
      .command(action)
      .argument('<tenant>', 'id or name')
      .description(
        action === 'suspend'
          ? 'Suspend a tenant: reads work, changes and enrollments are refused, rollouts held.'
          : 'Resume a suspended tenant.',
      )
      .option('--dry-run', 'show the tenant; change nothing')
      .addOption(outputOption())
      .addHelpText('after', `\nExample:\n  $ edgeweave tenants ${action} old-partner`)
      .action(async (t: string, o) => {
        if (o.dryRun) {
          const cur = await client().api('GET /api/v1/tenants/:id', { params: { id: t } });
          print(o.output, { dryRun: true, tenant: cur }, () => `would ${action} tenant ${cur.name} (now ${cur.state})`);
          return;
        }
        const r = await client().api(`POST /api/v1/tenants/:id/${action}`, { params: { id: t } });
        print(o.output, r, () => `${r.name}: ${r.state}`);
      });
  }
  tenants
    .command('delete')
    .description('Delete a tenant and everything it holds; its sites and keys stop at once.')
    .argument('<tenant>', 'id or name')
    .option('--dry-run', 'count what would be removed; remove nothing')
    .option('--confirm <name>', "the tenant's name again: required to delete")
    .addOption(outputOption())
    .addHelpText(
      'after',
      '\nExample:\n  $ edgeweave tenants delete old-partner --dry-run\n  $ edgeweave tenants delete old-partner --confirm old-partner',
    )
    .action(async (t: string, o) => {
      const r = await client().api('DELETE /api/v1/tenants/:id', {
        params: { id: t },
        query: o.dryRun ? { dryRun: 'true' } : { confirm: o.confirm ?? '' },
      });
      const what = Object.entries(r.removed)
        .map(([k, v]) => `${v} ${k}`)
        .join(', ');
      print(o.output, r, () =>
        r.dryRun
          ? `would remove tenant ${r.tenant.name}: ${what}`
          : `tenant ${r.tenant.name} deleted: ${what}; ${r.artifactFilesRemoved} artifact file(s) removed`,
      );
    });

  const keys = program.command('keys').description('API keys of your tenant (admins).');
  keys
    .command('list')
    .description('Keys with role, limits and expiry (never their secrets).')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave keys list')
    .action(async (o) => {
      const r = await client().api('GET /api/v1/keys');
      const when = (x: number | null) => (x === null ? '' : new Date(x).toISOString());
      print(o.output, r.items, () =>
        table(
          r.items.map((k) => ({ ...k, scope: k.scope ?? '', expiresAt: when(k.expiresAt), revokedAt: when(k.revokedAt) })),
          ['id', 'name', 'role', 'scope', 'expiresAt', 'revokedAt'],
        ),
      );
    });
  keys
    .command('create')
    .description('Create a key (shown once, stored hashed).')
    .requiredOption('--name <name>', 'what it is for (a CI job, a person)')
    .addOption(new Option('--role <role>', 'what it may do').choices([...TENANT_ROLES]).default('viewer'))
    .option('--apps <apps>', 'only these apps (comma-separated)')
    .option('--labels <labels>', 'only sites with these labels (k=v,k2=v2)')
    .option('--expires <when>', 'a duration (90d, 12h) or an ISO time; refused (401 KEY_EXPIRED) after it')
    .addOption(outputOption())
    .addHelpText(
      'after',
      '\nExample:\n  $ edgeweave keys create --name ci --role developer --apps vibration-guard --labels line=3 --expires 90d',
    )
    .action(async (o) => {
      const body = {
        name: o.name,
        role: o.role,
        ...(o.apps
          ? {
              apps: String(o.apps)
                .split(',')
                .map((x) => x.trim())
                .filter(Boolean),
            }
          : {}),
        ...(o.labels ? { labels: parseSelector(o.labels) } : {}),
        ...(o.expires ? { expiresAt: parseExpiry(o.expires) } : {}),
      };
      const r = await client().api('POST /api/v1/keys', { body });
      print(
        o.output,
        r,
        () =>
          `key ${r.id} (${r.role}${r.scope ? `, limited to ${JSON.stringify(r.scope)}` : ''}${r.expiresAt ? `, expires ${new Date(r.expiresAt).toISOString()}` : ''}), shown once:\n  ${r.key}`,
      );
    });
  keys
    .command('revoke')
    .description('Revoke a key: it stops working at once.')
    .argument('<id>')
    .addHelpText('after', '\nExample:\n  $ edgeweave keys revoke key-3f9a0c')
    .action(async (id: string) => {
      await client().api('DELETE /api/v1/keys/:id', { params: { id } });
      process.stdout.write(`key ${id} revoked\n`);
    });

  program
    .command('audit')
    .description('The audit log of your tenant: every change and refused attempt, oldest first.')
    .option('-f, --follow', 'keep printing new entries')
    .option('--json', 'JSON lines, one entry a line (for export)')
    .option('--since <time>', 'an ISO time: entries from then on')
    .option('--tenant <tenant>', "platform admins: another tenant's log, or * for all")
    .option('--limit <n>', 'entries per request', count('--limit'), 500)
    .addHelpText('after', '\nExample:\n  $ edgeweave audit --json > audit.jsonl\n  $ edgeweave audit --follow')
    .action(async (o) => {
      const c = client();
      let since: number | undefined;
      if (o.since !== undefined) {
        since = Date.parse(o.since);
        if (Number.isNaN(since)) throw new EwError('CONFIG_INVALID', `--since "${o.since}" is not an ISO time`, { path: 'since' });
      }
      let after: number | undefined;
      for (;;) {
        const r = await c.api('GET /api/v1/audit', {
          query: { limit: Math.min(1000, Math.max(1, o.limit)), after, since, tenant: o.tenant },
        });
        for (const e of r.items) {
          process.stdout.write(
            o.json
              ? `${JSON.stringify(e)}\n`
              : `${new Date(e.at).toISOString()}  ${escapeControl(`${e.outcome.padEnd(6)} ${e.status} ${e.action} ${e.target} by ${e.keyId ?? e.siteId ?? '-'} (${e.role ?? '-'}) from ${e.address}${e.code ? ` ${e.code}` : ''}`)}\n`,
          );
        }
        if (r.next !== null) after = r.next;
        // A full page: there is more now. Otherwise the end: stop, or wait for more.
        if (r.items.length >= Math.min(1000, o.limit)) continue;
        if (!o.follow) return;
        await new Promise((res) => setTimeout(res, 1000));
      }
    });
}
