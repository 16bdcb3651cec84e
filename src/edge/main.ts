import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Counter, Gauge, Registry } from 'prom-client';
import { openEdgeDb, kvGet, kvSet, type EdgeDb } from './db.ts';
import { Outbox } from './outbox.ts';
import { OutboxPump } from './pump.ts';
import { CloudLink, type LinkState } from './link.ts';
import { DeviceBroker, type DeviceSource } from './devices.ts';
import { ExternalDeviceSource } from './external-devices.ts';
import { AppSupervisor } from './apps.ts';
import { DeadLetters, pushTopic, StreamRouter } from './record-router.ts';
import { EgressAudit } from './sinks.ts';
import { RuleHost } from './rules.ts';
import { Intake, Journal } from './journal.ts';
import { SourceHost } from './sources/host.ts';
import { quietOpcua } from './sources/opcua-quiet.ts';
import { WriteAudit, WriteHost } from './writes.ts';
import { ArtifactCache, cloudArtifactSource } from './artifacts.ts';
import { RuntimeRegistry } from '../inference/runtime.ts';
import { OnnxRuntime } from '../inference/onnx.ts';
import { BuiltinRuntime } from '../inference/ocr.ts';
import { ModelHost } from '../inference/host.ts';
import { RoutedInference, injectStreams } from './rpc-infer.ts';
import { acceleratorInfo, acceleratorNames, readAcceleratorSources } from './accelerators.ts';
import { GgufRuntime } from '../inference/llm/gguf.ts';
import { RemoteRuntime } from '../inference/llm/remote.ts';
import { LlmService } from '../inference/llm/service.ts';
import { RuleLlmCalls } from '../inference/llm/rule-calls.ts';
import { readSiteSecret, siteSecret } from './secrets.ts';
import { join } from 'node:path';
import { enroll, loadCredentials, type StoredCredentials } from './enroll.ts';
import { detectAccelerators, detectRuntimes, systemFacts } from './system.ts';
import { HEARTBEAT_INTERVAL_S } from '../contracts/messages.ts';
import { topics } from '../contracts/topics.ts';
import { registerEdgeMetrics } from './metrics.ts';
import { DeviceRegistry } from './device-auth.ts';
import type { DeviceAdmin } from './device-api.ts';
import { createRpc } from './rpc.ts';
import { createStatus } from './status.ts';
import { DesiredStateHandler } from './desired.ts';
import { createLocalApi } from './local-api.ts';
import { collectProcessMetrics } from '../lib/metrics.ts';
import { EwError } from '../contracts/errors.ts';
import { systemClock, type Clock } from '../lib/clock.ts';
import { createLogger, LogRing, type Logger } from '../lib/logger.ts';
import { hashSecret, newSecret } from '../lib/secrets.ts';
import type { HttpTimeouts } from '../lib/http.ts';
import { guardRefusalCounter } from '../lib/mqtt-guard.ts';
import { fetchTrusting } from '../lib/fetch.ts';
import { VERSION } from '../version.ts';
import { edgeLimits, parseEdgeOptions, type EdgeOptionsInput } from './config.ts';

/**
 * Agent configuration: the operator's options (src/edge/config.ts: defaults, descriptions,
 * checked at start-up, the same for flags, environment and config file) and what only code passes.
 */
export type EdgeConfig = EdgeOptionsInput & {
  /** Join token, needed only on first start (from EW_JOIN_TOKEN or --token-file, never an option). */
  token?: string;
  /** Where recent log lines are kept for `edgeweave logs` (default: a ring of 2,000, fed by the agent's own logger). */
  logRing?: LogRing;
  /**
   * Where the results of a rule's `log` sink go: the site's own output, never `logRing` (the
   * cloud reads that one). Default: `log` when it was given without a ring, else a logger on
   * stderr that feeds no ring.
   */
  siteLog?: Logger;
  /** Backoff of a model whose file could not be fetched or verified. Default 5 s doubling to 5 min. */
  modelRetry?: { initialMs: number; maxMs: number };
  /** Local API time limits beyond the idle timeout option (lib/http.ts DEFAULT_HTTP_TIMEOUTS); these win. */
  httpTimeouts?: Partial<HttpTimeouts>;
  /** First cloud reconnect window, ms; doubles per failure with full jitter up to reconnectMaxMs (default 30,000). Default 1,000. */
  reconnectPeriodMs?: number;
  reconnectMaxMs?: number;
  clock?: Clock;
  log?: Logger;
};

