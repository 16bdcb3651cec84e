import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES, exitCodeFor, type ErrorCode } from '../src/contracts/errors.ts';

it('docs/errors.md documents every error code, and only those', () => {
  const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
  const documented = new Set([...doc.matchAll(/^### ([A-Z_]+)$/gm)].map((m) => m[1]!));
  const codes = Object.keys(ERROR_CODES);
  assert.deepEqual(
    codes.filter((c) => !documented.has(c)),
    [],
    'codes missing from docs/errors.md',
  );
  assert.deepEqual(
    [...documented].filter((c) => !codes.includes(c)),
    [],
    'docs/errors.md lists codes that do not exist',
  );
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    const section = doc.split(`### ${code}\n`)[1]!.split('###')[0]!;
    assert.match(section, new RegExp(`HTTP ${status}\\.`), `${code} shows its status`);
    assert.match(section, /How to fix: \S/, `${code} says how to fix`);
  }
});

it('docs/errors.md lists each CLI exit code with exactly the error codes that exit with it', () => {
  const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
  const rows = new Map<number, string>();
  for (const m of doc.matchAll(/^\| (\d) \| ([^|]*) \| ([^|]*) \|$/gm)) rows.set(Number(m[1]), m[3]!);
  assert.deepEqual([...rows.keys()].sort(), [0, 1, 2, 3, 4], 'one row per exit code');
  for (const exit of [2, 3, 4] as const) {
    const listed = [...rows.get(exit)!.matchAll(/`([A-Z_]+)`/g)].map((m) => m[1]!).sort();
    const table = Object.keys(ERROR_CODES)
      .filter((c) => exitCodeFor(c as ErrorCode) === exit)
      .sort();
    assert.deepEqual(listed, table, `exit ${exit}`);
  }
  assert.match(rows.get(1)!, /every code not listed below/);
  for (const code of Object.keys(ERROR_CODES)) assert.ok([1, 2, 3, 4].includes(exitCodeFor(code as ErrorCode)), code);
});
