import { effectiveOrder, type BoundExpression, type BoundOrderBy, type BoundQuery } from "./bound.js";
import type { PagePosition, RetrieveMultipleResult, Row } from "../providers/data-provider.js";

/**
 * Evaluates bound queries over rows in memory, with the same semantics as the SQL translation
 * (two-valued logic, case-sensitive ordinal strings, nulls first ascending). Serves the metadata sets
 * and providers that are not SQL-backed.
 */
export function evaluate(e: BoundExpression, row: Row, resolve: (e: Extract<BoundExpression, { kind: "property" }>, row: Row) => unknown = defaultResolve): unknown {
  const ev = (x: BoundExpression) => evaluate(x, row, resolve);
  switch (e.kind) {
    case "constant":
      return e.value;
    case "property":
      return resolve(e, row);
    case "logical":
      return e.op === "and" ? ev(e.left) === true && ev(e.right) === true : ev(e.left) === true || ev(e.right) === true;
    case "not":
      return ev(e.operand) !== true;
    case "negate": {
      const v = ev(e.operand);
      return v === null ? null : -(v as number);
    }
    case "comparison":
      return compareOp(e.op, ev(e.left), ev(e.right));
    case "in": {
      const v = ev(e.operand);
      return e.values.some((x) => compareOp("eq", v, ev(x)));
    }
    case "arithmetic": {
      const a = ev(e.left) as number | null;
      const b = ev(e.right) as number | null;
      if (a === null || b === null) return null;
      switch (e.op) {
        case "add":
          return a + b;
        case "sub":
          return a - b;
        case "mul":
          return a * b;
        case "div":
          if (b === 0) return null;
          return e.type === "Edm.Int32" || e.type === "Edm.Int64" ? Math.trunc(a / b) : a / b;
        case "mod":
          return b === 0 ? null : a % b;
      }
      break;
    }
    case "call":
      return call(e.name, e.args.map(ev));
  }
  return null;
}

function defaultResolve(e: Extract<BoundExpression, { kind: "property" }>, row: Row): unknown {
  if (e.navigations.length) return null;
  return row[e.attribute.logicalName] ?? null;
}

function call(name: string, args: unknown[]): unknown {
  const [a, b, c] = args;
  if (name === "now") return new Date().toISOString();
  if (args.some((x) => x === null || x === undefined)) return name === "contains" || name === "startswith" || name === "endswith" ? false : null;
  const s = a as string;
  switch (name) {
    case "contains":
      return s.includes(b as string);
    case "startswith":
      return s.startsWith(b as string);
    case "endswith":
      return s.endsWith(b as string);
    case "tolower":
      return s.replace(/[A-Z]/g, (ch) => ch.toLowerCase());
    case "toupper":
      return s.replace(/[a-z]/g, (ch) => ch.toUpperCase());
    case "trim":
      return s.replace(/^ +| +$/g, "");
    case "length":
      return [...s].length;
    case "concat":
      return s + (b as string);
    case "indexof":
      return s.indexOf(b as string);
    case "substring": {
      const start = Math.max(0, b as number);
      return c === undefined ? s.slice(start) : s.slice(start, start + Math.max(0, c as number));
    }
    case "year":
      return Number(s.slice(0, 4));
    case "month":
      return Number(s.slice(5, 7));
    case "day":
      return Number(s.slice(8, 10));
    case "hour":
      return s.length > 10 ? new Date(s).getUTCHours() : 0;
    case "minute":
      return s.length > 10 ? new Date(s).getUTCMinutes() : 0;
    case "second":
      return s.length > 10 ? new Date(s).getUTCSeconds() : 0;
    case "date":
      return s.length > 10 ? new Date(s).toISOString().slice(0, 10) : s;
    case "round":
      return Math.sign(a as number) * Math.round(Math.abs(a as number));
    case "floor":
      return Math.floor(a as number);
    case "ceiling":
      return Math.ceil(a as number);
  }
  return null;
}

/** Ordinal comparison; null is smaller than every value. */
export function compareValues(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1;
  if (b === null || b === undefined) return 1;
  if (typeof a === "number" && typeof b === "number") return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === "boolean" && typeof b === "boolean") return a === b ? 0 : a ? 1 : -1;
  const x = String(a);
  const y = String(b);
  // Compare by code point (UTF-8 byte order), as SQLite BINARY and PostgreSQL "C" do.
  const xs = [...x];
  const ys = [...y];
  for (let i = 0; i < Math.min(xs.length, ys.length); i++) {
    const d = xs[i]!.codePointAt(0)! - ys[i]!.codePointAt(0)!;
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return xs.length - ys.length < 0 ? -1 : xs.length > ys.length ? 1 : 0;
}

function compareOp(op: string, a: unknown, b: unknown): boolean {
  const an = a === null || a === undefined;
  const bn = b === null || b === undefined;
  if (an || bn) {
    if (op === "eq") return an && bn;
    if (op === "ne") return an !== bn;
    return an && bn && (op === "ge" || op === "le");
  }
  const c = compareValues(a, b);
  switch (op) {
    case "eq":
      return c === 0;
    case "ne":
      return c !== 0;
    case "gt":
      return c > 0;
    case "ge":
      return c >= 0;
    case "lt":
      return c < 0;
    case "le":
      return c <= 0;
  }
  return false;
}

function orderKey(order: BoundOrderBy[], row: Row, resolve?: Parameters<typeof evaluate>[2]): unknown[] {
  return order.map((o) => evaluate(o.expression, row, resolve));
}

function compareKeys(order: BoundOrderBy[], a: unknown[], b: unknown[]): number {
  for (let i = 0; i < a.length; i++) {
    const c = compareValues(a[i], b[i]);
    if (c !== 0) return i < order.length && order[i]!.descending ? -c : c;
  }
  return 0;
}

/** Filters, orders and pages rows as a SQL provider would, with a keyset position for the next page. */
export function queryInMemory(rows: readonly Row[], query: BoundQuery, pageSize: number, after?: PagePosition, resolve?: Parameters<typeof evaluate>[2]): RetrieveMultipleResult & { total: number } {
  // The same order, and position, as the SQL provider's: nextLinks mean the same to every provider.
  const order = effectiveOrder(query);
  const matching = query.filter ? rows.filter((r) => evaluate(query.filter!, r, resolve) === true) : [...rows];
  const keyed = matching.map((r) => ({ r, k: orderKey(order, r, resolve) }));
  keyed.sort((x, y) => compareKeys(order, x.k, y.k));
  let start = 0;
  if (after) {
    start = keyed.findIndex((x) => compareKeys(order, x.k, after) > 0);
    if (start < 0) start = keyed.length;
  } else if (query.skip) start = query.skip;
  const page = keyed.slice(start, start + pageSize);
  const more = start + pageSize < keyed.length;
  return {
    rows: page.map((x) => x.r),
    next: more ? page[page.length - 1]!.k : undefined,
    total: matching.length,
  };
}
