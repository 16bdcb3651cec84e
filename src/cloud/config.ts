import { z } from 'zod';
import { HEARTBEAT_INTERVAL_S } from '../contracts/messages.ts';
import { defineOptions, parseOptions, resolveOptions, type ValueSource } from '../lib/options.ts';
import type { RateLimits } from './api/server.ts';
import type { MqttLimits } from '../lib/mqtt-guard.ts';

/**
 * What an operator configures on the cloud, in one place: each field's default and description
 * here are what `edgeweave cloud --help`, a `--config` YAML file, the EW_CLOUD_* environment
 * variables and docs/operators.md all say (a test checks the docs against this table).
 * Precedence: flag > environment > file > default.
 */
const port = () =>
  z
    .number({ error: 'a port number 0-65535 (0 picks a free one)' })
    .int()
    .min(0, 'a port number 0-65535 (0 picks a free one)')
    .max(65535, 'a port number 0-65535 (0 picks a free one)');
const positive = () => z.number({ error: 'a positive number' }).positive('a positive number');
const text = z.string().min(1, 'must not be empty');
// Spec strings (`key=100/20,…`, `maxPacketBytes=…`) are parsed at start by their owners
// (parseRateLimits, parseMqttLimits), which name the flag; objects and `false` come from code.
const bucket = z.strictObject({ burst: z.number().positive(), perSecond: z.number().positive() });
const rateLimitsField = z.union([
  z.string(),
  z.literal(false),
  z.strictObject({ key: bucket, address: bucket, anonymous: bucket, maxTracked: z.number().int().positive() }).partial(),
]);
const mqttLimitsField = z.union([z.string(), z.record(z.string(), z.number())]);

