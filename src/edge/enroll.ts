import { existsSync, readFileSync, writeFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { EwError, ERROR_CODES, formatPath, type ErrorCode } from '../contracts/errors.ts';
import { EnrollResponse, type EnrollRequest } from '../contracts/enroll.ts';
import { checkContractVersion, CONTRACT_VERSION } from '../contracts/messages.ts';
import type { Credentials } from './link.ts';
import { fetchTrusting } from '../lib/fetch.ts';
import { privateFiles } from '../lib/private-fs.ts';

export interface StoredCredentials extends Credentials {
  cloudUrl: string;
  tenantId: string;
  region: string;
  labels: Record<string, string>;
  heartbeatIntervalS: number;
  enrolledAt: number /** PEM of the CA the cloud's certificates come from, when it is private. */;
  ca?: string;
}

const FILE = 'credentials.json';

/** The site's credentials, kept 0600 in the data dir. Client-side, so the secret itself is kept. */
export function loadCredentials(dataDir: string): StoredCredentials | undefined {
  const p = join(dataDir, FILE);
  if (!existsSync(p)) return undefined;
  privateFiles(p);
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as StoredCredentials;
  } catch (e) {
    throw new EwError(
      'DATA_DIR_INVALID',
      `${p} is not readable JSON (${(e as Error).message}); remove it and enroll again with a new token`,
      { cause: e },
    );
  }
}

function saveCredentials(dataDir: string, c: StoredCredentials): void {
  const p = join(dataDir, FILE);
  writeFileSync(`${p}.tmp`, JSON.stringify(c, null, 2), { mode: 0o600 });
  renameSync(`${p}.tmp`, p);
}

/** Exchanges a join token for site credentials (POST /api/v1/enroll) and keeps them. */
export async function enroll(opts: {
  cloudUrl: string;
  token: string;
  name?: string;
  dataDir: string;
  ca?: string;
  fetchImpl?: typeof fetch;
}): Promise<StoredCredentials> {
  const f = opts.fetchImpl ?? fetchTrusting(opts.ca);
  let res: Response;
  // Many sites behind one address enrolling at once meet the cloud's per-address limit: they
  // wait as told (Retry-After, at most two minutes) and try again, up to five times.
  for (let attempt = 0; ; attempt++) {
    try {
      res = await f(new URL('/api/v1/enroll', opts.cloudUrl), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: opts.token, name: opts.name, contractVersion: CONTRACT_VERSION } satisfies EnrollRequest),
        signal: AbortSignal.timeout(15_000),
      });
    } catch (e) {
      throw new EwError(
        'CLOUD_UNREACHABLE',
        `cannot reach the cloud at ${opts.cloudUrl}: ${(e as Error).cause ? String(((e as Error).cause as Error).message) : (e as Error).message}; check --cloud and the network`,
        { cause: e },
      );
    }
    const wait = Number(res.headers.get('retry-after'));
    if (res.status !== 429 || attempt >= 5 || !(wait >= 0 && wait <= 120)) break;
    await res.body?.cancel();
    await new Promise((r) => setTimeout(r, Math.max(1, wait) * 1000));
  }
  const body = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const code = typeof body.code === 'string' && body.code in ERROR_CODES ? (body.code as ErrorCode) : 'ENROLL_FAILED';
    throw new EwError(code, `enrollment refused (${res.status}): ${String(body.message ?? res.statusText)}`);
  }
  const parsed = EnrollResponse.safeParse(body);
  if (!parsed.success) {
    throw new EwError(
      'ENROLL_FAILED',
      `the cloud's enrollment answer does not match the contract at ${formatPath(parsed.error.issues[0]!.path) || '(root)'}: ${parsed.error.issues[0]!.message}; is ${opts.cloudUrl} an Edgeweave cloud?`,
    );
  }
  const b = parsed.data;
  // A cloud of a newer major than this agent reads: refused before the credentials are kept.
  checkContractVersion(b.contractVersion, `the cloud at ${opts.cloudUrl}`);
  const creds: StoredCredentials = {
    siteId: b.siteId,
    tenantId: b.tenantId,
    region: b.region,
    labels: b.labels,
    heartbeatIntervalS: b.heartbeatIntervalS,
    url: b.mqtt.url,
    username: b.mqtt.username,
    password: b.mqtt.password,
    clientId: b.mqtt.clientId,
    protocolVersion: b.mqtt.protocolVersion,
    ...(b.mqtt.topicPrefix ? { topicPrefix: b.mqtt.topicPrefix } : {}),
    cloudUrl: opts.cloudUrl,
    enrolledAt: Date.now(),
    ...(opts.ca ? { ca: opts.ca } : {}),
  };
  saveCredentials(opts.dataDir, creds);
  return creds;
}
