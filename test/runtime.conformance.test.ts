import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoadedModel, ModelRuntime } from '../src/inference/runtime.ts';
import { OnnxRuntime } from '../src/inference/onnx.ts';
import { isEwError } from '../src/contracts/errors.ts';

/**
 * One suite for every model runtime (ONNX now; GGUF and remote runtimes join with their own
 * fixtures). A fixture is a model file with one batchable FP32 input and a way to make rows.
 */
interface Fixture {
  file: string;
  input: string;
  width: number;
  output: string;
  row: (i: number) => number[];
}

function runRuntimeConformance(name: string, runtime: ModelRuntime, fx: Fixture): void {
  describe(`ModelRuntime conformance: ${name}`, () => {
    let m: LoadedModel;
    const dir = mkdtempSync(join(tmpdir(), 'ew-rt-'));
    before(async () => {
      m = await runtime.load({ name: 'm', format: runtime.format, file: fx.file, options: { threads: 1 } });
    });
    after(async () => {
      await m?.close();
      rmSync(dir, { recursive: true, force: true });
    });

    it('reads input and output names, types and shapes from the model', () => {
      const inp = m.inputs.find((i) => i.name === fx.input);
      assert.ok(inp, `input ${fx.input}`);
      assert.equal(inp.datatype, 'FP32');
      assert.equal(inp.shape[0], -1, 'a dynamic batch dimension');
      assert.equal(inp.shape[inp.shape.length - 1], fx.width);
      assert.ok(m.outputs.some((o) => o.name === fx.output));
    });

    it('gives each row of a batch the result it gets alone', async () => {
      const rows = Array.from({ length: 5 }, (_, i) => fx.row(i));
      const batch = await m.run({ [fx.input]: { datatype: 'FP32', shape: [rows.length, fx.width], data: Float32Array.from(rows.flat()) } });
      const out = batch[fx.output]!;
      assert.equal(out.shape[0], rows.length);
      const per = out.data.length / rows.length;
      for (const [i, row] of rows.entries()) {
        const one = await m.run({ [fx.input]: { datatype: 'FP32', shape: [1, fx.width], data: Float32Array.from(row) } });
        assert.deepEqual(
          Array.from(one[fx.output]!.data as Float32Array),
          Array.from((out.data as Float32Array).slice(i * per, (i + 1) * per)),
        );
      }
    });

    it('runs where it can: a GPU asked for on a machine without one falls back to the CPU', async () => {
      const g = await runtime.load({ name: 'gpu', format: runtime.format, file: fx.file, options: { executionProvider: 'cuda' } });
      assert.ok(['cpu', 'cuda'].includes(g.device));
      const out = await g.run({ [fx.input]: { datatype: 'FP32', shape: [1, fx.width], data: Float32Array.from(fx.row(0)) } });
      assert.ok(out[fx.output]);
      await g.close();
    });

    it('refuses a file it cannot load with MODEL_LOAD_FAILED', async () => {
      const bad = join(dir, 'broken.bin');
      writeFileSync(bad, 'this is not a model');
      await assert.rejects(
        runtime.load({ name: 'broken', format: runtime.format, file: bad }),
        (e: unknown) => isEwError(e, 'MODEL_LOAD_FAILED') && /broken/.test((e as Error).message),
      );
    });
  });
}

runRuntimeConformance('onnx (onnxruntime-node)', new OnnxRuntime(), {
  file: new URL('../models/vibration-ae.onnx', import.meta.url).pathname,
  input: 'features',
  width: 3,
  output: 'score',
  row: (i) => [1 + i / 10, 3 + i, 120 + i * 5],
});
