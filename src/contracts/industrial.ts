import { z } from 'zod';

/**
 * The manifest fields of industrial sources and write-back sinks (OPC UA, Modbus TCP), and the
 * write policy that guards the sinks. Kept apart from manifest.ts so that the protocol details
 * live in one file; manifest.ts plugs them into streams, sinks and policy.
 */

const FieldName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'a field name: letters, digits, "_", starting with a letter or "_"');
const SecretName = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/,
    'a secret name: letters, digits, "_", "-", "." (a file of that name in the site\'s secrets folder)',
  );

/** `opc.tcp://host:port[/path]`. */
export const OpcuaEndpoint = z
  .string()
  .regex(/^opc\.tcp:\/\/[^\s/:]+(:\d{1,5})?(\/\S*)?$/, 'an OPC UA endpoint URL such as opc.tcp://plc-7:4840');
/** `tcp://host:port` (port 502 when absent). */
export const ModbusEndpoint = z
  .string()
  .regex(/^(modbus\+)?tcp:\/\/[^\s/:]+(:\d{1,5})?\/?$/, 'a Modbus TCP endpoint such as tcp://plc-7:502');
/** A node id in the OPC UA string form: `ns=2;s=Spindle.Speed`, `ns=1;i=1001`, `i=2258`. */
export const NodeId = z.string().regex(/^(ns=\d+;)?[isgb]=.+$/, 'an OPC UA node id such as ns=2;s=Machine.Spindle or ns=1;i=1001');

export const SECURITY_MODES = ['None', 'Sign', 'SignAndEncrypt'] as const;
export const SECURITY_POLICIES = ['None', 'Basic256Sha256', 'Aes128_Sha256_RsaOaep', 'Aes256_Sha256_RsaPss'] as const;

export const OpcuaSourceSpec = z
  .object({
    endpoint: OpcuaEndpoint,
    /** Default None; Sign or SignAndEncrypt need a policy other than None. */
    securityMode: z.enum(SECURITY_MODES).default('None'),
    /** Default None with mode None, Basic256Sha256 otherwise. */
    securityPolicy: z.enum(SECURITY_POLICIES).optional(),
    /** User name and the name of a site secret that holds the password; anonymous when absent. */
    user: z
      .object({ username: z.string().min(1).max(256), passwordSecret: SecretName })
      .strict()
      .optional(),
    /** Accept a server certificate the site's trust list does not hold (and trust it from then on). Default false. */
    trustOnFirstUse: z.boolean().default(false),
    /** subscription: monitored items, the server reports changes; poll: read every intervalMs. */
    mode: z.enum(['subscription', 'poll']).default('subscription'),
    /** Subscription: how often the server samples each node (ms). Default 250. */
    samplingIntervalMs: z.number().int().min(0).max(3_600_000).default(250),
    /** Subscription: how often the server sends what changed (ms). Default 500. */
    publishingIntervalMs: z.number().int().min(10).max(3_600_000).default(500),
    /** Poll: read interval (ms). Default 1000. */
    intervalMs: z.number().int().min(10).max(3_600_000).default(1000),
    /** field → node id, or { node, deadband } (absolute deadband on numeric values). */
    fields: z
      .record(FieldName, z.union([NodeId, z.object({ node: NodeId, deadband: z.number().nonnegative().optional() }).strict()]))
      .refine((f) => Object.keys(f).length > 0 && Object.keys(f).length <= 10_000, 'map 1 to 10,000 fields to node ids'),
  })
  .strict()
  .refine(
    (s) => (s.securityMode === 'None') === ((s.securityPolicy ?? (s.securityMode === 'None' ? 'None' : 'Basic256Sha256')) === 'None'),
    {
      message: 'securityMode None goes with securityPolicy None, and Sign / SignAndEncrypt need a policy such as Basic256Sha256',
      path: ['securityPolicy'],
    },
  );
export type OpcuaSourceSpec = z.infer<typeof OpcuaSourceSpec>;

export const MODBUS_TYPES = ['bool', 'int16', 'uint16', 'int32', 'uint32', 'float32', 'float64'] as const;
export type ModbusType = (typeof MODBUS_TYPES)[number];
export const ModbusTable = z.enum(['coil', 'discrete', 'holding', 'input']);
export type ModbusTable = z.infer<typeof ModbusTable>;
const Order = z.enum(['big', 'little']);

/** How a value sits in registers: type, byte order within a word, word order across words, scale and offset. */
const Encoding = {
  type: z.enum(MODBUS_TYPES).optional(),
  /** Order of the two bytes inside each 16-bit register. Default big (the Modbus standard). */
  byteOrder: Order.optional(),
  /** Order of the registers of a 32/64-bit value: big = most significant register first. Default big. */
  wordOrder: Order.optional(),
  /** field = raw × scale + offset (and raw = (value − offset) ÷ scale on write). Default 1 and 0. */
  scale: z
    .number()
    .finite()
    .refine((x) => x !== 0, 'a scale other than 0')
    .optional(),
  offset: z.number().finite().optional(),
};

