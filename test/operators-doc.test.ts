import { it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { cloudOptions, resolveCloudOptions } from '../src/cloud/config.ts';
import { edgeOptions } from '../src/edge/config.ts';
import { defaultLabel, envName, type OptionTable } from '../src/lib/options.ts';
import { buildProgram } from '../src/cli/main.ts';
import { addServeOptions } from '../src/cli/schema-options.ts';

/** docs/operators.md's option tables say what the schemas (src/cloud/config.ts, src/edge/config.ts) say. */
const doc = readFileSync(new URL('../docs/operators.md', import.meta.url), 'utf8');

/** The rows of the table whose header starts with `header`: flag, environment, default (as read: no backticks, links as their text). */
function table(header: string): Map<string, { env: string; def: string }> {
  const start = doc.indexOf(`${header} | environment | default | meaning |`);
  assert.ok(start >= 0, `docs/operators.md has a table "${header} | environment | default | meaning"`);
  const rows = new Map<string, { env: string; def: string }>();
  for (const line of doc.slice(start).split('\n').slice(2)) {
    if (!line.startsWith('|')) break;
    const cells = line.split(' | ').map((c) => c.replace(/^\| ?|\s*\|$/g, ''));
    const flag = /^`(--[a-z-]+)`$/.exec(cells[0]!)?.[1];
    assert.ok(flag, `one flag per row: ${line}`);
    assert.ok(!rows.has(flag), `${flag} documented twice`);
    const plain = (c: string) => c.replace(/`/g, '').replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
    rows.set(flag, { env: plain(cells[1]!), def: plain(cells[2]!) });
  }
  return rows;
}

function check(t: OptionTable, header: string, extra: string[]): void {
  const rows = table(header);
  for (const [key, spec] of Object.entries(t.options)) {
    const row = rows.get(spec.flag);
    assert.ok(row, `${t.command} ${spec.flag} (${key}) is documented`);
    assert.equal(row.env, envName(t, key), `${spec.flag}'s environment variable`);
    assert.equal(row.def, defaultLabel(t, key) ?? '—', `${spec.flag}'s default`);
  }
  const flags = new Set(Object.values(t.options).map((s) => s.flag));
  assert.deepEqual(
    [...rows.keys()].filter((f) => !flags.has(f) && !extra.includes(f)),
    [],
    `docs list ${t.command} flags the schema does not have`,
  );
  assert.equal(rows.get('--config')?.env, `${t.envPrefix}CONFIG`);
}

it("the cloud's option table documents every option of src/cloud/config.ts with its variable and default", () => {
  check(cloudOptions, '| flag', ['--config']);
});

it("the agent's option table documents every option of src/edge/config.ts with its variable and default", () => {
  check(edgeOptions, '| agent flag', ['--config', '--token-file']);
});

it("`edgeweave cloud` and `edgeweave edge` offer exactly the schemas' flags (and --config, and the token)", async () => {
  const program = buildProgram();
  const cmd = (path: string[]): Command => path.reduce((c, n) => c.commands.find((x) => x.name() === n)!, program);
  // Added as the command is dispatched, as the CLI does (so other commands never load the schemas).
  await addServeOptions(cmd(['cloud']));
  await addServeOptions(cmd(['edge']));
  const longs = (c: Command) => c.options.map((o) => o.long!).sort();
  assert.deepEqual(longs(cmd(['cloud'])), ['--config', ...Object.values(cloudOptions.options).map((s) => s.flag)].sort());
  assert.deepEqual(
    longs(cmd(['edge'])),
    ['--config', '--token', '--token-file', ...Object.values(edgeOptions.options).map((s) => s.flag)].sort(),
  );
});

it('the example config file in docs/operators.md is a valid cloud config', () => {
  const example = /### Options from a file and the environment[\s\S]*?```yaml\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(example, 'docs/operators.md has the example');
  const file = join(mkdtempSync(join(tmpdir(), 'ew-opdoc-')), 'cloud.yaml');
  writeFileSync(file, example);
  const o = resolveCloudOptions({ file });
  assert.equal(o.httpPort, 8080);
  assert.equal(o.console, false);
  rmSync(file, { force: true });
});
