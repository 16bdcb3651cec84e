/**
 * Cutting text to a bound of the wire contract. The sender cuts what it would otherwise send
 * over a field's limit (an apply error, an RPC answer's reason) instead of having the whole
 * message refused by the receiver — one long error once got a site's every heartbeat refused.
 */
export function clipText(s: string, max: number): string {
  if (s.length <= max) return s;
  const marker = `…[cut ${s.length - max} chars]`;
  // The marker fits inside the bound; a bound too small for it gets a bare cut.
  return max > marker.length * 2 ? s.slice(0, max - marker.length) + marker : s.slice(0, max);
}
