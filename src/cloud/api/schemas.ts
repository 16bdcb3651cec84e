import { z } from 'zod';
import { EnrollResponse } from '../../contracts/enroll.ts';
import { Phase, Strategy } from '../../contracts/rollout.ts';
import { AppManifest } from '../../contracts/manifest.ts';
import { SiteStatusBody } from '../../contracts/messages.ts';
import { ErrorBodySchema } from '../../contracts/error-body.ts';
import type { App, Deployment, JoinToken, Site } from '../store/store.ts';

/**
 * The cloud API's request and response shapes, one zod schema each. The routes validate and
 * serialise with them (so the OpenAPI document is generated from them), and the CLI's client
 * takes its types from them (`ApiResponses` below), so the two cannot drift apart.
 * Nothing here imports fastify or Node, so a client can import it cheaply (types only).
 */

export const Labels = z.record(z.string(), z.string()).describe('label key → value, Kubernetes label syntax');
// Every error body, `path` and `pos` included (a serializer drops undeclared fields).
export const ErrorSchema = ErrorBodySchema;
export const errors = { 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema };

export const Health = z.object({ ok: z.boolean(), version: z.string() });
export const Info = z.object({ version: z.string(), hub: z.string(), agentMqttUrl: z.string(), host: z.string(), store: z.string() });

// ---- sites ----
export const SiteState = z.enum(['online', 'offline', 'unknown', 'revoked']);
export const SiteView = z.object({
  id: z.string(),
  name: z.string(),
  region: z.string(),
  labels: Labels,
  /** `unknown`: the cloud restarted and has not heard from the site since (it was online before). */
  state: SiteState,
  lastSeenAt: z.number().nullable(),
  createdAt: z.number(),
  revokedAt: z.number().nullable(),
  desiredGeneration: z.number(),
  reportedGeneration: z.number(),
  inSync: z.boolean(),
  status: SiteStatusBody.nullable(),
});
export type SiteView = z.infer<typeof SiteView>;
export const SiteList = z.object({ items: z.array(SiteView), total: z.number(), online: z.number() });

export function siteView(s: Site, live: 'online' | 'offline' | 'unknown'): SiteView {
  return {
    id: s.id,
    name: s.name,
    region: s.region,
    labels: s.labels,
    state: s.revokedAt !== null ? 'revoked' : live,
    lastSeenAt: s.lastSeenAt,
    createdAt: s.createdAt,
    revokedAt: s.revokedAt,
    desiredGeneration: s.desiredGeneration,
    reportedGeneration: s.reportedGeneration,
    inSync: s.desiredGeneration > 0 && s.reportedGeneration >= s.desiredGeneration,
    status: s.status,
  };
}

export const SiteLogs = z.object({ lines: z.array(z.object({ time: z.number(), line: z.string() })) });
export const DeadLetters = z.object({
  total: z.number(),
  items: z.array(
    z.object({ id: z.number(), at: z.number(), app: z.string(), stream: z.string(), reason: z.string(), payloadBytes: z.number() }),
  ),
});
export const WriteAudit = z.object({
  items: z.array(
    z.object({
      id: z.number(),
      at: z.number(),
      app: z.string(),
      rule: z.string(),
      target: z.string(),
      value: z.string(),
      result: z.string(),
      detail: z.string().nullable(),
    }),
  ),
});
export const SiteRules = z.object({
  siteId: z.string(),
  reportedAt: z.number().nullable(),
  items: z.array(z.record(z.string(), z.unknown())),
});
export const EgressAudit = z.object({ items: z.array(z.unknown()) });

export const Device = z.object({
  id: z.string(),
  publish: z.array(z.string()),
  subscribe: z.array(z.string()),
  createdAt: z.number(),
  description: z.string().optional(),
});
export const DeviceList = z.object({ items: z.array(Device), next: z.string().nullable() });
export const DeviceCreated = Device.extend({ secret: z.string(), username: z.string(), clientId: z.string() });

// ---- join tokens and enrollment ----
export const TokenView = z.object({
  id: z.string(),
  labels: Labels,
  region: z.string(),
  description: z.string(),
  createdAt: z.number(),
  expiresAt: z.number(),
  usedAt: z.number().nullable(),
  siteId: z.string().nullable(),
});
export const tokenView = (t: JoinToken): z.infer<typeof TokenView> => ({
  id: t.id,
  labels: t.labels,
  region: t.region,
  description: t.description,
  createdAt: t.createdAt,
  expiresAt: t.expiresAt,
  usedAt: t.usedAt,
  siteId: t.siteId,
});
export const TokenCreated = TokenView.extend({ token: z.string(), installCommand: z.string() });
export const TokenList = z.object({ items: z.array(TokenView) });
/** The wire contract's enrollment answer (the agent parses it with the same schema). */
export const Enrollment = EnrollResponse;

