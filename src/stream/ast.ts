import type { Pos } from './lexer.ts';

/** The parsed form of a streaming-SQL query. Every node keeps where it came from. */
export type Expr =
  | { k: 'lit'; v: null | boolean | number | string; pos: Pos; float?: boolean }
  | { k: 'field'; path: (string | number)[]; pos: Pos }
  | { k: 'star'; pos: Pos }
  | { k: 'call'; name: string; args: Expr[]; distinct: boolean; star: boolean; pos: Pos }
  | { k: 'unary'; op: '-' | 'NOT'; e: Expr; pos: Pos }
  | { k: 'bin'; op: BinOp; l: Expr; r: Expr; pos: Pos }
  | { k: 'in'; e: Expr; list: Expr[]; not: boolean; pos: Pos }
  | { k: 'between'; e: Expr; lo: Expr; hi: Expr; not: boolean; pos: Pos }
  | { k: 'like'; e: Expr; pattern: Expr; not: boolean; pos: Pos }
  | { k: 'isnull'; e: Expr; not: boolean; pos: Pos }
  | { k: 'case'; operand?: Expr; whens: { when: Expr; then: Expr }[]; else?: Expr; pos: Pos }
  | { k: 'index'; e: Expr; index: Expr; pos: Pos }
  | { k: 'member'; e: Expr; name: string; pos: Pos };

export type BinOp = '+' | '-' | '*' | '/' | '%' | '||' | '=' | '!=' | '<' | '<=' | '>' | '>=' | 'AND' | 'OR';

export interface SelectItem {
  expr: Expr;
  alias?: string;
  pos: Pos;
}

export interface Query {
  explain: boolean;
  items: SelectItem[];
  from: { name: string; pos: Pos };
  where?: Expr;
  groupBy: Expr[];
  having?: Expr;
  /** Sorts each emission (a window's rows); a plain query emits one row at a time. */
  orderBy: { expr: Expr; desc: boolean; pos: Pos }[];
  /** At most this many rows per emission. */
  limit?: { n: number; pos: Pos };
}
