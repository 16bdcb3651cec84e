import type { RetentionPolicy, RetentionStep } from '../results/retention.ts';
import type { Labels, Selector } from '../../contracts/selector.ts';
import type { AppManifest } from '../../contracts/manifest.ts';
import type { SiteStatusBody } from '../../contracts/messages.ts';
import type { Role } from '../../contracts/permissions.ts';

/**
 * The cloud's state, behind one interface with two real implementations (SQLite by default,
 * PostgreSQL for several cloud replicas). Both pass `test/store.conformance.ts`.
 *
 * Lifecycle: `open*()` → `migrate()` → calls → `close()`. Every row belongs to a tenant; every
 * read that a user can reach takes the tenant id, so one tenant can never read another's rows.
 * Times are integer milliseconds since the epoch.
 */
/** Per-tenant limits; an absent one is unlimited (docs/operators.md "Quotas"). */
export interface TenantQuotas {
  sites?: number;
  apps?: number;
  artifactBytes?: number;
  resultsPerDay?: number;
}

/** `suspended`: reads still work; changes, enrollments and rollout steps are refused or held. */
export type TenantState = 'active' | 'suspended';

export interface Tenant {
  id: string;
  name: string;
  createdAt: number;
  state?: TenantState;
  suspendedAt?: number | null;
  quotas?: TenantQuotas;
}

/** Limits of a key within its tenant: only these apps, only sites carrying these labels. */
export interface KeyScope {
  apps?: string[];
  labels?: Labels;
}

export interface ApiKey {
  id: string;
  tenantId: string;
  name: string;
  /** sha256 of the key; the key itself is shown once at creation and never stored. */
  hash: string;
  role: Role;
  createdAt: number;
  revokedAt: number | null;
  /** After this time the key is refused (401 KEY_EXPIRED); null or absent: never. */
  expiresAt?: number | null;
  scope?: KeyScope | null;
  /** The tenant's state, filled in by `findApiKeyByHash` (the auth hook needs it on every call). */
  tenantState?: TenantState;
}

/** One change made through the API (or refused), as the audit log keeps it. Never a secret. */
export interface AuditEntry {
  seq?: number;
  at: number;
  /** The tenant acted in; null for calls no tenant could be told (a failed login). */
  tenantId: string | null;
  keyId: string | null;
  role: string | null;
  /** Set instead of the key when a site called with its own credentials. */
  siteId?: string | null;
  /** `METHOD /route/pattern`, e.g. `POST /api/v1/sites/:id/revoke`. */
  action: string;
  /** The path called, without its query string. */
  target: string;
  status: number;
  outcome: 'ok' | 'denied' | 'failed';
  /** The error code when it failed. */
  code: string | null;
  address: string;
  requestId: string;
}

export interface AuditQuery {
  tenantId?: string;
  afterSeq?: number;
  since?: number;
  limit: number;
}

/** What a tenant holds, counted (a tenant deletion's dry run, the usage a quota checks). */
export interface TenantData {
  sites: number;
  liveSites: number;
  keys: number;
  tokens: number;
  apps: number;
  appVersions: number;
  deployments: number;
  rollouts: number;
  artifacts: number;
  results: number;
}

export interface JoinToken {
  id: string;
  tenantId: string;
  hash: string;
  labels: Labels;
  region: string;
  description: string;
  createdAt: number;
  expiresAt: number;
  usedAt: number | null;
  siteId: string | null;
}

export interface Site {
  id: string;
  tenantId: string;
  name: string;
  region: string;
  labels: Labels;
  /** sha256 of the site's MQTT secret. */
  secretHash: string;
  createdAt: number;
  revokedAt: number | null;
  online: boolean;
  lastSeenAt: number | null;
  status: SiteStatusBody | null;
  desiredGeneration: number;
  desiredHash: string | null;
  reportedGeneration: number;
}

/**
 * What placement needs of a site — no status, no secret: the desired-state fan-out and the
 * rollout controller read a whole fleet at once, and parsing 10,000 statuses was most of it.
 */
export type SiteRef = Pick<Site, 'id' | 'tenantId' | 'name' | 'region' | 'labels' | 'revokedAt'>;

export interface App {
  tenantId: string;
  name: string;
  version: string;
  manifest: AppManifest;
  digest: string;
  createdAt: number;
}

export interface Deployment {
  id: string;
  tenantId: string;
  appName: string;
  appVersion: string;
  selector: Selector;
  createdAt: number;
}

/** `rev` counts saves: a save that names the rev it read fails if someone saved in between. */
export interface RolloutRow {
  id: string;
  tenantId: string;
  state: import('../rollout/reconcile.ts').RolloutState;
  rev?: number;
}

export interface UplinkRecord {
  siteId: string;
  msgId: string;
  stream: string;
  /** The app and rule that produced it (absent for results posted by local programs). */
  app?: string;
  rule?: string;
  /** When the site produced it (site clock). */
  at: number;
  receivedAt: number;
  data: unknown;
}

/**
 * `afterSeq`/`maxSeq`: seq > afterSeq and ≤ maxSeq (an export pins `maxSeq` at its start, so it ends).
 * Oldest stored first (by seq), or with `byTime` oldest by site time, then seq, after the key given.
 */
