import { isReservedStreamName } from '../contracts/topics.ts';
import type { EgressGrant } from '../contracts/manifest.ts';
import type { DesiredApp } from '../contracts/messages.ts';
import { EwError } from '../contracts/errors.ts';

/**
 * The egress check of the site's local uplink endpoint (`POST /api/v1/uplink/{stream}`), pure.
 * Local programs send results up through the same policy as rules: a stream leaves the site only
 * under a grant to `cloud` — in the egress policy of an app the site runs, or in the operator's
 * `--uplink-allow` list — and only with the fields that grant lets out. Streams whose names start
 * with `_` (such as `_egress-audit`) are the site's own and refused to everyone else.
 */
export interface UplinkGrant {
  /** The app whose grant lets the stream out, or `(operator)` for `--uplink-allow`. */
  app: string;
  fields?: string[];
}

const grantOf = (g: EgressGrant) => (typeof g === 'string' ? { stream: g } : g);

export function isReservedStream(stream: string): boolean {
  return isReservedStreamName(stream);
}

export function localUplinkGrant(
  stream: string,
  apps: readonly DesiredApp[],
  operatorAllow: readonly EgressGrant[],
  onlyApp?: string,
): UplinkGrant {
  if (isReservedStream(stream)) {
    throw new EwError(
      'STREAM_RESERVED',
      `stream "${stream}": names starting with "_" are reserved for the site's own streams (such as _egress-audit); choose a name that starts with a letter or digit`,
      { path: 'stream' },
    );
  }
  const candidates: { app: string; grant: ReturnType<typeof grantOf> }[] = [];
  for (const a of apps) {
    if (onlyApp !== undefined && a.name !== onlyApp) continue;
    for (const g of a.manifest.spec.policy.egress?.allow ?? []) candidates.push({ app: a.name, grant: grantOf(g) });
  }
  if (onlyApp === undefined) for (const g of operatorAllow) candidates.push({ app: '(operator)', grant: grantOf(g) });
  const hit = candidates.find((c) => c.grant.stream === stream && (c.grant.to ?? ['cloud']).includes('cloud'));
  if (!hit) {
    const where =
      onlyApp !== undefined
        ? `the egress policy of app ${onlyApp}`
        : "no egress policy of an app this site runs, nor the agent's --uplink-allow,";
    throw new EwError(
      'EGRESS_DENIED',
      `stream "${stream}" may not leave the site: ${where} grants it to the cloud; add it to an app's spec.policy.egress.allow, or start the agent with --uplink-allow ${stream}`,
      { path: 'stream' },
    );
  }
  return { app: hit.app, fields: hit.grant.fields };
}

/** Refuses a record with a field the grant does not let out (records are checked, not trimmed: the sender should know). */
export function checkGrantedFields(records: readonly unknown[], grant: UplinkGrant, stream: string): void {
  if (!grant.fields) return;
  const allowed = new Set(grant.fields);
  records.forEach((r, i) => {
    if (r === null || typeof r !== 'object' || Array.isArray(r)) {
      throw new EwError(
        'EGRESS_DENIED',
        `records[${i}]: the grant for "${stream}" lets out only the fields ${grant.fields!.join(', ')}, so each record must be a JSON object`,
        { path: `records[${i}]` },
      );
    }
    for (const k of Object.keys(r)) {
      if (!allowed.has(k))
        throw new EwError(
          'EGRESS_DENIED',
          `records[${i}].${k}: the grant for "${stream}" (app ${grant.app}) lets out only ${grant.fields!.join(', ')}`,
          { path: `records[${i}].${k}` },
        );
    }
  });
}
