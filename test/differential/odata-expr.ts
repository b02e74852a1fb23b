/**
 * A typed OData $filter expression tree, its rendering to OData text, and an in-memory reference
 * evaluator written from the OData 4.01 URL conventions (part 2, section 5.1.1). It is deliberately
 * independent of the library: nothing here imports from src/.
 *
 * Semantics implemented (the contract the differential test checks the SQL translation against):
 * - Every Boolean-valued operator and function yields true or false, never null. A null Boolean
 *   property counts as false where a predicate is expected.
 * - `eq`: null equals null and nothing else; `ne` is its negation. `gt ge lt le`: false when either
 *   operand is null.
 * - `in`: true iff the operand `eq`-equals one of the listed values (so null matches null).
 * - Arithmetic is null when an operand is null; division and modulo by zero are null; `div` of two
 *   integer-typed operands truncates toward zero, otherwise it is real division; `mod` keeps the sign
 *   of the dividend and works on fractions.
 * - Strings compare ordinally by code point; `tolower`/`toupper` map ASCII letters only; `trim`
 *   removes leading and trailing spaces only; lengths and positions count code points.
 * - `round` rounds halves away from zero; `round`/`floor`/`ceiling` take Edm.Decimal or Edm.Double,
 *   so an integer argument is promoted to Edm.Decimal (the result is Decimal, not an integer).
 * - Date parts of an Edm.DateTimeOffset are taken in UTC; those of an Edm.Date have hour/minute/second 0.
 */

export type NumType = "Edm.Int32" | "Edm.Int64" | "Edm.Decimal" | "Edm.Double";
export type EdmType = NumType | "Edm.String" | "Edm.Boolean" | "Edm.Date" | "Edm.DateTimeOffset" | "Edm.Guid";
/** Runtime values: DateTimeOffset as epoch milliseconds, Date as "YYYY-MM-DD", Guid as lower-case text. */
export type Scalar = null | number | string | boolean;
export type CmpOp = "eq" | "ne" | "gt" | "ge" | "lt" | "le";
export type ArithOp = "add" | "sub" | "mul" | "div" | "mod";
export type Fn =
  | "contains"
  | "startswith"
  | "endswith"
  | "tolower"
  | "toupper"
  | "trim"
  | "length"
  | "concat"
  | "indexof"
  | "substring"
  | "year"
  | "month"
  | "day"
  | "hour"
  | "minute"
  | "second"
  | "date"
  | "round"
  | "floor"
  | "ceiling";

interface Common {
  /** Render this node inside redundant parentheses (exercises the parser's grouping). */
  paren?: boolean;
}

export type Expr = Common &
  (
    | { k: "prop"; name: string; type: EdmType }
    /** `value` is what the evaluator uses; `text` is the OData literal; `alias` renders it as `@alias`. */
    | { k: "lit"; type: EdmType; value: Scalar; text: string; alias?: string }
    | { k: "neg"; type: NumType; e: Expr }
    | { k: "arith"; type: NumType; op: ArithOp; l: Expr; r: Expr }
    | { k: "call"; type: EdmType; fn: Fn; args: Expr[] }
    | { k: "cmp"; type: "Edm.Boolean"; op: CmpOp; l: Expr; r: Expr }
    | { k: "logic"; type: "Edm.Boolean"; op: "and" | "or"; l: Expr; r: Expr }
    | { k: "not"; type: "Edm.Boolean"; e: Expr }
    /** `listAlias` renders the whole list as one alias (`x in @L&@L=(1,2)`). */
    | { k: "in"; type: "Edm.Boolean"; e: Expr; list: Extract<Expr, { k: "lit" }>[]; listAlias?: string }
  );

export type Row = Record<string, Scalar>;

export const INTEGER_TYPES: ReadonlySet<EdmType> = new Set(["Edm.Int32", "Edm.Int64"]);
export const NUMERIC_TYPES: ReadonlySet<EdmType> = new Set(["Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"]);

/** OData numeric promotion for binary arithmetic (part 2, 5.1.1.3 / numeric promotion). */
export function promote(a: NumType, b: NumType): NumType {
  const order: NumType[] = ["Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"];
  return order[Math.max(order.indexOf(a), order.indexOf(b))]!;
}