export interface UplinkQuery {
  siteId?: string;
  stream?: string;
  app?: string;
  rule?: string;
  since?: number;
  until?: number;
  limit: number;
  afterSeq?: number;
  maxSeq?: number;
  byTime?: { after?: { at: number; seq: number } };
}
export interface UplinkRow extends UplinkRecord {
  seq: number;
}

export type ConsumeResult = { ok: true; token: JoinToken } | { ok: false; reason: 'unknown' | 'used' | 'expired' | 'suspended' | 'quota' };

/** `lastSeenAt` is the last heartbeat's time: absent when only the online flag changes. */
export interface SiteStatusUpdate {
  siteId: string;
  online: boolean;
  lastSeenAt?: number;
  status?: SiteStatusBody;
  reportedGeneration?: number;
  /**
   * Conditional write (several replicas hear the same heartbeat): written only when the stored
   * row differs — its online flag, or its status digest — or was last seen before
   * `refreshBefore`. Without a digest the write is unconditional.
   */
  digest?: string;
  refreshBefore?: number;
}

export interface Store {
  readonly kind: 'sqlite' | 'postgres';
  migrate(): Promise<void>;
  close(): Promise<void>;

  createTenant(t: Tenant): Promise<void>;
  listTenants(): Promise<Tenant[]>;
  getTenant(id: string): Promise<Tenant | undefined>;
  /** Suspends or resumes; undefined when there is no such tenant. */
  setTenantState(id: string, state: TenantState, now: number): Promise<Tenant | undefined>;
  setTenantQuotas(id: string, quotas: TenantQuotas): Promise<Tenant | undefined>;
  /** Counts what the tenant holds; `resultsSince` counts only results received since then. */
  tenantData(id: string, resultsSince?: number): Promise<TenantData>;
  /**
   * Reserves up to `want` of the tenant's results-per-day quota for the UTC day starting at `day`
   * (ms) from one counter that every replica shares; answers how many were granted (0 once `limit`
   * is used up). The day's counter starts from the results already stored that day.
   */
  reserveResults(tenantId: string, day: number, want: number, limit: number): Promise<number>;
  /**
   * Deletes the tenant and everything it holds in one transaction: keys, tokens, sites (so their
   * credentials stop working at once), apps, deployments, rollouts, results, artifact ownership.
   * Returns the ids of its sites (to cut their connections) and the artifacts no other tenant
   * holds (their files can go); undefined when there is no such tenant. The audit log stays.
   */
  deleteTenant(id: string): Promise<{ siteIds: string[]; orphanArtifacts: string[] } | undefined>;

  /** Appends to the audit log, which has no update or delete. */
  appendAudit(e: AuditEntry): Promise<void>;
  /** Oldest first, after `afterSeq`; `tenantId` absent: every tenant's (platform). */
  queryAudit(q: AuditQuery): Promise<AuditEntry[]>;

  createApiKey(k: ApiKey): Promise<void>;
  findApiKeyByHash(hash: string): Promise<ApiKey | undefined>;
  listApiKeys(tenantId: string): Promise<ApiKey[]>;
  /**
   * Revokes a live key of the tenant, atomically refusing to revoke its last live admin key
   * (a tenant locked out of its own API could never get back in).
   */
  revokeApiKey(tenantId: string, id: string, now: number): Promise<'revoked' | 'not-found' | 'last-admin'>;

  /** Records that a tenant holds an artifact (it uploaded its bytes); idempotent. */
  addArtifactOwner(tenantId: string, sha256: string, now: number): Promise<void>;
  /** Whether the tenant uploaded this artifact. */
  ownsArtifact(tenantId: string, sha256: string): Promise<boolean>;
  /** The artifacts the tenant holds (sha256), for its artifact-bytes quota. */
  listArtifacts(tenantId: string): Promise<string[]>;

  createJoinToken(t: JoinToken): Promise<void>;
  listJoinTokens(tenantId: string): Promise<JoinToken[]>;
  /** Deletes an unused token; false when there is no such unused token in the tenant. */
  deleteJoinToken(tenantId: string, id: string): Promise<boolean>;
  /**
   * Atomically exchanges a join token for a new site: the token is marked used and the site
   * created in one transaction, so a token can enroll one site only, even under a race.
   * Refused (the token left unused) while its tenant is suspended or at its sites quota.
   */
  enrollSite(tokenHash: string, now: number, makeSite: (t: JoinToken) => Site): Promise<ConsumeResult & { site?: Site }>;

