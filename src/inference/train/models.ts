import { GraphBuilder, int, ints } from './onnx-build.ts';
import { forward, initNetwork, meanStd, train, type Layer } from './mlp.ts';
import { seeded as seededRandom } from '../../lib/random.ts';
import { energyProfile, trafficProfile, vibrationProfile } from '../../sim/profiles.ts';

/**
 * The templates' own models, trained here on data from the same simulators that feed the demo
 * (no model can be downloaded on a site's network). `npm run models` writes them to models/;
 * a test rebuilds them and checks the committed files are byte for byte what this code makes.
 */
export interface BuiltModel {
  file: string;
  bytes: Uint8Array;
  report: Record<string, number>;
}

function normalised(g: GraphBuilder, x: string, mean: number[], std: number[]): string {
  return g.op('Div', [g.op('Sub', [x, g.const(mean, [mean.length], 'mean')]), g.const(std, [std.length], 'std')]);
}

function denseStack(g: GraphBuilder, x: string, layers: Layer[]): string {
  let cur = x;
  for (const l of layers) {
    cur = g.dense(cur, l.w, l.b);
    if (l.act === 'tanh') cur = g.op('Tanh', [cur]);
    if (l.act === 'sigmoid') cur = g.op('Sigmoid', [cur]);
  }
  return cur;
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};

/**
 * Vibration anomaly autoencoder: rms, kurtosis, peakHz → a score in [0, 1). It learns to
 * reconstruct healthy machines' readings; the score is mse / (mse + c), with c the 99th
 * percentile of healthy reconstruction error, so healthy readings score below about 0.5 and a
 * failing bearing (high rms, kurtosis, shifted peak) near 1.
 */
export function buildVibrationAe(): BuiltModel {
  const profile = vibrationProfile(['press-01', 'press-02', 'cnc-07', 'pump-12']);
  const rand = seededRandom(20261129);
  const healthy: number[][] = [];
  for (let i = 0; i < 6000; i++) {
    // Healthy machines (the profile's last machine degrades; it is left out of training).
    const r = profile.reading(profile.devices[i % 3]!, i * 500, rand).payload as { rms: number; kurtosis: number; peakHz: number };
    healthy.push([r.rms, r.kurtosis, r.peakHz]);
  }
  const { mean, std } = meanStd(healthy);
  const xs = healthy.map((x) => x.map((v, i) => (v - mean[i]!) / std[i]!));
  const net = initNetwork([3, 8, 2, 8, 3], ['tanh', 'tanh', 'tanh', 'linear'], seededRandom(7));
  const loss = train(net, xs, xs, { epochs: 30, batchSize: 32, lr: 0.01, loss: 'mse', seed: 11 });
  const mse = (x: number[]) => {
    const out = forward(net, x).at(-1)!;
    return out.reduce((s, p, k) => s + (p - x[k]!) ** 2, 0) / 3;
  };
  const c = pct(xs.map(mse), 0.99);

  const g = new GraphBuilder('vibration_ae');
  const x = g.input('features', ['batch', 3], 'rms, kurtosis, peakHz');
  const z = normalised(g, x, mean, std);
  const recon = denseStack(g, z, net);
  const diff = g.op('Sub', [recon, z]);
  const m = g.op('ReduceMean', [g.op('Mul', [diff, diff])], [ints('axes', [1]), int('keepdims', 0)]);
  const score = g.op('Div', [m, g.op('Add', [m, g.const([c], [], 'c')])]);
  g.output(score, 'score', ['batch'], 'anomaly score in [0, 1)');
  const bytes = g.encode('Edgeweave vibration anomaly autoencoder (rms, kurtosis, peakHz → score), trained on simulated healthy machines.');
  return { file: 'vibration-ae.onnx', bytes, report: { trainLoss: loss, healthyP99Mse: c } };
}

/**
 * Short-horizon congestion predictor: an intersection's last minute (vehicles, average speed,
 * peak occupancy) → the probability that the next minute's average speed is under 15 km/h.
 */
