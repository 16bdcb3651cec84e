import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBundle } from '../src/cli/bundle.ts';
import * as profiles from '../src/sim/profiles.ts';
import { OnnxRuntime } from '../src/inference/onnx.ts';
import { ensureTemplateAssistant } from '../src/inference/gguf/tiny-qwen.ts';

const root = fileURLToPath(new URL('../templates/', import.meta.url));
// The predictive-maintenance assistant's GGUF is built, not committed (the tiny TEST Qwen).
ensureTemplateAssistant();

/** Every template is a complete app: it validates, it has models, rules, endpoints, an egress policy, a README and a simulator. */
describe('templates', () => {
  const names = readdirSync(root).sort();
  it('offers the three documented templates', () =>
    assert.deepEqual(names, ['energy-load', 'predictive-maintenance', 'smart-city-traffic']));
  for (const name of names) {
    it(`${name} is a complete app`, async () => {
      const b = await loadBundle(join(root, name));
      const s = b.manifest.spec;
      assert.ok(s.models.length >= 1 && s.rules.length >= 1 && s.endpoints.length >= 1, 'models, rules and endpoints');
      assert.ok((s.policy.egress?.allow.length ?? 0) >= 1, 'an egress policy');
      const readme = readFileSync(join(root, name, 'README.md'), 'utf8');
      const sim = /simulator \| `(\w[\w-]*)`/.exec(readme)?.[1];
      assert.ok(sim, 'the README names its simulator profile');
      const made = Object.values(profiles)
        .filter((f): f is () => profiles.Profile => typeof f === 'function' && f.length === 0 && f.name.endsWith('Profile'))
        .map((f) => f().name);
      assert.ok(made.includes(sim!), `simulator ${sim} exists (${made.join(', ')})`);
      for (const st of s.streams)
        assert.ok(existsSync(join(root, name, 'edgeweave.yaml')) && (st.topic ?? '').length + (st.source ? 1 : 0) > 0);
    });
  }
  it('the load forecaster follows the load', async () => {
    const m = await new OnnxRuntime().load({ name: 'f', format: 'onnx', file: join(root, 'energy-load', 'models', 'load-forecast.onnx') });
    const row = (h: number, kw: number, t: number) => [Math.sin((2 * Math.PI * h) / 24), Math.cos((2 * Math.PI * h) / 24), kw, t];
    const out = await m.run({
      features: { datatype: 'FP32', shape: [2, 4], data: Float32Array.from([...row(3, 45, 12), ...row(11, 125, 24)]) },
    });
    const [night, day] = Array.from(out.forecastKw!.data as Float32Array);
    assert.ok(Math.abs(night! - 45) < 15, `night ${night}`);
    assert.ok(Math.abs(day! - 128) < 20, `day ${day}`);
    await m.close();
  });
});
