import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FieldType } from '../contracts/manifest.ts';
import { schemaTypes } from './planner.ts';
import { decodeRecord } from '../edge/record-router.ts';
import { isEwError } from '../contracts/errors.ts';

/** One list of field types (the manifest's FieldType), read the same way by the planner and the record router. */
describe('field types: one list for the manifest, the SQL planner and the record router', () => {
  it('every type the manifest accepts is planned and checked (none falls through)', () => {
    for (const t of FieldType.options) {
      const types = schemaTypes({ name: 's', schema: { x: t } });
      assert.ok(types?.get('x'), `planner: ${t}`);
      assert.equal(decodeRecord({ y: 1 }, { name: 's', schema: { x: t } }).ok, true, `router: a missing ${t} field is allowed`);
    }
  });

  it('aliases read alike in both: float, number and double; int and bigint; bool and boolean', () => {
    const planned = (t: string) => schemaTypes({ name: 's', schema: { x: t } })!.get('x');
    const fits = (t: string, v: unknown) => decodeRecord({ x: v }, { name: 's', schema: { x: t } }).ok;
    for (const [group, good, bad] of [
      [['float', 'number', 'double'], 1.5, 'a'],
      [['int', 'bigint'], 2, 1.5],
      [['bool', 'boolean'], true, 1],
    ] as const) {
      assert.equal(new Set(group.map(planned)).size, 1, `${group} plan alike`);
      for (const t of group) assert.deepEqual([fits(t, good), fits(t, bad)], [true, false], t);
    }
  });

  it('the planner and the router read a type in any case (edgeweave sql --schema passes it as written)', () => {
    assert.equal(schemaTypes({ name: 's', schema: { x: 'INT' } })!.get('x'), 'int');
    assert.equal(decodeRecord({ x: 1.5 }, { name: 's', schema: { x: 'INT' } }).ok, false);
  });

  it('a type outside the list is refused by the manifest and by the planner, naming the field and the list', () => {
    assert.equal(FieldType.safeParse('decimal').success, false);
    assert.throws(
      () => schemaTypes({ name: 's', schema: { price: 'decimal' } }),
      (e) => isEwError(e, 'SQL_INVALID') && /field "price" has type "decimal"; use one of string, int, bigint/.test(e.message),
    );
  });
});
