import { readFileSync } from 'node:fs';
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
import { RolloutController } from './rollout/controller.ts';
import { createApiServer, type RateLimits } from './api/server.ts';
import type { HttpTimeouts } from '../lib/http.ts';
import { DEFAULT_MQTT_LIMITS, guardRefusalCounter, type MqttLimits } from '../lib/mqtt-guard.ts';
import { HEARTBEAT_INTERVAL_S } from '../contracts/messages.ts';
import { registerRoutes } from './api/routes.ts';
import { registerResultsAdmin } from './api/results-admin.ts';
import { ResultsMaintenance } from './results/maintenance.ts';
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
 * Cloud configuration. Every field has a default (in the comment) and is checked at start-up.
 */
export interface CloudConfig {
  /** Where SQLite and other state live. Default ./edgeweave-cloud */
  dataDir: string;
  /** HTTP API bind. Default 0.0.0.0:8080 (port 0 picks a free port). */
  httpHost?: string;
  httpPort?: number;
  /** Public HTTP URL (printed in install commands). Default http://{host}:{port}. */
  publicUrl?: string;
  /** `sqlite` (default, under dataDir) or postgres://… */
  db?: string;
  /** Embedded hub bind. Default 0.0.0.0:1883. Ignored with `broker`. */
  mqttHost?: string;
  mqttPort?: number;
  /** MQTT URL given to agents. Default mqtt://{mqttHost}:{boundPort}. */
  mqttPublicUrl?: string;
  /** External broker instead of the embedded hub: mqtt://host:port. */
  broker?: string;
  brokerUsername?: string;
  brokerPassword?: string;
  /** Client id of this replica on the external broker. Default edgeweave-cloud-{hostname}. */
  brokerClientId?: string;
  /** How long the external broker keeps this replica's session while it is away (s). Default 86400. */
  brokerSessionExpiryS?: number;
  /** Shared-subscription group of the replicas of one cloud on the external broker. Default edgeweave-cloud. */
  brokerShareGroup?: string;
  /**
   * TLS for the HTTP API (https) and the embedded MQTT hub (mqtts): certificate and key files
   * (PEM). Default: none — then put a TLS-terminating proxy in front in production.
   */
  tlsCertFile?: string;
  tlsKeyFile?: string;
  /** Largest model file accepted (bytes). Default 4 GiB. */
  artifactMaxBytes?: number;
  /** HTTP time limits (headers 10 s, whole request 60 s, keep-alive 5 s, idle 30 s). */
  httpTimeouts?: Partial<HttpTimeouts>;
  /** API rate limits (server.ts DEFAULT_RATE_LIMITS), or false for none. */
  rateLimits?: Partial<RateLimits> | false;
  /** Embedded hub bounds before and after authentication (lib/mqtt-guard.ts DEFAULT_MQTT_LIMITS). */
  mqttLimits?: Partial<MqttLimits>;
  /** Heartbeat interval told to agents at enrollment (s), 1–3600. Default 10. */
  heartbeatIntervalS?: number;
  /** Missed heartbeats before a site is offline. Default 3. */
  missedHeartbeats?: number;
  /**
   * The first admin key, used only when the store is new (no tenant yet): a file whose content
   * is the key, so automation (and the demo) can know it. Default: a key is generated and
   * printed once.
   */
  adminKeyFile?: string;
  /** The built web console to serve at `/`. Default console/dist of this install; false: none. */
  consoleDir?: string | false;
  /** Bounds of the live event stream (GET /api/v1/events); defaults in api/events.ts. */
  eventStreams?: Partial<EventStreamLimits>;
  /** The cloud's region, for data residency of the cloud-side fallback runtime. Default `cloud` (a region no policy names unless it means this cloud). */
  region?: string;
  /** Routed inference per API key: requests/s, burst, in flight. Defaults 100, 200, 64. */
  inferRate?: number;
  inferBurst?: number;
  inferConcurrency?: number;
  /** Default deadline of a routed request (ms). Default 30000. */
  inferTimeoutMs?: number;
  /** Keep results of streams no retention policy names this many days (0: keep). Default 0. */
  resultsRetentionDays?: number;
  /** How often retention and partition upkeep run (ms). Default 3600000. */
  resultsMaintenanceEveryMs?: number;
  /** Serve fallbacks and cascades with the cloud-side runtime. Default true. */
  cloudRuntime?: boolean;
  clock?: Clock;
  log?: Logger;
}

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

/** Creates the first tenant and admin key when the store is empty. */
async function bootstrap(store: Store, clock: Clock, adminKeyFile: string | undefined): Promise<string | undefined> {
  if ((await store.listTenants()).length > 0) return undefined;
  const tenantId = newId('ten');
  await store.createTenant({ id: tenantId, name: 'default', createdAt: clock.now() });
  let key: string;
  if (adminKeyFile) {
    key = readFileSync(adminKeyFile, 'utf8').trim();
    if (!/^ewk_[A-Za-z0-9_-]{32,}$/.test(key)) throw new EwError('CONFIG_INVALID', `--admin-key-file ${adminKeyFile} must hold one key of the form ewk_ followed by at least 32 URL-safe characters`, { path: 'adminKeyFile' });
  } else {
    key = newSecret('ewk');
  }
  await store.createApiKey({ id: newId('key'), tenantId, name: 'admin', hash: hashSecret(key), role: 'admin', createdAt: clock.now(), revokedAt: null });
  return adminKeyFile ? undefined : key;
}

