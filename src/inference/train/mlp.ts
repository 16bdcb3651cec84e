/**
 * A tiny multilayer perceptron with Adam, in plain TypeScript and float64: enough to train the
 * templates' small models on generated data, deterministically (seeded initialisation and
 * shuffling, fixed epochs), so that a script can rebuild a committed model bit for bit.
 */
import { gaussian, seeded } from '../../lib/random.ts';

export interface Layer {
  w: number[][];
  b: number[];
  act: 'tanh' | 'linear' | 'sigmoid';
}

export function initNetwork(sizes: number[], acts: Layer['act'][], rand: () => number): Layer[] {
  const layers: Layer[] = [];
  for (let i = 0; i < sizes.length - 1; i++) {
    const fanIn = sizes[i]!;
    const fanOut = sizes[i + 1]!;
    const scale = Math.sqrt(2 / (fanIn + fanOut)); // Glorot
    layers.push({
      w: Array.from({ length: fanIn }, () => Array.from({ length: fanOut }, () => gaussian(rand) * scale)),
      b: new Array(fanOut).fill(0),
      act: acts[i]!,
    });
  }
  return layers;
}

const activate = (x: number, act: Layer['act']) => (act === 'tanh' ? Math.tanh(x) : act === 'sigmoid' ? 1 / (1 + Math.exp(-x)) : x);

/** Forward pass; returns every layer's activations (input first). */
export function forward(layers: Layer[], x: number[]): number[][] {
  const acts = [x];
  let cur = x;
  for (const l of layers) {
    const out = new Array<number>(l.b.length);
    for (let j = 0; j < out.length; j++) {
      let s = l.b[j]!;
      for (let i = 0; i < cur.length; i++) s += cur[i]! * l.w[i]![j]!;
      out[j] = activate(s, l.act);
    }
    acts.push(out);
    cur = out;
  }
  return acts;
}

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  lr: number;
  loss: 'mse' | 'bce';
  seed: number;
}

/** Trains in place with Adam; returns the mean loss of the last epoch. */
export function train(layers: Layer[], xs: number[][], ys: number[][], o: TrainOptions): number {
  const rand = seeded(o.seed);
  const m = layers.map((l) => ({ w: l.w.map((r) => r.map(() => 0)), b: l.b.map(() => 0) }));
  const v = layers.map((l) => ({ w: l.w.map((r) => r.map(() => 0)), b: l.b.map(() => 0) }));
  const b1 = 0.9;
  const b2 = 0.999;
  let step = 0;
  let lastLoss = 0;
  const order = xs.map((_, i) => i);
  for (let epoch = 0; epoch < o.epochs; epoch++) {
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    let total = 0;
    for (let start = 0; start < order.length; start += o.batchSize) {
      const batch = order.slice(start, start + o.batchSize);
      const gW = layers.map((l) => l.w.map((r) => r.map(() => 0)));
      const gB = layers.map((l) => l.b.map(() => 0));
      for (const idx of batch) {
        const acts = forward(layers, xs[idx]!);
        const out = acts[acts.length - 1]!;
        const y = ys[idx]!;
        // dLoss/dz at the output: for sigmoid+BCE and linear+MSE both are (out - y) (MSE up to a factor).
        let delta = out.map((p, k) => p - y[k]!);
        total +=
          o.loss === 'mse'
            ? out.reduce((s, p, k) => s + (p - y[k]!) ** 2, 0) / out.length
            : -y.reduce((s, t, k) => s + t * Math.log(Math.max(out[k]!, 1e-12)) + (1 - t) * Math.log(Math.max(1 - out[k]!, 1e-12)), 0) /
              out.length;
        for (let li = layers.length - 1; li >= 0; li--) {
          const l = layers[li]!;
          const input = acts[li]!;
          for (let i = 0; i < input.length; i++) for (let j = 0; j < delta.length; j++) gW[li]![i]![j]! += input[i]! * delta[j]!;
          for (let j = 0; j < delta.length; j++) gB[li]![j]! += delta[j]!;
          if (li > 0) {
            const prev = layers[li - 1]!;
            const a = acts[li]!;
            const next = new Array<number>(input.length).fill(0);
            for (let i = 0; i < input.length; i++) {
              let s = 0;
              for (let j = 0; j < delta.length; j++) s += l.w[i]![j]! * delta[j]!;
              next[i] = prev.act === 'tanh' ? s * (1 - a[i]! ** 2) : prev.act === 'sigmoid' ? s * a[i]! * (1 - a[i]!) : s;
            }
            delta = next;
          }
        }
      }
      step++;
      const lrT = (o.lr * Math.sqrt(1 - b2 ** step)) / (1 - b1 ** step);
      layers.forEach((l, li) => {
        for (let i = 0; i < l.w.length; i++) {
          for (let j = 0; j < l.w[i]!.length; j++) {
            const g = gW[li]![i]![j]! / batch.length;
            m[li]!.w[i]![j] = b1 * m[li]!.w[i]![j]! + (1 - b1) * g;
            v[li]!.w[i]![j] = b2 * v[li]!.w[i]![j]! + (1 - b2) * g * g;
            l.w[i]![j]! -= (lrT * m[li]!.w[i]![j]!) / (Math.sqrt(v[li]!.w[i]![j]!) + 1e-8);
          }
        }
        for (let j = 0; j < l.b.length; j++) {
          const g = gB[li]![j]! / batch.length;
          m[li]!.b[j] = b1 * m[li]!.b[j]! + (1 - b1) * g;
          v[li]!.b[j] = b2 * v[li]!.b[j]! + (1 - b2) * g * g;
          l.b[j]! -= (lrT * m[li]!.b[j]!) / (Math.sqrt(v[li]!.b[j]!) + 1e-8);
        }
      });
    }
    lastLoss = total / order.length;
  }
  return lastLoss;
}

export function meanStd(xs: number[][]): { mean: number[]; std: number[] } {
  const d = xs[0]!.length;
  const mean = new Array<number>(d).fill(0);
  for (const x of xs) for (let i = 0; i < d; i++) mean[i]! += x[i]! / xs.length;
  const std = new Array<number>(d).fill(0);
  for (const x of xs) for (let i = 0; i < d; i++) std[i]! += (x[i]! - mean[i]!) ** 2 / xs.length;
  return { mean, std: std.map((s) => Math.sqrt(s) || 1) };
}