export const ModbusField = z
  .object({
    table: ModbusTable,
    /** Zero-based protocol address (holding register 40001 in the 1-based convention is address 0). */
    address: z.number().int().min(0).max(65_535),
    ...Encoding,
  })
  .strict();
export type ModbusField = z.infer<typeof ModbusField>;

export const ModbusSourceSpec = z
  .object({
    endpoint: ModbusEndpoint,
    /** Unit (slave) id, 0–255. Default 1. */
    unit: z.number().int().min(0).max(255).default(1),
    /** Poll interval (ms). Default 1000. */
    intervalMs: z.number().int().min(10).max(3_600_000).default(1000),
    /** One request's timeout (ms). Default 1000. */
    timeoutMs: z.number().int().min(10).max(60_000).default(1000),
    /** Retries of a failed read within one poll. Default 1. */
    retries: z.number().int().min(0).max(10).default(1),
    /** Defaults for every field. */
    byteOrder: Order.default('big'),
    wordOrder: Order.default('big'),
    fields: z
      .record(FieldName, ModbusField)
      .refine((f) => Object.keys(f).length > 0 && Object.keys(f).length <= 10_000, 'map 1 to 10,000 fields to registers'),
  })
  .strict();
export type ModbusSourceSpec = z.infer<typeof ModbusSourceSpec>;

export const SourceSpec = z.union([z.object({ opcua: OpcuaSourceSpec }).strict(), z.object({ modbus: ModbusSourceSpec }).strict()]);
export type SourceSpec = z.infer<typeof SourceSpec>;

/** A SQL expression over the rule's result columns (`least(setpoint, 1200) * 0.9`), or a constant. */
const ValueExpr = z.union([z.string().min(1).max(2000), z.number().finite(), z.boolean()]);

export const OpcuaWriteSink = z
  .object({
    opcua: z
      .object({
        endpoint: OpcuaEndpoint,
        node: NodeId,
        value: ValueExpr,
        securityMode: z.enum(SECURITY_MODES).default('None'),
        securityPolicy: z.enum(SECURITY_POLICIES).optional(),
        user: z
          .object({ username: z.string().min(1).max(256), passwordSecret: SecretName })
          .strict()
          .optional(),
        trustOnFirstUse: z.boolean().default(false),
        /** Log and audit without writing (also set for the whole app by policy.writes.dryRun). */
        dryRun: z.boolean().default(false),
      })
      .strict(),
  })
  .strict();

export const ModbusWriteSink = z
  .object({
    modbus: z
      .object({
        endpoint: ModbusEndpoint,
        unit: z.number().int().min(0).max(255).default(1),
        /** A holding register address (zero-based), or a coil address: exactly one. */
        register: z.number().int().min(0).max(65_535).optional(),
        coil: z.number().int().min(0).max(65_535).optional(),
        value: ValueExpr,
        ...Encoding,
        timeoutMs: z.number().int().min(10).max(60_000).default(1000),
        dryRun: z.boolean().default(false),
      })
      .strict()
      .refine((s) => (s.register === undefined) !== (s.coil === undefined), {
        message: 'name exactly one of register or coil',
        path: ['register'],
      })
      .refine((s) => s.coil === undefined || s.type === undefined || s.type === 'bool', { message: 'a coil holds a bool', path: ['type'] }),
  })
  .strict();

/** One writable target the app's policy grants, with its allowed range and maximum rate. */
export const WriteGrant = z
  .union([
    z
      .object({
        opcua: OpcuaEndpoint,
        node: NodeId,
        min: z.number().finite().optional(),
        max: z.number().finite().optional(),
        /** For booleans and enumerations: the only values allowed. */
        values: z
          .array(z.union([z.number(), z.boolean()]))
          .min(1)
          .max(64)
          .optional(),
        maxPerMinute: z.number().int().min(1).max(6000),
      })
      .strict(),
    z
      .object({
        modbus: ModbusEndpoint,
        unit: z.number().int().min(0).max(255).default(1),
        register: z.number().int().min(0).max(65_535).optional(),
        coil: z.number().int().min(0).max(65_535).optional(),
        min: z.number().finite().optional(),
        max: z.number().finite().optional(),
        values: z
          .array(z.union([z.number(), z.boolean()]))
          .min(1)
          .max(64)
          .optional(),
        maxPerMinute: z.number().int().min(1).max(6000),
      })
      .strict()
      .refine((s) => (s.register === undefined) !== (s.coil === undefined), {
        message: 'name exactly one of register or coil',
        path: ['register'],
      }),
  ])
  .refine((g) => g.min === undefined || g.max === undefined || g.min <= g.max, { message: 'min must not be above max', path: ['min'] });
export type WriteGrant = z.infer<typeof WriteGrant>;

export const WritePolicy = z
  .object({
    /** Every write of the app is logged and audited, and none reaches a machine. */
    dryRun: z.boolean().default(false),
    allow: z.array(WriteGrant).default([]),
  })
  .strict();
export type WritePolicy = z.infer<typeof WritePolicy>;
