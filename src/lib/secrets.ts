import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Secrets are 256-bit random strings with a readable prefix (`ewk_` admin keys, `ewj_` join
 * tokens, `ews_` site secrets). Being high-entropy, they are stored as a sha256 digest — a slow
 * password hash buys nothing against guessing 2^256 values and would cost every MQTT connect.
 * The prefix is not secret; it lets log scrubbers and secret scanners recognise a leaked value.
 */
export function newSecret(prefix: 'ewk' | 'ewj' | 'ews' | 'ewl' | 'ewd'): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Constant-time comparison of a presented secret against a stored digest. */
export function verifySecret(secret: string, digest: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'hex');
  const b = Buffer.from(digest, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Short, URL-safe, unique ids (`site-…`, `dep-…`): 12 random bytes. */
export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(9)
    .toString('base64url')
    .toLowerCase()
    .replace(/[^a-z0-9]/g, '0')}`;
}
