/**
 * Reconnect delay: exponential from `baseMs`, capped at `maxMs`, with jitter (half to all of the
 * step) so that many consoles cut off together do not all come back in the same instant.
 */
export function backoffDelay(attempt: number, random: () => number = Math.random, baseMs = 500, maxMs = 15_000): number {
  const step = Math.min(maxMs, baseMs * 2 ** Math.max(0, Math.min(attempt, 20)));
  return Math.round(step * (0.5 + random() / 2));
}
