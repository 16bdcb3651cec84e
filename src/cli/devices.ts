import { type Command, Option } from 'commander';

/**
 * `edgeweave devices add|list|revoke`: per-device MQTT credentials and topic grants on a site's
 * device broker — on the site itself (its local API, with the local API key), or through the
 * cloud with `--site <id>` (the cloud asks the site over its link; it keeps nothing).
 * Declarations only; the implementation is ./commands/devices.ts, loaded when a command runs.
 */
const list = (v: string, prev: string[] = []) => [
  ...prev,
  ...v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean),
];
const impl = () => import('./commands/devices.ts');

function target(cmd: Command): Command {
  return cmd
    .option('--site <id>', 'manage the devices of this site through the cloud (after `edgeweave login`)')
    .option('--local-api <url>', 'on the site: its local API', 'http://127.0.0.1:8081')
    .option('--api-key-file <file>', 'on the site: the local API key (or EW_LOCAL_API_KEY)')
    .addOption(new Option('-o, --output <format>', 'table, json or yaml').choices(['table', 'json', 'yaml']).default('table'));
}

export function registerDeviceCommands(program: Command): void {
  const devices = program.command('devices').description("Per-device MQTT credentials and topic grants on a site's device broker.");
  target(
    devices
      .command('add')
      .description('Register a device: its own username, client id and secret (shown once), and the topics it may use.')
      .argument('<id>', 'device id: its MQTT username and client id')
      .option('--publish <filters>', 'topic filters it may publish to (comma-separated, repeatable)', list)
      .option('--subscribe <filters>', 'topic filters it may subscribe within (comma-separated, repeatable)', list)
      .option('--description <text>', 'what the device is'),
  )
    .addHelpText(
      'after',
      `
  Examples:
    $ edgeweave devices add press-07 --publish 'factory/press-07/#' --api-key-file /var/lib/edgeweave/api.key
    $ edgeweave devices add hmi-1 --subscribe factory/alerts --site site-1a2b3c`,
    )
    .action(async (id: string, o) => (await impl()).add(id, o));
  target(devices.command('list').description('The devices registered on the site, with their grants (never their secrets).'))
    .addHelpText(
      'after',
      `
  Examples:
    $ edgeweave devices list --api-key-file /var/lib/edgeweave/api.key
    $ edgeweave devices list --site site-1a2b3c -o json`,
    )
    .action(async (o) => (await impl()).list(o));
  target(
    devices
      .command('revoke')
      .description('Revoke a device: its credentials stop working and its connection is cut at once.')
      .argument('<id>'),
  )
    .addHelpText(
      'after',
      `
  Examples:
    $ edgeweave devices revoke press-07 --api-key-file /var/lib/edgeweave/api.key
    $ edgeweave devices revoke press-07 --site site-1a2b3c`,
    )
    .action(async (id: string, o) => (await impl()).revoke(id, o));
}
