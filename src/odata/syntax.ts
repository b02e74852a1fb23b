import { badRequest, notImplemented } from "./errors.js";

/**
 * Lexer and Pratt parser for OData v4 (with the 4.01 `in` operator) common expressions: the syntax of
 * $filter, $orderby items and key predicates. It knows nothing about the model; the binder gives meaning.
 * Positions are 0-based offsets into the decoded option value, so errors can point at the problem.
 */

export type LiteralType = "null" | "boolean" | "int" | "decimal" | "double" | "string" | "guid" | "date" | "datetimeoffset" | "duration";

export type SyntaxNode =
  | { kind: "literal"; type: LiteralType; value: unknown; text: string; pos: number }
  | { kind: "path"; segments: string[]; pos: number }
  | { kind: "alias"; name: string; pos: number }
  | { kind: "binary"; op: BinaryOperator; left: SyntaxNode; right: SyntaxNode; pos: number }
  | { kind: "unary"; op: "not" | "negate"; operand: SyntaxNode; pos: number }
  | { kind: "call"; name: string; args: SyntaxNode[]; pos: number }
  | { kind: "in"; operand: SyntaxNode; list: SyntaxNode[]; pos: number }
  | { kind: "lambda"; path: string[]; op: "any" | "all"; variable?: string; body?: SyntaxNode; pos: number };

export type BinaryOperator = "eq" | "ne" | "gt" | "ge" | "lt" | "le" | "and" | "or" | "add" | "sub" | "mul" | "div" | "divby" | "mod" | "has";

type Token =
  | { t: "ident"; v: string; pos: number }
  | { t: "literal"; type: LiteralType; v: unknown; text: string; pos: number }
  | { t: "alias"; v: string; pos: number }
  | { t: "punct"; v: "(" | ")" | "," | "/" | ":" | "=" | "-" | "*" | ";"; pos: number }
  | { t: "eof"; pos: number };

const GUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,12})?)?(Z|[+-]\d{2}:\d{2})/i;
const DATE = /^\d{4}-\d{2}-\d{2}(?![\dT:])/;
const NUMBER = /^\d+(\.\d+)?([eE][+-]?\d+)?[mMdDfFlL]?/;
const IDENT = /^[A-Za-z_][A-Za-z0-9_.]*/;

function syntaxError(option: string, pos: number, message: string) {
  return badRequest(`Syntax error in ${option} at position ${pos}: ${message}`);
}

export function isValidDate(text: string): boolean {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  if (!m) return false;
  const d = new Date(0);
  d.setUTCFullYear(+m[1]!, +m[2]! - 1, +m[3]!); // Date.UTC would read years 0-99 as 1900-1999
  return d.getUTCFullYear() === +m[1]! && d.getUTCMonth() === +m[2]! - 1 && d.getUTCDate() === +m[3]!;
}

/** Normalizes an OData DateTimeOffset to the stored form: UTC, milliseconds, `Z`. */
export function normalizeDateTimeOffset(text: string): string | undefined {
  if (!DATETIME.test(text) || DATETIME.exec(text)![0].length !== text.length) return undefined;
  if (!isValidDate(text.slice(0, 10))) return undefined;
  const [hh, mm] = [+text.slice(11, 13), +text.slice(14, 16)];
  if (hh > 23 || mm > 59) return undefined;
  const t = Date.parse(text);
  if (Number.isNaN(t)) return undefined;
  return new Date(t).toISOString();
}

