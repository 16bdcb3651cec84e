import { lex, sqlError, type Token, type Pos } from './lexer.ts';
import type { BinOp, Expr, Query, SelectItem } from './ast.ts';

/**
 * A recursive-descent parser for the dialect (eKuiper-compatible in spirit):
 *   [EXPLAIN] SELECT items FROM stream [WHERE e] [GROUP BY e, … [, window]] [HAVING e]
 * Precedence, loosest first: OR · AND · NOT · comparison / IN / BETWEEN / LIKE / IS · || · + - ·
 * * / % · unary - · postfix (.name, [i]) · primary. Errors name line and column and, for a
 * misspelt keyword, what was probably meant.
 */
const CLAUSE_WORDS = ['SELECT', 'FROM', 'WHERE', 'GROUP', 'BY', 'HAVING', 'ORDER', 'LIMIT'];

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array(b.length).fill(0)] as number[]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return d[a.length]![b.length]!;
}

export function closest(word: string, options: Iterable<string>, maxDist = 2): string | undefined {
  let best: string | undefined;
  let bestD = maxDist + 1;
  for (const o of options) {
    const dd = levenshtein(word.toLowerCase(), o.toLowerCase());
    if (dd < bestD) {
      bestD = dd;
      best = o;
    }
  }
  return best;
}

class Parser {
  private i = 0;
  constructor(private readonly toks: Token[]) {}

  private get t(): Token {
    return this.toks[this.i]!;
  }
  private atEnd(): boolean {
    return this.t.kind === 'eof';
  }
  private pos(): Pos {
    return { line: this.t.line, col: this.t.col };
  }
  private next(): Token {
    return this.toks[this.i++]!;
  }
  private isKw(...kws: string[]): boolean {
    return this.t.kind === 'keyword' && kws.includes(this.t.value as string);
  }
  private isPunct(p: string): boolean {
    return this.t.kind === 'punct' && this.t.text === p;
  }
  private isOp(...ops: string[]): boolean {
    return this.t.kind === 'op' && ops.includes(this.t.text);
  }

  private describe(t: Token): string {
    return t.kind === 'eof' ? 'the end of the query' : `"${t.text}"`;
  }

  private fail(expected: string): never {
    const t = this.t;
    let hint: string | undefined;
    if (t.kind === 'ident') {
      const k = closest(t.text, CLAUSE_WORDS, 2);
      if (k) hint = `did you mean ${k}?`;
    }
    throw sqlError('SQL_SYNTAX', this.pos(), `expected ${expected} but found ${this.describe(t)}`, hint);
  }

  private expectKw(kw: string): void {
    if (!this.isKw(kw)) this.fail(kw);
    this.next();
  }
  private expectPunct(p: string, what = `"${p}"`): void {
    if (!this.isPunct(p)) this.fail(what);
    this.next();
  }

  query(): Query {
    let explain = false;
    if (this.isKw('EXPLAIN')) {
      this.next();
      explain = true;
    }
    this.expectKw('SELECT');
    const items: SelectItem[] = [];
    do {
      const pos = this.pos();
      if (this.isOp('*')) {
        this.next();
        items.push({ expr: { k: 'star', pos }, pos });
      } else {
        const expr = this.expr();
        let alias: string | undefined;
        if (this.isKw('AS')) {
          this.next();
          if (this.t.kind !== 'ident' && this.t.kind !== 'keyword') this.fail('a name after AS');
          alias = String(this.next().value);
        } else if (this.t.kind === 'ident') {
          // An implicit alias must be followed by "," or FROM; otherwise it is more likely a
          // misspelt keyword ("SELECT a FORM s") than a name.
          const after = this.toks[this.i + 1]!;
          const fits = (after.kind === 'punct' && after.text === ',') || (after.kind === 'keyword' && after.value === 'FROM');
          if (!fits) this.fail('FROM, "," or AS');
          alias = String(this.next().value);
        }
        items.push({ expr, alias, pos });
      }
    } while (this.isPunct(',') && this.next());
    if (!this.isKw('FROM')) this.fail(items.length ? 'FROM or "," before the next item' : 'a select item');
    this.next();
    if (this.t.kind !== 'ident') this.fail('a stream name');
    const fromTok = this.next();
    const q: Query = {
      explain,
      items,
      from: { name: String(fromTok.value), pos: { line: fromTok.line, col: fromTok.col } },
      groupBy: [],
      orderBy: [],
    };
    if (this.isKw('WHERE')) {
      this.next();
      q.where = this.expr();
    }
    if (this.isKw('GROUP')) {
      this.next();
      this.expectKw('BY');
      do q.groupBy.push(this.expr());
      while (this.isPunct(',') && this.next());
    }
    if (this.isKw('HAVING')) {
      this.next();
      q.having = this.expr();
    }
    if (this.isKw('ORDER')) {
      this.next();
      this.expectKw('BY');
      do {
        const pos = this.pos();
        const expr = this.expr();
        let desc = false;
        // ASC and DESC are words only here, so fields named desc keep working elsewhere.
        if (this.t.kind === 'ident' && /^(asc|desc)$/i.test(this.t.text)) desc = this.next().text.toLowerCase() === 'desc';
        q.orderBy.push({ expr, desc, pos });
      } while (this.isPunct(',') && this.next());
    }
    if (this.isKw('LIMIT')) {
      const pos = this.pos();
      this.next();
      const t = this.t;
      if (t.kind !== 'number' || t.float || !Number.isSafeInteger(t.value) || (t.value as number) < 0)
        this.fail('a whole number of rows after LIMIT');
      this.next();
      q.limit = { n: t.value as number, pos };
    }
    if (this.isPunct(';')) this.next();
    if (!this.atEnd()) this.fail(q.limit ? 'the end of the query' : 'WHERE, GROUP BY, HAVING, ORDER BY, LIMIT or the end of the query');
    return q;
  }

