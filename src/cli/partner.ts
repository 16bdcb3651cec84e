import { copyFileSync, cpSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { parse as parseYaml, stringify as toYaml } from 'yaml';
import { ensureTemplateAssistant } from '../inference/gguf/tiny-qwen.ts';
import { ApiClient, loadConfig, saveConfig } from './client.ts';
import { loadBundle, MANIFEST, pushBundle } from './bundle.ts';
import { parseSelector } from '../contracts/selector.ts';
import { EwError } from '../contracts/errors.ts';
import { escapeControl } from '../lib/text.ts';

/**
 * The partner commands: log in, start from a template, validate and push an app, deploy it to a
 * pool with a rollout strategy and follow the rollout, and look at sites and results. Every
 * command takes `--output table|json|yaml` (json and yaml print the API's objects as they are).
 */
const TEMPLATES = fileURLToPath(new URL('../../templates/', import.meta.url));
const tty = () => process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number, s: string) => (tty() ? `\u001b[${code}m${s}\u001b[0m` : s);
const green = (s: string) => paint(32, s);
const red = (s: string) => paint(31, s);
const dim = (s: string) => paint(2, s);

type Format = 'table' | 'json' | 'yaml';
const outputOption = () => new Option('-o, --output <format>', 'table, json or yaml').choices(['table', 'json', 'yaml']).default('table');

function print(format: Format, data: unknown, table: () => string): void {
  if (format === 'json') process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
  else if (format === 'yaml') process.stdout.write(toYaml(data));
  else process.stdout.write(`${table()}\n`);
}

function table(rows: Record<string, unknown>[], columns: string[]): string {
  if (rows.length === 0) return dim('(none)');
  const cells = rows.map((r) => columns.map((c) => (r[c] === undefined || r[c] === null ? '' : typeof r[c] === 'object' ? JSON.stringify(r[c]) : String(r[c]))));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  return [dim(line(columns.map((c) => c.toUpperCase()))), ...cells.map(line)].join('\n');
}

const client = () => new ApiClient(loadConfig());
const labelsText = (l: Record<string, string>) => Object.entries(l).map(([k, v]) => `${k}=${v}`).join(',');
const parseDuration = (v: string): number => {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v);
  if (!m) throw new EwError('CONFIG_INVALID', `"${v}" is not a duration: use 30s, 5m, 1h`);
  const n = Number(m[1]);
  return Math.round(n * ({ ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] ?? 's'] ?? 1));
};

function progress(label: string, sent: number, total: number): void {
  if (!process.stderr.isTTY) return;
  const width = 30;
  const done = total ? Math.round((sent / total) * width) : width;
  process.stderr.write(`\r${label} [${'#'.repeat(done)}${' '.repeat(width - done)}] ${total ? Math.round((100 * sent) / total) : 100}% ${(sent / 1e6).toFixed(1)}/${(total / 1e6).toFixed(1)} MB`);
  if (sent >= total) process.stderr.write('\n');
}