export function tokenize(input: string, option: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < input.length) {
    const c = input[i]!;
    if (c === " " || c === "\t") {
      i++;
      continue;
    }
    const rest = input.slice(i);
    if (c === "'") {
      let j = i + 1;
      let value = "";
      for (;;) {
        if (j >= input.length) throw syntaxError(option, i, "unterminated string literal");
        if (input[j] === "'") {
          if (input[j + 1] === "'") {
            value += "'";
            j += 2;
            continue;
          }
          break;
        }
        value += input[j];
        j++;
      }
      if (value.includes("\u0000")) throw syntaxError(option, i, "string literals must not contain NUL characters");
      tokens.push({ t: "literal", type: "string", v: value, text: input.slice(i, j + 1), pos: i });
      i = j + 1;
      continue;
    }
    if ("(),/:=*;".includes(c)) {
      tokens.push({ t: "punct", v: c as "(", pos: i });
      i++;
      continue;
    }
    if (c === "$" && /^\$(it|root|this)\b/.test(rest)) {
      throw notImplemented(`${/^\$\w+/.exec(rest)![0]} (position ${i} in ${option}) is not supported`);
    }
    if (c === "[" || c === "{") throw notImplemented(`JSON array and object literals (position ${i} in ${option}) are not supported; write lists in parentheses`);
    if (c === "@") {
      const m = IDENT.exec(rest.slice(1));
      if (!m) throw syntaxError(option, i, "expected a parameter alias name after '@'");
      tokens.push({ t: "alias", v: m[0], pos: i });
      i += 1 + m[0].length;
      continue;
    }
    let m: RegExpExecArray | null;
    if ((m = GUID.exec(rest)) && !/[0-9a-zA-Z_]/.test(rest[m[0].length] ?? "")) {
      tokens.push({ t: "literal", type: "guid", v: m[0].toLowerCase(), text: m[0], pos: i });
      i += m[0].length;
      continue;
    }
    if ((m = DATETIME.exec(rest))) {
      const normalized = normalizeDateTimeOffset(m[0]);
      if (!normalized) throw syntaxError(option, i, `'${m[0]}' is not a valid Edm.DateTimeOffset`);
      // Values are kept to the millisecond; a finer literal would be rounded and compare wrongly.
      const fraction = /\.(\d+)/.exec(m[0].slice(19))?.[1] ?? "";
      if (/[1-9]/.test(fraction.slice(3))) throw notImplemented(`'${m[0]}' (position ${i} in ${option}) is finer than a millisecond, the precision values are kept to`);
      // A year beyond 9999 once converted to UTC cannot be stored or compared.
      if (!/^\d{4}-/.test(normalized)) throw syntaxError(option, i, `'${m[0]}' is outside the years 0001 to 9999 in UTC`);
      tokens.push({ t: "literal", type: "datetimeoffset", v: normalized, text: m[0], pos: i });
      i += m[0].length;
      continue;
    }
    if ((m = DATE.exec(rest))) {
      if (!isValidDate(m[0])) throw syntaxError(option, i, `'${m[0]}' is not a valid Edm.Date`);
      tokens.push({ t: "literal", type: "date", v: m[0], text: m[0], pos: i });
      i += m[0].length;
      continue;
    }
    if ((m = NUMBER.exec(rest))) {
      const text = m[0];
      if (/[A-Za-z_]/.test(rest[text.length] ?? "")) throw syntaxError(option, i, `malformed number '${rest.slice(0, text.length + 1)}'`);
      const suffix = /[mMdDfFlL]$/.test(text) ? text.slice(-1).toLowerCase() : "";
      const digits = suffix ? text.slice(0, -1) : text;
      let type: LiteralType = /[eE]/.test(digits) || suffix === "d" || suffix === "f" ? "double" : digits.includes(".") || suffix === "m" ? "decimal" : "int";
      const v = Number(digits);
      if (type === "int" && !Number.isSafeInteger(v)) type = "decimal";
      tokens.push({ t: "literal", type, v, text, pos: i });
      i += text.length;
      continue;
    }
    if ((m = IDENT.exec(rest))) {
      const word = m[0];
      if (["duration", "binary", "geography", "geometry"].includes(word) && rest[word.length] === "'") {
        throw notImplemented(`${word[0]!.toUpperCase()}${word.slice(1)} literals (position ${i} in ${option}) are not supported`);
      }
      if (word === "case" && /^case\s*\(/.test(rest)) throw notImplemented(`The case() function (position ${i} in ${option}) is not supported`);
      if (word.includes(".") && rest[word.length] === "'") {
        // Enumerations exist only in the Dataverse metadata namespace here; any other qualified literal is a type
        // this service does not have, and comparing it as text would ignore its type.
        if (!/^(Microsoft\.Dynamics\.CRM|mscrm)\.[A-Za-z]+$/.test(word)) throw syntaxError(option, i, `'${word}' is not an enumeration type of this service`);
        // An enumeration literal such as Microsoft.Dynamics.CRM.OwnershipTypes'UserOwned' compares as its member name.
        const inner = tokenize(rest.slice(word.length), option)[0]!;
        if (inner.t !== "literal" || inner.type !== "string") throw syntaxError(option, i, `malformed enumeration literal '${word}'`);
        tokens.push({ t: "literal", type: "string", v: inner.v, text: word + inner.text, pos: i });
        i += word.length + inner.text.length;
        continue;
      }
      if (word === "null") tokens.push({ t: "literal", type: "null", v: null, text: word, pos: i });
      else if (word === "true" || word === "false") tokens.push({ t: "literal", type: "boolean", v: word === "true", text: word, pos: i });
      else if (word === "INF" || word === "NaN") tokens.push({ t: "literal", type: "double", v: word === "INF" ? Infinity : NaN, text: word, pos: i });
      else tokens.push({ t: "ident", v: word, pos: i });
      i += word.length;
      continue;
    }
    if (c === "-") {
      tokens.push({ t: "punct", v: "-", pos: i });
      i++;
      continue;
    }
    throw syntaxError(option, i, `unexpected character '${c}'`);
  }
  tokens.push({ t: "eof", pos: input.length });
  return tokens;
}

