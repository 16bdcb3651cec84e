/**
 * The API's views as the console reads them (GET /api/v1/…). Written out here rather than
 * imported from the cloud's zod schemas so that the browser bundle carries no server code.
 */
export interface SiteStatus {
  agentVersion: string;
  bootId: string;
  uptimeS: number;
  heartbeatIntervalS: number;
  generation: number;
  applyError?: string;
  apps: { name: string; version: string }[];
  system: {
    hostname: string;
    platform: string;
    arch: string;
    cores: number;
    memoryTotalBytes: number;
    memoryFreeBytes: number;
    diskTotalBytes: number;
    diskFreeBytes: number;
    loadAvg1: number;
  };
  runtimes: string[];
  accelerators: string[];
  outbox: { pending: number; dropped: number };
  devices: { connected: number; messagesIn: number };
  rules?: {
    app: string;
    rule: string;
    state: 'running' | 'failed';
    error?: string;
    in: number;
    out: number;
    filtered: number;
    late: number;
    errors: number;
    dropped: number;
    sinkErrors: number;
    lastOutputAt: number | null;
  }[];
  deadLetters?: number;
  models?: {
    app: string;
    name: string;
    version: string;
    state: 'fetching' | 'loading' | 'ready' | 'failed';
    device?: string;
    error?: string;
    download?: { received: number; total: number };
    stats?: { requests: number; errors: number; p95Ms: number | null; outputMean: number | null };
  }[];
}

export interface Site {
  id: string;
  name: string;
  region: string;
  labels: Record<string, string>;
  state: 'online' | 'offline' | 'revoked';
  lastSeenAt: number | null;
  createdAt: number;
  revokedAt: number | null;
  desiredGeneration: number;
  reportedGeneration: number;
  inSync: boolean;
  status: SiteStatus | null;
}

// The rollout's shape is the controller's own (a pure module that imports nothing; type-only, so
// nothing of it reaches the bundle).
export type { Gates, Phase, RolloutState as Rollout, SitePhase, Strategy } from '../../src/cloud/rollout/reconcile.ts';

export interface Result {
  seq: number;
  siteId: string;
  id: string;
  stream: string;
  app?: string;
  rule?: string;
  at: number;
  receivedAt: number;
  data: unknown;
}

export interface AppVersion {
  name: string;
  version: string;
  digest: string;
  createdAt: number;
}
export interface AppManifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; version: string; description?: string };
  spec: {
    models?: { name: string; format?: string; version?: string; sha256?: string }[];
    streams?: { name: string; topic?: string }[];
    rules?: { name: string; sql: string }[];
    endpoints?: { name: string; model?: string; models?: unknown; [k: string]: unknown }[];
    [k: string]: unknown;
  };
}
export interface AppDetail extends AppVersion {
  manifest: AppManifest;
}
export interface Deployment {
  id: string;
  app: string;
  version: string;
  selector: Record<string, string>;
  createdAt: number;
}
export interface JoinToken {
  id: string;
  labels: Record<string, string>;
  region: string;
  description: string;
  createdAt: number;
  expiresAt: number;
  usedAt: number | null;
  siteId: string | null;
}
export interface CreatedToken extends JoinToken {
  token: string;
  installCommand: string;
}
export interface Me {
  keyId: string;
  keyName: string;
  role: string;
  tenantId: string;
  permissions: string[];
}

/** `GET /v2/models` on the cloud: the tenant's endpoints, served through the router. */
export interface RoutedEndpoint {
  name: string;
  versions: string[];
  platform: string;
  kind?: string;
  ready: boolean;
}
/** One record of the routing audit (`GET /api/v1/router/decisions`): where a request went and why. */
export interface RouteDecision {
  at: number;
  requestId: string;
  endpoint: string;
  protocol: 'oip' | 'openai';
  attempts: { target: string; region: string; outcome: string; ms: number }[];
  rejectedCounts?: Record<string, number>;
  outcome: 'ok' | 'error';
  code?: string;
  answeredBy?: string;
  cascade?: { escalated: boolean; why: string; to?: string };
}
