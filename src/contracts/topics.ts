/**
 * The cloud–edge wire contract: every topic a site may use lives under `ew/{siteId}/`.
 * The hub's ACL is written against these builders, so adding a topic here is the one
 * place that decides what a site may publish or subscribe to.
 */
export const TOPIC_ROOT = 'ew';

export const topics = {
  /** cloud → site, retained: the site's desired state. */
  desired: (siteId: string) => `${TOPIC_ROOT}/${siteId}/desired`,
  /** site → cloud: heartbeats and status (also the MQTT last will). */
  reported: (siteId: string) => `${TOPIC_ROOT}/${siteId}/reported`,
  /** site → cloud: durable uplink messages from the outbox, one sub-topic per stream. */
  up: (siteId: string, stream: string) => `${TOPIC_ROOT}/${siteId}/up/${stream}`,
  /** cloud ↔ site: request/response (routed inference, later issues). */
  rpcRequests: (siteId: string) => `${TOPIC_ROOT}/${siteId}/rpc/req/#`,
  rpcRequest: (siteId: string, id: string) => `${TOPIC_ROOT}/${siteId}/rpc/req/${id}`,
  rpcResponse: (siteId: string, id: string) => `${TOPIC_ROOT}/${siteId}/rpc/res/${id}`,
  /**
   * cloud → site, QoS 0, not retained: the ids of uplink messages the cloud has STORED (the
   * end-to-end acknowledgement; the broker's PUBACK only says the broker has them). A site keeps
   * a result in its outbox until this names it (docs/architecture.md, "Uplink acknowledgement").
   */
  ack: (siteId: string) => `${TOPIC_ROOT}/${siteId}/ack`,
} as const;

/**
 * Streams the site writes itself. Every stream name starting with RESERVED_STREAM_PREFIX is
 * reserved for them: apps, rules and local programs may not use one (STREAM_RESERVED).
 */
export const RESERVED_STREAMS = {
  /** Closed minutes of the site's egress audit (edge/sinks.ts EgressAudit.report). */
  egressAudit: '_egress-audit',
} as const;
export const RESERVED_STREAM_PREFIX = '_';
export function isReservedStreamName(stream: string): boolean {
  return stream.startsWith(RESERVED_STREAM_PREFIX);
}

/** Filters the cloud subscribes to (shared-subscription friendly: all start with `ew/+/`). */
export const cloudFilters = {
  reported: `${TOPIC_ROOT}/+/reported`,
  up: `${TOPIC_ROOT}/+/up/#`,
  /** Not shared between replicas: a response must reach the replica that asked. */
  rpcResponses: `${TOPIC_ROOT}/+/rpc/res/+`,
} as const;

/**
 * Between the replicas of one installation, never a site's: under `ew/_cloud/` (no site id
 * starts with `_`, so no site's ACL pattern reaches it; the cloud's own `ew/#` does).
 */
export const replicaTopics = {
  /** Liveness of the sites each replica owns (fleet/ownership.ts): transitions and periodic snapshots. */
  liveness: (installationId: string) => `${TOPIC_ROOT}/_cloud/${installationId}/liveness`,
  /** Sites a replica revoked (fleet/revocations.ts): the others check the store and forget them. */
  revoked: (installationId: string) => `${TOPIC_ROOT}/_cloud/${installationId}/revoked`,
} as const;

export type ParsedTopic =
  | { kind: 'desired'; siteId: string }
  | { kind: 'reported'; siteId: string }
  | { kind: 'ack'; siteId: string }
  | { kind: 'up'; siteId: string; stream: string }
  | { kind: 'rpc-req'; siteId: string; rest: string }
  | { kind: 'rpc-res'; siteId: string; id: string };

const SITE_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const STREAM_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export function isValidSiteId(id: string): boolean {
  return SITE_ID_RE.test(id);
}
export function isValidStreamName(s: string): boolean {
  return STREAM_RE.test(s);
}

/** Parses a concrete (wildcard-free) topic; undefined for anything outside the contract. */
export function parseTopic(topic: string): ParsedTopic | undefined {
  const parts = topic.split('/');
  if (parts[0] !== TOPIC_ROOT || parts.length < 3) return undefined;
  const siteId = parts[1]!;
  if (!isValidSiteId(siteId)) return undefined;
  const kind = parts[2];
  if (kind === 'desired' && parts.length === 3) return { kind: 'desired', siteId };
  if (kind === 'reported' && parts.length === 3) return { kind: 'reported', siteId };
  if (kind === 'ack' && parts.length === 3) return { kind: 'ack', siteId };
  if (kind === 'up' && parts.length === 4 && isValidStreamName(parts[3]!)) return { kind: 'up', siteId, stream: parts[3]! };
  if (kind === 'rpc' && parts.length >= 5 && parts[3] === 'req') return { kind: 'rpc-req', siteId, rest: parts.slice(4).join('/') };
  if (kind === 'rpc' && parts.length === 5 && parts[3] === 'res') return { kind: 'rpc-res', siteId, id: parts[4]! };
  return undefined;
}
