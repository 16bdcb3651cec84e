import {
  type Kysely,
  Migrator,
  sql,
  type Generated,
  type KyselyPlugin,
  type Migration,
  type MigrationProvider,
  type PluginTransformQueryArgs,
  type PluginTransformResultArgs,
  type QueryResult,
  type RootOperationNode,
  type Transaction,
  type UnknownRow,
} from 'kysely';
import type { Labels } from '../../contracts/selector.ts';
import { EwError } from '../../contracts/errors.ts';
import { needsSteps } from '../rollout/reconcile.ts';
import { DAY_MS, partitionDaysAround, partitionName, type RetentionPolicy, type RetentionStep } from '../results/retention.ts';
import type {
  IdempotencyRecord,
  RolloutRow,
  ApiKey,
  App,
  AuditEntry,
  AuditQuery,
  ConsumeResult,
  Deployment,
  JoinToken,
  Site,
  SiteRef,
  SiteStatusUpdate,
  Store,
  Tenant,
  TenantData,
  TenantQuotas,
  TenantState,
  UplinkQuery,
  UplinkRecord,
  UplinkRow,
} from './store.ts';
import { isAdminRole, type Role } from '../../contracts/permissions.ts';
import type { SiteStatusBody } from '../../contracts/messages.ts';

/**
 * One SQL implementation of Store over Kysely; the dialect (SQLite or PostgreSQL) is chosen by
 * the opener in `open.ts`. Portable SQL only: JSON is kept as text, times as BIGINT ms, booleans
 * as 0/1, so the same statements and migrations run on both engines.
 */
interface DB {
  tenants: {
    id: string;
    name: string;
    created_at: number;
    state: Generated<string>;
    suspended_at: number | null;
    quotas: Generated<string>;
  };
  api_keys: {
    id: string;
    tenant_id: string;
    name: string;
    hash: string;
    role: string;
    created_at: number;
    revoked_at: number | null;
    expires_at: number | null;
    scope: string | null;
  };
  audit: {
    seq: Generated<number>;
    at: number;
    tenant_id: string | null;
    key_id: string | null;
    role: string | null;
    site_id: string | null;
    action: string;
    target: string;
    status: number;
    outcome: string;
    code: string | null;
    address: string;
    request_id: string;
  };
  join_tokens: {
    id: string;
    tenant_id: string;
    hash: string;
    labels: string;
    region: string;
    description: string;
    created_at: number;
    expires_at: number;
    used_at: number | null;
    site_id: string | null;
  };
  sites: {
    id: string;
    tenant_id: string;
    name: string;
    region: string;
    labels: string;
    secret_hash: string;
    created_at: number;
    revoked_at: number | null;
    online: number;
    last_seen_at: number | null;
    status: string | null;
    desired_generation: number;
    desired_hash: string | null;
    reported_generation: number;
    status_digest: string | null;
  };
  apps: { tenant_id: string; name: string; version: string; manifest: string; digest: string; created_at: number };
  deployments: { id: string; tenant_id: string; app_name: string; app_version: string; selector: string; created_at: number };
  rollouts: { id: string; tenant_id: string; state: string; active: number; rev: number; updated_at: number };
  leases: { name: string; holder: string; expires_at: number };
  artifact_owners: { tenant_id: string; sha256: string; created_at: number };
  idempotency_keys: {
    scope: string;
    key: string;
    fingerprint: string;
    holder: string;
    created_at: number;
    status: number | null;
    body: string | null;
    completed_at: number | null;
  };
  retention_policies: { tenant_id: string; stream: string; days: number; updated_at: number };
  result_usage: { tenant_id: string; day: number; used: number };
  uplink: {
    seq: Generated<number>;
    site_id: string;
    msg_id: string;
    stream: string;
    app: string | null;
    rule: string | null;
    at: number;
    received_at: number;
    data: string;
  };
}

