import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { EwError, isEwError, type ErrorCode } from '../contracts/errors.ts';
import { VERSION } from '../version.ts';
import { registerPartnerCommands } from './partner.ts';
import { registerDeviceCommands } from './devices.ts';
import { registerInferCommands } from './infer.ts';

/**
 * `edgeweave` — one CLI, several roles. This file (and partner.ts, devices.ts, infer.ts) only
 * declares the commands: each action imports its implementation (`./commands/*.ts`) when it
 * runs, so `edgeweave --version` or `edgeweave sites list` loads commander and little else, not
 * fastify, the stream engine or ONNX Runtime (see bench/cli.ts).
 * Exit codes scripts can rely on:
 *   0 ok · 1 unexpected failure · 2 bad flags (also commander's usage errors) or config · 3 refused (token, credentials)
 *   4 the cloud could not be reached.
 */
export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'CONFIG_INVALID': case 'NOT_ENROLLED': case 'DATA_DIR_INVALID': case 'VALIDATION_FAILED': case 'SQL_SYNTAX': case 'SQL_INVALID': case 'SQL_LIMIT':
    case 'INVALID_MANIFEST': case 'INVALID_SELECTOR': case 'EGRESS_DENIED': case 'ARTIFACT_DIGEST_MISMATCH': case 'MODEL_LOAD_FAILED': case 'APP_VERSION_EXISTS': return 2;
    case 'TOKEN_INVALID': case 'TOKEN_USED': case 'TOKEN_EXPIRED': case 'UNAUTHENTICATED': case 'SITE_REVOKED': case 'ENROLL_FAILED': return 3;
    case 'CLOUD_UNREACHABLE': return 4;
    default: return 1;
  }
}

const port = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port number 0-65535 (0 picks a free one)');
  return n;
};
const positive = (v: string): number => {
  const n = Number(v);
  if (!(n > 0)) throw new InvalidArgumentError('a positive number');
  return n;
};

