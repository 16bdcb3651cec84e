import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadBundle, BundleError } from '../src/cli/bundle.ts';
import { tempDir, removeDirs } from './support/harness.ts';
import { ensureTemplateAssistant } from '../src/inference/gguf/tiny-qwen.ts';

/** `app validate` finds each kind of mistake and names the file, line and column. */
describe('app bundle validation', () => {
  const root = tempDir('bundle');
  after(() => removeDirs(root));
  // The template's assistant model is the project's tiny test GGUF, built on first use.
  ensureTemplateAssistant();
  const templateYaml = readFileSync(new URL('../templates/predictive-maintenance/edgeweave.yaml', import.meta.url), 'utf8').split('\n');
  /** 1-based line of the template's first line containing `text` (so template edits don't move the expectations). */
  const lineOf = (text: string) => {
    const i = templateYaml.findIndex((l) => l.includes(text));
    assert.ok(i >= 0, text);
    return i + 1;
  };
  let n = 0;
  const bundle = (edit: (dir: string) => void) => {
    const dir = join(root, `b${n++}`);
    cpSync(new URL('../templates/predictive-maintenance', import.meta.url).pathname, dir, { recursive: true });
    edit(dir);
    return dir;
  };
  const yamlEdit = (from: string, to: string) => (dir: string) => {
    const f = join(dir, 'edgeweave.yaml');
    const s = readFileSync(f, 'utf8');
    assert.ok(s.includes(from), from);
    writeFileSync(f, s.replace(from, to));
  };
  const fails = async (dir: string, code: string, where: RegExp, msg: RegExp) => {
    await assert.rejects(loadBundle(dir), (e: unknown) => {
      assert.ok(e instanceof BundleError, String(e));
      assert.equal(e.code, code);
      assert.match(e.message, where);
      assert.match(e.message, msg);
      return true;
    });
  };

  it('accepts the template as it is', async () => {
    const b = await loadBundle(bundle(() => {}));
    assert.equal(b.models[0]!.sha256.length, 64);
    assert.match(b.manifest.spec.rules[0]!.sql, /infer\('vib-ae'/);
  });
  it('YAML syntax', () =>
    fails(bundle(yamlEdit('  version: 1.0.0', '  version: [1.0.0')), 'INVALID_MANIFEST', /edgeweave\.yaml:\d+:\d+/, /not valid YAML/));
  it('a field the schema refuses', () =>
    fails(
      bundle(yamlEdit('  version: 1.0.0', '  version: one')),
      'INVALID_MANIFEST',
      new RegExp(`edgeweave\\.yaml:${lineOf('  version: 1.0.0')}:12`),
      /semantic version/,
    ));
  it('inline SQL: line and column inside the block', () =>
    fails(
      bundle(
        yamlEdit(
          '      sqlFile: rules/machine-health.sql',
          '      sql: |\n        SELECT machineId,\n               avg(rsm) AS r\n        FROM vibration GROUP BY machineId, TUMBLINGWINDOW(ss, 30)',
        ),
      ),
      'SQL_INVALID',
      new RegExp(`edgeweave\\.yaml:${lineOf('sqlFile: rules/machine-health.sql') + 2}:20`),
      /no field "rsm"/,
    ));
  it('a rule leaking past the egress policy', () =>
    fails(
      bundle(yamlEdit('        - uplink: machine-health', '        - uplink: raw-readings')),
      'EGRESS_DENIED',
      /edgeweave\.yaml:\d+:\d+/,
      /no grant for "raw-readings"/,
    ));
  it('a missing model file', () =>
    fails(
      bundle(yamlEdit('path: models/vibration-ae.onnx', 'path: models/nope.onnx')),
      'INVALID_MANIFEST',
      new RegExp(`edgeweave\\.yaml:${lineOf('path: models/vibration-ae.onnx')}:13`),
      /models\/nope\.onnx does not exist/,
    ));
  it('a model file ONNX Runtime cannot load', () =>
    fails(
      bundle((d) => writeFileSync(join(d, 'models', 'vibration-ae.onnx'), 'not a model')),
      'MODEL_LOAD_FAILED',
      /models\/vibration-ae\.onnx:1:1/,
      /cannot load|can load/,
    ));
  it("a sha256 that is not the file's", () =>
    fails(
      bundle(yamlEdit('      path: models/vibration-ae.onnx', `      path: models/vibration-ae.onnx\n      sha256: ${'a'.repeat(64)}`)),
      'ARTIFACT_DIGEST_MISMATCH',
      new RegExp(`edgeweave\\.yaml:${lineOf('path: models/vibration-ae.onnx') + 1}:15`),
      /hashes to/,
    ));
});