// ---- API keys ----
export const KeyScopeView = z.object({ apps: z.array(z.string()).optional(), labels: Labels.optional() });
export const KeyView = z.object({
  id: z.string(),
  name: z.string(),
  role: z.string(),
  createdAt: z.number(),
  revokedAt: z.number().nullable(),
  /** ms since epoch after which the key is refused (401 KEY_EXPIRED); null: never. */
  expiresAt: z.number().nullable(),
  /** The apps and site labels the key is limited to; null: none. */
  scope: KeyScopeView.nullable(),
});
export const KeyList = z.object({ items: z.array(KeyView) });
export const KeyCreated = KeyView.extend({ key: z.string() });

// ---- apps ----
export const AppView = z.object({
  name: z.string(),
  version: z.string(),
  digest: z.string(),
  createdAt: z.number(),
  manifest: AppManifest,
});
export const appView = (a: App): z.infer<typeof AppView> => ({
  name: a.name,
  version: a.version,
  digest: a.digest,
  createdAt: a.createdAt,
  manifest: a.manifest,
});
export const AppList = z.object({ items: z.array(AppView.omit({ manifest: true })) });

// ---- artifacts ----
export const ArtifactStatus = z.object({ sha256: z.string(), complete: z.boolean(), size: z.number(), received: z.number() });

// ---- deployments and rollouts ----
/** The rollout strategy, as the contract defines it (contracts/rollout.ts). */
export const StrategyBody = Strategy;
export const DeploymentBody = z.object({
  app: z.string().min(1),
  version: z.string().min(1),
  selector: Labels,
  strategy: StrategyBody.default({ type: 'all' }),
  stepTimeoutS: z.number().int().min(5).max(86_400).default(300),
  onFailure: z.enum(['rollback', 'halt']).default('rollback'),
});
export type DeploymentBody = z.infer<typeof DeploymentBody>;

export const RolloutView = z.object({
  id: z.string(),
  app: z.string(),
  version: z.string(),
  strategy: z.unknown(),
  options: z.unknown(),
  phase: Phase,
  reason: z.string().optional(),
  startedAt: z.number(),
  updatedAt: z.number(),
  admitted: z.array(z.string()),
  canaries: z.array(z.string()),
  sites: z.record(z.string(), z.object({ phase: z.string(), since: z.number(), reason: z.string().optional() })),
  history: z.array(z.object({ at: z.number(), event: z.string() })),
  pausedFrom: z.string().optional(),
  bakeStartedAt: z.number().optional(),
  canaryPassed: z.boolean().optional(),
  baseline: z.object({ at: z.number(), outputMean: z.number().nullable(), sites: z.number() }).optional(),
});
export const RolloutList = z.object({ items: z.array(RolloutView) });

export const DeploymentView = z.object({ id: z.string(), app: z.string(), version: z.string(), selector: Labels, createdAt: z.number() });
export const deploymentView = (d: Deployment): z.infer<typeof DeploymentView> => ({
  id: d.id,
  app: d.appName,
  version: d.appVersion,
  selector: d.selector,
  createdAt: d.createdAt,
});
export const DeploymentList = z.object({ items: z.array(DeploymentView) });
export const DeploymentCreated = DeploymentView.extend({ sites: z.array(z.string()), rollout: RolloutView });

// ---- results ----
export const ResultsQuery = z.object({
  site: z.string().optional(),
  stream: z.string().optional(),
  app: z.string().optional(),
  rule: z.string().optional(),
  since: z.coerce.number().int().optional().describe('site time, ms since epoch, inclusive'),
  until: z.coerce.number().int().optional().describe('site time, ms since epoch, exclusive'),
  after: z.coerce.number().int().optional().describe('the `next` cursor of the previous page'),
  limit: z.coerce.number().int().min(1).max(5000).default(100),
});
export const ResultsPage = z.object({
  items: z.array(
    z.object({
      seq: z.number(),
      siteId: z.string(),
      id: z.string(),
      stream: z.string(),
      app: z.string().optional(),
      rule: z.string().optional(),
      at: z.number(),
      receivedAt: z.number(),
      data: z.unknown(),
    }),
  ),
  next: z.number().nullable(),
});

// ---- tenants (platform admins) and the audit log ----
export const Quotas = z
  .object({
    sites: z.number().int().min(0).optional().describe('most live (not revoked) sites'),
    apps: z.number().int().min(0).optional().describe('most apps (by name; versions of one app count once)'),
    artifactBytes: z.number().int().min(0).optional().describe('most bytes of model files the tenant holds'),
    resultsPerDay: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe("most results stored per UTC day; past it a site's results are dropped and counted"),
  })
  .strict();

export const TenantView = z.object({
  id: z.string(),
  name: z.string(),
  state: z.enum(['active', 'suspended']),
  createdAt: z.number(),
  suspendedAt: z.number().nullable(),
  quotas: Quotas,
});
export const TenantUsage = z.object({
  sites: z.number(),
  liveSites: z.number(),
  keys: z.number(),
  tokens: z.number(),
  apps: z.number(),
  appVersions: z.number(),
  deployments: z.number(),
  rollouts: z.number(),
  artifacts: z.number(),
  results: z.number(),
});
export const TenantList = z.object({ items: z.array(TenantView) });
export const TenantDetail = TenantView.extend({ usage: TenantUsage });
export const TenantCreated = TenantView.extend({ adminKey: z.object({ id: z.string(), key: z.string() }) });
export const TenantDeleted = z.object({ tenant: TenantView, dryRun: z.boolean(), removed: TenantUsage, artifactFilesRemoved: z.number() });

