import { z } from 'zod';

/**
 * The rollout's vocabulary, defined once: the API checks a deployment's strategy with these
 * schemas, the controller's pure core (cloud/rollout/reconcile.ts) and the console take their
 * types from them (z.infer, type-only where they must import nothing).
 */
export const Phase = z.enum(['progressing', 'baking', 'paused', 'succeeded', 'failed', 'rolled-back', 'aborted']);
export type Phase = z.infer<typeof Phase>;

export const SitePhase = z.enum(['pending', 'updating', 'updated', 'failed', 'deferred', 'reverted']);
export type SitePhase = z.infer<typeof SitePhase>;

export const Gates = z.object({
  /** Largest share of failed model requests on canary sites (0.01 = 1 %). */
  maxErrorRate: z.number().min(0).max(1).optional(),
  /** Largest model p95 latency on canary sites, ms. */
  maxP95Ms: z.number().positive().optional(),
  /** Largest relative change of the models' mean output, canary against sites on the previous version. */
  maxDrift: z.number().positive().optional(),
});
export type Gates = z.infer<typeof Gates>;

/** How a deployment reaches its pool; defaults are the API's (a body may leave them out). */
export const Strategy = z.discriminatedUnion('type', [
  z.object({ type: z.literal('all') }),
  z.object({ type: z.literal('rolling'), maxUnavailable: z.number().int().min(1).default(1) }),
  z.object({
    type: z.literal('canary'),
    canary: z.number().positive().default(1).describe('sites, or a percentage with canaryPercent'),
    // Optional rather than defaulted: rollouts stored before it existed have none (= false).
    canaryPercent: z.boolean().optional(),
    bakeTimeS: z.number().int().min(0).max(86_400).default(300),
    gates: Gates.default({}),
    then: z.enum(['all', 'rolling']).default('all'),
    maxUnavailable: z.number().int().min(1).optional(),
  }),
]);
export type Strategy = z.infer<typeof Strategy>;