export const cloudOptions = defineOptions({
  command: 'cloud',
  envPrefix: 'EW_CLOUD_',
  schema: z.strictObject({
    dataDir: text.default('./edgeweave-cloud').describe('state directory (SQLite, artifacts)'),
    httpHost: text.default('0.0.0.0').describe('HTTP bind address'),
    httpPort: port().default(8080).describe('HTTP port (0 picks a free one)'),
    publicUrl: z.url().optional().describe('HTTP URL that sites and users reach, printed in site install commands'),
    db: text.optional().describe('state store: sqlite (under --data-dir) or postgres://user@host:5432/db'),
    mqttHost: text.default('0.0.0.0').describe('embedded MQTT hub bind address'),
    mqttPort: port().default(1883).describe('embedded MQTT hub port'),
    mqttPublicUrl: z.url().optional().describe('MQTT URL handed to agents at enrollment'),
    broker: z.url().optional().describe('use an external MQTT broker instead of the embedded hub (mqtt://host:port)'),
    brokerUsername: text.optional().describe("the cloud's username on the external broker"),
    brokerPassword: text.optional().describe("the cloud's password on the external broker"),
    brokerMqttVersion: z
      .number()
      .int()
      .min(4, 'MQTT version 4 or 5')
      .max(5, 'MQTT version 4 or 5')
      .default(5)
      .describe("MQTT version towards the external broker, and of the agents it enrolls: 4 for NATS's MQTT server (3.1.1 only)"),
    brokerShareUplink: z
      .boolean()
      .default(true)
      .describe(
        'read uplink through a shared subscription (--no-broker-share-uplink: every replica reads all uplink, for brokers without shared subscriptions such as NATS; the database keeps each result once)',
      ),
    // Names share groups and client ids: no MQTT wildcard or separator can get in.
    installationId: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,39}$/, '1-40 lower-case letters, digits and dashes')
      .default('cloud')
      .describe('names this cloud on a shared broker: share group edgeweave-<id>, client ids ew-<id>-<replica>'),
    topicPrefix: z
      .string()
      .regex(
        /^[A-Za-z0-9_-]{1,64}(\/[A-Za-z0-9_-]{1,64}){0,3}$/,
        'up to 4 levels of letters, digits, dashes and underscores, such as prod or tenant-a/prod',
      )
      .optional()
      .describe('external broker: put <prefix>/ before every topic, so installations sharing a broker live in separate topic trees'),
    replicaId: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, '1-64 letters, digits, dashes and underscores')
      .optional()
      .describe("this replica's name (broker client id, rollout lease)"),
    artifactsDir: text.optional().describe('where model files live; several replicas: one directory they all mount'),
    heartbeatIntervalS: z
      .number()
      .min(HEARTBEAT_INTERVAL_S.min, `must be ${HEARTBEAT_INTERVAL_S.min} to ${HEARTBEAT_INTERVAL_S.max} seconds`)
      .max(HEARTBEAT_INTERVAL_S.max, `must be ${HEARTBEAT_INTERVAL_S.min} to ${HEARTBEAT_INTERVAL_S.max} seconds`)
      .default(10)
      .describe(`seconds between site heartbeats (${HEARTBEAT_INTERVAL_S.min}-${HEARTBEAT_INTERVAL_S.max}), told to agents at enrollment`),
    missedHeartbeats: z
      .number()
      .int('a whole number')
      .min(1, 'must be at least 1')
      .default(3)
      .describe('heartbeats a site may miss before it is marked offline'),
    adminKeyFile: text
      .optional()
      .describe('first start only: use the key in this file as the admin key (else one is generated and printed once)'),
    tlsCertFile: text.optional().describe('serve https and mqtts with this certificate (PEM)'),
    tlsKeyFile: text.optional().describe("the certificate's private key (PEM)"),
    httpRequestTimeoutS: positive().default(60).describe('seconds within which a whole HTTP request must arrive'),
    httpIdleTimeoutS: positive().default(120).describe('seconds after which an HTTP connection on which nothing moves is closed'),
    rateLimits: rateLimitsField
      .default('key=100/20,address=300/50,anonymous=20/1')
      .describe('API rate limits: key=100/20,address=300/50,anonymous=20/1 (burst/per second), or off'),
    mqttLimits: mqttLimitsField
      .default('')
      .describe('embedded hub bounds, e.g. maxPacketBytes=1048576,connectTimeoutMs=10000 (see docs/operators.md)'),
    consoleDir: z
      .union([text, z.literal(false)])
      .optional()
      .describe('serve this web console build at /'),
    console: z.boolean().default(true).describe('serve the web console at / (--no-console: the API only)'),
    region: text.default('cloud').describe("the cloud's own region, for data residency of the cloud-side fallback"),
    inferRate: positive().default(100).describe('routed inference requests per second per API key'),
    inferBurst: positive().default(200).describe('routed inference burst per API key'),
    inferConcurrency: positive().default(64).describe('routed inference requests in flight per API key'),
    inferTimeoutMs: positive().default(30_000).describe('default deadline of a routed request (ms)'),
    cloudRuntime: z.boolean().default(true).describe('serve fallbacks and cascades in the cloud (--no-cloud-runtime: route to sites only)'),
    resultsRetentionDays: z
      .number()
      .int('whole days')
      .min(0, 'whole days, 0 (keep) to 36500')
      .max(36_500, 'whole days, 0 (keep) to 36500')
      .default(0)
      .describe('keep results of streams no retention policy names this many days (0: keep)'),
  }),
  options: {
    dataDir: { flag: '--data-dir', arg: '<dir>' },
    httpHost: { flag: '--host', arg: '<host>' },
    httpPort: { flag: '--port', arg: '<port>' },
    publicUrl: { flag: '--public-url', arg: '<url>', defaultLabel: 'the bound address' },
    // A URL with a password in it (postgres://user:secret@host/db) is a secret.
    db: {
      flag: '--db',
      arg: '<url>',
      defaultLabel: 'sqlite',
      secret: (v) => typeof v !== 'string' || /^[a-z][a-z0-9+.-]*:\/\/[^/@]*:[^/@]*@/i.test(v),
    },
    mqttHost: { flag: '--mqtt-host', arg: '<host>' },
    mqttPort: { flag: '--mqtt-port', arg: '<port>' },
    mqttPublicUrl: { flag: '--mqtt-public-url', arg: '<url>', defaultLabel: 'mqtt://{host}:{port}' },
    broker: { flag: '--broker', arg: '<url>', defaultLabel: 'the embedded hub' },
    // Named before these variables were per command; kept so existing deployments keep working.
    brokerUsername: { flag: '--broker-username', arg: '<name>', env: 'EW_BROKER_USERNAME' },
    brokerPassword: { flag: '--broker-password', arg: '<secret>', env: 'EW_BROKER_PASSWORD', secret: true },
    brokerMqttVersion: { flag: '--broker-mqtt-version', arg: '<4|5>' },
    brokerShareUplink: { flag: '--no-broker-share-uplink', defaultLabel: 'shared' },
    installationId: { flag: '--installation-id', arg: '<id>' },
    topicPrefix: { flag: '--topic-prefix', arg: '<prefix>', defaultLabel: 'none (ew/…)' },
    replicaId: { flag: '--replica-id', arg: '<id>', defaultLabel: 'generated into <data-dir>/replica-id' },
    artifactsDir: { flag: '--artifacts-dir', arg: '<dir>', defaultLabel: '<data-dir>/artifacts' },
    heartbeatIntervalS: { flag: '--heartbeat-interval', arg: '<s>' },
    missedHeartbeats: { flag: '--missed-heartbeats', arg: '<n>' },
    adminKeyFile: { flag: '--admin-key-file', arg: '<file>', defaultLabel: 'generated' },
    tlsCertFile: { flag: '--tls-cert', arg: '<file>', defaultLabel: 'plain HTTP and MQTT' },
    tlsKeyFile: { flag: '--tls-key', arg: '<file>', defaultLabel: 'plain HTTP and MQTT' },
    httpRequestTimeoutS: { flag: '--http-request-timeout', arg: '<s>' },
    httpIdleTimeoutS: { flag: '--http-idle-timeout', arg: '<s>' },
    rateLimits: { flag: '--rate-limit', arg: '<spec>' },
    mqttLimits: { flag: '--mqtt-limits', arg: '<spec>', defaultLabel: 'see Limits' },
    consoleDir: { flag: '--console-dir', arg: '<dir>', defaultLabel: 'console/dist of this install' },
    console: { flag: '--no-console', defaultLabel: 'served' },
    region: { flag: '--region', arg: '<region>' },
    inferRate: { flag: '--infer-rate', arg: '<n>' },
    inferBurst: { flag: '--infer-burst', arg: '<n>' },
    inferConcurrency: { flag: '--infer-concurrency', arg: '<n>' },
    inferTimeoutMs: { flag: '--infer-timeout', arg: '<ms>' },
    cloudRuntime: { flag: '--no-cloud-runtime', defaultLabel: 'on' },
    resultsRetentionDays: { flag: '--results-retention-days', arg: '<days>' },
  },
});

