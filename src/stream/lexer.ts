import { EwError } from '../contracts/errors.ts';

/**
 * The streaming-SQL lexer. Every token carries its line and column (1-based) so that any later
 * error — syntax, unknown field, wrong type — can point at the exact place in the rule.
 */
export type TokenKind = 'ident' | 'number' | 'string' | 'op' | 'punct' | 'keyword' | 'eof';

export interface Token {
  kind: TokenKind;
  text: string;
  value?: number | string;
  line: number;
  col: number;
  pos: number;
  float?: boolean;
}

export const KEYWORDS = new Set([
  'SELECT',
  'FROM',
  'WHERE',
  'GROUP',
  'BY',
  'HAVING',
  'AS',
  'AND',
  'OR',
  'NOT',
  'IN',
  'BETWEEN',
  'LIKE',
  'IS',
  'NULL',
  'TRUE',
  'FALSE',
  'CASE',
  'WHEN',
  'THEN',
  'ELSE',
  'END',
  'DISTINCT',
  'EXPLAIN',
  'ESCAPE',
  'ORDER',
  'LIMIT',
]);

/** Where a piece of SQL sits; `sqlError` formats it as `line L, column C`. */
export interface Pos {
  line: number;
  col: number;
}

/** An error at a place in the rule: the message names it, and `pos` carries it as data. */
export function sqlError(code: 'SQL_SYNTAX' | 'SQL_INVALID' | 'SQL_LIMIT', at: Pos, message: string, hint?: string): EwError {
  const detail = `${message}${hint ? `; ${hint}` : ''}`;
  return new EwError(code, `line ${at.line}, column ${at.col}: ${detail}`, { pos: { line: at.line, col: at.col }, detail });
}

export function lex(sql: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const at = (p: number): Pos => ({ line, col: p - lineStart + 1 });
  const push = (kind: TokenKind, start: number, text: string, value?: number | string) =>
    out.push({ kind, text, value, line, col: start - lineStart + 1, pos: start });
  while (i < sql.length) {
    const c = sql[i]!;
    if (c === '\n') {
      i++;
      line++;
      lineStart = i;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      i++;
      continue;
    }
    if (c === '-' && sql[i + 1] === '-') {
      while (i < sql.length && sql[i] !== '\n') i++;
      continue;
    }
    if (c === '/' && sql[i + 1] === '*') {
      const start = i;
      const startPos = at(i);
      i += 2;
      while (i < sql.length && !(sql[i] === '*' && sql[i + 1] === '/')) {
        if (sql[i] === '\n') {
          line++;
          lineStart = i + 1;
        }
        i++;
      }
      if (i >= sql.length) throw sqlError('SQL_SYNTAX', startPos, 'unterminated comment', 'close it with */');
      i += 2;
      void start;
      continue;
    }
    const start = i;
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(sql[i + 1] ?? ''))) {
      while (/[0-9]/.test(sql[i] ?? '')) i++;
      if (sql[i] === '.' && /[0-9]/.test(sql[i + 1] ?? '')) {
        i++;
        while (/[0-9]/.test(sql[i] ?? '')) i++;
      }
      if ((sql[i] === 'e' || sql[i] === 'E') && /[-+0-9]/.test(sql[i + 1] ?? '')) {
        i++;
        if (sql[i] === '+' || sql[i] === '-') i++;
        while (/[0-9]/.test(sql[i] ?? '')) i++;
      }
      const text = sql.slice(start, i);
      push('number', start, text, Number(text));
      // 2.0 and 1e3 are floats, 2 is an integer: integer arithmetic (7 / 2 = 3) follows eKuiper.
      if (/[.eE]/.test(text)) out[out.length - 1]!.float = true;
      continue;
    }
    if (/[A-Za-z_]/.test(c)) {
      while (/[A-Za-z0-9_]/.test(sql[i] ?? '')) i++;
      const text = sql.slice(start, i);
      const up = text.toUpperCase();
      if (KEYWORDS.has(up)) push('keyword', start, text, up);
      else push('ident', start, text, text);
      continue;
    }
    if (c === '`') {
      // Quoted identifier: a field name with spaces or a keyword's spelling (eKuiper's backquotes).
      const startPos = at(i);
      i++;
      let s = '';
      while (i < sql.length && sql[i] !== c) {
        s += sql[i];
        i++;
      }
      if (i >= sql.length) throw sqlError('SQL_SYNTAX', startPos, `unterminated quoted name`, `close it with ${c}`);
      i++;
      push('ident', start, sql.slice(start, i), s);
      continue;
    }
    if (c === "'" || c === '"') {
      // String literals: 'single' or "double" quoted, as in eKuiper (a double-quoted text is a
      // string, never a field: quote odd field names with backquotes). A doubled quote or a
      // backslash escapes the quote character.
      const startPos = at(i);
      i++;
      let s = '';
      for (;;) {
        if (i >= sql.length)
          throw sqlError('SQL_SYNTAX', startPos, 'unterminated string', `close it with ${c} (write ${c}${c} for a quote inside)`);
        if (sql[i] === '\\' && sql[i + 1] === c) {
          s += c;
          i += 2;
          continue;
        }
        if (sql[i] === c) {
          if (sql[i + 1] === c) {
            s += c;
            i += 2;
            continue;
          }
          i++;
          break;
        }
        if (sql[i] === '\n') {
          line++;
          lineStart = i + 1;
        }
        s += sql[i];
        i++;
      }
      push('string', start, sql.slice(start, i), s);
      continue;
    }
    const two = sql.slice(i, i + 2);
    if (['<=', '>=', '!=', '<>', '||', '==', '->'].includes(two)) {
      i += 2;
      push('op', start, two);
      continue;
    }
    if ('+-*/%<>='.includes(c)) {
      i++;
      push('op', start, c);
      continue;
    }
    if ('(),.[];'.includes(c)) {
      i++;
      push('punct', start, c);
      continue;
    }
    throw sqlError('SQL_SYNTAX', at(i), `unexpected character "${c}"`);
  }
  out.push({ kind: 'eof', text: '', line, col: i - lineStart + 1, pos: i });
  return out;
}