export function isNullLiteral(e: Expr): boolean {
  return e.k === "lit" && e.value === null;
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/** Binding strength, following the OData operator precedence table (higher binds tighter). */
function precedence(e: Expr): number {
  if (e.paren) return 9;
  switch (e.k) {
    case "logic":
      return e.op === "or" ? 1 : 2;
    case "cmp":
      return e.op === "eq" || e.op === "ne" ? 3 : 4;
    case "in":
      return 4;
    case "arith":
      return e.op === "add" || e.op === "sub" ? 5 : 6;
    case "not":
    case "neg":
      return 7;
    case "lit":
      return !e.alias && /^-/.test(e.text) ? 7 : 8;
    default:
      return 8;
  }
}

const isBooleanValued = (e: Expr) => e.type === "Edm.Boolean";

export interface Rendered {
  filter: string;
  /** Parameter aliases used by the filter, as [name, literal text]. */
  aliases: [string, string][];
}

export function render(e: Expr): Rendered {
  const aliases = new Map<string, string>();
  const text = renderNode(e, aliases);
  return { filter: text, aliases: [...aliases] };
}

function renderNode(e: Expr, aliases: Map<string, string>): string {
  const inner = renderBare(e, aliases);
  return e.paren ? `(${inner})` : inner;
}

function renderBare(e: Expr, aliases: Map<string, string>): string {
  const r = (x: Expr) => renderNode(x, aliases);
  const wrap = (x: Expr, force: boolean) => (force ? `(${r(x)})` : r(x));
  switch (e.k) {
    case "prop":
      return e.name;
    case "lit":
      if (e.alias) {
        aliases.set(e.alias, e.text);
        return `@${e.alias}`;
      }
      return e.text;
    case "neg":
      return `-${wrap(e.e, precedence(e.e) < 8)}`;
    case "arith": {
      const p = precedence({ ...e, paren: false });
      return `${wrap(e.l, precedence(e.l) < p)} ${e.op} ${wrap(e.r, precedence(e.r) <= p)}`;
    }
    case "cmp": {
      // Boolean-valued operands of a comparison are always grouped; arithmetic binds tighter anyway.
      const needs = (x: Expr) => precedence(x) < 5 || (isBooleanValued(x) && precedence(x) < 8);
      return `${wrap(e.l, needs(e.l))} ${e.op} ${wrap(e.r, needs(e.r))}`;
    }
    case "logic": {
      const p = e.op === "or" ? 1 : 2;
      return `${wrap(e.l, precedence(e.l) < p)} ${e.op} ${wrap(e.r, precedence(e.r) <= p)}`;
    }
    case "not":
      return `not ${wrap(e.e, precedence(e.e) < 7)}`;
    case "in": {
      const items = e.list.map((x) => x.text).join(",");
      let list = `(${items})`;
      if (e.listAlias) {
        aliases.set(e.listAlias, list);
        list = `@${e.listAlias}`;
      }
      return `${wrap(e.e, precedence(e.e) < 8)} in ${list}`;
    }
    case "call":
      return `${e.fn}(${e.args.map((a) => r(a)).join(",")})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Literal text
// ---------------------------------------------------------------------------------------------

export function stringLiteral(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}

/** An integer literal; values beyond Int32 are Edm.Int64 by their size. */
export function intLiteral(v: number): Extract<Expr, { k: "lit" }> {
  if (!Number.isSafeInteger(v)) throw new Error(`not an integer literal: ${v}`);
  return { k: "lit", type: Math.abs(v) > 2147483647 ? "Edm.Int64" : "Edm.Int32", value: v, text: String(v) };
}

/** Plain decimal digits (never exponent notation) for a finite number with a short binary fraction. */
export function plainDecimal(v: number): string {
  const s = String(v);
  if (!/e/i.test(s)) return s;
  // Only reached for tiny or huge values, which the generators avoid; keep it exact anyway.
  return v.toFixed(20).replace(/0+$/, "").replace(/\.$/, "");
}

/** An Edm.Decimal literal: always written with a decimal point. */
export function decimalLiteral(v: number): Extract<Expr, { k: "lit" }> {
  let text = plainDecimal(v);
  if (!text.includes(".")) text += ".0";
  return { k: "lit", type: "Edm.Decimal", value: v, text };
}

/** An Edm.Double literal, written with an exponent (`125E-2`, `1.25e0`, `INF`). */
export function doubleLiteral(v: number, shift = 0): Extract<Expr, { k: "lit" }> {
  if (v === Infinity) return { k: "lit", type: "Edm.Double", value: v, text: "INF" };
  if (v === -Infinity) return { k: "lit", type: "Edm.Double", value: v, text: "-INF" };
  if (shift > 0) {
    const mantissa = plainDecimal(v * 10 ** shift);
    // Keep the shifted form only when its text still denotes exactly v.
    if (Number(`${mantissa}e-${shift}`) === v) return { k: "lit", type: "Edm.Double", value: v, text: `${mantissa}E-${shift}` };
  }
  return { k: "lit", type: "Edm.Double", value: v, text: `${plainDecimal(v)}e0` };
}

export function dateLiteral(d: string): Extract<Expr, { k: "lit" }> {
  return { k: "lit", type: "Edm.Date", value: d, text: d };
}

/**
 * An Edm.DateTimeOffset literal for the instant `ms`, written in the given offset (minutes east of
 * UTC): "full" always has milliseconds, "seconds" drops zero milliseconds, "short" also drops zero
 * seconds (`2020-01-02T03:04Z`, valid in URLs but not in JSON payloads). All denote the same instant.
 */
export function dateTimeOffsetLiteral(ms: number, offsetMinutes = 0, style: "full" | "seconds" | "short" = "full"): Extract<Expr, { k: "lit" }> {
  const local = new Date(ms + offsetMinutes * 60_000);
  const iso = local.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  const millis = local.getUTCMilliseconds();
  let text = iso.slice(0, 16);
  const seconds = iso.slice(17, 19);
  if (style !== "short" || millis !== 0 || seconds !== "00") {
    text += `:${seconds}`;
    if (millis !== 0) text += `.${String(millis).padStart(3, "0").replace(/0+$/, "")}`;
    else if (style === "full") text += ".000";
  }
  if (offsetMinutes === 0) text += "Z";
  else {
    const abs = Math.abs(offsetMinutes);
    text += `${offsetMinutes < 0 ? "-" : "+"}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
  }
  return { k: "lit", type: "Edm.DateTimeOffset", value: ms, text };
}

export function guidLiteral(g: string): Extract<Expr, { k: "lit" }> {
  return { k: "lit", type: "Edm.Guid", value: g.toLowerCase(), text: g };
}

export function booleanLiteral(b: boolean): Extract<Expr, { k: "lit" }> {
  return { k: "lit", type: "Edm.Boolean", value: b, text: String(b) };
}

export function nullLiteral(type: EdmType): Extract<Expr, { k: "lit" }> {
  return { k: "lit", type, value: null, text: "null" };
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

/** Parses a stored Edm.DateTimeOffset (ISO text) to epoch milliseconds. */
export function instantOf(text: string): number {
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new Error(`bad DateTimeOffset '${text}'`);
  return t;
}

const codePoints = (s: string) => Array.from(s);

/** Ordinal comparison by Unicode code point. */
export function compareStrings(a: string, b: string): number {
  const x = codePoints(a);
  const y = codePoints(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) {
    const p = x[i]!.codePointAt(0)!;
    const q = y[i]!.codePointAt(0)!;
    if (p !== q) return p < q ? -1 : 1;
  }
  return x.length === y.length ? 0 : x.length < y.length ? -1 : 1;
}

function equal(a: Scalar, b: Scalar): boolean {
  if (a === null || b === null) return a === null && b === null;
  if (typeof a !== typeof b) throw new Error(`evaluator: comparing ${typeof a} with ${typeof b}`);
  return a === b;
}

function order(a: Scalar, b: Scalar): number {
  if (typeof a === "number" && typeof b === "number") return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === "string" && typeof b === "string") return compareStrings(a, b);
  throw new Error(`evaluator: cannot order ${typeof a} and ${typeof b}`);
}

function roundHalfAwayFromZero(x: number): number {
  const m = Math.abs(x);
  let f = Math.floor(m);
  if (m - f >= 0.5) f += 1;
  return x < 0 ? -f : f;
}

function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

function asciiUpper(s: string): string {
  return s.replace(/[a-z]/g, (c) => c.toUpperCase());
}

function datePart(fn: "year" | "month" | "day" | "hour" | "minute" | "second", v: Scalar, type: EdmType): number {
  if (type === "Edm.Date") {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v as string);
    if (!m) throw new Error(`evaluator: bad date ${String(v)}`);
    if (fn === "year") return Number(m[1]);
    if (fn === "month") return Number(m[2]);
    if (fn === "day") return Number(m[3]);
    return 0;
  }
  const d = new Date(v as number);
  switch (fn) {
    case "year":
      return d.getUTCFullYear();
    case "month":
      return d.getUTCMonth() + 1;
    case "day":
      return d.getUTCDate();
    case "hour":
      return d.getUTCHours();
    case "minute":
      return d.getUTCMinutes();
    case "second":
      return d.getUTCSeconds();
  }
}