const migrations = (kind: 'sqlite' | 'postgres'): Record<string, Migration> => ({
  '0001_initial': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('tenants')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('name', 'varchar(128)', (c) => c.notNull().unique())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('api_keys')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull().references('tenants.id'))
        .addColumn('name', 'varchar(128)', (c) => c.notNull())
        .addColumn('hash', 'varchar(64)', (c) => c.notNull().unique())
        .addColumn('role', 'varchar(32)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('revoked_at', 'bigint')
        .execute();
      await db.schema
        .createTable('join_tokens')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull().references('tenants.id'))
        .addColumn('hash', 'varchar(64)', (c) => c.notNull().unique())
        .addColumn('labels', 'text', (c) => c.notNull())
        .addColumn('region', 'varchar(128)', (c) => c.notNull())
        .addColumn('description', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('used_at', 'bigint')
        .addColumn('site_id', 'varchar(64)')
        .execute();
      await db.schema
        .createTable('sites')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull().references('tenants.id'))
        .addColumn('name', 'varchar(128)', (c) => c.notNull())
        .addColumn('region', 'varchar(128)', (c) => c.notNull())
        .addColumn('labels', 'text', (c) => c.notNull())
        .addColumn('secret_hash', 'varchar(64)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('revoked_at', 'bigint')
        .addColumn('online', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('last_seen_at', 'bigint')
        .addColumn('status', 'text')
        .addColumn('desired_generation', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('desired_hash', 'varchar(64)')
        .addColumn('reported_generation', 'bigint', (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createIndex('sites_tenant').on('sites').column('tenant_id').execute();
      await db.schema
        .createTable('apps')
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull().references('tenants.id'))
        .addColumn('name', 'varchar(64)', (c) => c.notNull())
        .addColumn('version', 'varchar(64)', (c) => c.notNull())
        .addColumn('manifest', 'text', (c) => c.notNull())
        .addColumn('digest', 'varchar(64)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('apps_pk', ['tenant_id', 'name', 'version'])
        .execute();
      await db.schema
        .createTable('deployments')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull().references('tenants.id'))
        .addColumn('app_name', 'varchar(64)', (c) => c.notNull())
        .addColumn('app_version', 'varchar(64)', (c) => c.notNull())
        .addColumn('selector', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('uplink')
        // SQLite's rowid alias must be spelled INTEGER PRIMARY KEY; PostgreSQL uses an identity.
        .addColumn('seq', kind === 'sqlite' ? 'integer' : 'bigint', (c) =>
          kind === 'sqlite' ? c.primaryKey().autoIncrement() : c.primaryKey().generatedByDefaultAsIdentity(),
        )
        .addColumn('site_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('msg_id', 'varchar(128)', (c) => c.notNull())
        .addColumn('stream', 'varchar(128)', (c) => c.notNull())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('received_at', 'bigint', (c) => c.notNull())
        .addColumn('data', 'text', (c) => c.notNull())
        .addUniqueConstraint('uplink_once', ['site_id', 'msg_id'])
        .execute();
      await db.schema.createIndex('uplink_site_stream_at').on('uplink').columns(['site_id', 'stream', 'at']).execute();
    },
  },
  '0002_uplink_origin': {
    async up(db: Kysely<any>) {
      await db.schema.alterTable('uplink').addColumn('app', 'varchar(64)').execute();
      await db.schema.alterTable('uplink').addColumn('rule', 'varchar(64)').execute();
      await db.schema.createIndex('uplink_app_rule').on('uplink').columns(['app', 'rule']).execute();
    },
  },
  '0003_rollouts': {
    async up(db: Kysely<any>) {
      await db.schema
        .createTable('rollouts')
        .addColumn('id', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull().references('tenants.id'))
        .addColumn('state', 'text', (c) => c.notNull())
        // Whether the controller still steps it: ended rollouts are read only when asked for.
        .addColumn('active', 'integer', (c) => c.notNull())
        .addColumn('rev', 'integer', (c) => c.notNull().defaultTo(1))
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('rollouts_active').on('rollouts').column('active').execute();
      await db.schema
        .createTable('leases')
        .addColumn('name', 'varchar(64)', (c) => c.primaryKey())
        .addColumn('holder', 'varchar(128)', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
  '0004_artifact_owners': {
    async up(db: Kysely<any>) {
      // Which tenant uploaded which model file: a push may reference only its own tenant's.
      await db.schema
        .createTable('artifact_owners')
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull().references('tenants.id'))
        .addColumn('sha256', 'varchar(64)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('artifact_owners_pk', ['tenant_id', 'sha256'])
        .execute();
    },
  },
  '0005_tenancy': {
    async up(db: Kysely<any>) {
      // Tenants can be suspended and have quotas (JSON, absent = unlimited).
      await db.schema
        .alterTable('tenants')
        .addColumn('state', 'varchar(16)', (c) => c.notNull().defaultTo('active'))
        .execute();
      await db.schema.alterTable('tenants').addColumn('suspended_at', 'bigint').execute();
      await db.schema
        .alterTable('tenants')
        .addColumn('quotas', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();
      // Keys may expire and be limited to apps or site labels (JSON KeyScope).
      await db.schema.alterTable('api_keys').addColumn('expires_at', 'bigint').execute();
      await db.schema.alterTable('api_keys').addColumn('scope', 'text').execute();
      // The first key of a cloud made before roles is its operator's: it manages tenants.
      await db
        .updateTable('api_keys')
        .set({ role: 'platform-admin' })
        .where('id', '=', (eb: any) => eb.selectFrom('api_keys').select('id').orderBy('created_at').limit(1))
        .execute();
      // Append-only: the store has no statement that updates or deletes a row of it.
      await db.schema
        .createTable('audit')
        .addColumn('seq', kind === 'sqlite' ? 'integer' : 'bigint', (c) =>
          kind === 'sqlite' ? c.primaryKey().autoIncrement() : c.primaryKey().generatedByDefaultAsIdentity(),
        )
        .addColumn('at', 'bigint', (c) => c.notNull())
        .addColumn('tenant_id', 'varchar(64)')
        .addColumn('key_id', 'varchar(64)')
        .addColumn('role', 'varchar(32)')
        .addColumn('site_id', 'varchar(64)')
        .addColumn('action', 'varchar(300)', (c) => c.notNull())
        .addColumn('target', 'varchar(2100)', (c) => c.notNull())
        .addColumn('status', 'integer', (c) => c.notNull())
        .addColumn('outcome', 'varchar(16)', (c) => c.notNull())
        .addColumn('code', 'varchar(64)')
        .addColumn('address', 'varchar(64)', (c) => c.notNull())
        .addColumn('request_id', 'varchar(64)', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('audit_tenant_seq').on('audit').columns(['tenant_id', 'seq']).execute();
      if (kind === 'postgres') {
        // PostgreSQL can enforce append-only for anyone with SQL access too.
        await sql`CREATE OR REPLACE FUNCTION ew_audit_append_only() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql`.execute(
          db,
        );
        await sql`CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION ew_audit_append_only()`.execute(
          db,
        );
      } else {
        await sql`CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END`.execute(
          db,
        );
        await sql`CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END`.execute(
          db,
        );
      }
      await db.schema.createIndex('uplink_received').on('uplink').column('received_at').execute();
    },
  },
  '0006_idempotency_keys': {
    async up(db: Kysely<any>) {
      // Idempotency keys of mutating API calls, here so that a retry reaching another replica
      // finds the first answer (src/cloud/api/idempotency.ts).
      await db.schema
        .createTable('idempotency_keys')
        .addColumn('scope', 'varchar(200)', (c) => c.notNull())
        .addColumn('key', 'varchar(200)', (c) => c.notNull())
        .addColumn('fingerprint', 'varchar(64)', (c) => c.notNull())
        .addColumn('holder', 'varchar(128)', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('status', 'integer')
        .addColumn('body', 'text')
        .addColumn('completed_at', 'bigint')
        .addPrimaryKeyConstraint('idempotency_keys_pk', ['scope', 'key'])
        .execute();
      await db.schema.createIndex('idempotency_keys_created').on('idempotency_keys').column('created_at').execute();
    },
  },
  '0007_site_status_digest': {
    async up(db: Kysely<any>) {
      // What the stored status was written from: replicas that hear the same heartbeat write it once.
      await db.schema.alterTable('sites').addColumn('status_digest', 'varchar(64)').execute();
    },
  },
  '0008_results_at_volume': {
    async up(db: Kysely<any>) {
      // Retention per tenant and stream (cloud/results/retention.ts); `*` is the tenant's default.
      await db.schema
        .createTable('retention_policies')
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull().references('tenants.id'))
        .addColumn('stream', 'varchar(128)', (c) => c.notNull())
        .addColumn('days', 'integer', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('retention_policies_pk', ['tenant_id', 'stream'])
        .execute();
      if (kind === 'sqlite') {
        // Time ranges over every site of a tenant, and retention's deletes, read by time.
        await db.schema.createIndex('uplink_at').on('uplink').column('at').execute();
        await db.schema.createIndex('uplink_stream_at').on('uplink').columns(['stream', 'at']).execute();
        return;
      }
      // PostgreSQL: the uplink table becomes partitioned by day of site time (`at`), so a time
      // range reads only its days and retention drops whole days instead of deleting rows. A
      // partitioned table's unique keys must hold the partition key: a result is unique by
      // (site, id, at) — a retried result carries the same `at`, so dedupe is unchanged. Rows
      // outside every daily partition land in `uplink_default`, which the maintenance splits.
      await sql`ALTER TABLE uplink RENAME TO uplink_unpartitioned`.execute(db);
      await sql`ALTER INDEX uplink_site_stream_at RENAME TO uplink_unpartitioned_site_stream_at`.execute(db);
      await sql`ALTER INDEX uplink_app_rule RENAME TO uplink_unpartitioned_app_rule`.execute(db);
      await sql`ALTER INDEX uplink_received RENAME TO uplink_unpartitioned_received`.execute(db);
      await sql`CREATE SEQUENCE uplink_seq_gen`.execute(db);
      await sql`CREATE TABLE uplink (
        seq bigint NOT NULL DEFAULT nextval('uplink_seq_gen'),
        site_id varchar(64) NOT NULL, msg_id varchar(128) NOT NULL, stream varchar(128) NOT NULL,
        at bigint NOT NULL, received_at bigint NOT NULL, data text NOT NULL, app varchar(64), rule varchar(64),
        CONSTRAINT uplink_once_at UNIQUE (site_id, msg_id, at)
      ) PARTITION BY RANGE (at)`.execute(db);
      await sql`ALTER SEQUENCE uplink_seq_gen OWNED BY uplink.seq`.execute(db);
      await sql`CREATE TABLE uplink_default PARTITION OF uplink DEFAULT`.execute(db);
      await sql`CREATE INDEX uplink_site_stream_at ON uplink (site_id, stream, at)`.execute(db);
      await sql`CREATE INDEX uplink_app_rule ON uplink (app, rule)`.execute(db);
      await sql`CREATE INDEX uplink_seq ON uplink (seq)`.execute(db);
      await sql`CREATE INDEX uplink_received ON uplink (received_at)`.execute(db);
      await sql`CREATE INDEX uplink_stream_at ON uplink (stream, at)`.execute(db);
      const days = await sql<{ day: string }>`SELECT DISTINCT (at / 86400000) * 86400000 AS day FROM uplink_unpartitioned`.execute(db);
      for (const d of days.rows) await createDayPartition(db, Number(d.day));
      await sql`INSERT INTO uplink (seq, site_id, msg_id, stream, at, received_at, data, app, rule)
        SELECT seq, site_id, msg_id, stream, at, received_at, data, app, rule FROM uplink_unpartitioned`.execute(db);
      await sql`SELECT setval('uplink_seq_gen', COALESCE((SELECT max(seq) FROM uplink_unpartitioned), 0) + 1, false)`.execute(db);
      await sql`DROP TABLE uplink_unpartitioned`.execute(db);
    },
  },
  '0009_sites_revoked_at': {
    async up(db: Kysely<any>) {
      // Replicas ask for the sites revoked lately (fleet/revocations.ts) without reading every site.
      await db.schema.createIndex('sites_revoked_at').on('sites').column('revoked_at').execute();
    },
  },
  '0010_result_usage': {
    async up(db: Kysely<any>) {
      // The results-per-day quota, counted once for all replicas (cloud/quotas.ts): each reserves
      // blocks of it here. Deleted with the tenant; days older than a week are pruned as new ones start.
      await db.schema
        .createTable('result_usage')
        .addColumn('tenant_id', 'varchar(64)', (c) => c.notNull())
        .addColumn('day', 'bigint', (c) => c.notNull())
        .addColumn('used', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('result_usage_pk', ['tenant_id', 'day'])
        .execute();
    },
  },
});

/** The migrations this version knows, by name (a database with others was migrated by a newer one). */
export const KNOWN_MIGRATIONS: readonly string[] = Object.keys(migrations('sqlite'));
/**
 * Creates the daily partition of `uplink` for the day starting at `day` (ms), if missing (PostgreSQL).
 * Rows of that day already in the default partition move into it first, in the same transaction:
 * PostgreSQL refuses to attach a range the default partition still holds rows of.
 */
async function createDayPartition(db: Kysely<any>, day: number): Promise<boolean> {
  const name = partitionName(day);
  const exists = await sql<{ n: string }>`SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = ${name} AND n.nspname = current_schema()`.execute(db);
  if (Number(exists.rows[0]?.n ?? 0) > 0) return false;
  const from = sql.lit(day);
  const to = sql.lit(day + DAY_MS);
  const table = sql.table(name);
  const work = async (tx: Kysely<any>) => {
    // ATTACH locks only the default partition and takes a weaker lock on the parent, so a query
    // planned before the commit (without the new partition) but run after it (the default's rows
    // gone) would miss the moved rows: a count drops, a results page or a live feed skips them.
    // Holding the parent exclusively until the commit makes readers wait and plan again. The wait
    // for the lock is bounded (this pass gives up, the next retries); once held, uplink reads and
    // writes wait for the move, which is as long as the rows of that day in the default partition
    // (few, unless maintenance was down across days).
    if (!db.isTransaction) await sql`SET LOCAL lock_timeout = '2s'`.execute(tx); // a migration waits as long as it must
    await sql`LOCK TABLE uplink IN ACCESS EXCLUSIVE MODE`.execute(tx);
    await sql`CREATE TABLE ${table} (LIKE uplink INCLUDING DEFAULTS)`.execute(tx);
    await sql`WITH moved AS (DELETE FROM uplink_default WHERE at >= ${from} AND at < ${to} RETURNING *)
      INSERT INTO ${table} SELECT * FROM moved`.execute(tx);
    await sql`ALTER TABLE uplink ATTACH PARTITION ${table} FOR VALUES FROM (${from}) TO (${to})`.execute(tx);
  };
  // Inside a migration the caller's transaction is the one (Kysely does not nest them).
  if (db.isTransaction) await work(db);
  else await db.transaction().execute(work);
  return true;
}

/** Every migration's name, in the order they run. */
export function migrationNames(kind: 'sqlite' | 'postgres'): string[] {
  return Object.keys(migrations(kind)).sort();
}

class StaticProvider implements MigrationProvider {
  constructor(private readonly kind: 'sqlite' | 'postgres') {}
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations(this.kind);
  }
}

type SiteRow = DB['sites'];

function toSite(r: SiteRow): Site {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    name: r.name,
    region: r.region,
    labels: JSON.parse(r.labels) as Labels,
    secretHash: r.secret_hash,
    createdAt: Number(r.created_at),
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
    online: Number(r.online) === 1,
    lastSeenAt: r.last_seen_at === null ? null : Number(r.last_seen_at),
    status: r.status === null ? null : JSON.parse(r.status),
    desiredGeneration: Number(r.desired_generation),
    desiredHash: r.desired_hash,
    reportedGeneration: Number(r.reported_generation),
  };
}

function toTenant(r: { id: string; name: string; created_at: number; state: string; suspended_at: number | null; quotas: string }): Tenant {
  return {
    id: r.id,
    name: r.name,
    createdAt: Number(r.created_at),
    state: r.state as TenantState,
    suspendedAt: r.suspended_at === null ? null : Number(r.suspended_at),
    quotas: JSON.parse(r.quotas) as TenantQuotas,
  };
}

function toKey(r: {
  id: string;
  tenant_id: string;
  name: string;
  hash: string;
  role: string;
  created_at: number;
  revoked_at: number | null;
  expires_at: number | null;
  scope: string | null;
}): ApiKey {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    name: r.name,
    hash: r.hash,
    role: r.role as Role,
    createdAt: Number(r.created_at),
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
    expiresAt: r.expires_at === null ? null : Number(r.expires_at),
    scope: r.scope === null ? null : JSON.parse(r.scope),
  };
}

function toAudit(r: DB['audit'] & { seq: number }): AuditEntry {
  return {
    seq: Number(r.seq),
    at: Number(r.at),
    tenantId: r.tenant_id,
    keyId: r.key_id,
    role: r.role,
    siteId: r.site_id,
    action: r.action,
    target: r.target,
    status: Number(r.status),
    outcome: r.outcome as AuditEntry['outcome'],
    code: r.code,
    address: r.address,
    requestId: r.request_id,
  };
}

function toToken(r: DB['join_tokens']): JoinToken {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    hash: r.hash,
    labels: JSON.parse(r.labels),
    region: r.region,
    description: r.description,
    createdAt: Number(r.created_at),
    expiresAt: Number(r.expires_at),
    usedAt: r.used_at === null ? null : Number(r.used_at),
    siteId: r.site_id,
  };
}

function toApp(r: DB['apps']): App {
  return {
    tenantId: r.tenant_id,
    name: r.name,
    version: r.version,
    manifest: JSON.parse(r.manifest),
    digest: r.digest,
    createdAt: Number(r.created_at),
  };
}

function toDeployment(r: DB['deployments']): Deployment {
  return {
    id: r.id,
    tenantId: r.tenant_id,
    appName: r.app_name,
    appVersion: r.app_version,
    selector: JSON.parse(r.selector),
    createdAt: Number(r.created_at),
  };
}

/** Any string anywhere in a query tree (values, parameters) that holds a NUL. */
function hasNul(node: unknown, depth = 0): boolean {
  if (typeof node === 'string') return node.includes('\u0000');
  if (node === null || typeof node !== 'object' || depth > 64) return false;
  if (Array.isArray(node)) return node.some((x) => hasNul(x, depth + 1));
  for (const v of Object.values(node)) if (hasNul(v, depth + 1)) return true;
  return false;
}

/**
 * PostgreSQL cannot store U+0000 in text and fails the whole statement; SQLite stores it. So
 * both engines behave alike and one bad value never fails a shared batch in the database, every
 * query carrying a NUL is refused before it is sent, as VALIDATION_FAILED.
 */
export class RefuseNulPlugin implements KyselyPlugin {
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (hasNul(args.node))
      throw new EwError('VALIDATION_FAILED', 'a value contains the NUL character (U+0000), which the store cannot hold; remove it');
    return args.node;
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result;
  }
}

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string };
  return err.code === '23505' || err.code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || err.code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/** Wraps driver failures as STORE_UNAVAILABLE so the API answers 503 with a stable code. */
async function guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof EwError) throw e;
    // PostgreSQL's data exceptions (class 22: a character it cannot hold, a value out of range)
    // are the caller's bad value, not an outage.
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('22'))
      throw new EwError('VALIDATION_FAILED', `the store refused a value: ${(e as Error).message}`, { cause: e });
    throw new EwError('STORE_UNAVAILABLE', `store failed to ${what}: ${(e as Error).message}`, { cause: e });
  }
}

