import { createRequire } from 'node:module';
import type * as Ort from 'onnxruntime-node';
import type { LoadedModel, ModelLoadSpec, ModelRuntime } from './runtime.ts';
import { DATATYPES, type Datatype, type Tensor, type TensorSpec } from './tensor.ts';
import { EwError } from '../contracts/errors.ts';

const require = createRequire(import.meta.url);

const ORT_TO_OIP: Record<string, Datatype> = {
  float32: 'FP32',
  float64: 'FP64',
  float16: 'FP16',
  int8: 'INT8',
  int16: 'INT16',
  int32: 'INT32',
  int64: 'INT64',
  uint8: 'UINT8',
  uint16: 'UINT16',
  uint32: 'UINT32',
  uint64: 'UINT64',
  bool: 'BOOL',
  string: 'BYTES',
};
const OIP_TO_ORT = Object.fromEntries(Object.entries(ORT_TO_OIP).map(([k, v]) => [v, k])) as Record<Datatype, Ort.Tensor.Type>;

/** Symbolic dimensions (`batch`, `N`) become -1, as OIP metadata writes a dynamic size. */
const dims = (shape: ReadonlyArray<number | string>): number[] => shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1));

/**
 * ONNX models on onnxruntime-node. Threads, graph optimisation and the execution provider come
 * from the model's settings in the manifest; CUDA is asked for only where the site has a GPU and
 * falls back to CPU where the binary lacks it.
 */
export class OnnxRuntime implements ModelRuntime {
  readonly format = 'onnx';
  private ort?: typeof Ort;

  /**
   * `onFallback` hears when CUDA was asked for and the model runs on the CPU instead.
   * `preferCuda`: the site has a GPU this build can use, so a model that names no provider asks for CUDA.
   */
  constructor(
    private readonly onFallback?: (model: string, reason: string) => void,
    private readonly preferCuda = false,
  ) {}

  private lib(): typeof Ort {
    this.ort ??= require('onnxruntime-node') as typeof Ort;
    return this.ort;
  }

  async load(spec: ModelLoadSpec): Promise<LoadedModel> {
    const ort = this.lib();
    const o = spec.options ?? {};
    let session: Ort.InferenceSession;
    const create = (providers: string[]) =>
      ort.InferenceSession.create(spec.file, {
        intraOpNumThreads: o.threads ?? 1,
        interOpNumThreads: 1,
        graphOptimizationLevel: o.graphOptimization ?? 'all',
        executionProviders: providers,
      });
    let device = 'cpu';
    try {
      if (o.executionProvider === 'cuda' || (o.executionProvider === undefined && this.preferCuda)) {
        try {
          session = await create(['cuda', 'cpu']);
          device = 'cuda';
        } catch (e) {
          // No CUDA provider in this build or no usable GPU: the model still runs, on the CPU.
          this.onFallback?.(spec.name, (e as Error).message);
          session = await create(['cpu']);
        }
      } else {
        session = await create(['cpu']);
      }
    } catch (e) {
      throw new EwError('MODEL_LOAD_FAILED', `model ${spec.name}: onnxruntime could not load ${spec.file}: ${(e as Error).message}`, {
        path: `models.${spec.name}`,
        cause: e,
        detail: `onnxruntime could not load ${spec.file}: ${(e as Error).message}`,
      });
    }
    const meta = (list: readonly Ort.InferenceSession.ValueMetadata[]): TensorSpec[] =>
      list.map((m) => {
        if (!m.isTensor)
          throw new EwError(
            'MODEL_LOAD_FAILED',
            `model ${spec.name}: value ${m.name} is not a tensor; only tensor inputs and outputs are served`,
            { detail: `value ${m.name} is not a tensor; only tensor inputs and outputs are served` },
          );
        const datatype = ORT_TO_OIP[m.type];
        if (!datatype || !DATATYPES.includes(datatype))
          throw new EwError('MODEL_LOAD_FAILED', `model ${spec.name}: ${m.name} has unsupported type ${m.type}`, {
            detail: `${m.name} has unsupported type ${m.type}`,
          });
        return { name: m.name, datatype, shape: dims(m.shape) };
      });
    const inputs = meta(session.inputMetadata);
    const outputs = meta(session.outputMetadata);
    return {
      name: spec.name,
      format: 'onnx',
      inputs,
      outputs,
      device,
      async run(feeds) {
        const ortFeeds: Record<string, Ort.Tensor> = {};
        for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(OIP_TO_ORT[t.datatype], t.data as never, t.shape);
        const res = await session.run(ortFeeds);
        const out: Record<string, Tensor> = {};
        for (const [name, t] of Object.entries(res))
          out[name] = { datatype: ORT_TO_OIP[t.type] ?? 'FP32', shape: [...t.dims], data: t.data as Tensor['data'] };
        return out;
      },
      async close() {
        await session.release();
      },
    };
  }
}
