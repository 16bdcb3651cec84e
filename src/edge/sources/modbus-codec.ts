import type { ModbusType } from '../../contracts/industrial.ts';

/**
 * Values in Modbus registers: the pure part of the Modbus source and sink. A register is 16
 * bits; 32- and 64-bit values span 2 and 4 registers. PLC makers disagree on two orders, so both
 * are settings: `byteOrder` (the two bytes inside each register; the standard says big) and
 * `wordOrder` (which register holds the most significant part; big = first). The four
 * combinations are often named ABCD (big/big), CDAB (big bytes, little words), BADC (little
 * bytes, big words) and DCBA (little/little).
 */
export type Order = 'big' | 'little';
export interface Encoding {
  type: ModbusType;
  byteOrder: Order;
  wordOrder: Order;
  scale: number;
  offset: number;
}

export const REGISTERS: Record<ModbusType, number> = { bool: 1, int16: 1, uint16: 1, int32: 2, uint32: 2, float32: 2, float64: 4 };

/** The registers' bytes in the canonical most-significant-first order. */
function toBigEndian(words: readonly number[], e: Pick<Encoding, 'byteOrder' | 'wordOrder'>): Buffer {
  const ordered = e.wordOrder === 'big' ? words : [...words].reverse();
  const b = Buffer.alloc(ordered.length * 2);
  ordered.forEach((w, i) => {
    const v = w & 0xffff;
    if (e.byteOrder === 'big') b.writeUInt16BE(v, i * 2);
    else b.writeUInt16LE(v, i * 2);
  });
  return b;
}

function fromBigEndian(b: Buffer, e: Pick<Encoding, 'byteOrder' | 'wordOrder'>): number[] {
  const words: number[] = [];
  for (let i = 0; i < b.length; i += 2) words.push(e.byteOrder === 'big' ? b.readUInt16BE(i) : b.readUInt16LE(i));
  return e.wordOrder === 'big' ? words : words.reverse();
}

/** The raw number the registers hold (before scale and offset). */
export function decodeRaw(words: readonly number[], e: Pick<Encoding, 'type' | 'byteOrder' | 'wordOrder'>): number {
  const n = REGISTERS[e.type];
  if (words.length !== n) throw new RangeError(`${e.type} needs ${n} register(s), got ${words.length}`);
  const b = toBigEndian(words, e);
  switch (e.type) {
    case 'bool':
      return b.readUInt16BE(0) === 0 ? 0 : 1;
    case 'int16':
      return b.readInt16BE(0);
    case 'uint16':
      return b.readUInt16BE(0);
    case 'int32':
      return b.readInt32BE(0);
    case 'uint32':
      return b.readUInt32BE(0);
    case 'float32':
      return b.readFloatBE(0);
    case 'float64':
      return b.readDoubleBE(0);
  }
}

/** A field's value: raw × scale + offset (a bool register stays a bool). */
export function decodeValue(words: readonly number[], e: Encoding): number | boolean {
  const raw = decodeRaw(words, e);
  if (e.type === 'bool') return raw === 1;
  return e.scale === 1 && e.offset === 0 ? raw : raw * e.scale + e.offset;
}

const INT_RANGE: Partial<Record<ModbusType, [number, number]>> = {
  int16: [-0x8000, 0x7fff],
  uint16: [0, 0xffff],
  int32: [-0x80000000, 0x7fffffff],
  uint32: [0, 0xffffffff],
};

/**
 * The registers that hold `value` ((value − offset) ÷ scale, rounded for integer types). Throws a
 * RangeError that says why when the value does not fit the type: nothing is written then.
 */
export function encodeValue(value: number | boolean, e: Encoding): number[] {
  if (e.type === 'bool') {
    if (typeof value !== 'boolean' && value !== 0 && value !== 1)
      throw new RangeError(`a bool register takes true/false or 0/1, not ${JSON.stringify(value)}`);
    return [value === true || value === 1 ? 1 : 0];
  }
  if (typeof value !== 'number' || !Number.isFinite(value))
    throw new RangeError(`a ${e.type} register takes a finite number, not ${JSON.stringify(value)}`);
  let raw = (value - e.offset) / e.scale;
  const range = INT_RANGE[e.type];
  if (range) {
    raw = Math.round(raw);
    if (raw < range[0] || raw > range[1]) throw new RangeError(`${value} is ${raw} as a raw ${e.type}, outside ${range[0]}..${range[1]}`);
  }
  const b = Buffer.alloc(REGISTERS[e.type] * 2);
  switch (e.type) {
    case 'int16':
      b.writeInt16BE(raw, 0);
      break;
    case 'uint16':
      b.writeUInt16BE(raw, 0);
      break;
    case 'int32':
      b.writeInt32BE(raw, 0);
      break;
    case 'uint32':
      b.writeUInt32BE(raw, 0);
      break;
    case 'float32':
      if (Math.abs(raw) > 3.4028234663852886e38) throw new RangeError(`${value} does not fit a float32`);
      b.writeFloatBE(raw, 0);
      break;
    case 'float64':
      b.writeDoubleBE(raw, 0);
      break;
  }
  return fromBigEndian(b, e);
}

/** One read request: a table, a first address and a count, and the fields it serves. */
export interface ReadBlock<F> {
  table: 'coil' | 'discrete' | 'holding' | 'input';
  address: number;
  count: number;
  fields: F[];
}

/** Per request at most 125 registers or 2,000 bits (Modbus application protocol, §6.1–6.4). */
export const MAX_REGISTERS = 125;
export const MAX_BITS = 2000;

/**
 * Groups fields into as few read requests as the protocol allows: fields of one table whose
 * registers are at most `gap` apart share a request (reading a few unused registers is cheaper
 * than a round trip).
 */
export function planReads<F extends { table: ReadBlock<F>['table']; address: number; type: ModbusType }>(
  fields: readonly F[],
  gap = 8,
): ReadBlock<F>[] {
  const blocks: ReadBlock<F>[] = [];
  for (const table of ['coil', 'discrete', 'holding', 'input'] as const) {
    const bits = table === 'coil' || table === 'discrete';
    const max = bits ? MAX_BITS : MAX_REGISTERS;
    const fs = fields.filter((f) => f.table === table).sort((a, b) => a.address - b.address);
    let cur: ReadBlock<F> | undefined;
    for (const f of fs) {
      const n = bits ? 1 : REGISTERS[f.type];
      const end = f.address + n;
      if (cur && f.address <= cur.address + cur.count + gap && end - cur.address <= max) {
        cur.count = Math.max(cur.count, end - cur.address);
        cur.fields.push(f);
      } else {
        cur = { table, address: f.address, count: n, fields: [f] };
        blocks.push(cur);
      }
    }
  }
  return blocks;
}
