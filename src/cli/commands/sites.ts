import { readFileSync } from 'node:fs';
import { parseSelector } from '../../contracts/selector.ts';
import { escapeControl } from '../../lib/text.ts';
import { ApiClient, saveConfig } from '../client.ts';
import { client, dim, green, labelsText, parseDuration, print, red, table, yaml, type Format } from './output.ts';

/** `edgeweave login`, `sites …`, `tokens create`, `logs`, `results`: the fleet and what it sends up. */

export async function login(o: { cloud: string; apiKey: string; ca?: string }): Promise<void> {
  const ca = o.ca ? readFileSync(o.ca, 'utf8') : undefined;
  const c = new ApiClient({ cloud: o.cloud, apiKey: o.apiKey, ca });
  await c.api('GET /api/v1/sites');
  const p = saveConfig({ cloud: o.cloud, apiKey: o.apiKey, ...(ca ? { ca } : {}) });
  process.stderr.write(`${green('logged in')} to ${o.cloud}; saved in ${p}\n`);
}

export async function list(o: { state?: string; output: Format }): Promise<void> {
  const r = await client().api('GET /api/v1/sites', { query: { state: o.state } });
  await print(o.output, r.items, () =>
    table(
      r.items.map((s) => ({
        ...s,
        labels: labelsText(s.labels),
        apps: (s.status?.apps ?? []).map((a) => `${a.name}@${a.version}`).join(','),
      })),
      ['id', 'name', 'region', 'state', 'labels', 'apps'],
    ),
  );
}

export async function show(id: string, o: { output: Format }): Promise<void> {
  const r = await client().api('GET /api/v1/sites/:id', { params: { id } });
  const toYaml = (await yaml()).stringify;
  await print(o.output, r, () => toYaml(r));
}

export async function rules(id: string, o: { output: Format }): Promise<void> {
  const r = await client().api('GET /api/v1/sites/:id/rules', { params: { id } });
  await print(o.output, r.items, () => table(r.items, ['app', 'rule', 'state', 'in', 'out', 'filtered', 'late', 'dropped', 'error']));
}

export async function deadLetters(id: string, o: { app?: string; stream?: string; limit: number; output: Format }): Promise<void> {
  const q = new URLSearchParams({ limit: String(o.limit), ...(o.app ? { app: o.app } : {}), ...(o.stream ? { stream: o.stream } : {}) });
  const r = await client().api('GET /api/v1/sites/:id/dead-letters', { params: { id }, query: Object.fromEntries(q) });
  await print(
    o.output,
    r,
    () =>
      `${r.total} in all\n${table(
        r.items.map((x) => ({ ...x, at: new Date(x.at).toISOString() })),
        ['at', 'app', 'stream', 'reason', 'payloadBytes'],
      )}`,
  );
}

export async function writes(id: string, o: { app?: string; limit: number; output: Format }): Promise<void> {
  const q = new URLSearchParams({ limit: String(o.limit), ...(o.app ? { app: o.app } : {}) });
  const r = await client().api('GET /api/v1/sites/:id/writes', { params: { id }, query: Object.fromEntries(q) });
  await print(o.output, r.items, () =>
    table(
      r.items.map((x) => ({ ...x, at: new Date(x.at).toISOString() })),
      ['at', 'app', 'rule', 'target', 'value', 'result', 'detail'],
    ),
  );
}

export async function label(id: string, labels: string, o: { output: Format }): Promise<void> {
  const r = await client().api('PUT /api/v1/sites/:id/labels', { params: { id }, body: { labels: parseSelector(labels) } });
  await print(o.output, r, () => `${green('labelled')} ${id}: ${labelsText(r.labels)}`);
}

export async function revoke(id: string, o: { output: Format }): Promise<void> {
  const r = await client().api('POST /api/v1/sites/:id/revoke', { params: { id } });
  await print(o.output, r, () => `${red('revoked')} ${id}`);
}

export async function createToken(o: { labels: string; region: string; ttl: string; output: Format }): Promise<void> {
  const r = await client().api('POST /api/v1/tokens', {
    body: { labels: parseSelector(o.labels), region: o.region, ttlSeconds: parseDuration(o.ttl) },
  });
  await print(o.output, r, () => r.installCommand);
}

export async function logs(site: string, o: { limit: number; follow?: boolean }): Promise<void> {
  const c = client();
  let since = 0;
  for (;;) {
    const r = await c.api('GET /api/v1/sites/:id/logs', { params: { id: site }, query: { since, limit: o.limit } });
    // A site's lines are foreign text: control characters are escaped, never sent to the terminal.
    for (const l of r.lines.slice(-o.limit)) process.stdout.write(`${escapeControl(String(l.line))}\n`);
    if (r.lines.length) since = r.lines[r.lines.length - 1]!.time;
    if (!o.follow) return;
    await new Promise((res) => setTimeout(res, 2000));
  }
}

export async function results(
  stream: string,
  o: { site?: string; app?: string; rule?: string; limit: number; follow?: boolean; output: Format },
): Promise<void> {
  const c = client();
  let after: number | undefined;
  for (;;) {
    const r = await c.api('GET /api/v1/results', { query: { stream, site: o.site, app: o.app, rule: o.rule, limit: o.limit, after } });
    if (o.follow || o.output === 'table') {
      for (const x of r.items)
        process.stdout.write(
          o.output === 'table' ? `${dim(new Date(x.at).toISOString())} ${x.siteId} ${JSON.stringify(x.data)}\n` : `${JSON.stringify(x)}\n`,
        );
    } else {
      await print(o.output, r.items, () => '');
    }
    if (r.items.length) after = r.items[r.items.length - 1]!.seq;
    if (!o.follow) return;
    await new Promise((res) => setTimeout(res, 1000));
  }
}
