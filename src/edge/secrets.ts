import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EwError } from '../contracts/errors.ts';

/**
 * Named secrets of a site (a remote model's API key, an OPC UA user's password): never in a
 * manifest, never logged. Looked up in the environment as `EW_SECRET_<NAME>` (upper case, `-` and
 * `.` as `_`), then in the file `{dataDir}/secrets/<name>` (mode 0600 is the operator's to set).
 * Read when needed, so a rotated file is picked up.
 */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const envName = (name: string) => `EW_SECRET_${name.toUpperCase().replace(/[-.]/g, '_')}`;

/** The secret's value, or undefined when it is not set (or the name is not a valid one). */
export function readSiteSecret(dataDir: string, name: string): string | undefined {
  if (!NAME.test(name)) return undefined;
  const env = process.env[envName(name)];
  if (env) return env.trim();
  const file = join(dataDir, 'secrets', name);
  if (!existsSync(file)) return undefined;
  const v = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  return v || undefined;
}

/** The secret's value; CONFIG_INVALID (naming where to put it) when it is not set. */
export async function siteSecret(dataDir: string, name: string, path = 'upstream.apiKeySecret'): Promise<string> {
  if (!NAME.test(name))
    throw new EwError('CONFIG_INVALID', `secret name "${name}" is not valid: letters, digits, "-", "_" and "."`, { path });
  const v = readSiteSecret(dataDir, name);
  if (v !== undefined) return v.trim();
  throw new EwError(
    'CONFIG_INVALID',
    `secret "${name}" is not set on this site: put it in ${join(dataDir, 'secrets', name)} or the agent's environment as ${envName(name)}`,
    { path },
  );
}
