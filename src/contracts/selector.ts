import { EwError } from './errors.ts';

/**
 * A label selector picks a pool of sites: every key must equal the site's label.
 * `region` is matched against the site's region, so `{region: eu-west}` works without a label.
 * An empty selector matches every site of the tenant (a deliberate "whole fleet" target).
 */
export type Selector = Record<string, string>;
export type Labels = Record<string, string>;

const KEY_RE = /^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;
const VALUE_RE = /^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$/;

/** Kubernetes-style label syntax; the error names the offending key. */
export function validateLabels(labels: Labels, where: string): void {
  for (const [k, v] of Object.entries(labels)) {
    if (!KEY_RE.test(k)) {
      throw new EwError(
        'INVALID_SELECTOR',
        `label key "${k}" is not valid: use letters, digits, '-', '_', '.', at most 63 characters, starting and ending alphanumeric`,
        { path: `${where}.${k}` },
      );
    }
    if (typeof v !== 'string' || !VALUE_RE.test(v)) {
      throw new EwError(
        'INVALID_SELECTOR',
        `label value for "${k}" is not valid: use letters, digits, '-', '_', '.', at most 63 characters`,
        { path: `${where}.${k}` },
      );
    }
  }
}

export function matches(selector: Selector, site: { labels: Labels; region: string }): boolean {
  for (const [k, v] of Object.entries(selector)) {
    const actual = k === 'region' ? site.region : site.labels[k];
    if (actual !== v) return false;
  }
  return true;
}

/** Parses `city=hangzhou,industry=manufacturing` (the CLI form). */
export function parseSelector(text: string): Selector {
  const out: Selector = {};
  const trimmed = text.trim();
  if (trimmed === '') return out;
  for (const part of trimmed.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new EwError('INVALID_SELECTOR', `selector term "${part}" is not key=value`, { path: 'selector' });
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  validateLabels(out, 'selector');
  return out;
}
