import { readFileSync } from 'node:fs';
import { ApiClient, loadConfig } from '../client.ts';
import { EwError } from '../../contracts/errors.ts';
// The same shapes on the site's local API and through the cloud (which passes the site's answer on).
import { DeviceCreated, DeviceList } from '../../cloud/api/schemas.ts';
import type { infer as zInfer } from 'zod';
import { yaml } from './output.ts';

/** `edgeweave devices add|list|revoke` (declared in ../devices.ts). */

interface Target {
  site?: string;
  localApi: string;
  apiKeyFile?: string;
  output: string;
}

function api(o: Target): { client: ApiClient; base: string } {
  if (o.site) return { client: new ApiClient(loadConfig()), base: `/api/v1/sites/${encodeURIComponent(o.site)}/devices` };
  let key = process.env.EW_LOCAL_API_KEY;
  if (o.apiKeyFile) {
    try {
      key = readFileSync(o.apiKeyFile, 'utf8').trim();
    } catch (e) {
      throw new EwError('CONFIG_INVALID', `--api-key-file ${o.apiKeyFile}: ${(e as Error).message}`, { path: '--api-key-file' });
    }
  }
  if (!key)
    throw new EwError(
      'CONFIG_INVALID',
      'on the site, give the local API key with --api-key-file or EW_LOCAL_API_KEY (or use --site <id> to go through the cloud)',
      { path: '--api-key-file' },
    );
  return { client: new ApiClient({ cloud: o.localApi, apiKey: key }), base: '/api/v1/devices' };
}

async function out(format: string, data: unknown, text: () => string): Promise<void> {
  if (format === 'json') process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  else if (format === 'yaml') process.stdout.write((await yaml()).stringify(data));
  else process.stdout.write(`${text()}\n`);
}

export async function add(id: string, o: Target & { publish?: string[]; subscribe?: string[]; description?: string }): Promise<void> {
  const { client, base } = api(o);
  const d = await client.parsed(DeviceCreated, 'POST', base, {
    id,
    publish: o.publish ?? [],
    subscribe: o.subscribe ?? [],
    ...(o.description ? { description: o.description } : {}),
  });
  await out(o.output, d, () =>
    [
      `device ${d.id} registered. Its MQTT credentials (the secret is shown once; only its digest is kept):`,
      `    username:  ${d.username}`,
      `    client id: ${d.clientId}   (it must connect with this one)`,
      `    password:  ${d.secret}`,
      `    publish:   ${d.publish.join(', ') || '(none)'}`,
      `    subscribe: ${d.subscribe.join(', ') || '(none)'}`,
    ].join('\n'),
  );
}

export async function list(o: Target): Promise<void> {
  const { client, base } = api(o);
  // Every page, in id order.
  const r: { items: { id: string; publish: string[]; subscribe: string[] }[] } = { items: [] };
  for (let after: string | null = ''; after !== null; ) {
    const page: zInfer<typeof DeviceList> = await client.parsed(
      DeviceList,
      'GET',
      `${base}${after ? `?after=${encodeURIComponent(after)}` : ''}`,
    );
    r.items.push(...page.items);
    after = page.next;
  }
  await out(o.output, r, () =>
    r.items.length
      ? r.items.map((d) => `${d.id}\tpublish ${d.publish.join(',') || '-'}\tsubscribe ${d.subscribe.join(',') || '-'}`).join('\n')
      : '(none)',
  );
}

export async function revoke(id: string, o: Target): Promise<void> {
  const { client, base } = api(o);
  await client.call('DELETE', `${base}/${encodeURIComponent(id)}`);
  await out(o.output, { revoked: id }, () => `device ${id} revoked`);
}