const BINARY_PRECEDENCE: Record<string, number> = {
  or: 1,
  and: 2,
  eq: 3,
  ne: 3,
  gt: 4,
  ge: 4,
  lt: 4,
  le: 4,
  has: 4,
  in: 4,
  add: 5,
  sub: 5,
  mul: 6,
  div: 6,
  divby: 6,
  mod: 6,
};

/** Bounds that keep a hostile expression from exhausting the stack or the store's expression depth. */
export const MAX_EXPRESSION_DEPTH = 64;
export const MAX_EXPRESSION_OPERATORS = 400;

export class ExpressionParser {
  private i = 0;
  private depth = 0;
  private operators = 0;
  private readonly tokens: Token[];

  constructor(
    readonly input: string,
    readonly option: string,
  ) {
    this.tokens = tokenize(input, option);
  }

  private peek(offset = 0): Token {
    return this.tokens[Math.min(this.i + offset, this.tokens.length - 1)]!;
  }
  private next(): Token {
    return this.tokens[this.i++]!;
  }
  private describe(t: Token): string {
    if (t.t === "eof") return "the end of the expression";
    if (t.t === "literal") return `'${t.text}'`;
    if (t.t === "alias") return `'@${t.v}'`;
    return `'${t.v}'`;
  }
  error(t: Token, message: string) {
    return syntaxError(this.option, t.pos, message);
  }
  expectPunct(v: string): Token {
    const t = this.next();
    if (t.t !== "punct" || t.v !== v) throw this.error(t, `expected '${v}' but found ${this.describe(t)}`);
    return t;
  }
  atPunct(v: string): boolean {
    const t = this.peek();
    return t.t === "punct" && t.v === v;
  }
  atEnd(): boolean {
    return this.peek().t === "eof";
  }
  expectEnd(): void {
    const t = this.peek();
    if (t.t === "ident") throw this.error(t, `unknown operator '${t.v}'`);
    if (t.t !== "eof") throw this.error(t, `unexpected ${this.describe(t)}`);
  }
  /** Reads a bare word (asc/desc and similar). */
  tryWord(...words: string[]): string | undefined {
    const t = this.peek();
    if (t.t === "ident" && words.includes(t.v)) {
      this.i++;
      return t.v;
    }
    return undefined;
  }
  nextIdentifier(what: string): { name: string; pos: number } {
    const t = this.next();
    if (t.t !== "ident") throw this.error(t, `expected ${what} but found ${this.describe(t)}`);
    return { name: t.v, pos: t.pos };
  }

  parseExpression(minPrecedence = 0): SyntaxNode {
    if (++this.depth > MAX_EXPRESSION_DEPTH) throw this.error(this.peek(), `the expression is nested more than ${MAX_EXPRESSION_DEPTH} levels deep`);
    try {
      return this.parseBinary(minPrecedence);
    } finally {
      this.depth--;
    }
  }

  private parseBinary(minPrecedence: number): SyntaxNode {
    let left = this.parseUnary();
    for (;;) {
      const t = this.peek();
      if (t.t !== "ident") break;
      const prec = BINARY_PRECEDENCE[t.v];
      if (prec === undefined || prec <= minPrecedence) break;
      this.i++;
      if (++this.operators > MAX_EXPRESSION_OPERATORS) throw this.error(t, `the expression has more than ${MAX_EXPRESSION_OPERATORS} operators; use 'in' for long lists of values`);
      if (t.v === "in") {
        left = { kind: "in", operand: left, list: this.parseInList(), pos: t.pos };
        continue;
      }
      const right = this.parseExpression(prec);
      left = { kind: "binary", op: t.v as BinaryOperator, left, right, pos: t.pos };
    }
    return left;
  }

  private parseInList(): SyntaxNode[] {
    const open = this.peek();
    if (open.t === "alias") {
      this.i++;
      return [{ kind: "alias", name: open.v, pos: open.pos }];
    }
    this.expectPunct("(");
    const items: SyntaxNode[] = [];
    if (this.atPunct(")")) throw this.error(this.peek(), "the list of 'in' must not be empty");
    for (;;) {
      items.push(this.parseExpression());
      if (this.atPunct(",")) {
        this.i++;
        continue;
      }
      this.expectPunct(")");
      return items;
    }
  }

