import { EwError } from '../../contracts/errors.ts';
import type { Clock } from '../../lib/clock.ts';
import { FairQueue } from './fair-queue.ts';
import type { GenerateOptions, Usage } from './types.ts';

/**
 * `llm('endpoint', prompt [, '{"max_tokens": 60, "json_schema": {…}}'])` in a rule: the prompt is
 * sent as one user message to the app's endpoint; the result is the text, or the parsed JSON when
 * a json_schema is given. Per rule: at most `concurrency` calls at once (others wait, bounded by
 * the rule's backlog) and a token budget per minute (prompt + completion; past it a call fails
 * with TOKEN_BUDGET_EXHAUSTED and the record goes to the rule's errors). Ordering and the
 * asynchronous flow are the stream engine's (ModelRule), as for infer().
 */
export interface RuleLlmLimits {
  concurrency: number;
  tokensPerMinute: number;
}
export const DEFAULT_RULE_LLM: RuleLlmLimits = { concurrency: 2, tokensPerMinute: 20_000 };

export type Complete = (call: {
  app: string;
  endpoint: string;
  prompt: string;
  client: string;
  maxTokens?: number;
  opts: Omit<GenerateOptions, 'maxTokens'>;
}) => Promise<{ text: string; usage: Usage }>;

export class RuleLlmCalls {
  private readonly rules = new Map<string, { queue: FairQueue; minute: number; used: number }>();
  constructor(
    private readonly clock: Clock,
    private readonly complete: Complete,
  ) {}

  async call(app: string, rule: string, limits: Partial<RuleLlmLimits>, endpoint: string, args: unknown[]): Promise<unknown> {
    const l = { ...DEFAULT_RULE_LLM, ...Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)) } as RuleLlmLimits;
    const key = `${app}/${rule}`;
    let st = this.rules.get(key);
    // Backlog bound: the rule's own (ModelRule.maxWaiting) — the queue here only orders.
    if (!st) {
      st = { queue: new FairQueue(l.concurrency, 1_000_000), minute: 0, used: 0 };
      this.rules.set(key, st);
    }
    const [promptArg, optsArg] = args;
    if (promptArg === null || promptArg === undefined) throw new EwError('VALIDATION_FAILED', `llm('${endpoint}', …): the prompt is null`);
    const prompt = typeof promptArg === 'string' ? promptArg : JSON.stringify(promptArg);
    const o = (typeof optsArg === 'string' ? JSON.parse(optsArg) : {}) as {
      max_tokens?: number;
      json_schema?: Record<string, unknown>;
      temperature?: number;
    };
    const release = await st.queue.acquire('rule');
    try {
      const minute = Math.floor(this.clock.now() / 60_000);
      if (minute !== st.minute) {
        st.minute = minute;
        st.used = 0;
      }
      if (st.used >= l.tokensPerMinute) {
        throw new EwError(
          'TOKEN_BUDGET_EXHAUSTED',
          `rule ${rule} used its llm() budget of ${l.tokensPerMinute} tokens this minute; raise options.llmTokensPerMinute or call llm() on fewer rows`,
        );
      }
      const r = await this.complete({
        app,
        endpoint,
        prompt,
        client: `rule:${key}`,
        maxTokens: o.max_tokens,
        opts: { jsonSchema: o.json_schema, temperature: o.temperature },
      });
      st.used += r.usage.promptTokens + r.usage.completionTokens;
      if (!o.json_schema) return r.text;
      try {
        return JSON.parse(r.text);
      } catch {
        throw new EwError(
          'VALIDATION_FAILED',
          `llm('${endpoint}', …) was asked for JSON but the answer was cut at max_tokens before it closed (${r.text.length} characters); raise max_tokens or bound the schema (maxLength, enum)`,
        );
      }
    } finally {
      release();
    }
  }

  /** A rule stopped: forget its counters. */
  forget(app: string, rule: string): void {
    this.rules.delete(`${app}/${rule}`);
  }
}