export function buildTrafficCongestion(): BuiltModel {
  const intersections = ['wensan-xueyuan', 'yanan-fengqi', 'moganshan-huancheng', 'binjiang-jiangnan'];
  const profile = trafficProfile('hangzhou', intersections);
  const rand = seededRandom(1129);
  const xs: number[][] = [];
  const ys: number[][] = [];
  const day0 = Date.UTC(2026, 10, 23);
  for (const device of intersections) {
    let prev: number[] | undefined;
    // 36 hours of minutes per intersection, from 5-second readings.
    for (let minute = 0; minute < 36 * 60; minute++) {
      let vehicles = 0;
      let speed = 0;
      let occ = 0;
      for (let s = 0; s < 60; s += 5) {
        const r = profile.reading(device, day0 + minute * 60_000 + s * 1000, rand).payload as {
          vehicles: number;
          speed: number;
          occupancy: number;
        };
        vehicles += r.vehicles;
        speed += r.speed / 12;
        occ = Math.max(occ, r.occupancy);
      }
      if (prev) {
        xs.push(prev);
        ys.push([speed < 15 ? 1 : 0]);
      }
      prev = [vehicles, speed, occ];
    }
  }
  const { mean, std } = meanStd(xs);
  const nx = xs.map((x) => x.map((v, i) => (v - mean[i]!) / std[i]!));
  const net = initNetwork([3, 8, 1], ['tanh', 'sigmoid'], seededRandom(5));
  const loss = train(net, nx, ys, { epochs: 40, batchSize: 64, lr: 0.01, loss: 'bce', seed: 13 });
  const correct = nx.filter((x, i) => (forward(net, x).at(-1)![0]! > 0.5 ? 1 : 0) === ys[i]![0]).length;

  const g = new GraphBuilder('traffic_congestion');
  const x = g.input('features', ['batch', 3], 'vehicles (sum), speed (avg km/h), occupancy (max) over the last minute');
  const p = denseStack(g, normalised(g, x, mean, std), net);
  const flat = g.op('ReduceMean', [p], [ints('axes', [1]), int('keepdims', 0)]);
  g.output(flat, 'congestion', ['batch'], 'probability that the next minute is congested');
  const bytes = g.encode(
    'Edgeweave traffic congestion predictor (last minute → P(next minute avg speed < 15 km/h)), trained on simulated intersections.',
  );
  return {
    file: 'traffic-congestion.onnx',
    bytes,
    report: { trainLoss: loss, accuracy: correct / nx.length, positives: ys.filter((y) => y[0] === 1).length / ys.length },
  };
}

/**
 * Next-15-minutes load forecast for a building meter: (sin, cos of the hour of day, this quarter
 * hour's average kW, average outdoor °C) → the next quarter hour's average kW.
 */
export function buildLoadForecast(): BuiltModel {
  const profile = energyProfile();
  const rand = seededRandom(2026);
  const xs: number[][] = [];
  const ys: number[][] = [];
  const day0 = Date.UTC(2026, 10, 16);
  for (const device of profile.devices) {
    let prev: number[] | undefined;
    for (let q = 0; q < 14 * 96; q++) {
      // two weeks of quarter hours
      let kw = 0;
      let temp = 0;
      const n = 15;
      for (let i = 0; i < n; i++) {
        const r = profile.reading(device, day0 + q * 900_000 + i * 60_000, rand).payload as { kw: number; temperature: number };
        kw += r.kw / n;
        temp += r.temperature / n;
      }
      const end = new Date(day0 + (q + 1) * 900_000);
      const h = end.getUTCHours() + end.getUTCMinutes() / 60;
      if (prev) {
        xs.push(prev);
        ys.push([kw]);
      }
      prev = [Math.sin((2 * Math.PI * h) / 24), Math.cos((2 * Math.PI * h) / 24), kw, temp];
    }
  }
  const { mean, std } = meanStd(xs);
  const yStats = meanStd(ys);
  const nx = xs.map((x) => x.map((v, i) => (v - mean[i]!) / std[i]!));
  const ny = ys.map((y) => [(y[0]! - yStats.mean[0]!) / yStats.std[0]!]);
  const net = initNetwork([4, 12, 1], ['tanh', 'linear'], seededRandom(9));
  const loss = train(net, nx, ny, { epochs: 60, batchSize: 32, lr: 0.01, loss: 'mse', seed: 17 });
  const mae =
    nx.reduce((a, x, i) => a + Math.abs(forward(net, x).at(-1)![0]! * yStats.std[0]! + yStats.mean[0]! - ys[i]![0]!), 0) / nx.length;

  const g = new GraphBuilder('load_forecast');
  const x = g.input('features', ['batch', 4], 'sin(hour), cos(hour), avg kW this quarter hour, avg °C');
  const z = denseStack(g, normalised(g, x, mean, std), net);
  const kw = g.op('Add', [g.op('Mul', [z, g.const([yStats.std[0]!], [1], 'ystd')]), g.const([yStats.mean[0]!], [1], 'ymean')]);
  const flat = g.op('ReduceMean', [kw], [ints('axes', [1]), int('keepdims', 0)]);
  g.output(flat, 'forecastKw', ['batch'], 'average kW over the next 15 minutes');
  const bytes = g.encode(
    'Edgeweave building load forecaster (hour of day, this quarter hour → next quarter hour kW), trained on simulated meters.',
  );
  return { file: 'load-forecast.onnx', bytes, report: { trainLoss: loss, maeKw: mae } };
}

export const TEMPLATE_MODELS = [buildVibrationAe, buildTrafficCongestion, buildLoadForecast];

/** Which templates (templates/NAME/models/) carry a copy of each model file. */
export const TEMPLATE_COPIES: Record<string, string[]> = {
  'vibration-ae.onnx': ['predictive-maintenance'],
  'traffic-congestion.onnx': ['smart-city-traffic'],
  'load-forecast.onnx': ['energy-load'],
};