export function registerPartnerCommands(program: Command): void {
  program.command('login')
    .description('Save the cloud URL and an API key (in a 0600 file) for the other commands.')
    .requiredOption('--cloud <url>', 'the cloud API URL')
    .addOption(new Option('--api-key <key>', 'an API key (ewk_…)').env('EW_API_KEY').makeOptionMandatory())
    .option('--ca <file>', 'a CA certificate (PEM) to trust, when the cloud\'s certificate comes from a private CA')
    .addHelpText('after', '\nExample:\n  $ edgeweave login --cloud https://edgeweave.example.com --api-key ewk_…')
    .action(async (o) => {
      const ca = o.ca ? readFileSync(o.ca, 'utf8') : undefined;
      const c = new ApiClient({ cloud: o.cloud, apiKey: o.apiKey, ca });
      await c.call('GET', '/api/v1/sites');
      const p = saveConfig({ cloud: o.cloud, apiKey: o.apiKey, ...(ca ? { ca } : {}) });
      process.stderr.write(`${green('logged in')} to ${o.cloud}; saved in ${p}\n`);
    });

  const app = program.command('app').description('Create, check, push and inspect apps.');
  app.command('init')
    .description('Start a new app from a template.')
    .argument('<dir>', 'directory to create')
    .addOption(new Option('-t, --template <name>', 'template').default('predictive-maintenance'))
    .option('--model <file.gguf>', 'a GGUF language model (e.g. Qwen2.5-0.5B-Instruct Q4_K_M) for the template\'s assistant; default: the tiny TEST model, whose text is noise')
    .addHelpText('after', `\nTemplates: ${existsSync(TEMPLATES) ? readdirSync(TEMPLATES).join(', ') : '(none installed)'}\nExample:\n  $ edgeweave app init my-guard --template predictive-maintenance --model ./qwen2.5-0.5b-instruct-q4_k_m.gguf`)
    .action((dir: string, o) => {
      const src = join(TEMPLATES, o.template);
      if (!existsSync(join(src, MANIFEST))) throw new EwError('CONFIG_INVALID', `no template "${o.template}"; choose one of ${readdirSync(TEMPLATES).join(', ')}`, { path: 'template' });
      if (existsSync(dir) && readdirSync(dir).length) throw new EwError('CONFIG_INVALID', `${dir} exists and is not empty; choose a new directory`);
      // The template's language model (if it has one): the file given, else the tiny test Qwen.
      const gguf = (parseYaml(readFileSync(join(src, MANIFEST), 'utf8')) as { spec?: { models?: { format?: string; path?: string }[] } }).spec?.models?.find((m) => m.format === 'gguf');
      if (o.model) {
        if (!gguf?.path) throw new EwError('CONFIG_INVALID', `template ${o.template} has no language model; --model is for templates that do (predictive-maintenance)`, { path: 'model' });
        if (!existsSync(o.model) || readFileSync(o.model).subarray(0, 4).toString('latin1') !== 'GGUF') throw new EwError('CONFIG_INVALID', `--model ${o.model} is not a GGUF file (it must start with the bytes "GGUF"); download a .gguf such as Qwen2.5-0.5B-Instruct-Q4_K_M`, { path: 'model' });
      } else if (gguf && o.template === 'predictive-maintenance') {
        ensureTemplateAssistant();
      }
      cpSync(src, dir, { recursive: true });
      if (o.model) copyFileSync(o.model, join(dir, gguf!.path!));
      process.stderr.write(`${green('created')} ${dir} from ${o.template}: edit ${join(dir, MANIFEST)}, then edgeweave app validate ${dir} && edgeweave app push ${dir}\n`);
    });

  app.command('validate')
    .description('Check an app bundle as the cloud and the sites will: manifest, SQL, egress policy, model files.')
    .argument('[dir]', 'the bundle directory', '.')
    .option('-f, --manifest <file>', 'the manifest file in the bundle (a variant such as edgeweave.plc.yaml)', MANIFEST)
    .addOption(outputOption())
    .addHelpText('after', '\nErrors point at file:line:col.\nExample:\n  $ edgeweave app validate ./my-guard')
    .action(async (dir: string, o) => {
      const b = await loadBundle(dir, { manifest: o.manifest });
      const out = { app: b.manifest.metadata.name, version: b.manifest.metadata.version, streams: b.manifest.spec.streams.length, rules: b.manifest.spec.rules.length, models: b.models.map((m) => ({ name: m.name, sha256: m.sha256, bytes: m.size })), endpoints: b.manifest.spec.endpoints.length };
      print(o.output, out, () => `${green('valid')}: ${out.app}@${out.version} — ${out.streams} stream(s), ${out.rules} rule(s), ${out.models.length} model file(s), ${out.endpoints} endpoint(s)`);
    });

  app.command('push')
    .description('Validate, upload model files (resumable), and push the app version.')
    .argument('[dir]', 'the bundle directory', '.')
    .option('-f, --manifest <file>', 'the manifest file in the bundle (a variant such as edgeweave.plc.yaml)', MANIFEST)
    .addOption(outputOption())
    .addHelpText('after', '\nExamples:\n  $ edgeweave app push ./my-guard\n  $ edgeweave app push templates/predictive-maintenance -f edgeweave.plc.yaml')
    .action(async (dir: string, o) => {
      const res = await pushBundle(client(), await loadBundle(dir, { manifest: o.manifest }), {
        onProgress: (name, sent, total) => progress(`uploading ${name}`, sent, total),
        onSkip: (name) => process.stderr.write(`${dim(`model ${name}: already on the cloud`)}\n`),
      });
      print(o.output, res, () => `${green('pushed')} ${res.name}@${res.version} ${dim(res.digest)}`);
    });

  app.command('list').description('App versions on the cloud.').addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave app list -o json')
    .action(async (o) => {
      const r = await client().call('GET', '/api/v1/apps');
      print(o.output, r.items, () => table(r.items, ['name', 'version', 'digest']));
    });

  const ref = (s: string) => {
    const m = /^([a-z0-9-]+)@(.+)$/.exec(s);
    if (!m) throw new EwError('CONFIG_INVALID', `"${s}" is not app@version`);
    return { name: m[1]!, version: m[2]! };
  };
  app.command('show').description('One app version and its manifest.').argument('<app@version>').addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave app show vibration-guard@1.0.0')
    .action(async (s: string, o) => {
      const { name, version } = ref(s);
      const r = await client().call('GET', `/api/v1/apps/${name}/versions/${version}`);
      print(o.output, r, () => toYaml(r.manifest));
    });
  app.command('diff').description('What changed between two versions of an app.').argument('<a@1>').argument('<a@2>')
    .addHelpText('after', '\nExample:\n  $ edgeweave app diff vibration-guard@1.0.0 vibration-guard@1.1.0')
    .action(async (x: string, y: string) => {
      const c = client();
      const [a, b] = await Promise.all([x, y].map((s) => { const r = ref(s); return c.call('GET', `/api/v1/apps/${r.name}/versions/${r.version}`); }));
      const la = toYaml(a.manifest).split('\n');
      const lb = toYaml(b.manifest).split('\n');
      const setA = new Set(la);
      const setB = new Set(lb);
      const out = [...la.filter((l) => !setB.has(l)).map((l) => red(`- ${l}`)), ...lb.filter((l) => !setA.has(l)).map((l) => green(`+ ${l}`))];
      process.stdout.write(`${out.length ? out.join('\n') : dim('(no difference)')}\n`);
    });

  program.command('deploy')
    .description('Deploy app@version to the sites a label selector picks, with a rollout strategy.')
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
    .addHelpText('after', '\nExamples:\n  $ edgeweave deploy vibration-guard@1.1.0 --to industry=manufacturing\n  $ edgeweave deploy vibration-guard@1.2.0 --to industry=manufacturing --strategy canary --canary 10% --bake 10m --max-error-rate 0.01 --wait')
    .action(async (s: string, o) => {
      const { name, version } = ref(s);
      const pct = String(o.canary).endsWith('%');
      const strategy = o.strategy === 'all' ? { type: 'all' }
        : o.strategy === 'rolling' ? { type: 'rolling', maxUnavailable: o.maxUnavailable }
          : { type: 'canary', canary: Number(String(o.canary).replace('%', '')), canaryPercent: pct, bakeTimeS: parseDuration(o.bake), gates: { maxErrorRate: o.maxErrorRate, maxP95Ms: o.maxP95Ms, maxDrift: o.maxDrift }, then: 'all' };
      const c = client();
      const r = await c.call('POST', '/api/v1/deployments', { app: name, version, selector: parseSelector(o.to), strategy, stepTimeoutS: parseDuration(o.stepTimeout) });
      if (!o.wait) {
        print(o.output, r, () => `${green('deploying')} ${name}@${version} to ${r.sites.length} site(s): deployment ${r.id} (${o.strategy})\nfollow it: edgeweave rollout status ${r.id}`);
        return;
      }
      const final = await follow(c, r.id, o.output === 'table');
      print(o.output, final, () => '');
      if (final.phase !== 'succeeded') process.exitCode = 1;
    });

  const rollout = program.command('rollout').description('Follow and steer a deployment\'s rollout.');
  rollout.command('status').description('Where a rollout stands, site by site.').argument('<deployment>').option('-w, --watch', 'follow until it ends').addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave rollout status dep-1a2b3c --watch')
    .action(async (id: string, o) => {
      const c = client();
      const r = o.watch ? await follow(c, id, o.output === 'table') : await c.call('GET', `/api/v1/rollouts/${id}`);
      print(o.output, r, () => rolloutTable(r));
    });
  for (const action of ['pause', 'resume', 'abort', 'undo'] as const) {
    rollout.command(action).argument('<deployment>').addOption(outputOption())
      .description({ pause: 'Hold the rollout where it is.', resume: 'Continue a paused rollout.', abort: 'Stop and return every site to the previous version.', undo: 'Return every site of an ended rollout to the previous version.' }[action])
      .addHelpText('after', `\nExample:\n  $ edgeweave rollout ${action} dep-1a2b3c`)
      .action(async (id: string, o) => {
        const r = await client().call('POST', `/api/v1/rollouts/${id}/${action}`);
        print(o.output, r, () => rolloutTable(r));
      });
  }

  const sites = program.command('sites').description('The fleet.');
  sites.command('list').description('Sites with state, labels and the apps they run.').addOption(outputOption()).option('--state <state>', 'online, offline, unknown (not heard from since a cloud restart) or revoked')
    .addHelpText('after', '\nExample:\n  $ edgeweave sites list --state offline')
    .action(async (o) => {
      const r = await client().call('GET', `/api/v1/sites${o.state ? `?state=${o.state}` : ''}`);
      print(o.output, r.items, () => table(r.items.map((s: any) => ({ ...s, labels: labelsText(s.labels), apps: (s.status?.apps ?? []).map((a: any) => `${a.name}@${a.version}`).join(',') })), ['id', 'name', 'region', 'state', 'labels', 'apps']));
    });
  sites.command('show').description('One site with its last status.').argument('<site>').addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites show site-1a2b3c -o yaml')
    .action(async (id: string, o) => {
      const r = await client().call('GET', `/api/v1/sites/${id}`);
      print(o.output, r, () => toYaml(r));
    });
  sites.command('rules').description('The streaming rules a site runs, with their state and counters.').argument('<site>').addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites rules site-1a2b3c')
    .action(async (id: string, o) => {
      const r = await client().call('GET', `/api/v1/sites/${id}/rules`);
      print(o.output, r.items, () => table(r.items, ['app', 'rule', 'state', 'in', 'out', 'filtered', 'late', 'dropped', 'error']));
    });
  sites.command('dead-letters').description('Records a site could not use, and why (asked of the site).').argument('<site>')
    .option('--app <app>').option('--stream <stream>').option('--limit <n>', 'at most this many', (v) => Number(v), 20).addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites dead-letters site-1a2b3c --stream vibration')
    .action(async (id: string, o) => {
      const q = new URLSearchParams({ limit: String(o.limit), ...(o.app ? { app: o.app } : {}), ...(o.stream ? { stream: o.stream } : {}) });
      const r = await client().call('GET', `/api/v1/sites/${id}/dead-letters?${q}`);
      print(o.output, r, () => `${r.total} in all\n${table(r.items.map((x: any) => ({ ...x, at: new Date(x.at).toISOString() })), ['at', 'app', 'stream', 'reason', 'payloadBytes'])}`);
    });
  sites.command('writes').description('What a site\'s rules wrote to machines (OPC UA, Modbus): written, refused, dry-run, failed (asked of the site).').argument('<site>')
    .option('--app <app>').option('--limit <n>', 'at most this many', (v) => Number(v), 20).addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites writes site-1a2b3c --app vibration-guard-plc')
    .action(async (id: string, o) => {
      const q = new URLSearchParams({ limit: String(o.limit), ...(o.app ? { app: o.app } : {}) });
      const r = await client().call('GET', `/api/v1/sites/${id}/writes?${q}`);
      print(o.output, r.items, () => table(r.items.map((x: any) => ({ ...x, at: new Date(x.at).toISOString() })), ['at', 'app', 'rule', 'target', 'value', 'result', 'detail']));
    });
  sites.command('label').description('Replace a site\'s labels (and so its pools).').argument('<site>').argument('<labels>', 'k=v,k2=v2 (replaces the labels)').addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites label site-1a2b3c city=hangzhou,kind=intersection')
    .action(async (id: string, labels: string, o) => {
      const r = await client().call('PUT', `/api/v1/sites/${id}/labels`, { labels: parseSelector(labels) });
      print(o.output, r, () => `${green('labelled')} ${id}: ${labelsText(r.labels)}`);
    });
  sites.command('revoke').description('Revoke a site: its credentials stop working at once.').argument('<site>').addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave sites revoke site-1a2b3c')
    .action(async (id: string, o) => {
      const r = await client().call('POST', `/api/v1/sites/${id}/revoke`);
      print(o.output, r, () => `${red('revoked')} ${id}`);
    });

  program.command('tokens').description('Join tokens for new sites.').command('create').description('A one-time token for a new site, with its install command.')
    .option('--labels <labels>', 'k=v,k2=v2', '')
    .option('--region <region>', 'the site\'s region', 'default')
    .option('--ttl <duration>', 'how long the token is valid', '24h')
    .addOption(outputOption())
    .addHelpText('after', '\nPrints the one-line install command for the new site.\nExample:\n  $ edgeweave tokens create --labels city=hangzhou --region cn-east')
    .action(async (o) => {
      const r = await client().call('POST', '/api/v1/tokens', { labels: parseSelector(o.labels), region: o.region, ttlSeconds: parseDuration(o.ttl) });
      print(o.output, r, () => r.installCommand);
    });

  program.command('simulate')
    .description('Feed a site\'s device broker with realistic data from a simulator profile (what the templates expect).')
    .requiredOption('--profile <name>', 'traffic, vibration, cell-kpi or energy')
    .requiredOption('--broker <url>', 'the site\'s device broker, e.g. mqtt://site:1883')
    .option('--username <name>', 'the shared device username (the site must opt in with --device-shared-password)', 'device')
    .addOption(new Option('--password <secret>', 'the shared device password').env('EW_DEVICE_PASSWORD'))
    .option('--credentials <file>', 'instead: each device\'s own secret, a JSON object {"<device id>": "ewd_…"} (from `edgeweave devices add`)')
    .option('--duration <duration>', 'stop after this long (default: until Ctrl-C)')
    .addHelpText('after', '\nExamples:\n  $ edgeweave simulate --profile vibration --broker mqtt://127.0.0.1:1883 --credentials devices.json --duration 5m\n  $ EW_DEVICE_PASSWORD=ewd_… edgeweave simulate --profile vibration --broker mqtt://127.0.0.1:1883   # a site with the shared password')
    .action(async (o) => {
      const { DeviceSimulator } = await import('../sim/simulator.ts');
      const p = await import('../sim/profiles.ts');
      const profiles: Record<string, () => import('../sim/profiles.ts').Profile> = { traffic: () => p.trafficProfile(), vibration: () => p.vibrationProfile(), 'cell-kpi': () => p.cellKpiProfile(), energy: () => p.energyProfile() };
      const make = profiles[o.profile];
      if (!make) throw new EwError('CONFIG_INVALID', `no simulator profile "${o.profile}"; choose ${Object.keys(profiles).join(', ')}`, { path: 'profile' });
      let creds: Record<string, string> | undefined;
      if (o.credentials) {
        try { creds = JSON.parse(readFileSync(o.credentials, 'utf8')) as Record<string, string>; } catch (e) { throw new EwError('CONFIG_INVALID', `--credentials ${o.credentials}: ${(e as Error).message}`, { path: 'credentials' }); }
        const missing = make().devices.filter((d) => typeof creds![d] !== 'string');
        if (missing.length) throw new EwError('CONFIG_INVALID', `--credentials ${o.credentials} has no secret for ${missing.join(', ')}; register them with edgeweave devices add`, { path: 'credentials' });
      } else if (!o.password) {
        throw new EwError('CONFIG_INVALID', 'give the devices\' credentials with --credentials <file>, or the shared device password with --password (or EW_DEVICE_PASSWORD)', { path: 'password' });
      }
      const sim = new DeviceSimulator(creds
        ? { url: o.broker, credentials: (d) => ({ username: d, password: creds![d]!, clientId: d }), profile: make() }
        : { url: o.broker, username: o.username, password: o.password, profile: make() });
      await sim.start();
      process.stderr.write(`${green('simulating')} ${make().devices.length} ${o.profile} device(s) into ${o.broker}; Ctrl-C stops\n`);
      const stop = async () => { await sim.stop(); process.stderr.write(`${sim.count} readings sent\n`); process.exit(0); };
      process.on('SIGINT', () => void stop());
      if (o.duration) setTimeout(() => void stop(), parseDuration(o.duration) * 1000);
    });

  program.command('logs')
    .description('Recent log lines of a site (asked of the site; it must be online).')
    .argument('<site>')
    .option('--limit <n>', 'at most this many lines', (v) => Number(v), 200)
    .option('-f, --follow', 'keep printing new lines')
    .addHelpText('after', '\nExample:\n  $ edgeweave logs site-abc123 --follow')
    .action(async (site: string, o) => {
      const c = client();
      let since = 0;
      for (;;) {
        const r = await c.call<{ lines: { time: number; line: string }[] }>('GET', `/api/v1/sites/${site}/logs?since=${since}&limit=${o.limit}`);
        // A site's lines are foreign text: control characters are escaped, never sent to the terminal.
        for (const l of r.lines.slice(-o.limit)) process.stdout.write(`${escapeControl(String(l.line))}\n`);
        if (r.lines.length) since = r.lines[r.lines.length - 1]!.time;
        if (!o.follow) return;
        await new Promise((res) => setTimeout(res, 2000));
      }
    });

  const results = program.command('results')
    .description('Results sites sent up, oldest first.')
    .argument('<stream>')
    .option('--site <site>').option('--app <app>').option('--rule <rule>')
    .option('--limit <n>', 'at most this many', (v) => Number(v), 100)
    .option('-f, --follow', 'keep printing new results')
    .addOption(outputOption())
    .addHelpText('after', '\nExample:\n  $ edgeweave results alerts --app vibration-guard --follow')
    .action(async (stream: string, o) => {
      const c = client();
      let after: number | undefined;
      const q = (extra: string) => `/api/v1/results?stream=${encodeURIComponent(stream)}${o.site ? `&site=${o.site}` : ''}${o.app ? `&app=${o.app}` : ''}${o.rule ? `&rule=${o.rule}` : ''}&limit=${o.limit}${extra}`;
      for (;;) {
        const r = await c.call('GET', q(after !== undefined ? `&after=${after}` : ''));
        if (o.follow || o.output === 'table') {
          for (const x of r.items) process.stdout.write(o.output === 'table' ? `${dim(new Date(x.at).toISOString())} ${x.siteId} ${JSON.stringify(x.data)}\n` : `${JSON.stringify(x)}\n`);
        } else {
          print(o.output, r.items, () => '');
        }
        if (r.items.length) after = r.items[r.items.length - 1].seq;
        if (!o.follow) return;
        await new Promise((res) => setTimeout(res, 1000));
      }
    });

  results.command('export')
    .description('Export one stream\'s results in a site-time range as JSON lines (stdout or --out) or Parquet (--out).')
    .argument('<stream>')
    .option('--since <time>', 'from this site time, inclusive: ISO 8601 or ms since epoch', siteTime)
    .option('--until <time>', 'to this site time, exclusive: ISO 8601 or ms since epoch', siteTime)
    .option('--site <site>').option('--app <app>').option('--rule <rule>')
    .addOption(new Option('--format <format>', 'jsonl or parquet').choices(['jsonl', 'parquet']).default('jsonl'))
    .option('--out <file>', 'write here (written to FILE.partial, renamed when complete)')
    .addHelpText('after', '\nExamples:\n  $ edgeweave results export alerts --since 2026-11-01 --until 2026-12-01 --format parquet --out alerts-nov.parquet\n  $ edgeweave results export readings --since 2026-11-30T00:00:00Z > today.jsonl')
    .action(async (stream: string, o) => {
      const { ndjsonLines, writeExport } = await import('./results-export.ts');
      const qs = new URLSearchParams({ stream });
      for (const k of ['since', 'until', 'site', 'app', 'rule'] as const) if (o[k] !== undefined) qs.set(k, String(o[k]));
      const res = await client().download(`/api/v1/results/export?${qs}`);
      const n = await writeExport(ndjsonLines(res.body!), o.format, o.out);
      if (o.out) process.stderr.write(`${n} results written to ${o.out}\n`);
    });

  const retention = results.command('retention')
    .description('How long the cloud keeps results: per stream, `*` for the tenant default, then the cloud default.')
    .addOption(outputOption())
    .action(async (o) => {
      const r = await client().call('GET', '/api/v1/retention');
      print(o.output, r, () => [
        ...r.policies.map((p: { stream: string; days: number }) => `${p.stream.padEnd(24)} ${p.days} days`),
        `${'(cloud default)'.padEnd(24)} ${r.cloudDefaultDays === null ? 'keep' : `${r.cloudDefaultDays} days`}`,
      ].join('\n'));
    });
  retention.command('set')
    .description('Keep a stream\'s results (or `*`: every stream without its own policy) this many days.')
    .argument('<stream>').argument('<days>', 'whole days, 1-36500', (v) => { const n = Number(v); if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('whole days, 1 or more'); return n; })
    .action(async (stream: string, days: number) => {
      await client().call('PUT', `/api/v1/retention/${encodeURIComponent(stream)}`, { days });
      process.stdout.write(`${stream}: kept ${days} days\n`);
    });
  retention.command('unset')
    .description('Remove a stream\'s retention policy.')
    .argument('<stream>')
    .action(async (stream: string) => {
      await client().call('DELETE', `/api/v1/retention/${encodeURIComponent(stream)}`);
      process.stdout.write(`${stream}: policy removed\n`);
    });
}

