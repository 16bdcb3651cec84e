import type { z } from 'zod';
import { formatPath } from './errors.ts';

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

/** C0 controls and DEL: refused in identifiers and labels (messages.ts safeString). */
// biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/g;

/**
 * Makes `value` fit `schema` by the receiver's own limits, for what a sender assembles from many
 * parts (the site's status): a string over its bound is cut (clipText), a list over its bound
 * keeps its first items, a number past its bound is clamped, control characters are dropped
 * from a string that may not hold them. What still does not fit after that is reported with its
 * path (the caller leaves the field out, or does not send). Returns the fitted copy and what was
 * changed, so the sender can log it; `value` itself is not touched.
 */
export function fitToSchema<T extends z.ZodType>(
  schema: T,
  value: unknown,
  maxPasses = 8,
): { ok: true; value: z.infer<T>; fixed: string[] } | { ok: false; path: string; message: string; fixed: string[] } {
  const first = schema.safeParse(value);
  if (first.success) return { ok: true, value: first.data, fixed: [] };
  // Copied only when something must change (the common case costs one parse).
  let v: unknown = structuredClone(value);
  const fixed: string[] = [];
  for (let pass = 0; ; pass++) {
    const r = pass === 0 ? first : schema.safeParse(v);
    if (r.success) return { ok: true, value: r.data, fixed };
    let changed = false;
    for (const issue of r.error.issues) {
      const at = formatPath(issue.path);
      const cur = getAt(v, issue.path);
      let next: unknown = cur;
      if (issue.code === 'too_big' && typeof cur === 'string') next = clipText(cur, Number(issue.maximum));
      else if (issue.code === 'too_big' && Array.isArray(cur)) next = cur.slice(0, Number(issue.maximum));
      else if ((issue.code === 'too_big' || issue.code === 'too_small') && typeof cur === 'number')
        next = issue.code === 'too_big' ? Number(issue.maximum) : Number(issue.minimum);
      else if (issue.code === 'custom' && typeof cur === 'string') next = cur.replace(CONTROL, '').replace(/\u0000/g, '');
      if (next !== cur) {
        v = setAt(v, issue.path, next);
        fixed.push(at || '(root)');
        changed = true;
      }
    }
    if (!changed || pass >= maxPasses) {
      const issue = r.error.issues[0]!;
      return { ok: false, path: formatPath(issue.path), message: issue.message, fixed };
    }
  }
}

function getAt(v: unknown, path: readonly PropertyKey[]): unknown {
  let cur = v;
  for (const k of path) cur = cur === null || typeof cur !== 'object' ? undefined : (cur as Record<PropertyKey, unknown>)[k];
  return cur;
}

function setAt(root: unknown, path: readonly PropertyKey[], value: unknown): unknown {
  if (path.length === 0) return value;
  let cur = root as Record<PropertyKey, unknown>;
  for (const k of path.slice(0, -1)) cur = cur[k] as Record<PropertyKey, unknown>;
  cur[path[path.length - 1]!] = value;
  return root;
}
