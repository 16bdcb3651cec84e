import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRaw, decodeValue, encodeValue, planReads, type Encoding, type Order } from '../src/edge/sources/modbus-codec.ts';
import type { ModbusType } from '../src/contracts/industrial.ts';

/**
 * Word and byte order, table-driven, for every Modbus type. The expected registers are written
 * out by hand from the value's big-endian bytes (ABCD…): big/big = ABCD, big bytes and little
 * words = CDAB, little bytes and big words = BADC, little/little = DCBA.
 */
const f64 = Buffer.from('0102030405060708', 'hex').readDoubleBE(0);
const cases: { type: ModbusType; value: number; ABCD: number[]; CDAB: number[]; BADC: number[]; DCBA: number[] }[] = [
  { type: 'uint16', value: 0x1234, ABCD: [0x1234], CDAB: [0x1234], BADC: [0x3412], DCBA: [0x3412] },
  { type: 'int16', value: -2, ABCD: [0xfffe], CDAB: [0xfffe], BADC: [0xfeff], DCBA: [0xfeff] },
  { type: 'uint32', value: 0x12345678, ABCD: [0x1234, 0x5678], CDAB: [0x5678, 0x1234], BADC: [0x3412, 0x7856], DCBA: [0x7856, 0x3412] },
  { type: 'int32', value: -2, ABCD: [0xffff, 0xfffe], CDAB: [0xfffe, 0xffff], BADC: [0xffff, 0xfeff], DCBA: [0xfeff, 0xffff] },
  { type: 'float32', value: 1.5, ABCD: [0x3fc0, 0x0000], CDAB: [0x0000, 0x3fc0], BADC: [0xc03f, 0x0000], DCBA: [0x0000, 0xc03f] },
  { type: 'float32', value: -123.25, ABCD: [0xc2f6, 0x8000], CDAB: [0x8000, 0xc2f6], BADC: [0xf6c2, 0x0080], DCBA: [0x0080, 0xf6c2] },
  {
    type: 'float64',
    value: f64,
    ABCD: [0x0102, 0x0304, 0x0506, 0x0708],
    CDAB: [0x0708, 0x0506, 0x0304, 0x0102],
    BADC: [0x0201, 0x0403, 0x0605, 0x0807],
    DCBA: [0x0807, 0x0605, 0x0403, 0x0201],
  },
];
const orders: Record<'ABCD' | 'CDAB' | 'BADC' | 'DCBA', { byteOrder: Order; wordOrder: Order }> = {
  ABCD: { byteOrder: 'big', wordOrder: 'big' },
  CDAB: { byteOrder: 'big', wordOrder: 'little' },
  BADC: { byteOrder: 'little', wordOrder: 'big' },
  DCBA: { byteOrder: 'little', wordOrder: 'little' },
};

describe('Modbus register codec', () => {
  for (const c of cases) {
    for (const [name, o] of Object.entries(orders) as [keyof typeof orders, typeof orders.ABCD][]) {
      it(`${c.type} ${c.value} in ${name}`, () => {
        const e: Encoding = { type: c.type, ...o, scale: 1, offset: 0 };
        assert.deepEqual(encodeValue(c.value, e), c[name]);
        assert.equal(decodeRaw(c[name], e), c.value);
      });
    }
  }

  it('applies scale and offset both ways (temperature ×10 with a −40 offset)', () => {
    const e: Encoding = { type: 'int16', byteOrder: 'big', wordOrder: 'big', scale: 0.1, offset: -40 };
    assert.deepEqual(encodeValue(21.5, e), [615]);
    assert.equal(decodeValue([615], e), 21.5);
  });

  it('rounds integer types and refuses values that do not fit, with the reason', () => {
    const u16: Encoding = { type: 'uint16', byteOrder: 'big', wordOrder: 'big', scale: 1, offset: 0 };
    assert.deepEqual(encodeValue(1199.6, u16), [1200]);
    assert.throws(() => encodeValue(70_000, u16), /outside 0\.\.65535/);
    assert.throws(() => encodeValue(-1, u16), /outside 0\.\.65535/);
    assert.throws(() => encodeValue(Number.NaN, u16), /finite number/);
    assert.throws(() => encodeValue(1e39, { ...u16, type: 'float32' }), /does not fit a float32/);
    assert.throws(() => encodeValue(2, { ...u16, type: 'bool' }), /true\/false or 0\/1/);
    assert.throws(() => decodeRaw([1], { ...u16, type: 'float32' }), /needs 2 register/);
  });

  it('plans as few reads as the protocol allows', () => {
    const f = (table: 'holding' | 'input' | 'coil', address: number, type: ModbusType) => ({ table, address, type });
    const blocks = planReads([
      f('holding', 0, 'float32'),
      f('holding', 4, 'uint16'),
      f('holding', 200, 'int16'),
      f('input', 0, 'float64'),
      f('coil', 3, 'bool'),
      f('coil', 0, 'bool'),
    ]);
    assert.deepEqual(
      blocks.map((b) => [b.table, b.address, b.count, b.fields.length]),
      [
        ['coil', 0, 4, 2],
        ['holding', 0, 5, 2],
        ['holding', 200, 1, 1],
        ['input', 0, 4, 1],
      ],
    );
    // A block never asks for more than 125 registers.
    const many = Array.from({ length: 100 }, (_, i) => f('holding', i * 2, 'float32'));
    for (const b of planReads(many)) assert.ok(b.count <= 125, `count ${b.count}`);
    assert.equal(
      planReads(many).reduce((n, b) => n + b.fields.length, 0),
      100,
    );
  });
});
