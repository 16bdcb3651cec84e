import { existsSync, readdirSync } from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { TEMPLATES } from './templates.ts';

/**
 * The partner commands: log in, start from a template, validate and push an app, deploy it to a
 * pool with a rollout strategy and follow the rollout, and look at sites and results. Every
 * command takes `--output table|json|yaml` (json and yaml print the API's objects as they are).
 *
 * Declarations only: each action imports its implementation (./commands/*.ts) when it runs.
 */
const MANIFEST = 'edgeweave.yaml';
const outputOption = () => new Option('-o, --output <format>', 'table, json or yaml').choices(['table', 'json', 'yaml']).default('table');
const app = () => import('./commands/app.ts');
const deployments = () => import('./commands/deployments.ts');
const sites = () => import('./commands/sites.ts');
const resultsCmd = () => import('./commands/results.ts');

export function registerPartnerCommands(program: Command): void {
  program
    .command('login')
    .description('Save the cloud URL and an API key (in a 0600 file) for the other commands.')
    .requiredOption('--cloud <url>', 'the cloud API URL')
    .addOption(new Option('--api-key <key>', 'an API key (ewk_…)').env('EW_API_KEY').makeOptionMandatory())
    .option('--ca <file>', "a CA certificate (PEM) to trust, when the cloud's certificate comes from a private CA")
    .addHelpText('after', '\nExample:\n  $ edgeweave login --cloud https://edgeweave.example.com --api-key ewk_…')
    .action(async (o) => (await sites()).login(o));

  const appCmd = program.command('app').description('Create, check, push and inspect apps.');
  appCmd
    .command('init')
    .description("Start a new app from a template, in a new directory NAME; the app is named NAME (the directory's last part).")
    .argument('<name>', "the app's name and the directory to create (a path: the app is named after its last part)")
    .addOption(new Option('-t, --template <name>', 'template').default('predictive-maintenance'))
    .option(
      '--model <file.gguf>',
      "a GGUF language model (e.g. Qwen2.5-0.5B-Instruct Q4_K_M) for the template's assistant; default: the tiny TEST model, whose text is noise",
    )
    .addHelpText(
      'after',
      () =>
        `\nTemplates: ${existsSync(TEMPLATES) ? readdirSync(TEMPLATES).join(', ') : '(none installed)'}\nExamples:\n  $ edgeweave app init my-guard\n  $ edgeweave app init apps/my-guard --template predictive-maintenance --model ./qwen2.5-0.5b-instruct-q4_k_m.gguf`,
    )
    .action(async (dir: string, o) => (await app()).init(dir, o));

  appCmd
    .command('validate')
    .description('Check an app bundle as the cloud and the sites will: manifest, SQL, egress policy, model files.')
    .argument('[dir]', 'the bundle directory', '.')
    .option('-f, --manifest <file>', 'the manifest file in the bundle (a variant such as edgeweave.plc.yaml)', MANIFEST)
    .addOption(outputOption())
    .addHelpText('after', '\nErrors point at file:line:col.\nExample:\n  $ edgeweave app validate ./my-guard')
    .action(async (dir: string, o) => (await app()).validate(dir, o));

  appCmd
    .command('push')
    .description('Validate, upload model files (resumable), and push the app version.')
    .argument('[dir]', 'the bundle directory', '.')
    .option('-f, --manifest <file>', 'the manifest file in the bundle (a variant such as edgeweave.plc.yaml)', MANIFEST)
    .addOption(outputOption())
    .addHelpText(
      'after',
      '\nExamples:\n  $ edgeweave app push ./my-guard\n  $ edgeweave app push templates/predictive-maintenance -f edgeweave.plc.yaml',
    )
    .action(async (dir: string, o) => (await app()).push(dir, o));

  appCmd
    .command('list')
    .description('App versions on the cloud.')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave app list -o json')
    .action(async (o) => (await app()).list(o));
  appCmd
    .command('show')
    .description('One app version and its manifest.')
    .argument('<app@version>')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave app show vibration-guard@1.0.0')
    .action(async (s: string, o) => (await app()).show(s, o));
  appCmd
    .command('diff')
    .description('What changed between two versions of an app.')
    .argument('<a@1>')
    .argument('<a@2>')
    .addHelpText('after', '\nExample:\n  $ edgeweave app diff vibration-guard@1.0.0 vibration-guard@1.1.0')
    .action(async (x: string, y: string) => (await app()).diff(x, y));

  program
    .command('deploy')
    .description("Deploy app@version to the sites a label selector picks, with a rollout strategy; prints the deployment's id.")
    .argument('<app@version>')
    .requiredOption('--to <selector>', 'label selector, e.g. industry=manufacturing,region=cn-east')
    .addOption(new Option('--strategy <s>', 'rollout strategy').choices(['all', 'rolling', 'canary']).default('all'))
    .option('--max-unavailable <n>', 'rolling: sites updating at once', (v) => Number(v), 1)
    .option('--canary <n|n%>', 'canary: sites (or a percentage) first', '1')
    .option('--bake <duration>', 'canary: how long the gates must hold', '5m')
    .option('--max-error-rate <ratio>', 'canary gate: largest model error rate, e.g. 0.01', Number)
    .option('--max-p95-ms <ms>', 'canary gate: largest model p95 latency', Number)
    .option('--max-drift <ratio>', 'canary gate: largest relative change of mean model output', Number)
    .option('--step-timeout <duration>', 'longest wait for a site to update', '5m')
    .option('--wait', 'follow the rollout until it ends (exit 1 if it does not succeed)')
    .addOption(outputOption())
    .addHelpText(
      'after',
      '\nExamples:\n  $ edgeweave deploy vibration-guard@1.1.0 --to industry=manufacturing\n  $ edgeweave deploy vibration-guard@1.2.0 --to industry=manufacturing --strategy canary --canary 10% --bake 10m --max-error-rate 0.01 --wait',
    )
    .action(async (s: string, o) => (await deployments()).deploy(s, o));

  const deps = program.command('deployments').description("What is deployed where: each deployment with its rollout's phase.");
  deps
    .command('list')
    .description("Deployments, oldest first, with their rollout's phase.")
    .option('--app <name>', "only this app's")
    .addOption(outputOption())
    .addHelpText('after', '\nExamples:\n  $ edgeweave deployments list\n  $ edgeweave deployments list --app vibration-guard -o json')
    .action(async (o) => (await deployments()).list(o));
  deps
    .command('show')
    .description('One deployment: its selector and its rollout, site by site.')
    .argument('<deployment|app@version>')
    .addOption(outputOption())
    .addHelpText(
      'after',
      '\nExamples:\n  $ edgeweave deployments show dep-1a2b3c\n  $ edgeweave deployments show vibration-guard@1.1.0 -o yaml',
    )
    .action(async (s: string, o) => (await deployments()).show(s, o));

  const rollout = program
    .command('rollout')
    .description("Follow and steer a deployment's rollout (by the deployment's id or the app@version it deployed).");
  rollout
    .command('status')
    .description('Where a rollout stands, site by site.')
    .argument('<deployment|app@version>')
    .option('-w, --watch', 'follow until it ends')
    .addOption(outputOption())
    .addHelpText(
      'after',
      '\nExamples:\n  $ edgeweave rollout status dep-1a2b3c --watch\n  $ edgeweave rollout status vibration-guard@1.1.0',
    )
    .action(async (s: string, o) => (await deployments()).status(s, o));
  for (const action of ['pause', 'resume', 'abort', 'undo'] as const) {
    rollout
      .command(action)
      .argument('<deployment|app@version>')
      .addOption(outputOption())
      .description(
        {
          pause: 'Hold the rollout where it is.',
          resume: 'Continue a paused rollout.',
          abort: 'Stop and return every site to the previous version.',
          undo: 'Return every site of an ended rollout to the previous version.',
        }[action],
      )
      .addHelpText(
        'after',
        `\nExamples:\n  $ edgeweave rollout ${action} dep-1a2b3c\n  $ edgeweave rollout ${action} vibration-guard@1.1.0`,
      )
      .action(async (s: string, o) => (await deployments()).act(action, s, o));
  }

  const sitesCmd = program.command('sites').description('The fleet.');
  sitesCmd
    .command('list')
    .description('Sites with state, labels and the apps they run.')
    .addOption(outputOption())
    .option('--state <state>', 'online, offline, unknown (not heard from since a cloud restart) or revoked')
    .addHelpText('after', '\nExample:\n  $ edgeweave sites list --state offline')
    .action(async (o) => (await sites()).list(o));
  sitesCmd
    .command('show')
    .description('One site with its last status.')
    .argument('<site>')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites show site-1a2b3c -o yaml')
    .action(async (id: string, o) => (await sites()).show(id, o));
  sitesCmd
    .command('rules')
    .description('The streaming rules a site runs, with their state and counters.')
    .argument('<site>')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites rules site-1a2b3c')
    .action(async (id: string, o) => (await sites()).rules(id, o));
  sitesCmd
    .command('dead-letters')
    .description('Records a site could not use, and why (asked of the site).')
    .argument('<site>')
    .option('--app <app>')
    .option('--stream <stream>')
    .option('--limit <n>', 'at most this many', (v) => Number(v), 20)
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites dead-letters site-1a2b3c --stream vibration')
    .action(async (id: string, o) => (await sites()).deadLetters(id, o));
  sitesCmd
    .command('writes')
    .description("What a site's rules wrote to machines (OPC UA, Modbus): written, refused, dry-run, failed (asked of the site).")
    .argument('<site>')
    .option('--app <app>')
    .option('--limit <n>', 'at most this many', (v) => Number(v), 20)
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites writes site-1a2b3c --app vibration-guard-plc')
    .action(async (id: string, o) => (await sites()).writes(id, o));
  sitesCmd
    .command('label')
    .description("Replace a site's labels (and so its pools).")
    .argument('<site>')
    .argument('<labels>', 'k=v,k2=v2 (replaces the labels)')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites label site-1a2b3c city=hangzhou,kind=intersection')
    .action(async (id: string, labels: string, o) => (await sites()).label(id, labels, o));
  sitesCmd
    .command('revoke')
    .description('Revoke a site: its credentials stop working at once.')
    .argument('<site>')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites revoke site-1a2b3c')
    .action(async (id: string, o) => (await sites()).revoke(id, o));

  program
    .command('tokens')
    .description('Join tokens for new sites.')
    .command('create')
    .description('A one-time token for a new site, with its install command.')
    .option('--labels <labels>', 'k=v,k2=v2', '')
    .option('--region <region>', "the site's region", 'default')
    .option('--ttl <duration>', 'how long the token is valid', '24h')
    .addOption(outputOption())
    .addHelpText(
      'after',
      '\nPrints the one-line install command for the new site.\nExample:\n  $ edgeweave tokens create --labels city=hangzhou --region cn-east',
    )
    .action(async (o) => (await sites()).createToken(o));

  program
    .command('simulate')
    .description("Feed a site's device broker with realistic data from a simulator profile (what the templates expect).")
    .requiredOption('--profile <name>', 'traffic, vibration, cell-kpi or energy')
    .requiredOption('--broker <url>', "the site's device broker, e.g. mqtt://site:1883")
    .option('--username <name>', 'the shared device username (the site must opt in with --device-shared-password)', 'device')
    .addOption(new Option('--password <secret>', 'the shared device password').env('EW_DEVICE_PASSWORD'))
    .option(
      '--credentials <file>',
      'instead: each device\'s own secret, a JSON object {"<device id>": "ewd_…"} (from `edgeweave devices add`)',
    )
    .option('--duration <duration>', 'stop after this long (default: until Ctrl-C)')
    .addHelpText(
      'after',
      '\nExamples:\n  $ edgeweave simulate --profile vibration --broker mqtt://127.0.0.1:1883 --credentials devices.json --duration 5m\n  $ EW_DEVICE_PASSWORD=ewd_… edgeweave simulate --profile vibration --broker mqtt://127.0.0.1:1883   # a site with the shared password',
    )
    .action(async (o) => (await import('./commands/simulate.ts')).simulate(o));

  program
    .command('logs')
    .description('Recent log lines of a site (asked of the site; it must be online).')
    .argument('<site>')
    .option('--limit <n>', 'at most this many lines', (v) => Number(v), 200)
    .option('-f, --follow', 'keep printing new lines')
    .addHelpText('after', '\nExample:\n  $ edgeweave logs site-abc123 --follow')
    .action(async (site: string, o) => (await sites()).logs(site, o));

  const results = program
    .command('results')
    .description('Results sites sent up, oldest first.')
    .argument('<stream>')
    .option('--site <site>')
    .option('--app <app>')
    .option('--rule <rule>')
    .option('--limit <n>', 'at most this many', (v) => Number(v), 100)
    .option('-f, --follow', 'keep printing new results')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave results alerts --app vibration-guard --follow')
    .action(async (stream: string, o) => (await sites()).results(stream, o));

  results
    .command('export')
    .description("Export one stream's results in a site-time range as JSON lines (stdout or --out) or Parquet (--out).")
    .argument('<stream>')
    .option('--since <time>', 'from this site time, inclusive: ISO 8601 or ms since epoch', siteTime)
    .option('--until <time>', 'to this site time, exclusive: ISO 8601 or ms since epoch', siteTime)
    .option('--site <site>')
    .option('--app <app>')
    .option('--rule <rule>')
    .addOption(new Option('--format <format>', 'jsonl or parquet').choices(['jsonl', 'parquet']).default('jsonl'))
    .option('--out <file>', 'write here (written to FILE.partial, renamed when complete)')
    .addHelpText(
      'after',
      '\nExamples:\n  $ edgeweave results export alerts --since 2026-11-01 --until 2026-12-01 --format parquet --out alerts-nov.parquet\n  $ edgeweave results export readings --since 2026-11-30T00:00:00Z > today.jsonl',
    )
    .action(async (stream: string, o) => (await resultsCmd()).exportResults(stream, o));

  const retention = results
    .command('retention')
    .description('How long the cloud keeps results: per stream, `*` for the tenant default, then the cloud default.')
    .addOption(outputOption())
    .addHelpText(
      'after',
      "\nExamples:\n  $ edgeweave results retention\n  $ edgeweave results retention set readings 7\n  $ edgeweave results retention set '*' 90",
    )
    .action(async (o) => (await resultsCmd()).listRetention(o));
  retention
    .command('set')
    .description("Keep a stream's results (or `*`: every stream without its own policy) this many days.")
    .argument('<stream>')
    .argument('<days>', 'whole days, 1-36500', wholeDays)
    .addHelpText('after', '\nExample:\n  $ edgeweave results retention set readings 7')
    .action(async (stream: string, days: number) => (await resultsCmd()).setRetention(stream, days));
  retention
    .command('unset')
    .description("Remove a stream's retention policy (it falls back to `*`, then the cloud default).")
    .argument('<stream>')
    .addHelpText('after', '\nExample:\n  $ edgeweave results retention unset readings')
    .action(async (stream: string) => (await resultsCmd()).unsetRetention(stream));
}

/** A site time on the command line: ISO 8601 (a date alone is UTC midnight) or ms since epoch. */
function siteTime(v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError('an ISO 8601 time (2026-11-30 or 2026-11-30T08:00:00Z) or ms since epoch');
  return n;
}

function wholeDays(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 36_500) throw new InvalidArgumentError('whole days, 1-36500');
  return n;
}
