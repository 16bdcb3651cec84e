import { z } from 'zod';
import { HEARTBEAT_INTERVAL_S } from '../contracts/messages.ts';
import { EgressGrant } from '../contracts/manifest.ts';
import { defineOptions, parseOptions, resolveOptions, type ValueSource } from '../lib/options.ts';
import type { MqttLimits } from '../lib/mqtt-guard.ts';

/**
 * What an operator configures on an agent, in one place: each field's default and description
 * here are what `edgeweave edge --help`, a `--config` YAML file, the EW_EDGE_* environment
 * variables and docs/operators.md all say (a test checks the docs against this table).
 * Precedence: flag > environment > file > default. The join token is not here: it comes from
 * EW_JOIN_TOKEN or --token-file only (src/cli/main.ts), never from a flag or a file of options.
 */
const port = () =>
  z
    .number({ error: 'a port number 0-65535 (0 picks a free one)' })
    .int()
    .min(0, 'a port number 0-65535 (0 picks a free one)')
    .max(65535, 'a port number 0-65535 (0 picks a free one)');
const positive = () => z.number({ error: 'a positive number' }).positive('a positive number');
const whole = () => z.number({ error: 'a positive whole number' }).int('a positive whole number').positive('a positive whole number');
const text = z.string().min(1, 'must not be empty');

/** `10G`, `500M`, `1.5T`, or bytes; what is not a size stays text for the schema to refuse by name. */
export function parseSize(v: string): number | string {
  const m = /^(\d+(?:\.\d+)?)([KMGT]?)B?$/i.exec(v.trim());
  if (!m) return v;
  return Math.round(Number(m[1]) * 1024 ** ' KMGT'.indexOf((m[2] || ' ').toUpperCase()));
}

