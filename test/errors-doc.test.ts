import { it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { ERROR_CODES } from '../src/contracts/errors.ts';

it('docs/errors.md documents every error code, and only those', () => {
  const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
  const documented = new Set([...doc.matchAll(/^### ([A-Z_]+)$/gm)].map((m) => m[1]!));
  const codes = Object.keys(ERROR_CODES);
  assert.deepEqual(codes.filter((c) => !documented.has(c)), [], 'codes missing from docs/errors.md');
  assert.deepEqual([...documented].filter((c) => !codes.includes(c)), [], 'docs/errors.md lists codes that do not exist');
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    const section = doc.split(`### ${code}\n`)[1]!.split('###')[0]!;
    assert.match(section, new RegExp(`HTTP ${status}\\.`), `${code} shows its status`);
    assert.match(section, /How to fix: \S/, `${code} says how to fix`);
  }
});