export interface EdgeHandle {
  siteId: string;
  apiUrl: string;
  deviceUrl: string;
  /** Secrets generated on this first start (shown once); absent when read from files or already set. */
  generated: { apiKey?: string; devicePassword?: string };
  outbox: Outbox;
  supervisor: AppSupervisor;
  devices: DeviceSource;
  linkState(): LinkState;
  close(): Promise<void>;
}

/** A verifier secret: from a file when given, else kept if already set, else generated once. */
function ensureSecret(db: EdgeDb, key: string, file: string | undefined, prefix: 'ewl' | 'ewd'): string | undefined {
  if (file) {
    const value = readFileSync(file, 'utf8').trim();
    if (value.length < 16) throw new EwError('CONFIG_INVALID', `${file} must hold a secret of at least 16 characters`, { path: key });
    kvSet(db, key, hashSecret(value));
    return undefined;
  }
  if (kvGet(db, key)) return undefined;
  const s = newSecret(prefix);
  kvSet(db, key, hashSecret(s));
  return s;
}

export async function startEdge(input: EdgeConfig): Promise<EdgeHandle> {
  // Every option checked (a bad one refused naming its flag) and defaulted before anything starts.
  const parsed = parseEdgeOptions(input);
  const cfg = {
    ...parsed,
    deviceLimits: await edgeLimits(parsed),
    httpTimeouts: { idleTimeoutMs: parsed.httpIdleTimeoutS * 1000, ...input.httpTimeouts },
  };
  const clock = cfg.clock ?? systemClock;
  // Recent log lines stay in memory for `edgeweave logs`; they leave the site only when asked.
  const ring = cfg.logRing ?? new LogRing(2000);
  const log = cfg.log ?? createLogger({ name: 'edge', ring });
  const siteLog = cfg.siteLog ?? (cfg.log && !cfg.logRing ? cfg.log : createLogger({ name: 'edge' }));
  const db = openEdgeDb(cfg.dataDir);

  // 1. Credentials: reuse those in the data dir, else enroll with the token.
  let creds: StoredCredentials | undefined = loadCredentials(cfg.dataDir);
  if (!creds) {
    if (!cfg.token || !cfg.cloudUrl) {
      db.close();
      throw new EwError(
        'NOT_ENROLLED',
        `no site credentials in ${cfg.dataDir}: start once with --cloud <url> and the join token in EW_JOIN_TOKEN or --token-file <file>`,
      );
    }
    try {
      const ca = cfg.caFile ? readFileSync(cfg.caFile, 'utf8') : undefined;
      creds = await enroll({ cloudUrl: cfg.cloudUrl, token: cfg.token, name: cfg.name, dataDir: cfg.dataDir, ca });
    } catch (e) {
      db.close();
      throw e;
    }
    log.info({ siteId: creds.siteId, region: creds.region }, 'enrolled');
  } else if (cfg.token) {
    log.info({ siteId: creds.siteId }, 'already enrolled; the join token is not needed and was ignored');
  }
  const siteId = creds.siteId;
  const bootId = randomUUID();
  const startedAt = clock.now();
  const heartbeatIntervalS = cfg.heartbeatIntervalS ?? creds.heartbeatIntervalS;
  if (!(heartbeatIntervalS >= HEARTBEAT_INTERVAL_S.min && heartbeatIntervalS <= HEARTBEAT_INTERVAL_S.max)) {
    db.close();
    throw new EwError(
      'CONFIG_INVALID',
      `the heartbeat interval must be ${HEARTBEAT_INTERVAL_S.min} to ${HEARTBEAT_INTERVAL_S.max} seconds (got ${heartbeatIntervalS})`,
      { path: 'heartbeatIntervalS' },
    );
  }

  const generated = {
    apiKey: ensureSecret(db, 'api.keyHash', cfg.apiKeyFile, 'ewl'),
    devicePassword:
      cfg.devicePasswordFile || cfg.deviceSharedPassword
        ? ensureSecret(db, 'device.passwordHash', cfg.devicePasswordFile, 'ewd')
        : undefined,
  };
  if (!cfg.devicePasswordFile && !cfg.deviceSharedPassword && kvGet(db, 'device.passwordHash')) {
    // Opt-in only: a shared password left from an earlier start stops working.
    db.prepare('DELETE FROM kv WHERE key = ?').run('device.passwordHash');
    log.warn(
      'the shared device password is off (opt in with --device-shared-password or --device-password-file); devices connect with their own credentials: edgeweave devices add',
    );
  }

  // 2. Metrics.
  const registry = new Registry();
  collectProcessMetrics(registry, 'ew_edge_');
  const outbox = new Outbox(db, clock, { maxMessages: cfg.outboxMax ?? 100_000, overflow: cfg.outboxOverflow ?? 'drop-oldest' });
  new Gauge({
    name: 'ew_edge_outbox_pending',
    help: 'Uplink messages waiting in the outbox',
    registers: [registry],
    collect() {
      this.set(outbox.pending);
    },
  });
  const sentCounter = new Counter({
    name: 'ew_edge_uplink_sent_total',
    help: 'Uplink messages acknowledged by the cloud broker',
    registers: [registry],
  });
  const badDesired = new Counter({
    name: 'ew_edge_desired_invalid_total',
    help: 'Desired-state messages refused as malformed',
    registers: [registry],
  });
  const httpErrors = new Counter({
    name: 'ew_edge_http_errors_total',
    help: 'Local API errors by code',
    labelNames: ['code'],
    registers: [registry],
  });

  // 3. Device broker, and the streams that route its messages to rules.
  const deviceRegistry = new DeviceRegistry(db, clock, () => kvGet(db, 'device.passwordHash'));
  const devices: DeviceSource = cfg.deviceBroker
    ? new ExternalDeviceSource({
        url: cfg.deviceBroker,
        username: cfg.deviceBrokerUsername,
        password: cfg.deviceBrokerPassword,
        clientId: `edgeweave-${siteId}`,
        protocolVersion: cfg.deviceBrokerMqttVersion,
        log,
      })
    : new DeviceBroker({
        port: cfg.devicePort ?? 1883,
        host: cfg.deviceHost ?? '0.0.0.0',
        log,
        limits: cfg.deviceLimits,
        clock: cfg.clock,
        tls:
          cfg.deviceTlsCertFile && cfg.deviceTlsKeyFile
            ? { cert: readFileSync(cfg.deviceTlsCertFile), key: readFileSync(cfg.deviceTlsKeyFile) }
            : undefined,
        auth: deviceRegistry,
      });
  const deviceAdmin: DeviceAdmin = {
    registry: cfg.deviceBroker ? undefined : deviceRegistry,
    disconnect: (id) => (devices as Partial<DeviceBroker>).disconnect?.(id),
    log,
  };
  const dead = new DeadLetters(db, clock);
  const router = new StreamRouter(dead);
  // Streams fed by an industrial source have no topic ('') and nothing to subscribe to.
  router.onFiltersChanged((filters) => void devices.setFilters(filters.filter((f) => f !== '')));
  // Acknowledge after durability: a device record reaches the rules through the intake journal,
  // and its PUBACK goes only once it is committed there (src/edge/journal.ts).
  const journal = new Journal(db, clock);
  const journalMax = cfg.journalMax ?? 1_000_000;
  const unrouted = new Counter({
    name: 'ew_edge_records_unrouted_total',
    help: 'Device records that no stream reads (acknowledged, counted, not kept), by topic (at most 1,000 topics, then "(other)")',
    labelNames: ['topic'],
    registers: [registry],
  });
  const unroutedTopics = new Set<string>();
  const withheld = new Counter({
    name: 'ew_edge_device_acks_withheld_total',
    help: 'Device records whose acknowledgement was withheld (the device is slowed, not dropped), by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  new Gauge({
    name: 'ew_edge_journal_pending',
    help: 'Acknowledged device records journaled and not yet committed by every rule',
    registers: [registry],
    collect() {
      this.set(journal.pending);
    },
  });
  let rulesRef: RuleHost | undefined;
  const intake = new Intake({
    journal,
    clock,
    log,
    routes: (topic) => router.routes(topic),
    deliver: (seq, topic, payload, props) => {
      router.onMessage(topic, payload, props, seq);
      rulesRef?.delivered(seq);
    },
    gate: () => (journal.pending >= journalMax ? 'journal_full' : undefined),
    // Under reject-new a device is slowed (no PUBACK) rather than acknowledged and its results
    // refused: a record is taken only when every result it can lead to fits in the outbox, less
    // what the rules already owe it for records taken before.
    room: () => (outbox.policy === 'reject-new' ? outbox.room - (rulesRef?.reserved() ?? 0) : Infinity),
    // A record costs no more than the whole outbox (else one would never be taken).
    cost: (topic) => Math.min(rulesRef?.cost(topic) ?? 1, cfg.outboxMax ?? 100_000),
    onUnrouted: (topic) => {
      if (unroutedTopics.size < 1000) unroutedTopics.add(topic);
      unrouted.inc({ topic: unroutedTopics.has(topic) ? topic : '(other)' });
    },
    onWithheld: (reason, n) => withheld.inc({ reason }, n),
  });
  devices.setIntake((m) => intake.accept(m.topic, m.payload, m.properties));
  /**
   * Records pushed into one app's stream (the local HTTP push API, an industrial source) take the
   * same path: checked (those that do not fit are dead-lettered), journaled under the stream's
   * push topic, and only then acknowledged and handed to the rules.
   */
  const ingest = async (app: string, stream: string, records: readonly unknown[]) => {
    // Records are refused whole (nothing journaled, the caller resends) while the site withholds.
    if (intake.withholding)
      throw new EwError(
        'INTAKE_FULL',
        `the site is holding records back (${intake.withholding}); none of these ${records.length} were accepted: resend them later`,
      );
    const { valid, rejected } = router.check(app, stream, records);
    const topic = pushTopic(app, stream);
    await intake.acceptMany(valid.map((payload) => ({ topic, payload })));
    return { accepted: valid.length, rejected };
  };
  const audit = new EgressAudit(db, clock, registry);

  // 4. Models: fetched from the cloud into the verified cache, loaded by their runtime.
  const supervisor = new AppSupervisor(log);
  // Set once the cloud link exists (a model may recover before that).
  let reportStatus = () => {};
  // Read once: GPUs and CPU features do not change while the agent runs.
  const accel = acceleratorInfo(readAcceleratorSources('/', { arch: process.arch, cores: systemFacts(cfg.dataDir).cores }));
  const accelerators = [...new Set([...detectAccelerators(), ...acceleratorNames(accel)])];
  const runtimeRegistry = new RuntimeRegistry()
    // A model that names no execution provider gets CUDA where this site's ONNX Runtime can use a GPU.
    .register(
      new OnnxRuntime(
        (model, reason) => log.warn({ model, reason }, 'CUDA asked for but not available; the model runs on the CPU'),
        accel.gpus.some((g) => g.usableBy.includes('onnxruntime:cuda')),
      ),
    )
    .register(new BuiltinRuntime())
    .register(new GgufRuntime({ log, clock }))
    .register(new RemoteRuntime({ log, clock }));
  const cache = new ArtifactCache(
    db,
    join(cfg.dataDir, 'models'),
    cfg.modelCacheBytes ?? 10 * 1024 ** 3,
    cloudArtifactSource(creds.cloudUrl, siteId, creds.password, fetchTrusting(creds.ca)),
    clock,
    log,
  );
  const models = new ModelHost({
    runtimes: runtimeRegistry,
    clock,
    log,
    registry,
    fetchModel: async (_app, m) => {
      if (!m.sha256) throw new EwError('MODEL_LOAD_FAILED', `model ${m.name} has no sha256`);
      const file = await cache.ensure(m.sha256, (received, total) => models.progress.set(`${_app}/${m.name}`, { received, total }));
      cache.acquire(m.sha256);
      return file;
    },
    releaseModel: (sha) => cache.release(sha),
    retry: cfg.modelRetry,
    onRecovered: (app) => {
      supervisor.recovered(app, 'models');
      reportStatus();
    },
    // Rules that waited for the model start now (or, if it failed for good, fail as they would).
    onRetried: (app) => rulesRef?.modelsChanged(app),
    secret: (name) => siteSecret(cfg.dataDir, name),
  });
  const llm = new LlmService(models, registry, clock);
  const ruleLlm = new RuleLlmCalls(clock, (c) =>
    llm.complete({
      endpoint: c.endpoint,
      app: c.app,
      input: { kind: 'chat', messages: [{ role: 'user', content: c.prompt }] },
      maxTokens: c.maxTokens,
      opts: c.opts,
      client: c.client,
    }),
  );

  // 5. Apps: the last desired state stored here runs at once, cloud or no cloud.
  supervisor.register(models);
  // Industrial write-back: guarded by each app's write policy, every attempt in the write audit.
  quietOpcua((level, msg) => log[level]({ component: 'node-opcua' }, msg));
  const writeAudit = new WriteAudit(db, clock, registry);
  const writes = new WriteHost(writeAudit, clock, log, join(cfg.dataDir, 'pki', 'opcua'), (name) => readSiteSecret(cfg.dataDir, name));
  const rules = new RuleHost({
    router,
    dead,
    clock,
    log,
    modelState: (app, model) => models.stateOf(app, model),
    // llm('endpoint', …) arrives as model "llm:<endpoint>"; infer() as the model's name.
    infer: (app, model, args, rule) =>
      model.startsWith('llm:')
        ? ruleLlm.call(
            app,
            rule?.name ?? '?',
            { concurrency: rule?.options.llmConcurrency, tokensPerMinute: rule?.options.llmTokensPerMinute },
            model.slice(4),
            args,
          )
        : models.inferRow(app, model, args),
    sinkContext: (app, rule, allowedFields) => ({
      siteId,
      app,
      rule,
      outbox,
      audit,
      log,
      siteLog,
      clock,
      allowedFields,
      writes,
      publishLocal: (t, p) => devices.publish(t, p),
    }),
    durable: { journal, db, outbox, checkpointMs: cfg.checkpointIntervalMs, onCommitted: () => intake.wake() },
  });
  rulesRef = rules;
  supervisor.register(rules);
  // After the rules: a source's first record finds the rules that read its stream.
  const sources = new SourceHost({ router, dataDir: cfg.dataDir, clock, log, registry, ingest });
  supervisor.register(sources);
  registerEdgeMetrics(registry, { outbox, dead, rules });
  const desired = new DesiredStateHandler({ db, siteId, clock, log, supervisor, invalid: badDesired, onApplied: () => reportStatus() });
  await desired.resume();
  // Nothing is accepted before it can be handled: the device broker opens only now, with the
  // stored desired state applied (models loaded, rules running; a rule still reading what the
  // journal held takes new records after those, in order).
  journal.pruneCursors(rules.keys());
  await devices.start();
  if (devices instanceof DeviceBroker)
    guardRefusalCounter(
      'ew_edge_device_guard_refused_total',
      "Device MQTT connections and logins refused by the broker's guard, by reason",
      registry,
      () => (devices as DeviceBroker).guard,
    );

  // 6. Cloud link, outbox pump, heartbeats. Runtimes (those registered and whose package
  // resolves) and accelerators are probed once.
  const runtimes = runtimeRegistry.formats().filter((f) => f === 'builtin' || detectRuntimes().includes(f));
  const routed: RoutedInference = new RoutedInference({
    siteId,
    models,
    clock,
    log,
    publish: (t, p): Promise<void> => link.publish(t, p, 0),
  });
  const statusBody = createStatus({
    agentVersion: VERSION,
    bootId,
    startedAt,
    heartbeatIntervalS,
    dataDir: cfg.dataDir,
    clock,
    log,
    supervisor,
    runtimes,
    accelerators,
    accel,
    outbox,
    devices,
    rules,
    dead,
    sources,
    writes,
    models,
    routed,
  });
  const rpc = createRpc({ ring, dead, writeAudit, devices: deviceAdmin, log });
  const link = new CloudLink({
    creds,
    bootId,
    log,
    reconnectPeriodMs: cfg.reconnectPeriodMs,
    reconnectMaxMs: cfg.reconnectMaxMs,
    keepaliveS: cfg.cloudKeepaliveS,
    onDesired: desired.onDesired,
    onRpc: rpc,
    onFrame: routed.onFrame,
    onState: (s) => {
      pump.connectedChanged(s === 'connected');
      if (s === 'connected') link.sendStatus(statusBody());
    },
    onStoreAck: (ids) => pump.storeAcked(ids),
    storeAckAdvertised: kvGet(db, 'cloud.uplinkAck') === '1',
    onStoreAckMode: (on) => kvSet(db, 'cloud.uplinkAck', on ? '1' : '0'),
  });
  const pump = new OutboxPump(outbox, (topic, payload) => link.publish(topic, payload), {
    window: 256,
    onAcked: (n) => {
      sentCounter.inc(n);
      intake.wake();
    },
    storeAck: () => link.storeAcks,
    clock,
  });
  reportStatus = () => link.sendStatus(statusBody());
  link.start();
  // Closed minutes of the egress audit go up like any result.
  let stopAudit = clock.setTimer(60_000, function report() {
    audit.report(outbox, siteId);
    stopAudit = clock.setTimer(60_000, report);
  });
  let stopHeartbeat = clock.setTimer(heartbeatIntervalS * 1000, function beat() {
    link.sendStatus(statusBody());
    stopHeartbeat = clock.setTimer(heartbeatIntervalS * 1000, beat);
  });

  // 7. Local API.
  // Routed /v1 requests reach the local API in process; this per-boot token lets them past its key check.
  const internalToken = newSecret('ewl');
  const api = await createLocalApi({
    timeouts: cfg.httpTimeouts,
    internalToken,
    log,
    registry,
    httpErrors,
    db,
    outbox,
    siteId,
    statusBody,
    linkState: () => link.linkState,
    linkHealth: () => link.health(),
    intake,
    router,
    dead,
    audit,
    rules,
    models,
    supervisor,
    uplinkAllow: cfg.uplinkAllow ?? [],
    deviceAdmin,
    sources,
    writeAudit,
    llm,
    ingest,
    reserved: () => rules.reserved(),
  });
  routed.setStreams(injectStreams(api, internalToken));
  const address = await api.listen({ host: cfg.apiHost ?? '127.0.0.1', port: cfg.apiPort ?? 8081 });
  const apiUrl = address.replace('0.0.0.0', '127.0.0.1');
  log.info({ siteId, apiUrl, deviceUrl: devices.url }, 'edge ready');

  return {
    siteId,
    apiUrl,
    deviceUrl: devices.url,
    generated,
    outbox,
    supervisor,
    devices,
    linkState: () => link.linkState,
    async close() {
      stopHeartbeat();
      stopAudit();
      models.cancelRetries();
      routed.close();
      // Devices first: nothing more is acknowledged; what the rules made of the rest is committed.
      await devices.close();
      intake.close();
      rules.close();
      await sources.close();
      writeAudit.close();
      await api.close();
      await models.close();
      await link.stop();
      await desired.settled();
      pump.close();
      pump.flushAcks();
      db.close();
    },
  };
}