/** A site time on the command line: ISO 8601 (a date alone is UTC midnight) or ms since epoch. */
function siteTime(v: string): number {
  const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError('an ISO 8601 time (2026-11-30 or 2026-11-30T08:00:00Z) or ms since epoch');
  return n;
}

function rolloutTable(r: any): string {
  const phase = r.phase === 'succeeded' ? green(r.phase) : ['failed', 'rolled-back', 'aborted'].includes(r.phase) ? red(r.phase) : r.phase;
  const sites = Object.entries(r.sites as Record<string, { phase: string; reason?: string }>).map(([id, s]) => ({ site: id, state: s.phase, reason: s.reason ?? '' }));
  return `${r.app}@${r.version}  ${phase}${r.reason ? `  ${r.reason}` : ''}\n${table(sites, ['site', 'state', 'reason'])}`;
}

/** Polls a rollout until it ends, printing each new event on a TTY. */
async function follow(c: ApiClient, id: string, narrate: boolean): Promise<any> {
  let seen = 0;
  for (;;) {
    const r = await c.call('GET', `/api/v1/rollouts/${id}`);
    if (narrate) for (const h of r.history.slice(seen)) process.stderr.write(`${dim(new Date(h.at).toISOString())} ${h.event}\n`);
    seen = r.history.length;
    if (['succeeded', 'failed', 'rolled-back', 'aborted'].includes(r.phase)) {
      if (narrate) process.stderr.write(`${rolloutTable(r)}\n`);
      return r;
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
}