/** The whole command tree (also walked by the test that every command has examples). */
export function buildProgram(): Command {
  const program = new Command('edgeweave')
    .description('Edgeweave: run AI where the data is — a cloud control plane and a fleet of edge sites.')
    .version(VERSION)
    .showHelpAfterError()
    // Options after a subcommand's name are that subcommand's (`edge doctor --data-dir` is doctor's).
    .enablePositionalOptions()
    // Usage errors (unknown flag, bad value) exit 2 like our CONFIG_INVALID; help and version exit 0.
    // Set before the subcommands are defined, which inherit it.
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

  program.command('cloud')
    .description('Run the cloud control plane: HTTP API, MQTT hub, store.')
    .option('--data-dir <dir>', 'state directory (SQLite, artifacts)', './edgeweave-cloud')
    .option('--host <host>', 'HTTP bind address', '0.0.0.0')
    .option('--port <port>', 'HTTP port', port, 8080)
    .option('--public-url <url>', 'HTTP URL that sites and users reach (default: the bound address)')
    .option('--db <url>', 'sqlite (default) or postgres://user@host:5432/db')
    .option('--mqtt-host <host>', 'embedded MQTT hub bind address', '0.0.0.0')
    .option('--mqtt-port <port>', 'embedded MQTT hub port', port, 1883)
    .option('--mqtt-public-url <url>', 'MQTT URL handed to agents at enrollment')
    .option('--broker <url>', 'use an external MQTT broker instead of the embedded hub (mqtt://host:port)')
    .addOption(new Option('--broker-username <name>', 'external broker username').env('EW_BROKER_USERNAME'))
    .addOption(new Option('--broker-password <secret>', 'external broker password').env('EW_BROKER_PASSWORD'))
    .option('--heartbeat-interval <s>', 'heartbeat interval told to agents (s)', positive, 10)
    .option('--missed-heartbeats <n>', 'missed heartbeats before a site is offline', positive, 3)
    .option('--admin-key-file <file>', 'first start only: use the key in this file as the admin key')
  .option('--tls-cert <file>', 'serve https and mqtts with this certificate (PEM)')
  .option('--tls-key <file>', 'the certificate\'s private key (PEM)')
    .option('--http-request-timeout <s>', 'a whole HTTP request must arrive within this (s)', positive, 60)
    .option('--http-idle-timeout <s>', 'close an HTTP connection on which nothing moves for this long (s)', positive, 120)
    .option('--rate-limit <spec>', 'API rate limits: key=100/20,address=300/50,anonymous=20/1 (burst/per second), or off', 'key=100/20,address=300/50,anonymous=20/1')
    .option('--mqtt-limits <spec>', 'embedded hub bounds, e.g. maxPacketBytes=1048576,connectTimeoutMs=10000 (see docs/operators.md)', '')
    .option('--console-dir <dir>', 'serve this web console build at / (default: console/dist of this install)')
    .option('--no-console', 'do not serve the web console (the API only)')
    .option('--region <region>', 'the cloud\'s own region, for data residency of the cloud-side fallback', 'cloud')
    .option('--infer-rate <n>', 'routed inference requests per second per API key', positive, 100)
    .option('--infer-burst <n>', 'routed inference burst per API key', positive, 200)
    .option('--infer-concurrency <n>', 'routed inference requests in flight per API key', positive, 64)
    .option('--infer-timeout <ms>', 'default deadline of a routed request (ms)', positive, 30_000)
    .option('--no-cloud-runtime', 'serve no fallback or cascade in the cloud (route to sites only)')
    .addHelpText('after', `
  Examples:
    $ edgeweave cloud --data-dir /var/lib/edgeweave-cloud
    $ edgeweave cloud --region eu-west --infer-rate 50 --infer-concurrency 16
    $ edgeweave cloud --db postgres://edgeweave@db:5432/edgeweave --broker mqtt://emqx:1883`)
    .action(async (o) => (await import('./commands/serve.ts')).runCloud(o));

  const edge = program.command('edge').enablePositionalOptions();
  edge.command('doctor')
    .description('Check a site\'s data directory (credentials, edge.db, PRAGMA quick_check, a test write); --salvage copies every readable row of a damaged edge.db into a fresh one.')
    .requiredOption('--data-dir <dir>', 'the site state directory')
    .option('--salvage', 'rebuild edge.db from its readable rows (the damaged file is kept beside it)')
    .option('--json', 'print the report as JSON')
    .addHelpText('after', `
  Exit codes: 0 healthy (or salvaged), 2 problems found.
  Examples:
    $ edgeweave edge doctor --data-dir /var/lib/edgeweave
    $ edgeweave edge doctor --data-dir /var/lib/edgeweave --salvage`)
    .action(async (o) => (await import('./commands/serve.ts')).runDoctor(o));
  edge
    .description('Run an edge agent: enrolls once with a join token, then runs autonomously.')
    // Required, but checked in the action: commander would also demand it of `edge doctor`.
    .option('--data-dir <dir>', 'site state directory (SQLite, credentials, model cache) (required)')
    .option('--cloud <url>', 'cloud HTTP URL (first start only)')
    .option('--token-file <file>', 'first start only: a file holding the join token (or set EW_JOIN_TOKEN)')
    // Refused with a reason: a secret on the command line is visible to every user (ps, /proc/*/cmdline).
    .addOption(new Option('--token <token>').hideHelp())
    .option('--ca <file>', 'first start only: a CA certificate (PEM) to trust for the cloud\'s https/mqtts')
    .option('--name <name>', 'site name shown in the console')
    .option('--api-host <host>', 'local API bind address', '127.0.0.1')
    .option('--api-port <port>', 'local API port', port, 8081)
    .option('--device-host <host>', 'device MQTT broker bind address', '0.0.0.0')
    .option('--device-port <port>', 'device MQTT broker port', port, 1883)
    .option('--device-tls-cert <file>', 'serve devices over mqtts with this certificate (PEM)')
    .option('--device-tls-key <file>', 'its private key (PEM)')
    .option('--device-broker <url>', 'read device data from an existing broker (mqtt://host:port) instead of the embedded one')
    .addOption(new Option('--device-broker-username <name>', 'username on that broker').env('EW_DEVICE_BROKER_USERNAME'))
    .addOption(new Option('--device-broker-password <secret>', 'password on that broker').env('EW_DEVICE_BROKER_PASSWORD'))
    .addOption(new Option('--device-broker-mqtt-version <version>', 'MQTT version towards that broker: 5 passes MQTT 5 devices\' user properties and message expiry to streams').choices(['4', '5']).default('4'))
    .option('--api-key-file <file>', 'file with the local API key (default: generated, shown once)')
    .option('--device-password-file <file>', 'opt in to a shared device password (username "device", every topic) and take it from this file')
    .option('--device-shared-password', 'opt in to a shared device password, generated and shown once (default: off; devices get their own credentials with `edgeweave devices add`)')
    .option('--model-cache-max <size>', 'disk budget of the model cache, e.g. 10G, 500M', (v: string) => {
      const m = /^(\d+(?:\.\d+)?)([KMGT]?)B?$/i.exec(v.trim());
      if (!m) throw new InvalidArgumentError('a size such as 10G or 500M');
      return Math.round(Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase()));
    })
    .option('--outbox-max <n>', 'most uplink messages kept while the cloud is unreachable', positive, 100_000)
    .addOption(new Option('--outbox-overflow <policy>', 'when the outbox is full').choices(['drop-oldest', 'reject-new']).default('drop-oldest'))
    .option('--heartbeat-interval <s>', 'override the heartbeat interval (s)', positive)
    .option('--cloud-keepalive <s>', 'MQTT keepalive to the cloud (s): a silent partition is noticed within about 1.5x this', positive, 10)
    .option('--checkpoint-interval <ms>', 'how often a windowed rule checkpoints its state (ms): a crash replays at most this much', positive, 1000)
    .option('--journal-max <n>', 'most acknowledged device records waiting for their rules; past it device acknowledgements are withheld', positive, 1_000_000)
    .option('--device-mqtt-limits <spec>', 'device broker bounds, e.g. maxPacketBytes=262144 (see docs/operators.md)', '')
    .option('--http-idle-timeout <s>', 'close a local API connection on which nothing moves for this long (s)', positive, 120)
    .option('--uplink-allow <streams>', 'result streams local programs may send up via POST /api/v1/uplink/{stream} besides those the apps\' egress policies grant (comma-separated)',
      (v: string) => v.split(',').map((x) => x.trim()).filter(Boolean))
    .addHelpText('after', `
  Examples:
    $ EW_JOIN_TOKEN=ewj_… edgeweave edge --cloud https://cloud.example.com --data-dir /var/lib/edgeweave
    $ edgeweave edge --cloud https://cloud.example.com --token-file /run/ew-join-token --data-dir /var/lib/edgeweave
    $ edgeweave edge --data-dir /var/lib/edgeweave          # later starts: credentials are reused`)
    .action(async (o) => {
      if (!o.dataDir) edge.error("error: required option '--data-dir <dir>' not specified");
      await (await import('./commands/serve.ts')).runEdge(o);
    });

  program.command('demo')
    .description('All in one: a cloud, three edge sites (city, factory, telco) and device simulators.')
    .option('--data-dir <dir>', 'where the demo keeps its state', './.edgeweave-demo')
    .option('--port <port>', 'cloud HTTP port', port, 8080)
    .option('--fresh', 'start from an empty data dir')
    .addHelpText('after', `
  Example:
    $ edgeweave demo            # then open the printed URL; Ctrl-C stops everything`)
    .action(async (o) => {
      const { runDemo } = await import('../demo/demo.ts');
      await runDemo({ dataDir: o.dataDir, port: o.port, fresh: !!o.fresh });
    });

  program.command('sql')
    .description('Run a streaming-SQL rule over JSON-lines records and print its results (try a rule before deploying it).')
    .argument('<query>', 'the rule, e.g. "SELECT id, avg(v) AS v FROM s GROUP BY id, TUMBLINGWINDOW(ss, 10)"')
    .option('--input <file>', 'JSON-lines records (default: stdin)')
    .option('--stream <name>', 'the stream name the query reads (default: its FROM)')
    .option('--schema <json|file>', 'field types, e.g. \'{"id":"string","v":"float","ts":"timestamp"}\'')
    .option('--timestamp <field>', 'event-time field (default: ts when records have it, else processing time)')
    .option('--lateness <ms>', 'allowed lateness for event time', (v) => {
      const n = Number(v);
      if (!(n >= 0)) throw new InvalidArgumentError('a number of milliseconds, 0 or more');
      return n;
    }, 0)
    .option('--explain', 'print the plan first')
    .option('--model <name=file>', 'a model the query may call: name=file.onnx for infer(), name=file.gguf for llm() (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .addHelpText('after', `
  Examples:
    $ edgeweave sql "SELECT machineId, avg(rms) AS rms FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 10)" --input readings.jsonl
    $ cat readings.jsonl | edgeweave sql "SELECT * FROM v WHERE rms > 1.2" --explain`)
    .action(async (query: string, o) => {
      const { runSql } = await import('./sql.ts');
      await runSql(query, o);
    });

  registerPartnerCommands(program);
  registerDeviceCommands(program);
  registerInferCommands(program);
  return program;
}

// Parse only when run as the CLI (bin/edgeweave.js calls run()), not when imported by tests.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await run();

export async function run(): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
  } catch (e) {
    if (isEwError(e)) {
      process.stderr.write(`error ${e.code}: ${e.message}${e.path && !e.message.includes(e.path) ? ` (at ${e.path})` : ''}\n`);
      process.exit(exitCodeFor(e.code));
    }
    if (e instanceof EwError) process.exit(1);
    process.stderr.write(`error: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  }
}