  getSite(tenantId: string, id: string): Promise<Site | undefined>;
  /** Unscoped lookup for the MQTT hub, which knows only the site id. */
  getSiteById(id: string): Promise<Site | undefined>;
  listSites(tenantId: string): Promise<Site[]>;
  listAllSites(): Promise<Site[]>;
  /** A tenant's sites (every tenant's without one) as placement sees them, in creation order. */
  listSiteRefs(tenantId?: string): Promise<SiteRef[]>;
  /** The last stored status of each of these sites that has one (a site never heard from has none). */
  getSiteStatuses(ids: readonly string[]): Promise<Map<string, SiteStatusBody>>;
  setSiteLabels(tenantId: string, id: string, labels: Labels): Promise<Site | undefined>;
  revokeSite(tenantId: string, id: string, now: number): Promise<Site | undefined>;
  /** Ids of sites revoked at or after `since` (ms; oldest revocation first), at most `limit`: what replicas check each other by. */
  listSitesRevokedSince(since: number, limit: number): Promise<string[]>;
  /** Write-behind of heartbeats: many sites in one transaction. */
  updateSiteStatuses(updates: SiteStatusUpdate[]): Promise<void>;
  /**
   * For each site, bumps its desired generation only if its desired state changed (by digest),
   * all in one transaction. Returns, in order, the generation to publish and whether it changed.
   */
  bumpDesired(items: readonly { siteId: string; digest: string }[]): Promise<{ generation: number; changed: boolean }[]>;

  createApp(a: App): Promise<'created' | 'exists'>;
  getApp(tenantId: string, name: string, version: string): Promise<App | undefined>;
  listApps(tenantId: string): Promise<App[]>;

  createDeployment(d: Deployment): Promise<void>;
  getDeployment(tenantId: string, id: string): Promise<Deployment | undefined>;
  listDeployments(tenantId: string): Promise<Deployment[]>;
  deleteDeployment(tenantId: string, id: string): Promise<boolean>;

  /**
   * A lease for work one cloud replica at a time must do (the rollout controller): true when
   * `holder` has it until `now + ttlMs` — it was free, expired, or already `holder`'s.
   */
  acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean>;
  /** The leases whose name starts with `prefix` and that have not expired at `now`. */
  listLeases(prefix: string, now: number): Promise<{ name: string; holder: string }[]>;
  /** Gives a lease back (only its holder can). */
  releaseLease(name: string, holder: string): Promise<void>;

  /**
   * Rollout state by deployment id. Without `row.rev`: insert or replace. With it: replace only
   * if the stored rev is still that one (optimistic concurrency); false when it was not.
   */
  saveRollout(row: RolloutRow): Promise<boolean>;
  getRollout(tenantId: string, id: string): Promise<RolloutRow | undefined>;
  /**
   * `activeOnly`: those the controller still steps (not ended, and not of a suspended tenant:
   * a suspension holds its rollouts where they are); `ids`: just these deployments' rollouts.
   */
  listRollouts(tenantId?: string, opts?: { activeOnly?: boolean; ids?: readonly string[] }): Promise<RolloutRow[]>;

  /**
   * Idempotency keys of mutating API calls (api/idempotency.ts), shared by every replica.
   * Claims `key` for a request: true when it was free, or when its holder left it in progress
   * for longer than `staleMs` (a replica died mid-request); otherwise the stored record.
   */
  claimIdempotencyKey(c: {
    scope: string;
    key: string;
    fingerprint: string;
    holder: string;
    now: number;
    staleMs: number;
  }): Promise<{ claimed: true } | { claimed: false; record: IdempotencyRecord }>;
  /** Records the response of the claimed request (only by its holder). */
  completeIdempotencyKey(
    scope: string,
    key: string,
    holder: string,
    response: { status: number; body: string | null; at: number },
  ): Promise<void>;
  /** Frees a claim whose request failed on the server's side: a retry runs it again. */
  releaseIdempotencyKey(scope: string, key: string, holder: string): Promise<void>;
  /** Deletes keys created before `before`; returns how many. */
  pruneIdempotencyKeys(before: number): Promise<number>;

  /** Retention policies of one tenant, or of all (cloud/results/retention.ts). */
  listRetention(tenantId?: string): Promise<RetentionPolicy[]>;
  /** Sets (days) or removes (null) a tenant's policy for a stream or `*`; false when there was none to remove. */
  setRetention(tenantId: string, stream: string, days: number | null, now: number): Promise<boolean>;
  /** Deletes a tenant's results older than `step.before`, `batch` rows per statement; returns how many. */
  deleteResults(step: RetentionStep, batch: number): Promise<number>;
  /** PostgreSQL: creates the daily partitions around `now` and for stray rows in the default one. SQLite: nothing. */
  maintainResultPartitions(now: number): Promise<{ created: number }>;
  /** PostgreSQL: drops the daily partitions that end at or before `before`; returns how many. SQLite: 0. */
  dropResultPartitionsBefore(before: number): Promise<number>;

  /** Stores uplink records, each (siteId, msgId) once (on PostgreSQL: (siteId, msgId, at), the partition key; a retry carries the same `at`); returns how many were new. */
  insertUplink(records: UplinkRecord[]): Promise<number>;
  queryUplink(tenantId: string, q: UplinkQuery): Promise<UplinkRow[]>;
  countUplink(siteId: string, stream?: string): Promise<number>;
  /** The highest uplink seq stored (0 when none): where a live feed starts reading. */
  latestUplinkSeq(): Promise<number>;
}

export interface IdempotencyRecord {
  fingerprint: string;
  holder: string;
  createdAt: number;
  /** Null while the first request is in progress. */
  status: number | null;
  body: string | null;
}