export const AuditEntryView = z.object({
  seq: z.number(),
  at: z.number(),
  tenantId: z.string().nullable(),
  keyId: z.string().nullable(),
  role: z.string().nullable(),
  siteId: z.string().nullable(),
  action: z.string(),
  target: z.string(),
  status: z.number(),
  outcome: z.enum(['ok', 'denied', 'failed']),
  code: z.string().nullable(),
  address: z.string(),
  requestId: z.string(),
});
export const AuditPage = z.object({ items: z.array(AuditEntryView), next: z.number().nullable() });
export const RetentionPolicyView = z.object({ stream: z.string(), days: z.number().int(), updatedAt: z.number() });
export const RetentionList = z.object({ policies: z.array(RetentionPolicyView), cloudDefaultDays: z.number().int().nullable() });

/**
 * What each route answers on success, by `METHOD path` with the path as the CLI writes it
 * (`${string}` for an id). `ApiClient.call` looks its answer type up here.
 */
export interface ApiResponses {
  'GET /healthz': z.infer<typeof Health>;
  'GET /api/v1/info': z.infer<typeof Info>;
  'GET /api/v1/sites': z.infer<typeof SiteList>;
  'GET /api/v1/sites/:id': SiteView;
  'PUT /api/v1/sites/:id/labels': SiteView;
  'POST /api/v1/sites/:id/revoke': SiteView;
  'GET /api/v1/sites/:id/logs': z.infer<typeof SiteLogs>;
  'GET /api/v1/sites/:id/dead-letters': z.infer<typeof DeadLetters>;
  'GET /api/v1/sites/:id/writes': z.infer<typeof WriteAudit>;
  'GET /api/v1/sites/:id/rules': z.infer<typeof SiteRules>;
  'GET /api/v1/sites/:id/egress': z.infer<typeof EgressAudit>;
  'GET /api/v1/sites/:id/devices': z.infer<typeof DeviceList>;
  'POST /api/v1/sites/:id/devices': z.infer<typeof DeviceCreated>;
  'DELETE /api/v1/sites/:id/devices/:device': null;
  'POST /api/v1/tokens': z.infer<typeof TokenCreated>;
  'GET /api/v1/tokens': z.infer<typeof TokenList>;
  'DELETE /api/v1/tokens/:id': null;
  'POST /api/v1/enroll': z.infer<typeof Enrollment>;
  'GET /api/v1/keys': z.infer<typeof KeyList>;
  'POST /api/v1/keys': z.infer<typeof KeyCreated>;
  'DELETE /api/v1/keys/:id': null;
  'POST /api/v1/apps': z.infer<typeof AppView>;
  'GET /api/v1/apps': z.infer<typeof AppList>;
  'GET /api/v1/apps/:name/versions/:version': z.infer<typeof AppView>;
  'GET /api/v1/artifacts/:sha256/status': z.infer<typeof ArtifactStatus>;
  'PUT /api/v1/artifacts/:sha256': z.infer<typeof ArtifactStatus>;
  'POST /api/v1/deployments': z.infer<typeof DeploymentCreated>;
  'GET /api/v1/deployments': z.infer<typeof DeploymentList>;
  'GET /api/v1/deployments/:id': z.infer<typeof DeploymentView>;
  'DELETE /api/v1/deployments/:id': null;
  'GET /api/v1/rollouts': z.infer<typeof RolloutList>;
  'GET /api/v1/rollouts/:id': z.infer<typeof RolloutView>;
  'POST /api/v1/rollouts/:id/:action': z.infer<typeof RolloutView>;
  'GET /api/v1/results': z.infer<typeof ResultsPage>;
  'GET /api/v1/tenants': z.infer<typeof TenantList>;
  'GET /api/v1/tenants/:id': z.infer<typeof TenantDetail>;
  'POST /api/v1/tenants': z.infer<typeof TenantCreated>;
  'PUT /api/v1/tenants/:id/quotas': z.infer<typeof TenantView>;
  'POST /api/v1/tenants/:id/suspend': z.infer<typeof TenantView>;
  'POST /api/v1/tenants/:id/resume': z.infer<typeof TenantView>;
  'DELETE /api/v1/tenants/:id': z.infer<typeof TenantDeleted>;
  'GET /api/v1/audit': z.infer<typeof AuditPage>;
  'GET /api/v1/retention': z.infer<typeof RetentionList>;
  'PUT /api/v1/retention/:stream': z.infer<typeof RetentionPolicyView>;
  'DELETE /api/v1/retention/:stream': null;
}
