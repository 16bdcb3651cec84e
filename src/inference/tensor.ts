/**
 * Tensors as the Open Inference Protocol (KServe v2) describes them: a datatype, a shape and
 * row-major data. Runtimes convert to and from their own types at the edge of this module.
 */
export type Datatype =
  | 'BOOL'
  | 'UINT8'
  | 'UINT16'
  | 'UINT32'
  | 'UINT64'
  | 'INT8'
  | 'INT16'
  | 'INT32'
  | 'INT64'
  | 'FP16'
  | 'FP32'
  | 'FP64'
  | 'BYTES';

export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | boolean[]
  | string[];

export interface Tensor {
  datatype: Datatype;
  shape: number[];
  data: TensorData;
}

/** A model input or output as its metadata declares it; -1 is a dynamic dimension. */
export interface TensorSpec {
  name: string;
  datatype: Datatype;
  shape: number[];
}

export const DATATYPES: readonly Datatype[] = [
  'BOOL',
  'UINT8',
  'UINT16',
  'UINT32',
  'UINT64',
  'INT8',
  'INT16',
  'INT32',
  'INT64',
  'FP16',
  'FP32',
  'FP64',
  'BYTES',
];

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Builds the typed array for a datatype from JSON numbers/booleans/strings (OIP's `data`). */
export function typedFrom(datatype: Datatype, values: readonly unknown[]): TensorData {
  switch (datatype) {
    case 'FP32':
      return Float32Array.from(values as number[]);
    case 'FP64':
      return Float64Array.from(values as number[]);
    case 'INT8':
      return Int8Array.from(values as number[]);
    case 'INT16':
      return Int16Array.from(values as number[]);
    case 'INT32':
      return Int32Array.from(values as number[]);
    case 'INT64':
      return BigInt64Array.from((values as number[]).map((v) => BigInt(Math.trunc(v))));
    case 'UINT8':
      return Uint8Array.from(values as number[]);
    case 'UINT16':
      return Uint16Array.from(values as number[]);
    case 'UINT32':
      return Uint32Array.from(values as number[]);
    case 'UINT64':
      return BigUint64Array.from((values as number[]).map((v) => BigInt(Math.trunc(v))));
    case 'BOOL':
      return (values as unknown[]).map((v) => Boolean(v));
    case 'BYTES':
      return (values as unknown[]).map((v) => String(v));
    case 'FP16':
      throw new Error('FP16 input over JSON is not supported; send FP32');
  }
}

/** Tensor data as plain JSON values (BigInts become numbers). */
export function toJsonData(t: Tensor): unknown[] {
  const d = t.data as ArrayLike<unknown>;
  const out = new Array<unknown>(d.length);
  for (let i = 0; i < d.length; i++) out[i] = typeof d[i] === 'bigint' ? Number(d[i]) : d[i];
  return out;
}

/** Does `shape` fit `spec` (equal rank; -1 matches any size)? */
export function shapeFits(spec: readonly number[], shape: readonly number[]): boolean {
  return spec.length === shape.length && spec.every((d, i) => d < 0 || d === shape[i]);
}
