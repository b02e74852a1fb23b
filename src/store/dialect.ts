/**
 * Everything that differs between the stores, in one place. The SQL compiler asks the dialect for
 * identifiers, placeholders and the spelling of functions; it never writes store-specific SQL itself.
 */
export type DialectName = "sqlite" | "postgres";

export interface Dialect {
  readonly name: DialectName;
  quote(identifier: string): string;
  /** Placeholder for the n-th (1-based) parameter. */
  placeholder(n: number): string;
  /** Boolean literal as the store understands it. */
  readonly trueLiteral: string;
  readonly falseLiteral: string;
  /** Converts a parameter value to what the driver binds. */
  toParam(value: unknown): unknown;
  /**
   * `x IN (<values>)` with the whole list as one parameter, so long lists (a page of keys) keep one
   * statement text, prepared once, whatever their length.
   */
  inArray(operand: string, param: string, edmType: string): string;
  /** How a list is bound as that one parameter. */
  arrayParam(values: unknown[]): unknown;
  /** Integer arithmetic in 64 bits, as SQLite does, so Int32 sums do not overflow on PostgreSQL. */
  widenInteger(x: string, integer: boolean): string;
  /** `a IS NOT DISTINCT FROM b` (null-safe equality) */
  nullSafeEquals(a: string, b: string): string;
  nullSafeNotEquals(a: string, b: string): string;
  /** Case-sensitive pattern match of a literal prefix/suffix/infix, index-friendly for prefixes. */
  matchPattern(column: string, param: string): string;
  /** Builds the pattern parameter: every wildcard of the value is matched literally. */
  patternFor(kind: "startswith" | "endswith" | "contains", value: string): string;
  /** Pattern match where the needle is an expression, not a literal. */
  positionOf(haystack: string, needle: string): string;
  length(s: string): string;
  substring(s: string, start: string, length?: string): string;
  lower(s: string): string;
  upper(s: string): string;
  trim(s: string): string;
  concat(a: string, b: string): string;
  datePart(part: "year" | "month" | "day" | "hour" | "minute" | "second", value: string, edmType: string): string;
  dateOf(value: string, edmType: string): string;
  now(): string;
  round(x: string): string;
  floor(x: string): string;
  ceiling(x: string): string;
  divide(a: string, b: string, integer: boolean): string;
  modulo(a: string, b: string): string;
  /** A parameter with its type made explicit where the store cannot infer it (PostgreSQL). */
  typedParam(p: string, edmType: string): string;
  /** Ordering clause with null placement identical on every store: nulls first ascending, last descending. */
  orderTerm(expr: string, descending: boolean): string;
  /** Keeps a boolean expression two-valued (NULL becomes false), so NOT never flips an unknown. */
  coalesceBoolean(expr: string): string;
  /**
   * A page's columns as one JSON array text per row, when reading that (one value, parsed by the engine's
   * JSON parser) is cheaper than reading the columns one by one from the driver.
   */
  jsonRow?(expressions: readonly string[]): string;
}

function quoteWith(q: string) {
  return (identifier: string) => q + identifier.replaceAll(q, q + q) + q;
}

