/**
 * The signed-in key lives in sessionStorage only: it goes when the tab closes, is never written
 * to localStorage or a cookie, and never appears in a URL. The storage is injected for tests.
 */
export interface KeyStorage {
  getItem(k: string): string | null;
  setItem(k: string, v: string): void;
  removeItem(k: string): void;
}

const KEY = 'edgeweave.apiKey';
const NOTICE = 'edgeweave.signInNotice';

export function loadKey(s: KeyStorage): string | undefined {
  return s.getItem(KEY) ?? undefined;
}
export function saveKey(s: KeyStorage, key: string): void {
  s.setItem(KEY, key);
  s.removeItem(NOTICE);
}
/** Forget the key, leaving a message for the sign-in page ("your key was revoked"). */
export function signOut(s: KeyStorage, notice?: string): void {
  s.removeItem(KEY);
  if (notice) s.setItem(NOTICE, notice);
  else s.removeItem(NOTICE);
}
export function takeNotice(s: KeyStorage): string | undefined {
  const n = s.getItem(NOTICE) ?? undefined;
  s.removeItem(NOTICE);
  return n;
}

/** A key as an operator pastes it: trimmed; the shape checked before any request is made. */
export function checkKeyShape(raw: string): { ok: true; key: string } | { ok: false; error: string } {
  const key = raw.trim();
  if (key === '') return { ok: false, error: 'Paste an API key (it starts with ewk_).' };
  if (!/^ewk_[A-Za-z0-9_-]{16,}$/.test(key))
    return { ok: false, error: 'That is not an API key: keys look like ewk_ followed by letters, digits, - and _.' };
  return { ok: true, key };
}