/** The value of `e` for `row`; Boolean-valued operators yield true/false, never null. */
export function evaluate(e: Expr, row: Row): Scalar {
  switch (e.k) {
    case "prop": {
      const v = row[e.name];
      if (v === undefined) throw new Error(`evaluator: row has no property ${e.name}`);
      if (v === null) return null;
      return e.type === "Edm.DateTimeOffset" ? instantOf(v as string) : v;
    }
    case "lit":
      return e.value;
    case "neg": {
      const v = evaluate(e.e, row);
      return v === null ? null : -(v as number);
    }
    case "arith":
      return arithmetic(e, row);
    case "cmp": {
      const a = evaluate(e.l, row);
      const b = evaluate(e.r, row);
      if (e.op === "eq") return equal(a, b);
      if (e.op === "ne") return !equal(a, b);
      if (a === null || b === null) return false;
      const c = order(a, b);
      switch (e.op) {
        case "gt":
          return c > 0;
        case "ge":
          return c >= 0;
        case "lt":
          return c < 0;
        case "le":
          return c <= 0;
      }
      break;
    }
    case "logic": {
      const l = evaluate(e.l, row) === true;
      const r = evaluate(e.r, row) === true;
      return e.op === "and" ? l && r : l || r;
    }
    case "not":
      return !(evaluate(e.e, row) === true);
    case "in": {
      const v = evaluate(e.e, row);
      return e.list.some((item) => equal(v, item.value));
    }
    case "call":
      return call(e, row);
  }
  throw new Error(`evaluator: unhandled node`);
}

