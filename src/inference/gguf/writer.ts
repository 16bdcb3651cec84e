/**
 * A GGUF v3 writer (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): the header, the
 * metadata key/values, the tensor infos and the tensor data, each tensor aligned to
 * `general.alignment` (32). Enough to build the project's tiny test models; llama.cpp (through
 * node-llama-cpp) and node-llama-cpp's own GGUF reader load what it writes.
 *
 * Pure: takes values, returns bytes.
 */
export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}
/** The ggml tensor types this writer produces. */
export enum GgmlTensorType {
  F32 = 0,
  F16 = 1,
}

/** A typed metadata value; a plain string, boolean or array of strings is inferred. */
export type GgufValue =
  | { type: Exclude<GgufValueType, GgufValueType.ARRAY | GgufValueType.STRING | GgufValueType.BOOL>; value: number | bigint }
  | { type: GgufValueType.STRING; value: string }
  | { type: GgufValueType.BOOL; value: boolean }
  | {
      type: GgufValueType.ARRAY;
      itemType: Exclude<GgufValueType, GgufValueType.ARRAY>;
      value: readonly (number | bigint | string | boolean)[];
    };

export const u32 = (value: number): GgufValue => ({ type: GgufValueType.UINT32, value });
export const i32 = (value: number): GgufValue => ({ type: GgufValueType.INT32, value });
export const f32 = (value: number): GgufValue => ({ type: GgufValueType.FLOAT32, value });
export const str = (value: string): GgufValue => ({ type: GgufValueType.STRING, value });
export const bool = (value: boolean): GgufValue => ({ type: GgufValueType.BOOL, value });
export const strArray = (value: readonly string[]): GgufValue => ({ type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value });
export const i32Array = (value: readonly number[]): GgufValue => ({ type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value });

export interface GgufTensor {
  name: string;
  /** ggml order: ne[0] is the innermost (contiguous) dimension. */
  dims: number[];
  type: GgmlTensorType;
  /** F32: a Float32Array; F16: a Uint16Array of IEEE half bits. */
  data: Float32Array | Uint16Array;
}

/** Growable little-endian byte sink. */
class Sink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;
  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number): void {
    this.reserve(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }
  i8(v: number): void {
    this.reserve(1);
    this.buf.writeInt8(v, this.length);
    this.length += 1;
  }
  u16(v: number): void {
    this.reserve(2);
    this.buf.writeUInt16LE(v, this.length);
    this.length += 2;
  }
  i16(v: number): void {
    this.reserve(2);
    this.buf.writeInt16LE(v, this.length);
    this.length += 2;
  }
  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number): void {
    this.reserve(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  f32(v: number): void {
    this.reserve(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  f64(v: number): void {
    this.reserve(8);
    this.buf.writeDoubleLE(v, this.length);
    this.length += 8;
  }
  u64(v: number | bigint): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  i64(v: number | bigint): void {
    this.reserve(8);
    this.buf.writeBigInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  bytes(b: Uint8Array): void {
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  string(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }
  pad(align: number): void {
    const n = (align - (this.length % align)) % align;
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  result(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(s: Sink, type: GgufValueType, v: number | bigint | string | boolean, key: string): void {
  switch (type) {
    case GgufValueType.UINT8:
      s.u8(Number(v));
      return;
    case GgufValueType.INT8:
      s.i8(Number(v));
      return;
    case GgufValueType.UINT16:
      s.u16(Number(v));
      return;
    case GgufValueType.INT16:
      s.i16(Number(v));
      return;
    case GgufValueType.UINT32:
      s.u32(Number(v));
      return;
    case GgufValueType.INT32:
      s.i32(Number(v));
      return;
    case GgufValueType.FLOAT32:
      s.f32(Number(v));
      return;
    case GgufValueType.FLOAT64:
      s.f64(Number(v));
      return;
    case GgufValueType.UINT64:
      s.u64(v as number | bigint);
      return;
    case GgufValueType.INT64:
      s.i64(v as number | bigint);
      return;
    case GgufValueType.BOOL:
      s.u8(v ? 1 : 0);
      return;
    case GgufValueType.STRING:
      if (typeof v !== 'string') throw new TypeError(`GGUF key ${key}: a string value is needed`);
      s.string(v);
      return;
    default:
      throw new TypeError(`GGUF key ${key}: unsupported value type ${type}`);
  }
}

const TYPE_SIZE: Record<GgmlTensorType, number> = { [GgmlTensorType.F32]: 4, [GgmlTensorType.F16]: 2 };

/** Serialises a GGUF v3 file. Tensor data is laid out in the order given. */
export function writeGguf(metadata: ReadonlyArray<readonly [string, GgufValue]>, tensors: readonly GgufTensor[]): Buffer {
  const s = new Sink();
  s.u32(GGUF_MAGIC);
  s.u32(GGUF_VERSION);
  s.u64(tensors.length);
  const kv = metadata.some(([k]) => k === 'general.alignment')
    ? metadata
    : [...metadata, ['general.alignment', u32(GGUF_ALIGNMENT)] as const];
  s.u64(kv.length);
  for (const [key, val] of kv) {
    s.string(key);
    s.u32(val.type);
    if (val.type === GgufValueType.ARRAY) {
      s.u32(val.itemType);
      s.u64(val.value.length);
      for (const item of val.value) writeScalar(s, val.itemType, item, key);
    } else {
      writeScalar(s, val.type, val.value, key);
    }
  }
  let offset = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (count !== t.data.length)
      throw new RangeError(`tensor ${t.name}: dims [${t.dims.join(', ')}] need ${count} values, got ${t.data.length}`);
    s.string(t.name);
    s.u32(t.dims.length);
    for (const d of t.dims) s.u64(d);
    s.u32(t.type);
    s.u64(offset);
    offsets.push(offset);
    offset += count * TYPE_SIZE[t.type];
    offset += (GGUF_ALIGNMENT - (offset % GGUF_ALIGNMENT)) % GGUF_ALIGNMENT;
  }
  s.pad(GGUF_ALIGNMENT);
  const dataStart = s.length;
  for (const [i, t] of tensors.entries()) {
    s.pad(GGUF_ALIGNMENT);
    if (s.length - dataStart !== offsets[i]) throw new Error(`internal: tensor ${t.name} misaligned`);
    s.bytes(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return s.result();
}

/** IEEE 754 half-precision bits of a number (round to nearest even). */
export function toHalf(v: number): number {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  f[0] = v;
  const x = u[0]!;
  const sign = (x >>> 16) & 0x8000;
  let exp = ((x >>> 23) & 0xff) - 127 + 15;
  let mant = x & 0x7fffff;
  if (((x >>> 23) & 0xff) === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (exp << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  exp = h; // may carry into the exponent, which is the right rounding
  return sign | exp;
}