  expr(): Expr {
    return this.or();
  }

  private or(): Expr {
    let l = this.and();
    while (this.isKw('OR')) {
      const pos = this.pos();
      this.next();
      l = { k: 'bin', op: 'OR', l, r: this.and(), pos };
    }
    return l;
  }
  private and(): Expr {
    let l = this.not();
    while (this.isKw('AND')) {
      const pos = this.pos();
      this.next();
      l = { k: 'bin', op: 'AND', l, r: this.not(), pos };
    }
    return l;
  }
  private not(): Expr {
    if (this.isKw('NOT')) {
      const pos = this.pos();
      this.next();
      return { k: 'unary', op: 'NOT', e: this.not(), pos };
    }
    return this.comparison();
  }
  private comparison(): Expr {
    const l = this.concat();
    const pos = this.pos();
    if (this.isOp('=', '==', '!=', '<>', '<', '<=', '>', '>=')) {
      const t = this.next().text;
      const op = (t === '==' ? '=' : t === '<>' ? '!=' : t) as BinOp;
      return { k: 'bin', op, l, r: this.concat(), pos };
    }
    let not = false;
    if (
      this.isKw('NOT') &&
      this.toks[this.i + 1]?.kind === 'keyword' &&
      ['IN', 'BETWEEN', 'LIKE'].includes(this.toks[this.i + 1]!.value as string)
    ) {
      this.next();
      not = true;
    }
    if (this.isKw('IN')) {
      this.next();
      this.expectPunct('(', '"(" after IN');
      const list: Expr[] = [];
      if (!this.isPunct(')'))
        do list.push(this.expr());
        while (this.isPunct(',') && this.next());
      this.expectPunct(')', '")" to close the IN list');
      return { k: 'in', e: l, list, not, pos };
    }
    if (this.isKw('BETWEEN')) {
      this.next();
      const lo = this.concat();
      this.expectKw('AND');
      return { k: 'between', e: l, lo, hi: this.concat(), not, pos };
    }
    if (this.isKw('LIKE')) {
      this.next();
      return { k: 'like', e: l, pattern: this.concat(), not, pos };
    }
    if (not) this.fail('IN, BETWEEN or LIKE after NOT');
    if (this.isKw('IS')) {
      this.next();
      let isNot = false;
      if (this.isKw('NOT')) {
        this.next();
        isNot = true;
      }
      this.expectKw('NULL');
      return { k: 'isnull', e: l, not: isNot, pos };
    }
    return l;
  }
  private concat(): Expr {
    let l = this.additive();
    while (this.isOp('||')) {
      const pos = this.pos();
      this.next();
      l = { k: 'bin', op: '||', l, r: this.additive(), pos };
    }
    return l;
  }
  private additive(): Expr {
    let l = this.multiplicative();
    while (this.isOp('+', '-')) {
      const pos = this.pos();
      const op = this.next().text as BinOp;
      l = { k: 'bin', op, l, r: this.multiplicative(), pos };
    }
    return l;
  }
  private multiplicative(): Expr {
    let l = this.unary();
    while (this.isOp('*', '/', '%')) {
      const pos = this.pos();
      const op = this.next().text as BinOp;
      l = { k: 'bin', op, l, r: this.unary(), pos };
    }
    return l;
  }
  private unary(): Expr {
    if (this.isOp('-')) {
      const pos = this.pos();
      this.next();
      const e = this.unary();
      if (e.k === 'lit' && typeof e.v === 'number') return e.float ? { k: 'lit', v: -e.v, pos, float: true } : { k: 'lit', v: -e.v, pos };
      return { k: 'unary', op: '-', e, pos };
    }
    if (this.isOp('+')) {
      this.next();
      return this.unary();
    }
    return this.postfix();
  }
  private postfix(): Expr {
    let e = this.primary();
    for (;;) {
      if (this.isPunct('.') || this.isOp('->')) {
        // a.b and eKuiper's a->b both read a nested field.
        const pos = this.pos();
        const arrow = this.next().text === '->';
        if (this.t.kind !== 'ident' && this.t.kind !== 'keyword') this.fail(`a field name after "${arrow ? '->' : '.'}"`);
        const name = String(this.next().value);
        e = e.k === 'field' ? { k: 'field', path: [...e.path, name], pos: e.pos } : { k: 'member', e, name, pos };
      } else if (this.isPunct('[')) {
        const pos = this.pos();
        this.next();
        const index = this.expr();
        this.expectPunct(']', '"]"');
        if (e.k === 'field' && index.k === 'lit' && (typeof index.v === 'number' || typeof index.v === 'string'))
          e = { k: 'field', path: [...e.path, index.v], pos: e.pos };
        else e = { k: 'index', e, index, pos };
      } else {
        return e;
      }
    }
  }
  private primary(): Expr {
    const t = this.t;
    const pos = this.pos();
    if (t.kind === 'number') {
      this.next();
      return t.float ? { k: 'lit', v: t.value as number, pos, float: true } : { k: 'lit', v: t.value as number, pos };
    }
    if (t.kind === 'string') {
      this.next();
      return { k: 'lit', v: t.value as string, pos };
    }
    if (this.isKw('NULL')) {
      this.next();
      return { k: 'lit', v: null, pos };
    }
    if (this.isKw('TRUE', 'FALSE')) {
      this.next();
      return { k: 'lit', v: t.value === 'TRUE', pos };
    }
    if (this.isPunct('(')) {
      this.next();
      const e = this.expr();
      this.expectPunct(')', '")"');
      return e;
    }
    if (this.isKw('CASE')) return this.caseExpr();
    if (t.kind === 'ident') {
      this.next();
      if (this.isPunct('(')) {
        this.next();
        const args: Expr[] = [];
        let distinct = false;
        let star = false;
        if (this.isKw('DISTINCT')) {
          this.next();
          distinct = true;
        }
        if (this.isOp('*')) {
          this.next();
          star = true;
        } else if (!this.isPunct(')'))
          do args.push(this.expr());
          while (this.isPunct(',') && this.next());
        this.expectPunct(')', `")" to close ${t.text}(`);
        return { k: 'call', name: String(t.value).toLowerCase(), args, distinct, star, pos };
      }
      return { k: 'field', path: [String(t.value)], pos };
    }
    if (t.kind === 'keyword' && CLAUSE_WORDS.includes(t.value as string)) this.fail('an expression');
    return this.fail('an expression');
  }
  private caseExpr(): Expr {
    const pos = this.pos();
    this.expectKw('CASE');
    const operand = this.isKw('WHEN') ? undefined : this.expr();
    const whens: { when: Expr; then: Expr }[] = [];
    while (this.isKw('WHEN')) {
      this.next();
      const when = this.expr();
      this.expectKw('THEN');
      whens.push({ when, then: this.expr() });
    }
    if (whens.length === 0) this.fail('WHEN');
    let elseE: Expr | undefined;
    if (this.isKw('ELSE')) {
      this.next();
      elseE = this.expr();
    }
    this.expectKw('END');
    return { k: 'case', operand, whens, else: elseE, pos };
  }
}

export function parse(sql: string): Query {
  return new Parser(lex(sql)).query();
}

/** Parses a lone expression (used by tests and by sink templates later). */
export function parseExpr(sql: string): Expr {
  const p = new Parser(lex(sql));
  return p.expr();
}
