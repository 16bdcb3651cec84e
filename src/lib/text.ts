/**
 * Makes text from elsewhere (a site's log lines, a result) safe to print on a terminal: C0 and
 * C1 control characters and DEL — which could move the cursor, rewrite the screen or set the
 * window title — are shown as visible escapes (`\x1b`, `\u009b`) instead of acting.
 * Tabs stay; a newline inside one line is shown as `\n` so one line stays one line.
 *
 * @example escapeControl('ok\x1b[2J') === 'ok\\x1b[2J'
 */
export function escapeControl(s: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
  return s.replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f\u2028\u2029]/g, (c) => {
    const n = c.charCodeAt(0);
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}