export const edgeOptions = defineOptions({
  command: 'edge',
  envPrefix: 'EW_EDGE_',
  schema: z.strictObject({
    dataDir: text.describe('site state directory (SQLite, credentials, model cache)'),
    cloudUrl: z.url().optional().describe('cloud HTTP URL (first start only)'),
    caFile: text.optional().describe("first start only: a CA certificate (PEM) to trust for the cloud's https/mqtts"),
    name: text.optional().describe('site name shown in the console'),
    apiHost: text.default('127.0.0.1').describe('local API bind address'),
    apiPort: port().default(8081).describe('local API port (0 picks a free one)'),
    deviceHost: text.default('0.0.0.0').describe('device MQTT broker bind address'),
    devicePort: port().default(1883).describe('device MQTT broker port (0 picks a free one)'),
    deviceTlsCertFile: text.optional().describe('serve devices over mqtts with this certificate (PEM)'),
    deviceTlsKeyFile: text.optional().describe('its private key (PEM)'),
    deviceBroker: z.url().optional().describe('read device data from an existing broker (mqtt://host:port) instead of the embedded one'),
    deviceBrokerUsername: text.optional().describe('username on that broker'),
    deviceBrokerPassword: text.optional().describe('password on that broker'),
    deviceBrokerMqttVersion: z
      .union([z.literal(4), z.literal(5)], { error: 'MQTT version 4 or 5' })
      .default(4)
      .describe("MQTT version towards that broker: 5 passes MQTT 5 devices' user properties and message expiry to streams"),
    apiKeyFile: text.optional().describe('file with the local API key (else one is generated and shown once)'),
    devicePasswordFile: text
      .optional()
      .describe('opt in to a shared device password (username "device", every topic) and take it from this file'),
    deviceSharedPassword: z
      .boolean()
      .default(false)
      .describe(
        'opt in to a shared device password, generated and shown once (off: devices get their own credentials with `edgeweave devices add`)',
      ),
    modelCacheBytes: whole()
      .default(10 * 1024 ** 3)
      .describe('disk budget of the model cache, e.g. 10G, 500M'),
    outboxMax: whole().default(100_000).describe('most uplink messages kept while the cloud is unreachable'),
    outboxOverflow: z
      .enum(['drop-oldest', 'reject-new'])
      .default('drop-oldest')
      .describe('when the outbox is full: drop-oldest or reject-new'),
    heartbeatIntervalS: z
      .number()
      .min(HEARTBEAT_INTERVAL_S.min, `must be ${HEARTBEAT_INTERVAL_S.min} to ${HEARTBEAT_INTERVAL_S.max} seconds`)
      .max(HEARTBEAT_INTERVAL_S.max, `must be ${HEARTBEAT_INTERVAL_S.min} to ${HEARTBEAT_INTERVAL_S.max} seconds`)
      .optional()
      .describe(
        `override the heartbeat interval the cloud gave at enrollment (s, ${HEARTBEAT_INTERVAL_S.min}-${HEARTBEAT_INTERVAL_S.max})`,
      ),
    cloudKeepaliveS: positive()
      .default(10)
      .describe('MQTT keepalive to the cloud (s): a silent partition is noticed within about 1.5x this'),
    checkpointIntervalMs: positive()
      .default(1000)
      .describe('how often a windowed rule checkpoints its state (ms): a crash replays at most this much'),
    journalMax: whole()
      .default(1_000_000)
      .describe('most acknowledged device records waiting for their rules; past it device acknowledgements are withheld'),
    // A spec string is parsed at start by parseMqttLimits, which names the flag; an object comes from code.
    deviceLimits: z
      .union([z.string(), z.record(z.string(), z.number())])
      .default('')
      .describe('device broker bounds, e.g. maxPacketBytes=262144 (see docs/operators.md)'),
    httpIdleTimeoutS: positive().default(120).describe('close a local API connection on which nothing moves for this long (s)'),
    uplinkAllow: z
      .array(EgressGrant)
      .default([])
      .describe(
        "result streams local programs may send up via POST /api/v1/uplink/{stream} besides those the apps' egress policies grant (comma-separated)",
      ),
  }),
  options: {
    dataDir: { flag: '--data-dir', arg: '<dir>', defaultLabel: 'required' },
    cloudUrl: { flag: '--cloud', arg: '<url>' },
    caFile: { flag: '--ca', arg: '<file>' },
    name: { flag: '--name', arg: '<name>', defaultLabel: 'the site id' },
    apiHost: { flag: '--api-host', arg: '<host>' },
    apiPort: { flag: '--api-port', arg: '<port>' },
    deviceHost: { flag: '--device-host', arg: '<host>' },
    devicePort: { flag: '--device-port', arg: '<port>' },
    deviceTlsCertFile: { flag: '--device-tls-cert', arg: '<file>', defaultLabel: 'plain MQTT' },
    deviceTlsKeyFile: { flag: '--device-tls-key', arg: '<file>', defaultLabel: 'plain MQTT' },
    deviceBroker: { flag: '--device-broker', arg: '<url>', defaultLabel: 'embedded' },
    // Named before these variables were per command; kept so existing sites keep working.
    deviceBrokerUsername: { flag: '--device-broker-username', arg: '<name>', env: 'EW_DEVICE_BROKER_USERNAME' },
    deviceBrokerPassword: { flag: '--device-broker-password', arg: '<secret>', env: 'EW_DEVICE_BROKER_PASSWORD', secret: true },
    deviceBrokerMqttVersion: {
      flag: '--device-broker-mqtt-version',
      arg: '<version>',
      fromText: (v) => (/^\d+$/.test(v.trim()) ? Number(v) : v),
    },
    apiKeyFile: { flag: '--api-key-file', arg: '<file>', defaultLabel: 'generated' },
    devicePasswordFile: { flag: '--device-password-file', arg: '<file>', defaultLabel: 'off' },
    deviceSharedPassword: { flag: '--device-shared-password' },
    modelCacheBytes: { flag: '--model-cache-max', arg: '<size>', fromText: parseSize, defaultLabel: '10G' },
    outboxMax: { flag: '--outbox-max', arg: '<n>' },
    outboxOverflow: { flag: '--outbox-overflow', arg: '<policy>' },
    heartbeatIntervalS: { flag: '--heartbeat-interval', arg: '<s>', defaultLabel: 'from the cloud' },
    cloudKeepaliveS: { flag: '--cloud-keepalive', arg: '<s>' },
    checkpointIntervalMs: { flag: '--checkpoint-interval', arg: '<ms>' },
    journalMax: { flag: '--journal-max', arg: '<n>' },
    deviceLimits: { flag: '--device-mqtt-limits', arg: '<spec>', defaultLabel: 'see Limits' },
    httpIdleTimeoutS: { flag: '--http-idle-timeout', arg: '<s>' },
    uplinkAllow: {
      flag: '--uplink-allow',
      arg: '<streams>',
      fromText: (v) =>
        v
          .split(',')
          .map((x) => x.trim())
          .filter(Boolean),
      defaultLabel: 'none',
    },
  },
});

/** The operator's options as code passes them (only dataDir is required: the defaults fill in). */
export type EdgeOptionsInput = z.input<typeof edgeOptions.schema>;
/** The operator's options after parsing: defaults filled in, the limits spec still to parse. */
export type EdgeOptions = z.output<typeof edgeOptions.schema>;

/** Checks the agent's options (a bad value: CONFIG_INVALID naming the flag) and fills in defaults. */
export function parseEdgeOptions<I extends EdgeOptionsInput>(input: I, sources?: ReadonlyMap<string, ValueSource>): I & EdgeOptions {
  return parseOptions(edgeOptions, input, sources);
}

/** The agent's options from the command line's flags, the environment and a config file. */
export function resolveEdgeOptions(layers: { flags?: Record<string, unknown>; env?: NodeJS.ProcessEnv; file?: string }): EdgeOptions {
  return resolveOptions(edgeOptions, layers);
}

/** The device broker's limits spec, parsed (it names its flag when it refuses). */
export async function edgeLimits(o: Pick<EdgeOptions, 'deviceLimits'>): Promise<Partial<MqttLimits>> {
  // Loaded here, not at the top: the CLI reads this table to build its options.
  const { parseMqttLimits } = await import('../lib/mqtt-guard.ts');
  // An object (from code or a config file) is checked by the same parser as the flag's spec.
  return parseMqttLimits(
    typeof o.deviceLimits === 'string'
      ? o.deviceLimits
      : Object.entries(o.deviceLimits)
          .map(([k, v]) => `${k}=${v}`)
          .join(','),
    '--device-mqtt-limits',
  );
}
