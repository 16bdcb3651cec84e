import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { FileArtifactStore } from './artifacts.ts';
import { Registry } from 'prom-client';
import { collectProcessMetrics } from '../lib/metrics.ts';
import { privateDir } from '../lib/private-fs.ts';
import type { FastifyInstance } from 'fastify';
import { openStore } from './store/open.ts';
import type { Store } from './store/store.ts';
import { EmbeddedHub } from './hub/embedded.ts';
import { ExternalHub } from './hub/external.ts';
import type { Hub } from './hub/hub.ts';
import { Fleet } from './fleet.ts';
import { Membership, Ownership } from './fleet/ownership.ts';
import { replicaTopics } from '../contracts/topics.ts';
import { RolloutController } from './rollout/controller.ts';
import { ResultQuota } from './quotas.ts';
import { createApiServer } from './api/server.ts';
import type { HttpTimeouts } from '../lib/http.ts';
import { DEFAULT_MQTT_LIMITS, guardRefusalCounter } from '../lib/mqtt-guard.ts';
import { cloudLimits, parseCloudOptions, type CloudOptionsInput } from './config.ts';
import { registerRoutes } from './api/routes.ts';
import { registerResultsAdmin } from './api/results-admin.ts';
import { ResultsMaintenance } from './results/maintenance.ts';
import { tenantRoutes } from './api/tenants.ts';
import { auditRoutes } from './api/audit.ts';
import { installTenancyGuards } from './api/guard.ts';
import { registerConsoleApi, type EventStreamLimits } from './api/console-api.ts';
import { registerInference } from './api/inference.ts';
import { registerOpenAiRouting } from './api/openai.ts';
import { startRouter } from './router/start.ts';
import { systemClock, type Clock } from '../lib/clock.ts';
import { createLogger, type Logger } from '../lib/logger.ts';
import { hashSecret, newId, newSecret } from '../lib/secrets.ts';
import { EwError } from '../contracts/errors.ts';
import { VERSION } from '../version.ts';

/**
 * Cloud configuration: the operator's options (src/cloud/config.ts: defaults, descriptions,
 * checked at start-up, the same for flags, environment and config file) and what only code passes.
 */
export type CloudConfig = CloudOptionsInput & {
  /** Client id of this replica on the external broker. Default ew-{installationId}-{replicaId}. */
  brokerClientId?: string;
  /** Shared-subscription group of the replicas of one cloud on the external broker. Default edgeweave-{installationId}. */
  brokerShareGroup?: string;
  /** Largest model file accepted (bytes). Default 4 GiB. */
  artifactMaxBytes?: number;
  /** HTTP time limits beyond the options' request and idle timeouts (lib/http.ts DEFAULT_HTTP_TIMEOUTS); these win. */
  httpTimeouts?: Partial<HttpTimeouts>;
  /** Bounds of the live event stream (GET /api/v1/events); defaults in api/events.ts. */
  eventStreams?: Partial<EventStreamLimits>;
  /** How often retention and partition upkeep run (ms). Default 3600000. */
  resultsMaintenanceEveryMs?: number;
  clock?: Clock;
  log?: Logger;
};

export interface CloudHandle {
  url: string;
  mqttUrl: string;
  /** Only on first start, when the admin key was generated here; shown once, stored hashed. */
  adminKey?: string;
  store: Store;
  hub: Hub;
  fleet: Fleet;
  http: FastifyInstance;
  /** Retention and partition upkeep (runs on its own; tests step it). */
  maintenance: ResultsMaintenance;
  close(): Promise<void>;
}

const INSTALLATION_ID_RE = /^[a-z0-9][a-z0-9-]{0,39}$/;
const REPLICA_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

/** This replica's id, made once and kept in its data dir so a restart is the same replica. */
function loadReplicaId(dataDir: string): string {
  const file = join(dataDir, 'replica-id');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const id = `r-${randomBytes(6).toString('hex')}`;
  writeFileSync(file, `${id}\n`, { mode: 0o600, flag: 'wx' });
  return id;
}

/** Creates the first tenant and admin key when the store is empty. */
async function bootstrap(store: Store, clock: Clock, adminKeyFile: string | undefined): Promise<string | undefined> {
  if ((await store.listTenants()).length > 0) return undefined;
  const tenantId = newId('ten');
  await store.createTenant({ id: tenantId, name: 'default', createdAt: clock.now() });
  let key: string;
  if (adminKeyFile) {
    key = readFileSync(adminKeyFile, 'utf8').trim();
    if (!/^ewk_[A-Za-z0-9_-]{32,}$/.test(key))
      throw new EwError(
        'CONFIG_INVALID',
        `--admin-key-file ${adminKeyFile} must hold one key of the form ewk_ followed by at least 32 URL-safe characters`,
        { path: 'adminKeyFile' },
      );
  } else {
    key = newSecret('ewk');
  }
  // The first key is the cloud operator's: an admin of the first tenant that also manages tenants.
  await store.createApiKey({
    id: newId('key'),
    tenantId,
    name: 'admin',
    hash: hashSecret(key),
    role: 'platform-admin',
    createdAt: clock.now(),
    revokedAt: null,
  });
  return adminKeyFile ? undefined : key;
}

