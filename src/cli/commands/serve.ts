import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { EwError } from '../../contracts/errors.ts';
import { configFile, schemaValues } from '../schema-options.ts';

/**
 * `edgeweave cloud`, `edgeweave edge` and `edgeweave edge doctor`: the long-running roles. Loaded
 * only when one of them runs (src/cli/main.ts declares the commands; their options come from
 * the schemas in src/cloud/config.ts and src/edge/config.ts through ../schema-options.ts).
 */

/** One JSON line on stdout: how scripts and the demo learn URLs of a started process. */
function ready(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ event: 'ready', ...obj })}\n`);
}

/** Runs until SIGINT/SIGTERM, then closes cleanly (a second signal exits at once). */
function runUntilSignal(close: () => Promise<void>): void {
  let closing = false;
  const stop = (sig: string) => {
    if (closing) process.exit(130);
    closing = true;
    process.stderr.write(`\n${sig}: shutting down…\n`);
    close().then(
      () => process.exit(0),
      (e) => {
        process.stderr.write(`error while stopping: ${(e as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/**
 * The join token, from --token-file or EW_JOIN_TOKEN — never from the command line, where every
 * user of the machine could read it (ps). Removed from the environment once read, so nothing the
 * agent starts inherits it.
 */
function joinToken(o: { token?: string; tokenFile?: string }): string | undefined {
  if (o.token !== undefined) {
    throw new EwError(
      'CONFIG_INVALID',
      'a join token on the command line is visible to every user of this machine (ps, /proc); pass it in a file with --token-file <file>, or in the EW_JOIN_TOKEN environment variable',
      { path: '--token' },
    );
  }
  const fromEnv = process.env.EW_JOIN_TOKEN;
  delete process.env.EW_JOIN_TOKEN;
  if (o.tokenFile === undefined) return fromEnv?.trim() || undefined;
  try {
    const t = readFileSync(o.tokenFile, 'utf8').trim();
    if (!t) throw new Error('the file is empty');
    return t;
  } catch (e) {
    throw new EwError('CONFIG_INVALID', `--token-file ${o.tokenFile}: ${(e as Error).message}`, { path: '--token-file' });
  }
}

export async function runCloud(cmd: Command): Promise<void> {
  const [{ cloudOptions, resolveCloudOptions }, { startCloud }] = await Promise.all([
    import('../../cloud/config.ts'),
    import('../../cloud/main.ts'),
  ]);
  // Flags over EW_CLOUD_* over the --config file over the schema's defaults; refused here, naming the flag.
  const options = resolveCloudOptions({ flags: schemaValues(cmd, cloudOptions), env: process.env, file: configFile(cmd, cloudOptions) });
  const c = await startCloud(options);
  if (c.adminKey) {
    process.stderr.write(
      `\nFirst start: the admin API key is\n\n    ${c.adminKey}\n\nIt is shown once and stored only as a hash. Keep it safe.\n\n`,
    );
  }
  ready({ role: 'cloud', url: c.url, mqttUrl: c.mqttUrl });
  runUntilSignal(() => c.close());
}

export async function runEdge(cmd: Command): Promise<void> {
  const [{ edgeOptions, resolveEdgeOptions }, { startEdge }] = await Promise.all([
    import('../../edge/config.ts'),
    import('../../edge/main.ts'),
  ]);
  // Flags over EW_EDGE_* over the --config file over the schema's defaults; refused here, naming the flag.
  const options = resolveEdgeOptions({ flags: schemaValues(cmd, edgeOptions), env: process.env, file: configFile(cmd, edgeOptions) });
  const e = await startEdge({ ...options, token: joinToken(cmd.opts()) });
  if (e.generated.apiKey || e.generated.devicePassword) {
    process.stderr.write('\nFirst start: secrets this site checks (shown once, stored only as hashes):\n');
    if (e.generated.apiKey) process.stderr.write(`    local API key:    ${e.generated.apiKey}\n`);
    if (e.generated.devicePassword)
      process.stderr.write(`    device password:  ${e.generated.devicePassword}   (MQTT username "device")\n`);
    process.stderr.write('\n');
  }
  ready({ role: 'edge', siteId: e.siteId, apiUrl: e.apiUrl, deviceUrl: e.deviceUrl });
  runUntilSignal(() => e.close());
}

export async function runDoctor(o: { dataDir: string; salvage?: boolean; json?: boolean }): Promise<void> {
  const { doctor } = await import('../../edge/doctor.ts');
  const r = doctor(o.dataDir, { salvage: !!o.salvage });
  if (o.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else {
    process.stdout.write(`${r.dataDir}${r.siteId ? ` (site ${r.siteId})` : ''}\n`);
    for (const c of r.checks) process.stdout.write(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}\n`);
    if (r.counts)
      process.stdout.write(
        `  outbox ${r.counts.outbox} unsent · journal ${r.counts.journal} · dead letters ${r.counts.deadLetters} · desired generation ${r.counts.desiredGeneration ?? 'none'}\n`,
      );
    if (!r.ok)
      process.stdout.write('  the agent will refuse to start; run again with --salvage to rebuild edge.db from its readable rows\n');
  }
  process.exitCode = r.ok ? 0 : 2;
}