export async function startCloud(cfg: CloudConfig): Promise<CloudHandle> {
  const clock = cfg.clock ?? systemClock;
  const log = cfg.log ?? createLogger({ name: 'cloud' });
  const heartbeatIntervalS = cfg.heartbeatIntervalS ?? 10;
  const missedHeartbeats = cfg.missedHeartbeats ?? 3;
  if (!(heartbeatIntervalS >= HEARTBEAT_INTERVAL_S.min && heartbeatIntervalS <= HEARTBEAT_INTERVAL_S.max)) throw new EwError('CONFIG_INVALID', `--heartbeat-interval must be ${HEARTBEAT_INTERVAL_S.min} to ${HEARTBEAT_INTERVAL_S.max} seconds`, { path: 'heartbeatIntervalS' });
  if (!(missedHeartbeats >= 1)) throw new EwError('CONFIG_INVALID', '--missed-heartbeats must be at least 1', { path: 'missedHeartbeats' });
  privateDir(cfg.dataDir);

  const store = openStore(cfg.db, cfg.dataDir);
  await store.migrate();
  const adminKey = await bootstrap(store, clock, cfg.adminKeyFile);

  if (!!cfg.tlsCertFile !== !!cfg.tlsKeyFile) throw new EwError('CONFIG_INVALID', 'TLS needs both --tls-cert and --tls-key', { path: cfg.tlsCertFile ? 'tlsKeyFile' : 'tlsCertFile' });
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
  if (cfg.broker) {
    hub = new ExternalHub({
      url: cfg.broker, username: cfg.brokerUsername, password: cfg.brokerPassword,
      clientId: cfg.brokerClientId ?? `edgeweave-cloud-${(await import('node:os')).hostname()}`,
      agentUrl: cfg.mqttPublicUrl, sessionExpiryS: cfg.brokerSessionExpiryS, shareGroup: cfg.brokerShareGroup, log,
    });
  } else {
    hub = new EmbeddedHub({
      port: cfg.mqttPort ?? 1883, host: cfg.mqttHost, publicUrl: cfg.mqttPublicUrl, log, tls, limits: cfg.mqttLimits, clock: cfg.clock,
      auth: { verify: (id, secret) => fleet.verifySite(id, secret) },
    });
  }
  fleet = new Fleet({ store, hub, clock, log, registry, missedHeartbeats });
  if (hub instanceof EmbeddedHub) {
    const embedded = hub;
    guardRefusalCounter('ew_cloud_mqtt_guard_refused_total', 'MQTT connections and logins refused by the hub\'s guard, by reason', registry, () => embedded.guard);
  }
  await hub.start(fleet.handle);
  await fleet.start();
  const rollouts = new RolloutController({ store, fleet, clock, log });
  rollouts.start();
  const maintenance = new ResultsMaintenance({ store, clock, log, registry, defaultDays: cfg.resultsRetentionDays, everyMs: cfg.resultsMaintenanceEveryMs });
  maintenance.start();

  const http = await createApiServer({
    store, log, registry, tls, verifySite: (id, secret) => fleet.verifySite(id, secret),
    timeouts: cfg.httpTimeouts, rateLimits: cfg.rateLimits, clock: cfg.clock,
  });
  const artifacts = new FileArtifactStore(join(cfg.dataDir, 'artifacts'), cfg.artifactMaxBytes ?? 4 * 1024 ** 3);
  // Artifacts referenced by apps pushed before owners were recorded belong to those apps' tenants.
  for (const t of await store.listTenants()) {
    for (const a of await store.listApps(t.id)) for (const m of a.manifest.spec.models) if (m.sha256) await store.addArtifactOwner(t.id, m.sha256, clock.now());
  }
  let url = '';
  registerRoutes(http, {
    store, fleet, hub, clock, registry, heartbeatIntervalS, version: VERSION, artifacts, rollouts,
    publicUrl: () => cfg.publicUrl ?? url,
  });
  registerResultsAdmin(http, { store, clock, defaultRetentionDays: cfg.resultsRetentionDays });
  registerConsoleApi(http, { store, fleet, clock, log, consoleDir: cfg.consoleDir, eventStreams: cfg.eventStreams });
  const router = startRouter({ store, fleet, hub, clock, log, registry, artifacts, dataDir: cfg.dataDir, region: cfg.region ?? 'cloud',
    rate: cfg.inferRate, burst: cfg.inferBurst, concurrency: cfg.inferConcurrency, cloudRuntime: cfg.cloudRuntime !== false,
    maxPacketBytes: cfg.broker ? undefined : cfg.mqttLimits?.maxPacketBytes ?? DEFAULT_MQTT_LIMITS.maxPacketBytes });
  registerInference(http, { ...router, clock, defaultTimeoutMs: cfg.inferTimeoutMs });
  registerOpenAiRouting(http, { ...router, clock, defaultTimeoutMs: cfg.inferTimeoutMs });
  const address = await http.listen({ port: cfg.httpPort ?? 8080, host: cfg.httpHost ?? '0.0.0.0' });
  url = address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '127.0.0.1');
  if (!tls) log.warn('serving plain HTTP and MQTT: terminate TLS in front of this cloud, or start it with --tls-cert and --tls-key');
  log.info({ url, mqtt: hub.agentUrl, store: store.kind, hub: hub.kind }, 'cloud ready');

  return {
    url, mqttUrl: hub.agentUrl, adminKey, store, hub, fleet, http, maintenance,
    async close() {
      await http.close();
      await router.close();
      await rollouts.stop();
      await maintenance.stop();
      await fleet.stop();
      await hub.close();
      await store.close();
    },
  };
}
