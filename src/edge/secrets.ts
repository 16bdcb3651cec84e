import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EwError } from '../contracts/errors.ts';

/**
 * Named secrets of a site (a remote model's API key): never in a manifest, never logged. Looked up
 * in the environment as `EW_SECRET_<NAME>` (upper case, `-` as `_`), then in the file
 * `{dataDir}/secrets/<name>` (mode 0600 is the operator's to set).
 */
export async function siteSecret(dataDir: string, name: string): Promise<string> {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(name)) throw new EwError('CONFIG_INVALID', `secret name "${name}" is not valid: lower-case letters, digits and "-"`, { path: 'upstream.apiKeySecret' });
  const env = process.env[`EW_SECRET_${name.toUpperCase().replace(/-/g, '_')}`];
  if (env) return env.trim();
  const file = join(dataDir, 'secrets', name);
  try {
    const v = readFileSync(file, 'utf8').trim();
    if (v) return v;
  } catch { /* reported below */ }
  throw new EwError('CONFIG_INVALID', `secret "${name}" is not set on this site: put it in ${file} or the agent's environment as EW_SECRET_${name.toUpperCase().replace(/-/g, '_')}`, { path: 'upstream.apiKeySecret' });
}
