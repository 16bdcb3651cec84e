import { z } from 'zod';
import { EwError, formatPath } from './errors.ts';
import type { Datatype } from '../inference/tensor.ts';

/**
 * Routed inference on the cloud–site MQTT link (`ew/{site}/rpc/req/{id}` → `ew/{site}/rpc/res/{id}`).
 * Tensors travel as raw little-endian bytes after a small JSON header instead of base64 or JSON
 * number arrays: a 1 MB FP32 tensor is 1 MB on the wire, and neither side parses numbers.
 *
 *   frame = "EWF1" | u32 BE header length | header (JSON, UTF-8) | body (tensor bytes, in header order)
 *
 * BYTES tensors are, as in Triton's binary extension, each element as a u32 LE length and its bytes.
 * JSON envelopes never start with "E", so a receiver tells the two apart by the first bytes.
 * Every header is checked against the schemas below, and every tensor's byte length against its
 * shape and datatype: a site that answers garbage gets SITE_ANSWER_INVALID, never a crash.
 */
export const FRAME_MAGIC = Buffer.from('EWF1');
export const WIRE_VERSION = 1;
/** A frame larger than this is refused on either side (the hub's packet limit is above it). */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

const DT = z.enum(['BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES']);
const TensorHead = z.object({
  name: z.string().min(1).max(256),
  datatype: DT,
  shape: z.array(z.number().int().nonnegative()).max(16),
  /** Bytes of this tensor in the body. */
  bytes: z.number().int().nonnegative(),
});
export type TensorHead = z.infer<typeof TensorHead>;

const id = z.string().min(1).max(128);
export const InferFrame = z.object({
  v: z.literal(WIRE_VERSION),
  type: z.literal('infer'),
  id,
  /** The endpoint, or `{app}/{model}` for a model that is not an endpoint (a cascade's edge stage). */
  endpoint: z.string().min(1).max(256),
  version: z.string().max(64).optional(),
  /** Time the cloud still waits for the answer; the site gives up on work it cannot finish in it. */
  timeoutMs: z.number().int().positive().max(3_600_000),
  requestId: z.string().max(256).optional(),
  inputs: z.array(TensorHead).min(1).max(256),
  outputs: z.array(z.string().max(256)).max(256).optional(),
  /** The largest answer frame the cloud's link takes (its broker's packet limit); a bigger answer is refused by the site with PAYLOAD_TOO_LARGE instead of being cut off. */
  maxAnswerBytes: z.number().int().positive().optional(),
});
export const MetadataFrame = z.object({
  v: z.literal(WIRE_VERSION),
  type: z.literal('metadata'),
  id,
  endpoint: z.string().min(1).max(256),
  version: z.string().max(64).optional(),
  timeoutMs: z.number().int().positive().max(3_600_000),
  maxAnswerBytes: z.number().int().positive().optional(),
});
export const CancelFrame = z.object({ v: z.literal(WIRE_VERSION), type: z.literal('cancel'), id });
/** Flow control of a token stream: the cloud lets the site send `n` more chunks. */
export const CreditFrame = z.object({
  v: z.literal(WIRE_VERSION),
  type: z.literal('credit'),
  id,
  n: z.number().int().positive().max(1024),
});
/** A streamed request (OpenAI chat completions): the body is the request JSON as the site's /v1 takes it. */
export const StreamFrame = z.object({
  v: z.literal(WIRE_VERSION),
  type: z.literal('stream'),
  id,
  path: z.string().regex(/^\/v1\/[a-z/]+$/),
  timeoutMs: z.number().int().positive().max(3_600_000),
  /** Chunks the site may send before waiting for credit. */
  window: z.number().int().positive().max(1024),
  maxAnswerBytes: z.number().int().positive().optional(),
});
export const CloudToSite = z.discriminatedUnion('type', [InferFrame, MetadataFrame, CancelFrame, CreditFrame, StreamFrame]);
export type CloudToSite = z.infer<typeof CloudToSite>;

const Load = z.object({ inFlight: z.number().int().nonnegative(), queued: z.number().int().nonnegative() });
export const ResultFrame = z.object({
  v: z.literal(WIRE_VERSION),
  type: z.literal('result'),
  id,
  model_name: z.string().max(256),
  model_version: z.string().max(64),
  outputs: z.array(TensorHead).max(256),
  /** The site's own time on it (ms), so the cloud can tell transit from compute. */
  siteMs: z.number().nonnegative(),
  load: Load.optional(),
});
export const MetadataResultFrame = z.object({
  v: z.literal(WIRE_VERSION),
  type: z.literal('metadata-result'),
  id,
  metadata: z.object({
    name: z.string(),
    versions: z.array(z.string()),
    platform: z.string(),
    inputs: z.array(z.object({ name: z.string(), datatype: DT, shape: z.array(z.number().int()) })),
    outputs: z.array(z.object({ name: z.string(), datatype: DT, shape: z.array(z.number().int()) })),
  }),
});
export const ErrorFrame = z.object({
  v: z.literal(WIRE_VERSION),
  type: z.literal('error'),
  id,
  code: z.string().max(64),
  message: z.string().max(4000),
  path: z.string().max(256).optional(),
  status: z.number().int().optional(),
});
/** One piece of a stream: `seq` from 0; the body is the piece (an SSE event's data, UTF-8). */
export const ChunkFrame = z.object({ v: z.literal(WIRE_VERSION), type: z.literal('chunk'), id, seq: z.number().int().nonnegative() });
/** The end of a stream (after the last chunk, `seq` = chunks sent), or the whole answer of a non-streamed one. */
export const EndFrame = z.object({
  v: z.literal(WIRE_VERSION),
  type: z.literal('end'),
  id,
  seq: z.number().int().nonnegative(),
  status: z.number().int(),
});
export const SiteToCloud = z.discriminatedUnion('type', [ResultFrame, MetadataResultFrame, ErrorFrame, ChunkFrame, EndFrame]);
export type SiteToCloud = z.infer<typeof SiteToCloud>;