export async function startCloud(input: CloudConfig): Promise<CloudHandle> {
  // Every option checked (a bad one refused naming its flag) and defaulted before anything starts.
  const parsed = parseCloudOptions(input);
  const limits = await cloudLimits(parsed);
  const cfg = {
    ...parsed,
    ...limits,
    consoleDir: parsed.console ? parsed.consoleDir : (false as const),
    httpTimeouts: {
      requestTimeoutMs: parsed.httpRequestTimeoutS * 1000,
      idleTimeoutMs: parsed.httpIdleTimeoutS * 1000,
      ...input.httpTimeouts,
    },
  };
  const clock = cfg.clock ?? systemClock;
  const log = cfg.log ?? createLogger({ name: 'cloud' });
  const { heartbeatIntervalS, missedHeartbeats } = cfg;
  privateDir(cfg.dataDir);
  const installationId = cfg.installationId ?? 'cloud';
  if (!INSTALLATION_ID_RE.test(installationId))
    throw new EwError(
      'CONFIG_INVALID',
      `--installation-id "${installationId}" must be 1–40 lower-case letters, digits and dashes (it names MQTT share groups and client ids)`,
      { path: 'installationId' },
    );
  const replicaId = cfg.replicaId ?? loadReplicaId(cfg.dataDir);
  if (!REPLICA_ID_RE.test(replicaId))
    throw new EwError('CONFIG_INVALID', `--replica-id "${replicaId}" must be 1–64 letters, digits, dashes and underscores`, {
      path: 'replicaId',
    });

  const store = openStore(cfg.db, cfg.dataDir);
  await store.migrate();
  const adminKey = await bootstrap(store, clock, cfg.adminKeyFile);

  if (!!cfg.tlsCertFile !== !!cfg.tlsKeyFile)
    throw new EwError('CONFIG_INVALID', 'TLS needs both --tls-cert and --tls-key', {
      path: cfg.tlsCertFile ? 'tlsKeyFile' : 'tlsCertFile',
    });
  let tls: { cert: Buffer; key: Buffer } | undefined;
  try {
    tls = cfg.tlsCertFile && cfg.tlsKeyFile ? { cert: readFileSync(cfg.tlsCertFile), key: readFileSync(cfg.tlsKeyFile) } : undefined;
  } catch (e) {
    throw new EwError('CONFIG_INVALID', `cannot read the TLS certificate or key: ${(e as Error).message}`, { path: 'tlsCertFile' });
  }
  const registry = new Registry();
  collectProcessMetrics(registry, 'ew_cloud_');
  let fleet!: Fleet;
  let hub: Hub;
  // Several replicas share an external broker: each parses the heartbeats of the sites it owns
  // (fleet/ownership.ts). The embedded hub is one process, which owns every site.
  const ownership = new Ownership(replicaId);
  const livenessTopic = replicaTopics.liveness(installationId);
  const revokedTopic = replicaTopics.revoked(installationId);
  if (cfg.broker) {
    hub = new ExternalHub({
      url: cfg.broker,
      username: cfg.brokerUsername,
      password: cfg.brokerPassword,
      clientId: cfg.brokerClientId ?? `ew-${installationId}-${replicaId}`,
      agentUrl: cfg.mqttPublicUrl,
      shareGroup: cfg.brokerShareGroup ?? `edgeweave-${installationId}`,
      log,
      protocolVersion: cfg.brokerMqttVersion as 4 | 5,
      shareUplink: cfg.brokerShareUplink,
      topicPrefix: cfg.topicPrefix ? `${cfg.topicPrefix}/` : undefined,
      replicaTopics: [livenessTopic, revokedTopic],
      onReconnected: () => fleet.revocations?.resync() ?? Promise.resolve(),
    });
  } else {
    hub = new EmbeddedHub({
      port: cfg.mqttPort ?? 1883,
      host: cfg.mqttHost,
      publicUrl: cfg.mqttPublicUrl,
      log,
      tls,
      limits: cfg.mqttLimits,
      clock: cfg.clock,
      auth: { verify: (id, secret) => fleet.verifySite(id, secret) },
    });
  }
  // An external broker's PUBACK does not mean stored: sites wait for the cloud's own word.
  fleet = new Fleet({
    store,
    hub,
    clock,
    log,
    registry,
    missedHeartbeats,
    admitResult: new ResultQuota(store, clock).admit,
    storeAcks: hub.kind === 'external',
    ...(hub.kind === 'external' ? { replicas: { ownership, livenessTopic, revokedTopic, replicaId } } : {}),
  });
  // Members known before the first heartbeat is read, so each goes to its owner from the start.
  const membership =
    hub.kind === 'external'
      ? new Membership({
          store,
          clock,
          log,
          ownership,
          holder: `${replicaId}-${randomBytes(4).toString('hex')}`,
          onChange: () => fleet.status.ownershipChanged(),
        })
      : undefined;
  await membership?.start();
  if (hub instanceof EmbeddedHub) {
    const embedded = hub;
    guardRefusalCounter(
      'ew_cloud_mqtt_guard_refused_total',
      "MQTT connections and logins refused by the hub's guard, by reason",
      registry,
      () => embedded.guard,
    );
  }
  await hub.start(fleet.handle);
  await fleet.start();
  const rollouts = new RolloutController({ store, fleet, clock, log, holder: `${replicaId}-${randomBytes(4).toString('hex')}` });
  rollouts.start();
  const maintenance = new ResultsMaintenance({
    store,
    clock,
    log,
    registry,
    defaultDays: cfg.resultsRetentionDays,
    everyMs: cfg.resultsMaintenanceEveryMs,
  });
  maintenance.start();

  const http = await createApiServer({
    store,
    log,
    registry,
    tls,
    verifySite: (id, secret) => fleet.verifySite(id, secret),
    timeouts: cfg.httpTimeouts,
    rateLimits: cfg.rateLimits,
    clock: cfg.clock,
  });
  const artifacts = new FileArtifactStore(cfg.artifactsDir ?? join(cfg.dataDir, 'artifacts'), cfg.artifactMaxBytes ?? 4 * 1024 ** 3);
  // Artifacts referenced by apps pushed before owners were recorded belong to those apps' tenants.
  for (const t of await store.listTenants()) {
    for (const a of await store.listApps(t.id))
      for (const m of a.manifest.spec.models) if (m.sha256) await store.addArtifactOwner(t.id, m.sha256, clock.now());
  }
  let url = '';
  // Before any route plugin loads, so every one inherits the hooks (scoped keys, quotas).
  installTenancyGuards(http, { store, artifacts });
  registerRoutes(http, {
    store,
    fleet,
    hub,
    clock,
    registry,
    heartbeatIntervalS,
    version: VERSION,
    artifacts,
    rollouts,
    publicUrl: () => cfg.publicUrl ?? url,
  });
  registerResultsAdmin(http, { store, clock, defaultRetentionDays: cfg.resultsRetentionDays });
  await http.register(tenantRoutes, { store, clock, artifacts, siteRevoked: (id: string) => fleet.revoked(id) });
  await http.register(auditRoutes, { store });
  registerConsoleApi(http, { store, fleet, clock, log, consoleDir: cfg.consoleDir, eventStreams: cfg.eventStreams });
  const router = startRouter({
    store,
    fleet,
    hub,
    clock,
    log,
    registry,
    artifacts,
    dataDir: cfg.dataDir,
    region: cfg.region ?? 'cloud',
    rate: cfg.inferRate,
    burst: cfg.inferBurst,
    concurrency: cfg.inferConcurrency,
    cloudRuntime: cfg.cloudRuntime !== false,
    maxPacketBytes: cfg.broker ? undefined : (cfg.mqttLimits?.maxPacketBytes ?? DEFAULT_MQTT_LIMITS.maxPacketBytes),
  });
  registerInference(http, { ...router, clock, defaultTimeoutMs: cfg.inferTimeoutMs });
  registerOpenAiRouting(http, { ...router, clock, defaultTimeoutMs: cfg.inferTimeoutMs });
  const address = await http.listen({ port: cfg.httpPort ?? 8080, host: cfg.httpHost ?? '0.0.0.0' });
  url = address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1');
  if (!tls) log.warn('serving plain HTTP and MQTT: terminate TLS in front of this cloud, or start it with --tls-cert and --tls-key');
  log.info({ url, mqtt: hub.agentUrl, store: store.kind, hub: hub.kind }, 'cloud ready');

  return {
    url,
    mqttUrl: hub.agentUrl,
    adminKey,
    store,
    hub,
    fleet,
    http,
    maintenance,
    async close() {
      await http.close();
      await router.close();
      await rollouts.stop();
      await maintenance.stop();
      await fleet.stop();
      // Given back at once: the other replicas take this one's sites without waiting out the lease.
      await membership?.stop();
      await hub.close();
      await store.close();
    },
  };
}
