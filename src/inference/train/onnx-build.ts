import onnxProto from 'onnx-proto';
import type { onnx as O } from 'onnx-proto';

// onnx-proto is CommonJS: under ESM its namespace comes through the default export.
const { onnx } = onnxProto;

/**
 * A small ONNX graph builder over onnx-proto: enough to export the dense networks the templates
 * train (MatMul, Add, activations, normalisation, reductions). Deterministic: the same weights
 * give the same bytes, which is what lets a test check a committed model against its script.
 */
export class GraphBuilder {
  private readonly nodes: O.INodeProto[] = [];
  private readonly initializers: O.ITensorProto[] = [];
  private readonly inputs: O.IValueInfoProto[] = [];
  private readonly outputs: O.IValueInfoProto[] = [];
  private n = 0;

  constructor(private readonly name: string) {}

  private fresh(prefix: string): string {
    return `${prefix}_${this.n++}`;
  }

  private static valueInfo(name: string, dims: (number | string)[], doc?: string): O.IValueInfoProto {
    return {
      name,
      docString: doc,
      type: {
        tensorType: {
          elemType: onnx.TensorProto.DataType.FLOAT,
          shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
        },
      },
    };
  }

  input(name: string, dims: (number | string)[], doc?: string): string {
    this.inputs.push(GraphBuilder.valueInfo(name, dims, doc));
    return name;
  }

  output(from: string, name: string, dims: (number | string)[], doc?: string): void {
    this.nodes.push({ opType: 'Identity', input: [from], output: [name], name: this.fresh('out') });
    this.outputs.push(GraphBuilder.valueInfo(name, dims, doc));
  }

  /** A float32 constant; values are rounded to float32 here, once. */
  const(values: ArrayLike<number>, dims: number[], prefix = 'w'): string {
    const name = this.fresh(prefix);
    const f = Float32Array.from(values as number[]);
    this.initializers.push({ name, dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(f.buffer) });
    return name;
  }

  op(opType: string, inputs: string[], attrs: O.IAttributeProto[] = []): string {
    const out = this.fresh(opType.toLowerCase());
    this.nodes.push({ opType, input: inputs, output: [out], name: this.fresh(`${opType}_node`), attribute: attrs });
    return out;
  }

  /** x · W + b, with W given row-major as [in][out]. */
  dense(x: string, w: number[][], b: number[]): string {
    const rows = w.length;
    const cols = w[0]!.length;
    const W = this.const(w.flat(), [rows, cols], 'W');
    const B = this.const(b, [cols], 'b');
    return this.op('Add', [this.op('MatMul', [x, W]), B]);
  }

  encode(docString: string): Uint8Array {
    const model: O.IModelProto = {
      irVersion: 8,
      producerName: 'edgeweave',
      producerVersion: '1',
      modelVersion: 1,
      docString,
      opsetImport: [{ domain: '', version: 13 }],
      graph: { name: this.name, node: this.nodes, initializer: this.initializers, input: this.inputs, output: this.outputs },
    };
    return onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
  }
}

export const ints = (name: string, values: number[]): O.IAttributeProto => ({
  name,
  type: onnx.AttributeProto.AttributeType.INTS,
  ints: values,
});
export const int = (name: string, value: number): O.IAttributeProto => ({ name, type: onnx.AttributeProto.AttributeType.INT, i: value });