  private parseUnary(): SyntaxNode {
    const t = this.peek();
    if (t.t === "ident" && t.v === "not") {
      this.i++;
      if (++this.operators > MAX_EXPRESSION_OPERATORS) throw this.error(t, `the expression has more than ${MAX_EXPRESSION_OPERATORS} operators`);
      // `not` binds tighter than the comparison operators, as the OData ABNF says.
      return { kind: "unary", op: "not", operand: this.parseExpression(6), pos: t.pos };
    }
    if (t.t === "punct" && t.v === "-") {
      this.i++;
      if (++this.depth > MAX_EXPRESSION_DEPTH) throw this.error(t, `the expression is nested more than ${MAX_EXPRESSION_DEPTH} levels deep`);
      const operand = this.parseUnary();
      this.depth--;
      if (operand.kind === "literal" && (operand.type === "int" || operand.type === "decimal" || operand.type === "double")) {
        return { ...operand, value: -(operand.value as number), text: "-" + operand.text, pos: t.pos };
      }
      return { kind: "unary", op: "negate", operand, pos: t.pos };
    }
    return this.parsePrimary();
  }

  private parsePrimary(): SyntaxNode {
    const t = this.next();
    if (t.t === "literal") return { kind: "literal", type: t.type, value: t.v, text: t.text, pos: t.pos };
    if (t.t === "alias") return { kind: "alias", name: t.v, pos: t.pos };
    if (t.t === "punct" && t.v === "(") {
      const inner = this.parseExpression();
      this.expectPunct(")");
      return inner;
    }
    if (t.t === "ident") {
      if (this.atPunct("(")) return this.parseCall(t.v, t.pos);
      if (t.v in BINARY_PRECEDENCE) throw this.error(t, `expected an operand but found the operator '${t.v}'`);
      const segments = [t.v];
      while (this.atPunct("/")) {
        this.i++;
        const seg = this.next();
        if (seg.t !== "ident") throw this.error(seg, `expected a property name after '/' but found ${this.describe(seg)}`);
        if ((seg.v === "any" || seg.v === "all") && this.atPunct("(")) return this.parseLambda(segments, seg.v, t.pos);
        segments.push(seg.v);
      }
      return { kind: "path", segments, pos: t.pos };
    }
    throw this.error(t, `expected an expression but found ${this.describe(t)}`);
  }

  private parseCall(name: string, pos: number): SyntaxNode {
    this.expectPunct("(");
    const args: SyntaxNode[] = [];
    if (!this.atPunct(")")) {
      for (;;) {
        // Dataverse query functions take named parameters: PropertyName='x',PropertyValue=1
        if (this.peek().t === "ident" && this.peek(1).t === "punct" && (this.peek(1) as { v: string }).v === "=") {
          throw notImplemented(`The function '${name}' with named parameters (position ${pos} in ${this.option}) is not supported`);
        }
        args.push(this.parseExpression());
        if (this.atPunct(",")) {
          this.i++;
          continue;
        }
        break;
      }
    }
    this.expectPunct(")");
    return { kind: "call", name, args, pos };
  }

  private parseLambda(path: string[], op: string, pos: number): SyntaxNode {
    this.expectPunct("(");
    if (this.atPunct(")")) {
      this.i++;
      return { kind: "lambda", path, op: op as "any", pos };
    }
    const variable = this.nextIdentifier("a lambda variable").name;
    this.expectPunct(":");
    const body = this.parseExpression();
    this.expectPunct(")");
    return { kind: "lambda", path, op: op as "any", variable, body, pos };
  }
}

export function parseFilterSyntax(input: string, option = "$filter"): SyntaxNode {
  if (input.trim() === "") throw badRequest(`${option} must not be empty`);
  const p = new ExpressionParser(input, option);
  const node = p.parseExpression();
  p.expectEnd();
  return node;
}

export interface OrderBySyntax {
  expression: SyntaxNode;
  descending: boolean;
}

export function parseOrderBySyntax(input: string): OrderBySyntax[] {
  if (input.trim() === "") throw badRequest("$orderby must not be empty");
  const p = new ExpressionParser(input, "$orderby");
  const items: OrderBySyntax[] = [];
  for (;;) {
    const expression = p.parseExpression();
    const dir = p.tryWord("asc", "desc");
    items.push({ expression, descending: dir === "desc" });
    if (p.atPunct(",")) {
      p.expectPunct(",");
      continue;
    }
    p.expectEnd();
    return items;
  }
}

/** A key predicate: `(value)` or `(name=value,name=value)`. */
export function parseKeySyntax(input: string): { name?: string; value: SyntaxNode }[] {
  const p = new ExpressionParser(input, "the key");
  const parts: { name?: string; value: SyntaxNode }[] = [];
  if (p.atEnd()) throw badRequest("The key must not be empty");
  for (;;) {
    let name: string | undefined;
    const first = p.parseExpression();
    if (p.atPunct("=")) {
      if (first.kind !== "path" || first.segments.length !== 1) throw badRequest(`Syntax error in the key at position ${first.pos}: expected a key property name`);
      p.expectPunct("=");
      name = first.segments[0];
      parts.push({ name, value: p.parseExpression() });
    } else parts.push({ value: first });
    if (p.atPunct(",")) {
      p.expectPunct(",");
      continue;
    }
    p.expectEnd();
    return parts;
  }
}
