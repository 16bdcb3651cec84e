import { Option, type Command } from 'commander';
import type { OptionTable } from '../lib/options.ts';
import { defaultLabel, describe, envName, fromText, isSwitch } from '../lib/options.ts';

/**
 * Commander options built from a process's option table (src/cloud/config.ts,
 * src/edge/config.ts): the flag, its description, default and environment variable as the
 * table says, plus `--config FILE`. Commander itself sets no defaults and reads no environment:
 * `schemaValues` takes only what was given on the command line, and the table's resolver layers
 * it over the environment, the file and the defaults (flag > env > file > default).
 */
export function addSchemaOptions(cmd: Command, t: OptionTable): Command {
  cmd.addOption(
    new Option(
      '--config <file>',
      `a YAML file of these options, keys named as the flags without -- (port: 8080) (env: ${t.envPrefix}CONFIG)`,
    ),
  );
  for (const key of Object.keys(t.options)) {
    const spec = t.options[key]!;
    const label = defaultLabel(t, key);
    const notes = [label !== undefined && spec.defaultLabel !== 'required' ? `default: ${label}` : undefined, `env: ${envName(t, key)}`]
      .filter(Boolean)
      .join(', ');
    const required = spec.defaultLabel === 'required' ? ' (required)' : '';
    // A switch that is on by default is offered as --no-x; its description says what it turns off.
    const text = `${describe(t, key)}${required} (${notes})`;
    cmd.addOption(new Option(`${spec.flag}${spec.arg && !isSwitch(t, key) ? ` ${spec.arg}` : ''}`, text));
  }
  return cmd;
}

const added = new WeakSet<Command>();

/**
 * Adds the options of `edgeweave cloud` or `edgeweave edge` (any other command is left alone)
 * from their schema, once. Called as the command is dispatched (a preSubcommand hook), so only
 * these two commands load zod and the schemas; `--version` and the partner commands do not.
 */
export async function addServeOptions(cmd: Command): Promise<void> {
  if (added.has(cmd) || (cmd.name() !== 'cloud' && cmd.name() !== 'edge') || cmd.parent?.parent) return;
  added.add(cmd);
  const t = cmd.name() === 'cloud' ? (await import('../cloud/config.ts')).cloudOptions : (await import('../edge/config.ts')).edgeOptions;
  addSchemaOptions(cmd, t as unknown as OptionTable);
}

/** The table's values given on the command line (converted from text as the table says); nothing else. */
export function schemaValues(cmd: Command, t: OptionTable): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const opts = cmd.opts();
  for (const key of Object.keys(t.options)) {
    const option = cmd.options.find((o) => o.long === t.options[key]!.flag);
    if (!option) continue;
    const attr = option.attributeName();
    if (cmd.getOptionValueSource(attr) !== 'cli') continue;
    const v = opts[attr];
    out[key] = typeof v === 'string' ? fromText(t, key, v) : v;
  }
  return out;
}

/** The config file named by --config, else by the table's environment variable (EW_CLOUD_CONFIG). */
export function configFile(cmd: Command, t: OptionTable, env: NodeJS.ProcessEnv = process.env): string | undefined {
  return (cmd.opts().config as string | undefined) ?? (env[`${t.envPrefix}CONFIG`] || undefined);
}