const GLOB_SPECIAL = /[*?[]/g;

export const sqliteDialect: Dialect = {
  name: "sqlite",
  // better-sqlite3 spends about 0.15 us per column value it hands to JavaScript; one json_array text per
  // row, parsed by JSON.parse, costs less, the more so the more columns a page has (joined expansions).
  // SQLite writes REALs in JSON with 17 significant digits, so numbers round-trip exactly.
  // json_array would read a BLOB that happens to be valid JSONB as JSON (x'01' as true): a row holding a
  // BLOB gives NULL instead, and the page is then read column by column. The test is `x >= x''`: BLOBs
  // sort after every other value and affinity never converts one, so it holds for BLOBs only (NULL for
  // NULL), and a comparison costs less than a call of typeof() per column and row.
  jsonRow: (expressions) => `CASE WHEN ${expressions.map((e) => `${e} >= x''`).join(" OR ")} THEN NULL ELSE json_array(${expressions.join(", ")}) END`,
  quote: quoteWith('"'),
  // Numbered, so a compiled fragment used twice (an order term in SELECT and ORDER BY) binds one value.
  placeholder: (n) => `?${n}`,
  trueLiteral: "1",
  falseLiteral: "0",
  widenInteger: (x) => x,
  inArray: (operand, param) => `${operand} IN (SELECT value FROM json_each(${param}))`,
  arrayParam: (values) => JSON.stringify(values.map((v) => (typeof v === "boolean" ? (v ? 1 : 0) : v))),
  toParam(value) {
    if (typeof value === "boolean") return value ? 1 : 0;
    if (value instanceof Date) return value.toISOString();
    return value;
  },
  nullSafeEquals: (a, b) => `(${a} IS ${b})`,
  nullSafeNotEquals: (a, b) => `(${a} IS NOT ${b})`,
  // GLOB is case-sensitive (the OData meaning) and uses an index range for a literal prefix.
  matchPattern: (column, param) => `${column} GLOB ${param}`,
  patternFor(kind, value) {
    const escaped = value.replace(GLOB_SPECIAL, (c) => `[${c}]`);
    if (kind === "startswith") return escaped + "*";
    if (kind === "endswith") return "*" + escaped;
    return "*" + escaped + "*";
  },
  positionOf: (h, n) => `(instr(${h}, ${n}) - 1)`,
  length: (s) => `length(${s})`,
  substring: (s, start, len) => (len === undefined ? `substr(${s}, (${start}) + 1)` : `substr(${s}, (${start}) + 1, ${len})`),
  lower: (s) => `lower(${s})`,
  upper: (s) => `upper(${s})`,
  trim: (s) => `trim(${s}, ' ')`,
  concat: (a, b) => `(${a} || ${b})`,
  datePart(part, value, edmType) {
    const fmt = { year: "%Y", month: "%m", day: "%d", hour: "%H", minute: "%M", second: "%S" }[part];
    if (edmType === "Edm.Date" && (part === "hour" || part === "minute" || part === "second")) return `(CASE WHEN ${value} IS NULL THEN NULL ELSE 0 END)`;
    return `CAST(strftime('${fmt}', ${value}) AS INTEGER)`;
  },
  dateOf: (value) => `substr(${value}, 1, 10)`,
  now: () => `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`,
  round: (x) => `round(${x})`,
  floor: (x) => `floor(${x})`,
  ceiling: (x) => `ceil(${x})`,
  // better-sqlite3 binds JavaScript numbers as REAL, so integer division is spelled out.
  divide: (a, b, integer) => (integer ? `(CAST(${a} AS INTEGER) / CAST(${b} AS INTEGER))` : `(CAST(${a} AS REAL) / ${b})`),
  // mod() (not %) keeps fractions, like PostgreSQL's numeric mod; both give NULL for a zero divisor.
  modulo: (a, b) => `mod(${a}, ${b})`,
  typedParam: (p) => p,
  orderTerm: (expr, desc) => (desc ? `${expr} DESC NULLS LAST` : `${expr} ASC NULLS FIRST`),
  coalesceBoolean: (expr) => `COALESCE(${expr}, 0)`,
};

const POSTGRES_PARAM_TYPES: Record<string, string> = {
  "Edm.Int32": "INTEGER",
  "Edm.Int64": "BIGINT",
  "Edm.Decimal": "NUMERIC",
  "Edm.Double": "DOUBLE PRECISION",
  "Edm.Boolean": "BOOLEAN",
  "Edm.Guid": "UUID",
  "Edm.Date": "DATE",
  "Edm.DateTimeOffset": "TIMESTAMPTZ",
};

export const postgresDialect: Dialect = {
  name: "postgres",
  quote: quoteWith('"'),
  placeholder: (n) => `$${n}`,
  trueLiteral: "TRUE",
  falseLiteral: "FALSE",
  toParam(value) {
    if (value instanceof Date) return value.toISOString();
    return value;
  },
  widenInteger: (x, integer) => (integer ? `CAST(${x} AS BIGINT)` : x),
  inArray: (operand, param, edmType) => `${operand} = ANY(CAST(${param} AS ${edmType === "Edm.String" ? "TEXT" : (POSTGRES_PARAM_TYPES[edmType] ?? "TEXT")}[]))`,
  arrayParam: (values) => values,
  nullSafeEquals: (a, b) => `(${a} IS NOT DISTINCT FROM ${b})`,
  nullSafeNotEquals: (a, b) => `(${a} IS DISTINCT FROM ${b})`,
  // Text columns use the "C" collation, so LIKE is case-sensitive and byte-ordered like SQLite, and a
  // literal prefix becomes an index range.
  matchPattern: (column, param) => `${column} LIKE ${param} ESCAPE '\\'`,
  patternFor(kind, value) {
    const escaped = value.replace(/[\\%_]/g, (c) => `\\${c}`);
    if (kind === "startswith") return escaped + "%";
    if (kind === "endswith") return "%" + escaped;
    return "%" + escaped + "%";
  },
  positionOf: (h, n) => `(strpos(${h}, ${n}) - 1)`,
  length: (s) => `length(${s})`,
  // substr takes int4: clamp 64-bit positions so a huge start is "past the end", not an error.
  substring: (s, start, len) => {
    const int = (x: string) => `CAST(CASE WHEN ${x} > 2147483646 THEN 2147483646 ELSE ${x} END AS INTEGER)`;
    return len === undefined ? `substr(${s}, ${int(start)} + 1)` : `substr(${s}, ${int(start)} + 1, ${int(len)})`;
  },
  lower: (s) => `lower(${s} COLLATE "C")`,
  upper: (s) => `upper(${s} COLLATE "C")`,
  trim: (s) => `trim(both ' ' from ${s})`,
  concat: (a, b) => `(${a} || ${b})`,
  datePart(part, value, edmType) {
    if (edmType === "Edm.Date" && (part === "hour" || part === "minute" || part === "second")) return `(CASE WHEN ${value} IS NULL THEN NULL ELSE 0 END)`;
    const source = edmType === "Edm.Date" ? value : `(${value} AT TIME ZONE 'UTC')`;
    if (part === "second") return `CAST(floor(EXTRACT(SECOND FROM ${source})) AS INTEGER)`;
    return `CAST(EXTRACT(${part.toUpperCase()} FROM ${source}) AS INTEGER)`;
  },
  dateOf: (value, edmType) => (edmType === "Edm.Date" ? value : `CAST((${value} AT TIME ZONE 'UTC') AS DATE)`),
  now: () => "now()",
  // numeric rounding rounds half away from zero, as SQLite does; float8 would round half to even.
  round: (x) => `round(CAST(${x} AS NUMERIC))`,
  floor: (x) => `floor(${x})`,
  ceiling: (x) => `ceil(${x})`,
  // Division by zero is NULL on SQLite; do the same here instead of raising an error mid-query.
  divide: (a, b, integer) => (integer ? `(${a} / NULLIF(${b}, 0))` : `(CAST(${a} AS DOUBLE PRECISION) / NULLIF(${b}, 0))`),
  modulo: (a, b) => `mod(CAST(${a} AS NUMERIC), NULLIF(CAST(${b} AS NUMERIC), 0))`,
  typedParam(p, edmType) {
    if (edmType === "Edm.String") return `(CAST(${p} AS TEXT) COLLATE "C")`;
    const type = POSTGRES_PARAM_TYPES[edmType];
    return type ? `CAST(${p} AS ${type})` : p;
  },
  orderTerm: (expr, desc) => (desc ? `${expr} DESC NULLS LAST` : `${expr} ASC NULLS FIRST`),
  coalesceBoolean: (expr) => `COALESCE(${expr}, FALSE)`,
};

/** Accumulates SQL text and its parameters; values never enter the text. */
export class SqlBuilder {
  readonly params: unknown[] = [];
  constructor(readonly dialect: Dialect) {}
  param(value: unknown): string {
    this.params.push(this.dialect.toParam(value));
    return this.dialect.placeholder(this.params.length);
  }
  id(name: string): string {
    return this.dialect.quote(name);
  }
}
