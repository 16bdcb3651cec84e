import { readFileSync } from 'node:fs';
import { type Command, Option } from 'commander';
import { stringify as toYaml } from 'yaml';
import { ApiClient, loadConfig } from './client.ts';
import { EwError } from '../contracts/errors.ts';
// The same shapes on the site's local API and through the cloud (which passes the site's answer on).
import { DeviceCreated, DeviceList } from '../cloud/api/schemas.ts';
import type { infer as zInfer } from 'zod';

/**
 * `edgeweave devices add|list|revoke`: per-device MQTT credentials and topic grants on a site's
 * device broker — on the site itself (its local API, with the local API key), or through the
 * cloud with `--site <id>` (the cloud asks the site over its link; it keeps nothing).
 */
const list = (v: string, prev: string[] = []) => [...prev, ...v.split(',').map((x) => x.trim()).filter(Boolean)];

interface Target { site?: string; localApi: string; apiKeyFile?: string }

function target(cmd: Command): Command {
  return cmd
    .option('--site <id>', 'manage the devices of this site through the cloud (after `edgeweave login`)')
    .option('--local-api <url>', 'on the site: its local API', 'http://127.0.0.1:8081')
    .option('--api-key-file <file>', 'on the site: the local API key (or EW_LOCAL_API_KEY)')
    .addOption(new Option('-o, --output <format>', 'table, json or yaml').choices(['table', 'json', 'yaml']).default('table'));
}

function api(o: Target): { client: ApiClient; base: string } {
  if (o.site) return { client: new ApiClient(loadConfig()), base: `/api/v1/sites/${encodeURIComponent(o.site)}/devices` };
  let key = process.env.EW_LOCAL_API_KEY;
  if (o.apiKeyFile) {
    try { key = readFileSync(o.apiKeyFile, 'utf8').trim(); } catch (e) { throw new EwError('CONFIG_INVALID', `--api-key-file ${o.apiKeyFile}: ${(e as Error).message}`, { path: '--api-key-file' }); }
  }
  if (!key) throw new EwError('CONFIG_INVALID', 'on the site, give the local API key with --api-key-file or EW_LOCAL_API_KEY (or use --site <id> to go through the cloud)', { path: '--api-key-file' });
  return { client: new ApiClient({ cloud: o.localApi, apiKey: key }), base: '/api/v1/devices' };
}

function out(format: string, data: unknown, text: () => string): void {
  if (format === 'json') process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  else if (format === 'yaml') process.stdout.write(toYaml(data));
  else process.stdout.write(`${text()}\n`);
}

export function registerDeviceCommands(program: Command): void {
  const devices = program.command('devices').description('Per-device MQTT credentials and topic grants on a site\'s device broker.');
  target(devices.command('add').description('Register a device: its own username, client id and secret (shown once), and the topics it may use.')
    .argument('<id>', 'device id: its MQTT username and client id')
    .option('--publish <filters>', 'topic filters it may publish to (comma-separated, repeatable)', list)
    .option('--subscribe <filters>', 'topic filters it may subscribe within (comma-separated, repeatable)', list)
    .option('--description <text>', 'what the device is'))
    .addHelpText('after', `
  Examples:
    $ edgeweave devices add press-07 --publish 'factory/press-07/#' --api-key-file /var/lib/edgeweave/api.key
    $ edgeweave devices add hmi-1 --subscribe factory/alerts --site site-1a2b3c`)
    .action(async (id: string, o) => {
      const { client, base } = api(o);
      const d = await client.parsed(DeviceCreated, 'POST', base, { id, publish: o.publish ?? [], subscribe: o.subscribe ?? [], ...(o.description ? { description: o.description } : {}) });
      out(o.output, d, () => [
        `device ${d.id} registered. Its MQTT credentials (the secret is shown once; only its digest is kept):`,
        `    username:  ${d.username}`, `    client id: ${d.clientId}   (it must connect with this one)`, `    password:  ${d.secret}`,
        `    publish:   ${d.publish.join(', ') || '(none)'}`, `    subscribe: ${d.subscribe.join(', ') || '(none)'}`,
      ].join('\n'));
    });
  target(devices.command('list').description('The devices registered on the site, with their grants (never their secrets).'))
    .addHelpText('after', `
  Examples:
    $ edgeweave devices list --api-key-file /var/lib/edgeweave/api.key
    $ edgeweave devices list --site site-1a2b3c -o json`)
    .action(async (o) => {
      const { client, base } = api(o);
      // Every page, in id order.
      const r: { items: { id: string; publish: string[]; subscribe: string[] }[] } = { items: [] };
      for (let after: string | null = ''; after !== null;) {
        const page: zInfer<typeof DeviceList> = await client.parsed(DeviceList, 'GET', `${base}${after ? `?after=${encodeURIComponent(after)}` : ''}`);
        r.items.push(...page.items);
        after = page.next;
      }
      out(o.output, r, () => (r.items.length ? r.items.map((d) => `${d.id}\tpublish ${d.publish.join(',') || '-'}\tsubscribe ${d.subscribe.join(',') || '-'}`).join('\n') : '(none)'));
    });
  target(devices.command('revoke').description('Revoke a device: its credentials stop working and its connection is cut at once.').argument('<id>'))
    .addHelpText('after', `
  Examples:
    $ edgeweave devices revoke press-07 --api-key-file /var/lib/edgeweave/api.key
    $ edgeweave devices revoke press-07 --site site-1a2b3c`)
    .action(async (id: string, o) => {
      const { client, base } = api(o);
      await client.call('DELETE', `${base}/${encodeURIComponent(id)}`);
      out(o.output, { revoked: id }, () => `device ${id} revoked`);
    });
}