export interface Frame<H> {
  head: H;
  body: Buffer;
}

export function isFrame(payload: Buffer): boolean {
  return payload.length >= 8 && payload.subarray(0, 4).equals(FRAME_MAGIC);
}

export function encodeFrame(head: object, body: Buffer | readonly Buffer[] = []): Buffer {
  const h = Buffer.from(JSON.stringify(head), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32BE(h.length);
  const parts = Buffer.isBuffer(body) ? [body] : [...body];
  return Buffer.concat([FRAME_MAGIC, len, h, ...parts]);
}

/** Decodes and checks a frame; MQTT_PAYLOAD_INVALID with the field path when it is not one. */
export function decodeFrame<T extends z.ZodType>(schema: T, payload: Buffer, where: string): Frame<z.infer<T>> {
  if (!isFrame(payload)) throw new EwError('MQTT_PAYLOAD_INVALID', `${where}: not an inference frame (no EWF1 magic)`);
  if (payload.length > MAX_FRAME_BYTES)
    throw new EwError('MQTT_PAYLOAD_INVALID', `${where}: frame of ${payload.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const n = payload.readUInt32BE(4);
  if (8 + n > payload.length)
    throw new EwError('MQTT_PAYLOAD_INVALID', `${where}: header length ${n} runs past the frame (${payload.length} bytes)`);
  let json: unknown;
  try {
    json = JSON.parse(payload.subarray(8, 8 + n).toString('utf8'));
  } catch (e) {
    throw new EwError('MQTT_PAYLOAD_INVALID', `${where}: frame header is not JSON: ${(e as Error).message}`);
  }
  const r = schema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const path = formatPath(issue.path);
    throw new EwError(
      'MQTT_PAYLOAD_INVALID',
      `${where}: frame header does not match the wire contract at ${path || '(root)'}: ${issue.message}`,
      { path },
    );
  }
  return { head: r.data, body: payload.subarray(8 + n) };
}

const WIDTH: Record<Exclude<Datatype, 'BYTES' | 'BOOL'>, number> = {
  UINT8: 1,
  INT8: 1,
  UINT16: 2,
  INT16: 2,
  FP16: 2,
  UINT32: 4,
  INT32: 4,
  FP32: 4,
  UINT64: 8,
  INT64: 8,
  FP64: 8,
};

export interface WireTensor {
  name: string;
  datatype: Datatype;
  shape: number[];
  data: unknown[];
}

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** OIP JSON tensors → heads and bytes (little-endian). Throws INFER_INPUT_INVALID naming the tensor. */
export function packTensors(ts: readonly WireTensor[], what = 'inputs'): { heads: TensorHead[]; body: Buffer[] } {
  const heads: TensorHead[] = [];
  const body: Buffer[] = [];
  ts.forEach((t, i) => {
    const flat = (t.data as unknown[]).flat(Infinity as 1) as unknown[];
    if (flat.length !== count(t.shape))
      throw new EwError(
        'INFER_INPUT_INVALID',
        `${t.name} has ${flat.length} values but shape [${t.shape.join(', ')}] needs ${count(t.shape)}`,
        { path: `${what}[${i}].data` },
      );
    let buf: Buffer;
    if (t.datatype === 'BYTES') {
      const parts = flat.map((v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v), 'utf8'));
      buf = Buffer.alloc(parts.reduce((a, p) => a + 4 + p.length, 0));
      let o = 0;
      for (const p of parts) {
        buf.writeUInt32LE(p.length, o);
        p.copy(buf, o + 4);
        o += 4 + p.length;
      }
    } else if (t.datatype === 'BOOL') {
      buf = Buffer.from(flat.map((v) => (v ? 1 : 0)));
    } else if (t.datatype === 'FP16') {
      throw new EwError('INFER_INPUT_INVALID', `${t.name}: FP16 over JSON is not supported; send FP32`, { path: `${what}[${i}].datatype` });
    } else {
      if (flat.some((v) => typeof v !== 'number' || !Number.isFinite(v)))
        throw new EwError('INFER_INPUT_INVALID', `${t.name} must hold finite numbers`, { path: `${what}[${i}].data` });
      const Ctor = {
        UINT8: Uint8Array,
        INT8: Int8Array,
        UINT16: Uint16Array,
        INT16: Int16Array,
        UINT32: Uint32Array,
        INT32: Int32Array,
        FP32: Float32Array,
        FP64: Float64Array,
        INT64: BigInt64Array,
        UINT64: BigUint64Array,
      }[t.datatype];
      const arr =
        Ctor === BigInt64Array || Ctor === BigUint64Array
          ? new Ctor((flat as number[]).map((v) => BigInt(Math.trunc(v))))
          : new (Ctor as Float64ArrayConstructor)(flat as number[]);
      buf = Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength); // this machine is little-endian (x86, arm64)
    }
    heads.push({ name: t.name, datatype: t.datatype, shape: [...t.shape], bytes: buf.length });
    body.push(buf);
  });
  return { heads, body };
}

/** Heads and bytes → OIP JSON tensors; checks each tensor's bytes against its shape (the wire contract). */
export function unpackTensors(heads: readonly TensorHead[], body: Buffer, where: string): WireTensor[] {
  const total = heads.reduce((a, h) => a + h.bytes, 0);
  if (total !== body.length)
    throw new EwError('MQTT_PAYLOAD_INVALID', `${where}: tensors declare ${total} bytes but the frame carries ${body.length}`);
  let off = 0;
  return heads.map((h) => {
    const b = body.subarray(off, off + h.bytes);
    off += h.bytes;
    const n = count(h.shape);
    if (h.datatype === 'BYTES') {
      const out: string[] = [];
      let o = 0;
      while (o < b.length) {
        if (o + 4 > b.length) break;
        const len = b.readUInt32LE(o);
        if (o + 4 + len > b.length) break;
        out.push(b.subarray(o + 4, o + 4 + len).toString('utf8'));
        o += 4 + len;
      }
      if (out.length !== n || o !== b.length)
        throw new EwError('MQTT_PAYLOAD_INVALID', `${where}: BYTES tensor ${h.name} does not hold ${n} length-prefixed elements`);
      return { name: h.name, datatype: h.datatype, shape: h.shape, data: out };
    }
    if (h.datatype === 'BOOL') {
      if (b.length !== n)
        throw new EwError('MQTT_PAYLOAD_INVALID', `${where}: BOOL tensor ${h.name} has ${b.length} bytes for ${n} elements`);
      return { name: h.name, datatype: h.datatype, shape: h.shape, data: [...b].map((x) => x !== 0) };
    }
    const w = WIDTH[h.datatype];
    if (b.length !== n * w)
      throw new EwError(
        'MQTT_PAYLOAD_INVALID',
        `${where}: ${h.datatype} tensor ${h.name} of shape [${h.shape.join(', ')}] needs ${n * w} bytes, got ${b.length}`,
      );
    if (h.datatype === 'FP16') throw new EwError('MQTT_PAYLOAD_INVALID', `${where}: FP16 tensor ${h.name} cannot be returned as JSON`);
    const copy = new Uint8Array(b); // aligned copy: typed arrays need an offset that is a multiple of their width
    const Ctor = {
      UINT8: Uint8Array,
      INT8: Int8Array,
      UINT16: Uint16Array,
      INT16: Int16Array,
      UINT32: Uint32Array,
      INT32: Int32Array,
      FP32: Float32Array,
      FP64: Float64Array,
      INT64: BigInt64Array,
      UINT64: BigUint64Array,
    }[h.datatype];
    const arr = new (Ctor as unknown as new (b: ArrayBuffer) => ArrayLike<number | bigint>)(copy.buffer);
    const data = new Array<unknown>(arr.length);
    for (let i = 0; i < arr.length; i++) {
      const v = arr[i];
      data[i] = typeof v === 'bigint' ? Number(v) : v;
    }
    return { name: h.name, datatype: h.datatype, shape: h.shape, data };
  });
}

/**
 * Checks raw tensor bytes against a shape and datatype without decoding them (for binary request
 * bodies, Triton's binary extension): a message naming what is wrong, or undefined when they fit.
 */
export function checkTensorBytes(datatype: string, shape: readonly number[], b: Buffer): string | undefined {
  const n = count(shape);
  if (datatype === 'BYTES') {
    let o = 0;
    let k = 0;
    while (o + 4 <= b.length) {
      const len = b.readUInt32LE(o);
      if (o + 4 + len > b.length) return `element ${k} declares ${len} bytes past the end of the tensor`;
      o += 4 + len;
      k++;
    }
    if (o !== b.length) return 'trailing bytes after the last element';
    return k === n ? undefined : `holds ${k} length-prefixed elements but shape [${shape.join(', ')}] needs ${n}`;
  }
  const w = datatype === 'BOOL' ? 1 : WIDTH[datatype as keyof typeof WIDTH];
  if (w === undefined) return `datatype ${datatype} is not known`;
  return b.length === n * w ? undefined : `${datatype} of shape [${shape.join(', ')}] needs ${n * w} bytes, got ${b.length}`;
}
