import type { CascadeSpec } from '../../contracts/manifest.ts';

/**
 * Pure: does a cascade's condition hold on the edge model's answer? Then the request goes on
 * to the larger model. For tensor endpoints the condition reads one output (the first when not
 * named): `confidence` — the largest value of any row is below the threshold; `margin` — top-1
 * minus top-2 of any row is below it; `score` — any value is below / above it (an OCR line's
 * score, an anomaly score). Rows are the first dimension (a [n] output is one row per value for
 * `score`, one row for `confidence`/`margin`). For chat answers: `logprob` (mean token
 * log-probability) and `refusal`.
 */
export interface OutputTensor {
  name: string;
  shape: number[];
  data: unknown[];
}

export interface CascadeVerdict {
  escalate: boolean;
  why: string;
}

function rows(t: OutputTensor): number[][] {
  const nums = t.data.map(Number);
  if (t.shape.length <= 1) return [nums];
  const width = t.shape.slice(1).reduce((a, b) => a * b, 1);
  const out: number[][] = [];
  for (let i = 0; i < nums.length; i += width) out.push(nums.slice(i, i + width));
  return out;
}

export function checkTensorCascade(when: CascadeSpec['when'], outputs: readonly OutputTensor[]): CascadeVerdict {
  const pick = (name?: string) => {
    const t = name === undefined ? outputs[0] : outputs.find((o) => o.name === name);
    if (!t)
      throw new Error(
        `the cascade reads output "${name ?? '(first)'}", which the model's answer does not have (it has ${outputs.map((o) => o.name).join(', ') || 'none'})`,
      );
    return t;
  };
  if ('confidence' in when) {
    const c = when.confidence;
    const low = rows(pick(c.output)).map((r) => Math.max(...r));
    const worst = Math.min(...low);
    return { escalate: worst < c.below, why: `confidence ${worst.toFixed(4)} ${worst < c.below ? '<' : '>='} ${c.below}` };
  }
  if ('margin' in when) {
    const m = when.margin;
    const margins = rows(pick(m.output)).map((r) => {
      const s = [...r].sort((a, b) => b - a);
      return (s[0] ?? 0) - (s[1] ?? 0);
    });
    const worst = Math.min(...margins);
    return { escalate: worst < m.below, why: `margin ${worst.toFixed(4)} ${worst < m.below ? '<' : '>='} ${m.below}` };
  }
  if ('score' in when) {
    const s = when.score;
    const vals = pick(s.output).data.map(Number);
    const lo = Math.min(...vals);
    const hi = Math.max(...vals);
    if (s.below !== undefined && lo < s.below) return { escalate: true, why: `${s.output} ${lo.toFixed(4)} < ${s.below}` };
    if (s.above !== undefined && hi > s.above) return { escalate: true, why: `${s.output} ${hi.toFixed(4)} > ${s.above}` };
    return { escalate: false, why: `${s.output} within [${s.below ?? '-inf'}, ${s.above ?? 'inf'}]` };
  }
  return { escalate: false, why: 'condition applies to chat answers only' };
}

/** Common refusal openings of instruction-tuned models (English and Chinese, for Qwen). */
const REFUSAL =
  /^\s*(I('m| am) (sorry|unable|not able)|I can(no|')t (help|assist|answer|do)|As an AI|I do not have (access|enough)|抱歉|对不起|我无法|我不能)/i;

/** For chat answers: the text and, when the site returned them, the tokens' log-probabilities. */
export function checkChatCascade(when: CascadeSpec['when'], text: string, logprobs?: readonly number[]): CascadeVerdict {
  if ('refusal' in when) {
    const r = REFUSAL.test(text);
    return { escalate: r, why: r ? 'the answer is a refusal' : 'the answer is not a refusal' };
  }
  if ('logprob' in when) {
    if (!logprobs || logprobs.length === 0) return { escalate: false, why: 'no log-probabilities in the answer' };
    const mean = logprobs.reduce((a, b) => a + b, 0) / logprobs.length;
    return {
      escalate: mean < when.logprob.below,
      why: `mean log-probability ${mean.toFixed(3)} ${mean < when.logprob.below ? '<' : '>='} ${when.logprob.below}`,
    };
  }
  return { escalate: false, why: 'condition applies to tensor answers only' };
}
