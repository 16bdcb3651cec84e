import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { TEMPLATE_MODELS, TEMPLATE_COPIES } from '../src/inference/train/models.ts';
import { OnnxRuntime } from '../src/inference/onnx.ts';

const path = (f: string) => new URL(`../models/${f}`, import.meta.url).pathname;

describe('template models: the committed files are what the training script makes', () => {
  for (const build of TEMPLATE_MODELS) {
    it(build.name, () => {
      const m = build();
      const committed = readFileSync(path(m.file));
      assert.ok(
        Buffer.from(m.bytes).equals(committed),
        `models/${m.file} differs from what ${build.name}() builds; run npm run models and commit the result`,
      );
      for (const t of TEMPLATE_COPIES[m.file] ?? []) {
        assert.ok(
          readFileSync(new URL(`../templates/${t}/models/${m.file}`, import.meta.url)).equals(committed),
          `templates/${t}/models/${m.file} is stale; run npm run models`,
        );
      }
    });
  }
});

describe('template models behave as documented (onnxruntime)', () => {
  const rt = new OnnxRuntime();
  it('vibration-ae scores healthy readings low and a failing bearing high', async () => {
    const m = await rt.load({ name: 'vib-ae', format: 'onnx', file: path('vibration-ae.onnx') });
    assert.deepEqual(m.inputs, [{ name: 'features', datatype: 'FP32', shape: [-1, 3] }]);
    assert.deepEqual(m.outputs, [{ name: 'score', datatype: 'FP32', shape: [-1] }]);
    const rows = [
      [1.0, 3.0, 120],
      [0.95, 3.1, 121],
      [1.6, 9.0, 150],
      [1.4, 6.5, 140],
    ];
    const out = await m.run({ features: { datatype: 'FP32', shape: [4, 3], data: Float32Array.from(rows.flat()) } });
    const s = Array.from(out.score!.data as Float32Array);
    assert.ok(s[0]! < 0.5 && s[1]! < 0.5, `healthy scores ${s.slice(0, 2)}`);
    assert.ok(s[2]! > 0.9 && s[3]! > 0.8, `anomalous scores ${s.slice(2)}`);
    await m.close();
  });
  it('traffic-congestion predicts congestion from a slow, crowded minute', async () => {
    const m = await rt.load({ name: 'congestion', format: 'onnx', file: path('traffic-congestion.onnx') });
    const out = await m.run({ features: { datatype: 'FP32', shape: [2, 3], data: Float32Array.from([150, 48, 0.3, 330, 9, 0.9]) } });
    const p = Array.from(out.congestion!.data as Float32Array);
    assert.ok(p[0]! < 0.2, `free flow: ${p[0]}`);
    assert.ok(p[1]! > 0.5, `congested: ${p[1]}`);
    await m.close();
  });
});