export class SqlStore implements Store {
  private readonly db: Kysely<DB>;
  constructor(
    readonly kind: 'sqlite' | 'postgres',
    db: Kysely<DB>,
  ) {
    this.db = db.withPlugin(new RefuseNulPlugin());
  }

  /** Runs the migrations not yet run; `to` stops after that one (tests of a migration over data). */
  async migrate(to?: string): Promise<void> {
    // A database a newer version migrated: refuse before touching it (kysely would also fail,
    // but as a generic "corrupted migrations" after taking its lock).
    let applied: string[] = [];
    try {
      applied = (
        (await this.db
          .selectFrom('kysely_migration' as never)
          .select('name' as never)
          .execute()) as { name: string }[]
      ).map((r) => r.name);
    } catch {
      // No migration table yet: a new database.
    }
    const unknown = applied.filter((n) => !KNOWN_MIGRATIONS.includes(n));
    if (unknown.length > 0) {
      throw new EwError(
        'STORE_SCHEMA_NEWER',
        `the ${this.kind === 'postgres' ? 'PostgreSQL' : 'SQLite'} database has schema migrations this Edgeweave does not know (${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''}): a newer version migrated it. Run that version on this replica too, or restore the database from before the upgrade; this replica does not start on it`,
        { path: 'db' },
      );
    }
    // PostgreSQL: Kysely looks for its migration tables by name in every schema unless told
    // which, so another schema of the same database holding them (another cloud, a benchmark)
    // would make it skip creating ours. Name the schema the store works in.
    const migrationTableSchema =
      this.kind === 'postgres'
        ? (await guard('read current schema', () => sql<{ s: string }>`select current_schema() as s`.execute(this.db))).rows[0]?.s
        : undefined;
    const migrator = new Migrator({
      db: this.db,
      provider: new StaticProvider(this.kind),
      ...(migrationTableSchema ? { migrationTableSchema } : {}),
    });
    const { error, results } = to === undefined ? await migrator.migrateToLatest() : await migrator.migrateTo(to);
    if (error) {
      const failed = results?.find((r) => r.status === 'Error');
      throw new EwError('STORE_UNAVAILABLE', `migration ${failed?.migrationName ?? '?'} failed: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  async createTenant(t: Tenant): Promise<void> {
    try {
      await this.db
        .insertInto('tenants')
        .values({
          id: t.id,
          name: t.name,
          created_at: t.createdAt,
          state: t.state ?? 'active',
          suspended_at: t.suspendedAt ?? null,
          quotas: JSON.stringify(t.quotas ?? {}),
        })
        .execute();
    } catch (e) {
      if (isUniqueViolation(e))
        throw new EwError('TENANT_EXISTS', `a tenant named "${t.name}" (or with id ${t.id}) already exists; choose another name`, {
          path: 'name',
        });
      if (e instanceof EwError) throw e;
      throw new EwError('STORE_UNAVAILABLE', `store failed to create tenant: ${(e as Error).message}`, { cause: e });
    }
  }

  async listTenants(): Promise<Tenant[]> {
    const rows = await guard('list tenants', () => this.db.selectFrom('tenants').selectAll().orderBy('created_at').orderBy('id').execute());
    return rows.map(toTenant);
  }

  async getTenant(id: string): Promise<Tenant | undefined> {
    const r = await guard('read tenant', () => this.db.selectFrom('tenants').selectAll().where('id', '=', id).executeTakeFirst());
    return r && toTenant(r);
  }

  async setTenantState(id: string, state: TenantState, now: number): Promise<Tenant | undefined> {
    await guard('set tenant state', () =>
      this.db
        .updateTable('tenants')
        .set({ state, suspended_at: state === 'suspended' ? now : null })
        .where('id', '=', id)
        .execute(),
    );
    return this.getTenant(id);
  }

  async setTenantQuotas(id: string, quotas: TenantQuotas): Promise<Tenant | undefined> {
    await guard('set tenant quotas', () =>
      this.db
        .updateTable('tenants')
        .set({ quotas: JSON.stringify(quotas) })
        .where('id', '=', id)
        .execute(),
    );
    return this.getTenant(id);
  }

  async reserveResults(tenantId: string, day: number, want: number, limit: number): Promise<number> {
    if (want <= 0) return 0;
    return guard('reserve results quota', async () => {
      const key = (q: any) => q.where('tenant_id', '=', tenantId).where('day', '=', day);
      if (!(await key(this.db.selectFrom('result_usage').select('used')).executeTakeFirst())) {
        // The day's first reservation: it starts from what is already stored that day (a cloud
        // upgraded mid-day, or the counter's row pruned); racing replicas insert it once.
        const { results } = await this.tenantData(tenantId, day);
        await this.db
          .insertInto('result_usage')
          .values({ tenant_id: tenantId, day, used: results })
          .onConflict((oc) => oc.columns(['tenant_id', 'day']).doNothing())
          .execute();
        await this.db
          .deleteFrom('result_usage')
          .where('tenant_id', '=', tenantId)
          .where('day', '<', day - 7 * DAY_MS)
          .execute();
      }
      return this.db.transaction().execute(async (tx) => {
        let q = key(tx.selectFrom('result_usage').select('used'));
        // PostgreSQL: the row is locked until the commit, so two replicas never grant the same part.
        // SQLite runs one transaction at a time.
        if (this.kind === 'postgres') q = q.forUpdate();
        const used = Number(((await q.executeTakeFirstOrThrow()) as { used: unknown }).used);
        const granted = Math.max(0, Math.min(want, limit - used));
        if (granted > 0) await key(tx.updateTable('result_usage').set({ used: used + granted })).execute();
        return granted;
      });
    });
  }

  async tenantData(id: string, resultsSince?: number): Promise<TenantData> {
    return guard('count tenant data', async () => {
      const count = async (
        table: 'api_keys' | 'join_tokens' | 'sites' | 'apps' | 'deployments' | 'rollouts' | 'artifact_owners',
        extra?: (q: any) => any,
      ) => {
        let q: any = this.db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll().as('n'))
          .where('tenant_id', '=', id);
        if (extra) q = extra(q);
        return Number(((await q.executeTakeFirst()) as { n: unknown } | undefined)?.n ?? 0);
      };
      const appNames = await this.db.selectFrom('apps').select('name').distinct().where('tenant_id', '=', id).execute();
      let rq = this.db
        .selectFrom('uplink')
        .innerJoin('sites', 'sites.id', 'uplink.site_id')
        .select((eb) => eb.fn.countAll().as('n'))
        .where('sites.tenant_id', '=', id);
      if (resultsSince !== undefined) rq = rq.where('uplink.received_at', '>=', resultsSince);
      const results = Number((await rq.executeTakeFirst())?.n ?? 0);
      return {
        sites: await count('sites'),
        liveSites: await count('sites', (q) => q.where('revoked_at', 'is', null)),
        keys: await count('api_keys', (q) => q.where('revoked_at', 'is', null)),
        tokens: await count('join_tokens'),
        apps: appNames.length,
        appVersions: await count('apps'),
        deployments: await count('deployments'),
        rollouts: await count('rollouts'),
        artifacts: await count('artifact_owners'),
        results,
      };
    });
  }

  async deleteTenant(id: string): Promise<{ siteIds: string[]; orphanArtifacts: string[] } | undefined> {
    return guard('delete tenant', () =>
      this.db.transaction().execute(async (tx) => {
        if (!(await tx.selectFrom('tenants').select('id').where('id', '=', id).executeTakeFirst())) return undefined;
        const siteIds = (await tx.selectFrom('sites').select('id').where('tenant_id', '=', id).execute()).map((r) => r.id);
        const mine = (await tx.selectFrom('artifact_owners').select('sha256').where('tenant_id', '=', id).execute()).map((r) => r.sha256);
        const shared =
          mine.length === 0
            ? []
            : (
                await tx
                  .selectFrom('artifact_owners')
                  .select('sha256')
                  .distinct()
                  .where('tenant_id', '<>', id)
                  .where('sha256', 'in', mine)
                  .execute()
              ).map((r) => r.sha256);
        for (let i = 0; i < siteIds.length; i += 500)
          await tx
            .deleteFrom('uplink')
            .where('site_id', 'in', siteIds.slice(i, i + 500))
            .execute();
        for (const table of [
          'api_keys',
          'join_tokens',
          'rollouts',
          'deployments',
          'apps',
          'artifact_owners',
          'retention_policies',
          'result_usage',
          'sites',
        ] as const) {
          await tx.deleteFrom(table).where('tenant_id', '=', id).execute();
        }
        await tx.deleteFrom('tenants').where('id', '=', id).execute();
        return { siteIds, orphanArtifacts: mine.filter((x) => !shared.includes(x)) };
      }),
    );
  }

  async appendAudit(e: AuditEntry): Promise<void> {
    await guard('append audit', () =>
      this.db
        .insertInto('audit')
        .values({
          at: e.at,
          tenant_id: e.tenantId,
          key_id: e.keyId,
          role: e.role,
          site_id: e.siteId ?? null,
          action: e.action.slice(0, 300),
          target: e.target.slice(0, 2100),
          status: e.status,
          outcome: e.outcome,
          code: e.code,
          address: e.address.slice(0, 64),
          request_id: e.requestId.slice(0, 64),
        })
        .execute(),
    );
  }

  async queryAudit(q: AuditQuery): Promise<AuditEntry[]> {
    const rows = await guard('query audit', () => {
      let query = this.db.selectFrom('audit').selectAll();
      if (q.tenantId !== undefined) query = query.where('tenant_id', '=', q.tenantId);
      if (q.afterSeq !== undefined) query = query.where('seq', '>', q.afterSeq);
      if (q.since !== undefined) query = query.where('at', '>=', q.since);
      return query.orderBy('seq').limit(q.limit).execute();
    });
    return rows.map((r) => toAudit(r as DB['audit'] & { seq: number }));
  }

  async createApiKey(k: ApiKey): Promise<void> {
    await guard('create api key', () =>
      this.db
        .insertInto('api_keys')
        .values({
          id: k.id,
          tenant_id: k.tenantId,
          name: k.name,
          hash: k.hash,
          role: k.role,
          created_at: k.createdAt,
          revoked_at: k.revokedAt,
          expires_at: k.expiresAt ?? null,
          scope: k.scope ? JSON.stringify(k.scope) : null,
        })
        .execute(),
    );
  }

  async findApiKeyByHash(hash: string): Promise<ApiKey | undefined> {
    const r = await guard('read api key', () =>
      this.db
        .selectFrom('api_keys')
        .innerJoin('tenants', 'tenants.id', 'api_keys.tenant_id')
        .selectAll('api_keys')
        .select('tenants.state as tenant_state')
        .where('api_keys.hash', '=', hash)
        .executeTakeFirst(),
    );
    return r && { ...toKey(r), tenantState: r.tenant_state as TenantState };
  }

  async listApiKeys(tenantId: string): Promise<ApiKey[]> {
    const rows = await guard('list api keys', () =>
      this.db.selectFrom('api_keys').selectAll().where('tenant_id', '=', tenantId).orderBy('created_at').execute(),
    );
    return rows.map(toKey);
  }

  async revokeApiKey(tenantId: string, id: string, now: number): Promise<'revoked' | 'not-found' | 'last-admin'> {
    return guard('revoke api key', () =>
      this.db.transaction().execute(async (tx) => {
        // PostgreSQL: lock the tenant's live admin keys so that two revocations of the last two
        // keys cannot both pass the count (SQLite runs one write transaction at a time).
        let q = tx.selectFrom('api_keys').select(['id', 'role']).where('tenant_id', '=', tenantId).where('revoked_at', 'is', null);
        if (this.kind === 'postgres') q = q.forUpdate();
        const live = await q.execute();
        const target = live.find((k) => k.id === id);
        if (!target) return 'not-found' as const;
        if (isAdminRole(target.role) && live.filter((k) => isAdminRole(k.role)).length <= 1) return 'last-admin' as const;
        await tx
          .updateTable('api_keys')
          .set({ revoked_at: now })
          .where('tenant_id', '=', tenantId)
          .where('id', '=', id)
          .where('revoked_at', 'is', null)
          .execute();
        return 'revoked' as const;
      }),
    );
  }

  async addArtifactOwner(tenantId: string, sha256: string, now: number): Promise<void> {
    await guard('record artifact owner', () =>
      this.db
        .insertInto('artifact_owners')
        .values({ tenant_id: tenantId, sha256, created_at: now })
        .onConflict((oc) => oc.columns(['tenant_id', 'sha256']).doNothing())
        .execute(),
    );
  }

  async ownsArtifact(tenantId: string, sha256: string): Promise<boolean> {
    const r = await guard('read artifact owner', () =>
      this.db
        .selectFrom('artifact_owners')
        .select('sha256')
        .where('tenant_id', '=', tenantId)
        .where('sha256', '=', sha256)
        .executeTakeFirst(),
    );
    return r !== undefined;
  }

  async listArtifacts(tenantId: string): Promise<string[]> {
    const rows = await guard('list artifacts', () =>
      this.db.selectFrom('artifact_owners').select('sha256').where('tenant_id', '=', tenantId).orderBy('sha256').execute(),
    );
    return rows.map((r) => r.sha256);
  }

  async createJoinToken(t: JoinToken): Promise<void> {
    await guard('create join token', () =>
      this.db
        .insertInto('join_tokens')
        .values({
          id: t.id,
          tenant_id: t.tenantId,
          hash: t.hash,
          labels: JSON.stringify(t.labels),
          region: t.region,
          description: t.description,
          created_at: t.createdAt,
          expires_at: t.expiresAt,
          used_at: t.usedAt,
          site_id: t.siteId,
        })
        .execute(),
    );
  }

  async listJoinTokens(tenantId: string): Promise<JoinToken[]> {
    const rows = await guard('list join tokens', () =>
      this.db.selectFrom('join_tokens').selectAll().where('tenant_id', '=', tenantId).orderBy('created_at').execute(),
    );
    return rows.map(toToken);
  }

  async deleteJoinToken(tenantId: string, id: string): Promise<boolean> {
    const r = await guard('delete join token', () =>
      this.db
        .deleteFrom('join_tokens')
        .where('tenant_id', '=', tenantId)
        .where('id', '=', id)
        .where('used_at', 'is', null)
        .executeTakeFirst(),
    );
    return Number(r.numDeletedRows) > 0;
  }

  async enrollSite(tokenHash: string, now: number, makeSite: (t: JoinToken) => Site): Promise<ConsumeResult & { site?: Site }> {
    return guard('enroll site', () =>
      this.db.transaction().execute(async (tx: Transaction<DB>) => {
        const row = await tx.selectFrom('join_tokens').selectAll().where('hash', '=', tokenHash).executeTakeFirst();
        if (!row) return { ok: false as const, reason: 'unknown' as const };
        const token = toToken(row);
        if (token.usedAt !== null) return { ok: false as const, reason: 'used' as const };
        if (token.expiresAt <= now) return { ok: false as const, reason: 'expired' as const };
        // PostgreSQL: the tenant row is locked so that two enrollments racing for the last site of
        // a quota cannot both pass the count (SQLite runs one write transaction at a time).
        let tq = tx.selectFrom('tenants').select(['state', 'quotas']).where('id', '=', token.tenantId);
        if (this.kind === 'postgres') tq = tq.forUpdate();
        const tenant = await tq.executeTakeFirst();
        if (!tenant || tenant.state !== 'active') return { ok: false as const, reason: 'suspended' as const };
        const max = (JSON.parse(tenant.quotas) as TenantQuotas).sites;
        if (max !== undefined) {
          const live = await tx
            .selectFrom('sites')
            .select((eb) => eb.fn.countAll().as('n'))
            .where('tenant_id', '=', token.tenantId)
            .where('revoked_at', 'is', null)
            .executeTakeFirst();
          if (Number(live?.n ?? 0) >= max) return { ok: false as const, reason: 'quota' as const };
        }
        const site = makeSite(token);
        // The guard on used_at makes a concurrent second enrollment update no row.
        const upd = await tx
          .updateTable('join_tokens')
          .set({ used_at: now, site_id: site.id })
          .where('hash', '=', tokenHash)
          .where('used_at', 'is', null)
          .executeTakeFirst();
        if (Number(upd.numUpdatedRows) !== 1) return { ok: false as const, reason: 'used' as const };
        await tx
          .insertInto('sites')
          .values({
            id: site.id,
            tenant_id: site.tenantId,
            name: site.name,
            region: site.region,
            labels: JSON.stringify(site.labels),
            secret_hash: site.secretHash,
            created_at: site.createdAt,
            revoked_at: null,
            online: 0,
            last_seen_at: null,
            status: null,
            desired_generation: 0,
            desired_hash: null,
            reported_generation: 0,
          })
          .execute();
        return { ok: true as const, token: { ...token, usedAt: now, siteId: site.id }, site };
      }),
    );
  }

  async getSite(tenantId: string, id: string): Promise<Site | undefined> {
    const r = await guard('read site', () =>
      this.db.selectFrom('sites').selectAll().where('id', '=', id).where('tenant_id', '=', tenantId).executeTakeFirst(),
    );
    return r && toSite(r);
  }

  async getSiteById(id: string): Promise<Site | undefined> {
    const r = await guard('read site', () => this.db.selectFrom('sites').selectAll().where('id', '=', id).executeTakeFirst());
    return r && toSite(r);
  }

  async listSites(tenantId: string): Promise<Site[]> {
    const rows = await guard('list sites', () =>
      this.db.selectFrom('sites').selectAll().where('tenant_id', '=', tenantId).orderBy('created_at').orderBy('id').execute(),
    );
    return rows.map(toSite);
  }

  async listAllSites(): Promise<Site[]> {
    const rows = await guard('list sites', () => this.db.selectFrom('sites').selectAll().orderBy('created_at').orderBy('id').execute());
    return rows.map(toSite);
  }

  async listSiteRefs(tenantId?: string): Promise<SiteRef[]> {
    const rows = await guard('list sites', () => {
      let q = this.db.selectFrom('sites').select(['id', 'tenant_id', 'name', 'region', 'labels', 'revoked_at']);
      if (tenantId !== undefined) q = q.where('tenant_id', '=', tenantId);
      return q.orderBy('created_at').orderBy('id').execute();
    });
    return rows.map((r) => ({
      id: r.id,
      tenantId: r.tenant_id,
      name: r.name,
      region: r.region,
      labels: JSON.parse(r.labels) as Labels,
      revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
    }));
  }

  async getSiteStatuses(ids: readonly string[]): Promise<Map<string, SiteStatusBody>> {
    const out = new Map<string, SiteStatusBody>();
    // Chunks keep the statement within SQLite's bound on variables.
    for (let i = 0; i < ids.length; i += 500) {
      const chunk = ids.slice(i, i + 500);
      const rows = await guard('read site status', () =>
        this.db.selectFrom('sites').select(['id', 'status']).where('id', 'in', chunk).where('status', 'is not', null).execute(),
      );
      for (const r of rows) out.set(r.id, JSON.parse(r.status!) as SiteStatusBody);
    }
    return out;
  }

  async setSiteLabels(tenantId: string, id: string, labels: Labels): Promise<Site | undefined> {
    await guard('label site', () =>
      this.db
        .updateTable('sites')
        .set({ labels: JSON.stringify(labels) })
        .where('id', '=', id)
        .where('tenant_id', '=', tenantId)
        .execute(),
    );
    return this.getSite(tenantId, id);
  }

  async listSitesRevokedSince(since: number, limit: number): Promise<string[]> {
    const rows = await guard('list revoked sites', () =>
      this.db.selectFrom('sites').select('id').where('revoked_at', '>=', since).orderBy('revoked_at').orderBy('id').limit(limit).execute(),
    );
    return rows.map((r) => r.id);
  }

  async revokeSite(tenantId: string, id: string, now: number): Promise<Site | undefined> {
    await guard('revoke site', () =>
      this.db
        .updateTable('sites')
        .set({ revoked_at: now, online: 0 })
        .where('id', '=', id)
        .where('tenant_id', '=', tenantId)
        .where('revoked_at', 'is', null)
        .execute(),
    );
    return this.getSite(tenantId, id);
  }

  async updateSiteStatuses(updates: SiteStatusUpdate[]): Promise<void> {
    if (updates.length === 0) return;
    await guard('update site status', () =>
      this.db.transaction().execute(async (tx) => {
        for (const u of updates) {
          const online = u.online ? 1 : 0;
          const set: Partial<SiteRow> = { online };
          if (u.lastSeenAt !== undefined) set.last_seen_at = u.lastSeenAt;
          if (u.status) set.status = JSON.stringify(u.status);
          if (u.reportedGeneration !== undefined) set.reported_generation = u.reportedGeneration;
          if (u.digest !== undefined) set.status_digest = u.digest;
          let q = tx.updateTable('sites').set(set).where('id', '=', u.siteId);
          if (u.digest !== undefined) {
            // Unchanged and fresh (another replica wrote this heartbeat's twin): no row version, no WAL.
            const digest = u.digest;
            const before = u.refreshBefore ?? Number.MAX_SAFE_INTEGER;
            q = q.where((eb) =>
              eb.or([
                eb('online', '<>', online),
                eb('status_digest', 'is', null),
                eb('status_digest', '<>', digest),
                eb('last_seen_at', 'is', null),
                eb('last_seen_at', '<', before),
              ]),
            );
          } else if (u.status === undefined && u.lastSeenAt === undefined && u.reportedGeneration === undefined) {
            q = q.where('online', '<>', online); // a liveness change every replica saw
          }
          await q.execute();
        }
      }),
    );
  }

  async bumpDesired(items: readonly { siteId: string; digest: string }[]): Promise<{ generation: number; changed: boolean }[]> {
    if (items.length === 0) return [];
    // A fleet-wide deployment gives most sites the same digest: one UPDATE … WHERE id IN (…) per
    // digest and chunk, not two statements per site (bench:fleet, issue #17.3).
    const byDigest = new Map<string, string[]>();
    for (const { siteId, digest } of items) {
      const ids = byDigest.get(digest);
      if (ids) ids.push(siteId);
      else byDigest.set(digest, [siteId]);
    }
    const CHUNK = 500;
    return guard('bump desired generation', () =>
      this.db.transaction().execute(async (tx) => {
        const got = new Map<string, { generation: number; changed: boolean }>();
        for (const [digest, ids] of byDigest) {
          for (let i = 0; i < ids.length; i += CHUNK) {
            const chunk = ids.slice(i, i + CHUNK);
            const bumped = await tx
              .updateTable('sites')
              .set({ desired_generation: sql`desired_generation + 1`, desired_hash: digest })
              .where('id', 'in', chunk)
              .where((eb) => eb.or([eb('desired_hash', 'is', null), eb('desired_hash', '<>', digest)]))
              .returning(['id', 'desired_generation'])
              .execute();
            for (const r of bumped) got.set(r.id, { generation: Number(r.desired_generation), changed: true });
            const rest = chunk.filter((id) => !got.has(id));
            if (rest.length === 0) continue;
            for (const r of await tx.selectFrom('sites').select(['id', 'desired_generation']).where('id', 'in', rest).execute()) {
              got.set(r.id, { generation: Number(r.desired_generation), changed: false });
            }
          }
        }
        const seen = new Set<string>();
        return items.map(({ siteId }) => {
          const g = got.get(siteId);
          if (!g) throw new EwError('SITE_NOT_FOUND', `site ${siteId} does not exist`);
          // A site named twice: the second sees what the first did (as one statement each would).
          if (seen.has(siteId)) return { generation: g.generation, changed: false };
          seen.add(siteId);
          return g;
        });
      }),
    );
  }

  async createApp(a: App): Promise<'created' | 'exists'> {
    try {
      await this.db
        .insertInto('apps')
        .values({
          tenant_id: a.tenantId,
          name: a.name,
          version: a.version,
          manifest: JSON.stringify(a.manifest),
          digest: a.digest,
          created_at: a.createdAt,
        })
        .execute();
      return 'created';
    } catch (e) {
      if (isUniqueViolation(e)) return 'exists';
      throw new EwError('STORE_UNAVAILABLE', `store failed to create app: ${(e as Error).message}`, { cause: e });
    }
  }

  async getApp(tenantId: string, name: string, version: string): Promise<App | undefined> {
    const r = await guard('read app', () =>
      this.db
        .selectFrom('apps')
        .selectAll()
        .where('tenant_id', '=', tenantId)
        .where('name', '=', name)
        .where('version', '=', version)
        .executeTakeFirst(),
    );
    return r && toApp(r);
  }

  async listApps(tenantId: string): Promise<App[]> {
    const rows = await guard('list apps', () =>
      this.db.selectFrom('apps').selectAll().where('tenant_id', '=', tenantId).orderBy('name').orderBy('created_at').execute(),
    );
    return rows.map(toApp);
  }

  async createDeployment(d: Deployment): Promise<void> {
    await guard('create deployment', () =>
      this.db
        .insertInto('deployments')
        .values({
          id: d.id,
          tenant_id: d.tenantId,
          app_name: d.appName,
          app_version: d.appVersion,
          selector: JSON.stringify(d.selector),
          created_at: d.createdAt,
        })
        .execute(),
    );
  }

  async getDeployment(tenantId: string, id: string): Promise<Deployment | undefined> {
    const r = await guard('read deployment', () =>
      this.db.selectFrom('deployments').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst(),
    );
    return r && toDeployment(r);
  }

  async listDeployments(tenantId: string): Promise<Deployment[]> {
    const rows = await guard('list deployments', () =>
      this.db.selectFrom('deployments').selectAll().where('tenant_id', '=', tenantId).orderBy('created_at').orderBy('id').execute(),
    );
    return rows.map(toDeployment);
  }

  async deleteDeployment(tenantId: string, id: string): Promise<boolean> {
    const r = await guard('delete deployment', () =>
      this.db.deleteFrom('deployments').where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst(),
    );
    return Number(r.numDeletedRows) > 0;
  }

  async acquireLease(name: string, holder: string, now: number, ttlMs: number): Promise<boolean> {
    return guard('acquire lease', async () => {
      // One statement: insert, or take over an expired lease, or renew our own — atomically.
      const r = await this.db
        .insertInto('leases')
        .values({ name, holder, expires_at: now + ttlMs })
        .onConflict((oc) =>
          oc
            .column('name')
            .doUpdateSet({ holder, expires_at: now + ttlMs })
            .where((eb) => eb.or([eb('leases.holder', '=', holder), eb('leases.expires_at', '<', now)])),
        )
        .executeTakeFirst();
      return Number(r.numInsertedOrUpdatedRows ?? 0) > 0;
    });
  }

  async listLeases(prefix: string, now: number): Promise<{ name: string; holder: string }[]> {
    // The table holds a handful of leases (the controller's, maintenance's, one per replica):
    // filtered here rather than by LIKE, whose escaping and collation differ between the engines.
    const rows = await guard('list leases', () =>
      this.db.selectFrom('leases').select(['name', 'holder']).where('expires_at', '>', now).orderBy('name').execute(),
    );
    return rows.filter((r) => r.name.startsWith(prefix));
  }

  async releaseLease(name: string, holder: string): Promise<void> {
    await guard('release lease', () => this.db.deleteFrom('leases').where('name', '=', name).where('holder', '=', holder).execute());
  }

  async claimIdempotencyKey(c: {
    scope: string;
    key: string;
    fingerprint: string;
    holder: string;
    now: number;
    staleMs: number;
  }): Promise<{ claimed: true } | { claimed: false; record: IdempotencyRecord }> {
    return guard('claim idempotency key', async () => {
      const ins = await this.db
        .insertInto('idempotency_keys')
        .values({
          scope: c.scope,
          key: c.key,
          fingerprint: c.fingerprint,
          holder: c.holder,
          created_at: c.now,
          status: null,
          body: null,
          completed_at: null,
        })
        .onConflict((oc) => oc.columns(['scope', 'key']).doNothing())
        .executeTakeFirst();
      if (Number(ins.numInsertedOrUpdatedRows ?? 0) > 0) return { claimed: true as const };
      const r = await this.db
        .selectFrom('idempotency_keys')
        .selectAll()
        .where('scope', '=', c.scope)
        .where('key', '=', c.key)
        .executeTakeFirst();
      if (!r) return this.claimIdempotencyKey(c); // pruned in between
      if (r.status === null && r.fingerprint === c.fingerprint && Number(r.created_at) < c.now - c.staleMs) {
        // Its holder died mid-request: take the claim over (one replica wins: the old holder and time must still be there).
        const up = await this.db
          .updateTable('idempotency_keys')
          .set({ holder: c.holder, created_at: c.now })
          .where('scope', '=', c.scope)
          .where('key', '=', c.key)
          .where('holder', '=', r.holder)
          .where('created_at', '=', r.created_at)
          .where('status', 'is', null)
          .executeTakeFirst();
        if (Number(up.numUpdatedRows) === 1) return { claimed: true as const };
      }
      return {
        claimed: false as const,
        record: {
          fingerprint: r.fingerprint,
          holder: r.holder,
          createdAt: Number(r.created_at),
          status: r.status === null ? null : Number(r.status),
          body: r.body,
        },
      };
    });
  }

  async completeIdempotencyKey(
    scope: string,
    key: string,
    holder: string,
    res: { status: number; body: string | null; at: number },
  ): Promise<void> {
    await guard('complete idempotency key', () =>
      this.db
        .updateTable('idempotency_keys')
        .set({ status: res.status, body: res.body, completed_at: res.at })
        .where('scope', '=', scope)
        .where('key', '=', key)
        .where('holder', '=', holder)
        .execute(),
    );
  }

  async releaseIdempotencyKey(scope: string, key: string, holder: string): Promise<void> {
    await guard('release idempotency key', () =>
      this.db
        .deleteFrom('idempotency_keys')
        .where('scope', '=', scope)
        .where('key', '=', key)
        .where('holder', '=', holder)
        .where('status', 'is', null)
        .execute(),
    );
  }

  async pruneIdempotencyKeys(before: number): Promise<number> {
    const r = await guard('prune idempotency keys', () =>
      this.db.deleteFrom('idempotency_keys').where('created_at', '<', before).executeTakeFirst(),
    );
    return Number(r.numDeletedRows);
  }

  async saveRollout(row: RolloutRow): Promise<boolean> {
    const active = needsSteps(row.state) ? 1 : 0;
    const state = JSON.stringify(row.state);
    if (row.rev !== undefined) {
      const r = await guard('save rollout', () =>
        this.db
          .updateTable('rollouts')
          .set({ state, active, rev: sql`rev + 1`, updated_at: row.state.updatedAt })
          .where('id', '=', row.id)
          .where('tenant_id', '=', row.tenantId)
          .where('rev', '=', row.rev!)
          .executeTakeFirst(),
      );
      return Number(r.numUpdatedRows) === 1;
    }
    const values = { id: row.id, tenant_id: row.tenantId, state, active, rev: 1, updated_at: row.state.updatedAt };
    await guard('save rollout', () =>
      this.db
        .insertInto('rollouts')
        .values(values)
        .onConflict((oc) => oc.column('id').doUpdateSet({ state, active, rev: sql`rollouts.rev + 1`, updated_at: values.updated_at }))
        .execute(),
    );
    return true;
  }

  async getRollout(tenantId: string, id: string): Promise<RolloutRow | undefined> {
    const r = await guard('read rollout', () =>
      this.db.selectFrom('rollouts').selectAll().where('tenant_id', '=', tenantId).where('id', '=', id).executeTakeFirst(),
    );
    return r && { id: r.id, tenantId: r.tenant_id, state: JSON.parse(r.state), rev: Number(r.rev) };
  }

  async listRollouts(tenantId?: string, opts: { activeOnly?: boolean; ids?: readonly string[] } = {}): Promise<RolloutRow[]> {
    if (opts.ids && opts.ids.length === 0) return [];
    const rows = await guard('list rollouts', () => {
      let q = this.db.selectFrom('rollouts').selectAll();
      if (tenantId !== undefined) q = q.where('tenant_id', '=', tenantId);
      if (opts.activeOnly) {
        q = q
          .where('active', '=', 1)
          .where('tenant_id', 'in', (eb) => eb.selectFrom('tenants').select('tenants.id').where('tenants.state', '=', 'active'));
      }
      if (opts.ids) q = q.where('id', 'in', opts.ids);
      return q.orderBy('updated_at').execute();
    });
    return rows.map((r) => ({ id: r.id, tenantId: r.tenant_id, state: JSON.parse(r.state), rev: Number(r.rev) }));
  }

  async insertUplink(records: UplinkRecord[]): Promise<number> {
    if (records.length === 0) return 0;
    return guard('store uplink', async () => {
      let inserted = 0;
      // Chunks keep each statement under SQLite's bound-parameter limit.
      for (let i = 0; i < records.length; i += 500) {
        const chunk = records.slice(i, i + 500);
        const r = await this.db
          .insertInto('uplink')
          .values(
            chunk.map((x) => ({
              site_id: x.siteId,
              msg_id: x.msgId,
              stream: x.stream,
              app: x.app ?? null,
              rule: x.rule ?? null,
              at: x.at,
              received_at: x.receivedAt,
              data: JSON.stringify(x.data ?? null),
            })),
          )
          .onConflict((oc) => oc.doNothing())
          .executeTakeFirst();
        inserted += Number(r.numInsertedOrUpdatedRows ?? 0);
      }
      return inserted;
    });
  }

  async queryUplink(tenantId: string, q: UplinkQuery): Promise<UplinkRow[]> {
    const rows = await guard('query uplink', () => {
      let query = this.db
        .selectFrom('uplink')
        .innerJoin('sites', 'sites.id', 'uplink.site_id')
        .select([
          'uplink.seq',
          'uplink.site_id',
          'uplink.msg_id',
          'uplink.stream',
          'uplink.app',
          'uplink.rule',
          'uplink.at',
          'uplink.received_at',
          'uplink.data',
        ])
        .where('sites.tenant_id', '=', tenantId);
      if (q.siteId !== undefined) query = query.where('uplink.site_id', '=', q.siteId);
      if (q.stream !== undefined) query = query.where('uplink.stream', '=', q.stream);
      if (q.app !== undefined) query = query.where('uplink.app', '=', q.app);
      if (q.rule !== undefined) query = query.where('uplink.rule', '=', q.rule);
      if (q.since !== undefined) query = query.where('uplink.at', '>=', q.since);
      if (q.until !== undefined) query = query.where('uplink.at', '<', q.until);
      if (q.afterSeq !== undefined) query = query.where('uplink.seq', '>', q.afterSeq);
      if (q.maxSeq !== undefined) query = query.where('uplink.seq', '<=', q.maxSeq);
      if (q.byTime) {
        // Site-time order (exports): keyset on (at, seq), which the (stream, at) index serves in
        // order — a page costs the same on the first day of a range as on the last.
        const k = q.byTime.after;
        if (k) query = query.where((eb) => eb(eb.refTuple('uplink.at', 'uplink.seq'), '>', eb.tuple(k.at, k.seq)));
        return query.orderBy('uplink.at').orderBy('uplink.seq').limit(q.limit).execute();
      }
      // A narrow site-time range (a day or less) is found through the time indexes and sorted; left
      // to itself the planner may walk the seq index from the day's start, filtering, because it
      // cannot know that seq and site time rise together (bench:results: 75 ms against 1 ms at
      // 10 M rows). `seq + 0` keeps the same order but takes the seq index out of the choice.
      const narrow = q.since !== undefined && q.until !== undefined && q.until - q.since <= 86_400_000;
      return (narrow ? query.orderBy(sql`uplink.seq + 0`) : query.orderBy('uplink.seq')).limit(q.limit).execute();
    });
    return rows.map((r) => ({
      seq: Number(r.seq),
      siteId: r.site_id,
      msgId: r.msg_id,
      stream: r.stream,
      ...(r.app !== null ? { app: r.app } : {}),
      ...(r.rule !== null ? { rule: r.rule } : {}),
      at: Number(r.at),
      receivedAt: Number(r.received_at),
      data: JSON.parse(r.data),
    }));
  }

  async countUplink(siteId: string, stream?: string): Promise<number> {
    const r = await guard('count uplink', () => {
      let q = this.db
        .selectFrom('uplink')
        .select((eb) => eb.fn.countAll().as('n'))
        .where('site_id', '=', siteId);
      if (stream !== undefined) q = q.where('stream', '=', stream);
      return q.executeTakeFirstOrThrow();
    });
    return Number(r.n);
  }

  async listRetention(tenantId?: string): Promise<RetentionPolicy[]> {
    const rows = await guard('list retention policies', () => {
      let q = this.db.selectFrom('retention_policies').selectAll();
      if (tenantId !== undefined) q = q.where('tenant_id', '=', tenantId);
      return q.orderBy('tenant_id').orderBy('stream').execute();
    });
    return rows.map((r) => ({ tenantId: r.tenant_id, stream: r.stream, days: Number(r.days), updatedAt: Number(r.updated_at) }));
  }

  async setRetention(tenantId: string, stream: string, days: number | null, now: number): Promise<boolean> {
    return guard('set retention policy', async () => {
      if (days === null) {
        const r = await this.db
          .deleteFrom('retention_policies')
          .where('tenant_id', '=', tenantId)
          .where('stream', '=', stream)
          .executeTakeFirst();
        return Number(r.numDeletedRows) > 0;
      }
      await this.db
        .insertInto('retention_policies')
        .values({ tenant_id: tenantId, stream, days, updated_at: now })
        .onConflict((oc) => oc.columns(['tenant_id', 'stream']).doUpdateSet({ days, updated_at: now }))
        .execute();
      return true;
    });
  }

  async deleteResults(step: RetentionStep, batch: number): Promise<number> {
    return guard('delete old results', async () => {
      // In bounded batches, each its own statement, so a large backlog never holds one long
      // transaction (or a lock) over the table that uplink writes keep inserting into.
      let total = 0;
      for (;;) {
        let pick = this.db
          .selectFrom('uplink')
          .select('seq')
          .where('at', '<', step.before)
          .where('site_id', 'in', this.db.selectFrom('sites').select('id').where('tenant_id', '=', step.tenantId));
        if (step.streams) pick = pick.where('stream', 'in', step.streams);
        if (step.except?.length) pick = pick.where('stream', 'not in', step.except);
        const r = await this.db.deleteFrom('uplink').where('at', '<', step.before).where('seq', 'in', pick.limit(batch)).executeTakeFirst();
        const n = Number(r.numDeletedRows);
        total += n;
        if (n < batch) return total;
      }
    });
  }

  async maintainResultPartitions(now: number): Promise<{ created: number }> {
    if (this.kind !== 'postgres') return { created: 0 };
    return guard('maintain result partitions', async () => {
      let created = 0;
      for (const day of partitionDaysAround(now)) if (await createDayPartition(this.db, day)) created++;
      // Rows that arrived for days without a partition (a site back after days offline, a clock
      // far ahead) wait in the default partition; give their days partitions, a bounded number a pass.
      const stray = await sql<{ day: string }>`SELECT DISTINCT (at / 86400000) * 86400000 AS day FROM uplink_default LIMIT 64`.execute(
        this.db,
      );
      for (const d of stray.rows) if (await createDayPartition(this.db, Number(d.day))) created++;
      return { created };
    });
  }

  async dropResultPartitionsBefore(before: number): Promise<number> {
    if (this.kind !== 'postgres') return 0;
    return guard('drop old result partitions', async () => {
      const parts = await sql<{ name: string }>`SELECT c.relname AS name FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE p.relname = 'uplink' AND n.nspname = current_schema() AND c.relname LIKE 'uplink_p%'`.execute(this.db);
      let dropped = 0;
      for (const { name } of parts.rows) {
        const m = /^uplink_p(\d{4})(\d{2})(\d{2})$/.exec(name);
        if (!m) continue;
        const day = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
        // Only days wholly before the cutoff: a day that ends after it still holds rows some
        // policy keeps (the DELETEs of the plan trim those).
        if (day + DAY_MS > before) continue;
        await sql`DROP TABLE ${sql.table(name)}`.execute(this.db);
        dropped++;
      }
      return dropped;
    });
  }

  async latestUplinkSeq(): Promise<number> {
    const r = await guard('latest uplink seq', () =>
      this.db
        .selectFrom('uplink')
        .select((eb) => eb.fn.max('seq').as('m'))
        .executeTakeFirst(),
    );
    return Number(r?.m ?? 0);
  }
}