/** The operator's options as code passes them (every field optional: the defaults fill in). */
export type CloudOptionsInput = z.input<typeof cloudOptions.schema>;
/** The operator's options after parsing: defaults filled in, spec strings still to parse. */
export type CloudOptions = z.output<typeof cloudOptions.schema>;

/** Checks the cloud's options (a bad value: CONFIG_INVALID naming the flag) and fills in defaults. */
export function parseCloudOptions<I extends CloudOptionsInput>(input: I, sources?: ReadonlyMap<string, ValueSource>): I & CloudOptions {
  return parseOptions(cloudOptions, input, sources);
}

/** The cloud's options from the command line's flags, the environment and a config file. */
export function resolveCloudOptions(layers: { flags?: Record<string, unknown>; env?: NodeJS.ProcessEnv; file?: string }): CloudOptions {
  return resolveOptions(cloudOptions, layers);
}

/** The limits spec strings of the options, parsed (they name their flag when they refuse). */
export async function cloudLimits(
  o: Pick<CloudOptions, 'rateLimits' | 'mqttLimits'>,
): Promise<{ rateLimits: Partial<RateLimits> | false; mqttLimits: Partial<MqttLimits> }> {
  // Loaded here, not at the top: the CLI reads this table to build its options and should not load the server for it.
  const [{ parseRateLimits }, { parseMqttLimits }] = await Promise.all([import('./api/server.ts'), import('../lib/mqtt-guard.ts')]);
  return {
    rateLimits: typeof o.rateLimits === 'string' ? parseRateLimits(o.rateLimits) : o.rateLimits,
    // An object (from code or a config file) is checked by the same parser as the flag's spec.
    mqttLimits: parseMqttLimits(
      typeof o.mqttLimits === 'string'
        ? o.mqttLimits
        : Object.entries(o.mqttLimits)
            .map(([k, v]) => `${k}=${v}`)
            .join(','),
    ),
  };
}
