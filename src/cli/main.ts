import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command, InvalidArgumentError, Option } from 'commander';
import { EwError, exitCodeFor, isEwError } from '../contracts/errors.ts';
import { VERSION } from '../version.ts';
import { registerPartnerCommands } from './partner.ts';
import { registerDeviceCommands } from './devices.ts';
import { registerInferCommands } from './infer.ts';
import { registerTenancyCommands } from './tenancy.ts';

/**
 * `edgeweave` — one CLI, several roles. This file (and partner.ts, devices.ts, infer.ts) only
 * declares the commands: each action imports its implementation (`./commands/*.ts`) when it
 * runs, so `edgeweave --version` or `edgeweave sites list` loads commander and little else, not
 * fastify, the stream engine or ONNX Runtime (see bench/cli.ts). The options of `cloud` and
 * `edge` come from their config schemas (src/cloud/config.ts, src/edge/config.ts), loaded only
 * when one of the two runs or shows its help (./schema-options.ts).
 * Exit codes scripts can rely on: 0 ok, else the error code's `exit` in src/contracts/errors.ts
 * (1 unexpected, 2 bad flags or config — also commander's usage errors —, 3 refused, 4 the cloud
 * could not be reached), listed in docs/errors.md.
 */

const port = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port number 0-65535 (0 picks a free one)');
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

  // The options of `cloud` and `edge` are added from their schemas when one of them is dispatched.
  program.hook('preSubcommand', async (_program, sub) => {
    if (sub.name() === 'cloud' || sub.name() === 'edge') await (await import('./schema-options.ts')).addServeOptions(sub);
  });
  program
    .command('cloud')
    .description('Run the cloud control plane: HTTP API, MQTT hub, store.')
    .addHelpText(
      'after',
      `
  Options also come from EW_CLOUD_* variables and a --config YAML file; a flag wins over a variable, a variable over the file.
  Examples:
    $ edgeweave cloud --data-dir /var/lib/edgeweave-cloud
    $ edgeweave cloud --region eu-west --infer-rate 50 --infer-concurrency 16
    $ edgeweave cloud --config /etc/edgeweave/cloud.yaml --port 8443
    $ edgeweave cloud --db postgres://edgeweave@db:5432/edgeweave --broker mqtt://emqx:1883`,
    )
    .action(async (_o, cmd: Command) => (await import('./commands/serve.ts')).runCloud(cmd));

  const edge = program.command('edge').enablePositionalOptions();
  edge
    .command('doctor')
    .description(
      "Check a site's data directory (credentials, edge.db, PRAGMA quick_check, a test write); --salvage copies every readable row of a damaged edge.db into a fresh one.",
    )
    .requiredOption('--data-dir <dir>', 'the site state directory')
    .option('--salvage', 'rebuild edge.db from its readable rows (the damaged file is kept beside it)')
    .option('--json', 'print the report as JSON')
    .addHelpText(
      'after',
      `
  Exit codes: 0 healthy (or salvaged), 2 problems found.
  Examples:
    $ edgeweave edge doctor --data-dir /var/lib/edgeweave
    $ edgeweave edge doctor --data-dir /var/lib/edgeweave --salvage`,
    )
    .action(async (o) => (await import('./commands/serve.ts')).runDoctor(o));
  edge
    .description('Run an edge agent: enrolls once with a join token, then runs autonomously.')
    .option('--token-file <file>', 'first start only: a file holding the join token (or set EW_JOIN_TOKEN)')
    // Refused with a reason: a secret on the command line is visible to every user (ps, /proc/*/cmdline).
    .addOption(new Option('--token <token>').hideHelp())
    .addHelpText(
      'after',
      `
  Options also come from EW_EDGE_* variables and a --config YAML file; a flag wins over a variable, a variable over the file.
  Examples:
    $ EW_JOIN_TOKEN=ewj_… edgeweave edge --cloud https://cloud.example.com --data-dir /var/lib/edgeweave
    $ edgeweave edge --cloud https://cloud.example.com --token-file /run/ew-join-token --data-dir /var/lib/edgeweave
    $ edgeweave edge --config /etc/edgeweave/edge.yaml
    $ edgeweave edge --data-dir /var/lib/edgeweave          # later starts: credentials are reused`,
    )
    .action(async (_o, cmd: Command) => (await import('./commands/serve.ts')).runEdge(cmd));

  program
    .command('demo')
    .description('All in one: a cloud, three edge sites (city, factory, telco) and device simulators.')
    .option('--data-dir <dir>', 'where the demo keeps its state', './.edgeweave-demo')
    .option('--port <port>', 'cloud HTTP port', port, 8080)
    .option('--fresh', 'start from an empty data dir')
    .addHelpText(
      'after',
      `
  Example:
    $ edgeweave demo            # then open the printed URL; Ctrl-C stops everything`,
    )
    .action(async (o) => {
      const { runDemo } = await import('../demo/demo.ts');
      await runDemo({ dataDir: o.dataDir, port: o.port, fresh: !!o.fresh });
    });

  program
    .command('sql')
    .description('Run a streaming-SQL rule over JSON-lines records and print its results (try a rule before deploying it).')
    .argument('<query>', 'the rule, e.g. "SELECT id, avg(v) AS v FROM s GROUP BY id, TUMBLINGWINDOW(ss, 10)"')
    .option('--input <file>', 'JSON-lines records (default: stdin)')
    .option('--stream <name>', 'the stream name the query reads (default: its FROM)')
    .option('--schema <json|file>', 'field types, e.g. \'{"id":"string","v":"float","ts":"timestamp"}\'')
    .option('--timestamp <field>', 'event-time field (default: ts when records have it, else processing time)')
    .option(
      '--lateness <ms>',
      'allowed lateness for event time',
      (v) => {
        const n = Number(v);
        if (!(n >= 0)) throw new InvalidArgumentError('a number of milliseconds, 0 or more');
        return n;
      },
      0,
    )
    .option('--explain', 'print the plan first')
    .option(
      '--model <name=file>',
      'a model the query may call: name=file.onnx for infer(), name=file.gguf for llm() (repeatable)',
      (v: string, prev: string[] = []) => [...prev, v],
    )
    .addHelpText(
      'after',
      `
  Examples:
    $ edgeweave sql "SELECT machineId, avg(rms) AS rms FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 10)" --input readings.jsonl
    $ cat readings.jsonl | edgeweave sql "SELECT * FROM v WHERE rms > 1.2" --explain`,
    )
    .action(async (query: string, o) => {
      const { runSql } = await import('./sql.ts');
      await runSql(query, o);
    });

  registerPartnerCommands(program);
  registerDeviceCommands(program);
  registerInferCommands(program);
  registerTenancyCommands(program);
  return program;
}

// Parse only when run as the CLI (bin/edgeweave.js calls run()), not when imported by tests.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await run();

export async function run(): Promise<void> {
  const program = buildProgram();
  try {
    // `edgeweave help cloud` prints the command's help without dispatching it (no hook runs): add its options first.
    const [first, second] = process.argv.slice(2);
    const shown = first === 'help' ? program.commands.find((c) => c.name() === second) : undefined;
    if (shown && (second === 'cloud' || second === 'edge')) await (await import('./schema-options.ts')).addServeOptions(shown);
    await program.parseAsync(process.argv);
  } catch (e) {
    if (isEwError(e)) {
      const at = e.where();
      process.stderr.write(`error ${e.code}: ${e.message}${at && !e.message.includes(at) ? ` (at ${at})` : ''}\n`);
      process.exit(exitCodeFor(e.code));
    }
    if (e instanceof EwError) process.exit(1);
    process.stderr.write(`error: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  }
}