function arithmetic(e: Extract<Expr, { k: "arith" }>, row: Row): Scalar {
  const a = evaluate(e.l, row);
  const b = evaluate(e.r, row);
  if (a === null || b === null) return null;
  const x = a as number;
  const y = b as number;
  const integral = INTEGER_TYPES.has(e.l.type) && INTEGER_TYPES.has(e.r.type);
  switch (e.op) {
    case "add":
      return x + y;
    case "sub":
      return x - y;
    case "mul":
      return x * y;
    case "div":
      if (y === 0) return null;
      return integral ? Number(BigInt(x) / BigInt(y)) : x / y;
    case "mod":
      if (y === 0) return null;
      return integral ? Number(BigInt(x) % BigInt(y)) : x % y;
  }
}

function call(e: Extract<Expr, { k: "call" }>, row: Row): Scalar {
  const args = e.args.map((a) => evaluate(a, row));
  const [a, b, c] = args;
  switch (e.fn) {
    case "contains":
    case "startswith":
    case "endswith": {
      if (a === null || b === null) return false;
      const s = a as string;
      const t = b as string;
      return e.fn === "contains" ? s.includes(t) : e.fn === "startswith" ? s.startsWith(t) : s.endsWith(t);
    }
    case "tolower":
      return a === null ? null : asciiLower(a as string);
    case "toupper":
      return a === null ? null : asciiUpper(a as string);
    case "trim":
      return a === null ? null : (a as string).replace(/^ +/, "").replace(/ +$/, "");
    case "length":
      return a === null ? null : codePoints(a as string).length;
    case "concat":
      return a === null || b === null ? null : (a as string) + (b as string);
    case "indexof": {
      if (a === null || b === null) return null;
      const at = (a as string).indexOf(b as string);
      return at < 0 ? -1 : codePoints((a as string).slice(0, at)).length;
    }
    case "substring": {
      if (a === null || b === null || (e.args.length === 3 && c === null)) return null;
      const chars = codePoints(a as string);
      const start = Math.max(0, b as number);
      if (e.args.length === 2) return chars.slice(start).join("");
      const len = Math.max(0, c as number);
      return chars.slice(start, start + len).join("");
    }
    case "year":
    case "month":
    case "day":
    case "hour":
    case "minute":
    case "second":
      return a === null ? null : datePart(e.fn, a, e.args[0]!.type);
    case "date":
      if (a === null) return null;
      return e.args[0]!.type === "Edm.Date" ? a : new Date(a as number).toISOString().slice(0, 10);
    case "round":
      return a === null ? null : roundHalfAwayFromZero(a as number);
    case "floor":
      return a === null ? null : Math.floor(a as number);
    case "ceiling":
      return a === null ? null : Math.ceil(a as number);
  }
}

/** True when the filter selects the row. */
export function selects(filter: Expr, row: Row): boolean {
  return evaluate(filter, row) === true;
}

/** All Boolean-valued nodes of a tree (the root first), for shrinking a failing filter. */
export function booleanSubtrees(e: Expr): Expr[] {
  const out: Expr[] = [];
  const visit = (x: Expr) => {
    if (x.type === "Edm.Boolean" && x.k !== "lit" && x.k !== "prop") out.push(x);
    switch (x.k) {
      case "neg":
      case "not":
        visit(x.e);
        break;
      case "arith":
      case "cmp":
      case "logic":
        visit(x.l);
        visit(x.r);
        break;
      case "in":
        visit(x.e);
        break;
      case "call":
        x.args.forEach(visit);
        break;
      default:
        break;
    }
  };
  visit(e);
  return out;
}
