import type { AttributeModel, EntityModel, NavigationModel } from "../metadata/model.js";
import type { BoundExpression, BoundOrderBy, BoundQuery } from "../odata/bound.js";
import { effectiveOrder, INTEGER_TYPES } from "../odata/bound.js";
import { type Dialect, SqlBuilder } from "./dialect.js";

export interface CompiledSql {
  sql: string;
  params: unknown[];
  /** The result's column names, in order (selects only), for drivers that return rows as arrays. */
  columns?: string[];
  /**
   * Every name a select answers to and its column's position, including names that share a column
   * (an order term that is also a selected column is read once).
   */
  positions?: ReadonlyMap<string, number>;
}

/** Where the previous page ended: the order values of its last row (the primary key last). */
export type KeysetPosition = unknown[];

export interface SelectPlan {
  query: BoundQuery;
  /** Rows to fetch (one more than the page, to know whether another page follows). */
  limit?: number;
  offset?: number;
  after?: KeysetPosition;
  /** Return each row as one JSON array text (Dialect.jsonRow), the columns in the same order. */
  jsonRows?: boolean;
}

/** Longer `in` lists of literals are bound as one array parameter. */
const IN_LIST_AS_ARRAY = 16;

/** Column alias of the linked row's id when a query follows a many-to-many navigation. */
export const PARENT_COLUMN = "__parent";

/** Column alias of an attribute of a navigation read with the page (a join). */
export const joinedAlias = (navigation: string, attribute: string) => `${navigation}/${attribute}`;

/** Column alias under which the i-th order value is returned, to build the next page's position. */
export const orderAlias = (i: number) => `__o${i}`;

/**
 * Compiles a bound query to one parameterized SELECT. Nulls follow OData's two-valued logic:
 * comparisons with null are false, `ne` is true against null, and `not` never turns unknown into true.
 */
export class SqlQueryCompiler {
  private readonly b: SqlBuilder;
  private readonly joins = new Map<string, { alias: string; sql: string }>();

  constructor(
    readonly dialect: Dialect,
    readonly entity: EntityModel,
  ) {
    this.b = new SqlBuilder(dialect);
  }

  private q(id: string): string {
    return this.dialect.quote(id);
  }

  /** The effective order (see `effectiveOrder`). */
  static orderOf(query: BoundQuery): BoundOrderBy[] {
    return effectiveOrder(query);
  }

  compileSelect(plan: SelectPlan): CompiledSql {
    const { query } = plan;
    const names: string[] = [];
    const columns: string[] = [];
    const positions = new Map<string, number>();
    const expressions: string[] = [];
    const byExpression = new Map<string, number>();
    const column = (expr: string, name: string) => {
      const existing = byExpression.get(expr);
      if (existing !== undefined) {
        positions.set(name, existing);
        return;
      }
      byExpression.set(expr, names.length);
      positions.set(name, names.length);
      columns.push(`${expr} AS ${this.q(name)}`);
      expressions.push(expr);
      names.push(name);
    };
    for (const a of query.select) column(`t0.${this.q(a.column)}`, a.logicalName);
    if (query.relatedTo) column(`r.${this.q(query.relatedTo.navigation.intersect!.sourceColumn)}`, PARENT_COLUMN);
    for (const j of query.joins ?? []) {
      const alias = this.aliasFor([j.navigation]);
      for (const a of j.select) column(`${alias}.${this.q(a.column)}`, joinedAlias(j.navigation.name, a.logicalName));
    }
    const order = SqlQueryCompiler.orderOf(query);
    const orderExprs = order.map((t) => this.expr(t.expression));
    orderExprs.forEach((e, i) => column(e, orderAlias(i)));
    const where: string[] = [];
    if (query.filter) where.push(this.predicate(query.filter));
    if (query.relatedTo) where.push(this.related(query.relatedTo));
    if (plan.after) where.push(this.keyset(order, orderExprs, plan.after));
    const selected = plan.jsonRows && this.dialect.jsonRow ? this.dialect.jsonRow(expressions) : columns.join(", ");
    let sql = `SELECT ${selected} FROM ${this.q(this.entity.table)} t0${this.relatedJoin(query)}${this.joinSql()}`;
    if (where.length) sql += ` WHERE ${where.join(" AND ")}`;
    sql += ` ORDER BY ${order.map((t, i) => this.dialect.orderTerm(orderExprs[i]!, t.descending)).join(", ")}`;
    if (plan.limit !== undefined) sql += ` LIMIT ${this.b.param(plan.limit)}`;
    if (plan.offset) sql += ` OFFSET ${this.b.param(plan.offset)}`;
    return { sql, params: this.b.params, columns: names, positions };
  }

  compileCount(query: BoundQuery): CompiledSql {
    const conditions = [...(query.filter ? [this.predicate(query.filter)] : []), ...(query.relatedTo ? [this.related(query.relatedTo)] : [])];
    const where = conditions.length ? ` WHERE ${conditions.join(" AND ")}` : "";
    // Joins are collected while compiling the filter, so build the FROM clause afterwards.
    const sql = `SELECT COUNT(*) AS ${this.q("count")} FROM ${this.q(this.entity.table)} t0${this.relatedJoin(query)}${this.joinSql()}${where}`;
    return { sql, params: this.b.params };
  }

  /** A WHERE clause alone (with its joins), for the in-provider uses like keyed updates. */
  compileWhere(filter: BoundExpression): { joins: string; where: string; params: unknown[] } {
    const where = this.predicate(filter);
    return { joins: this.joinSql(), where, params: this.b.params };
  }

  /** The intersect table of a many-to-many navigation, joined to the rows it links. */
  private relatedJoin(query: BoundQuery): string {
    if (!query.relatedTo) return "";
    const i = query.relatedTo.navigation.intersect!;
    return ` JOIN ${this.q(i.table)} r ON r.${this.q(i.targetColumn)} = t0.${this.q(this.entity.primaryId.column)}`;
  }

  private related(r: NonNullable<BoundQuery["relatedTo"]>): string {
    const column = `r.${this.q(r.navigation.intersect!.sourceColumn)}`;
    if (r.ids.length > IN_LIST_AS_ARRAY) return this.dialect.inArray(column, this.b.param(this.dialect.arrayParam(r.ids)), "Edm.Guid");
    return `${column} IN (${r.ids.map((id) => this.dialect.typedParam(this.b.param(id), "Edm.Guid")).join(", ")})`;
  }

  private joinSql(): string {
    return [...this.joins.values()].map((j) => ` ${j.sql}`).join("");
  }

  private aliasFor(navigations: NavigationModel[]): string {
    let alias = "t0";
    let key = "";
    for (const nav of navigations) {
      key += "/" + nav.name;
      let join = this.joins.get(key);
      if (!join) {
        const next = `j${this.joins.size + 1}`;
        const target = nav.target;
        join = {
          alias: next,
          sql: `LEFT JOIN ${this.q(target.table)} ${next} ON ${next}.${this.q(target.primaryId.column)} = ${alias}.${this.q(nav.lookup!.column)}`,
        };
        this.joins.set(key, join);
      }
      alias = join.alias;
    }
    return alias;
  }

  /** A Boolean expression in predicate position (a bare Boolean property becomes `= true`). */
  predicate(e: BoundExpression): string {
    if (e.kind === "constant" && e.type === "Edm.Boolean") return e.value ? "(1 = 1)" : "(1 = 0)";
    if (e.kind === "property") return `(${this.expr(e)} = ${this.dialect.trueLiteral})`;
    if (e.kind === "constant" && e.type === "null") return `(1 = 0)`;
    return this.expr(e);
  }

  private constant(value: unknown, type: string): string {
    if (value === null || value === undefined) return "NULL";
    if (type === "Edm.Boolean") return value ? this.dialect.trueLiteral : this.dialect.falseLiteral;
    return this.dialect.typedParam(this.b.param(value), type);
  }

  expr(e: BoundExpression): string {
    const d = this.dialect;
    switch (e.kind) {
      case "constant":
        return this.constant(e.value, e.type);
      case "property": {
        const column = this.column(e);
        const external = e.attribute.externalValues;
        if (!external) return column;
        // Source values (enum names) shown as option values.
        const whens = [...external.toSource].map(([value, source]) => `WHEN ${this.b.param(source)} THEN ${Number(value)}`);
        return `(CASE ${column} ${whens.join(" ")} END)`;
      }
      case "logical":
        return `(${this.predicate(e.left)} ${e.op === "and" ? "AND" : "OR"} ${this.predicate(e.right)})`;
      case "not":
        return `(NOT ${d.coalesceBoolean(this.predicate(e.operand))})`;
      case "negate":
        return `(-${this.expr(e.operand)})`;
      case "arithmetic": {
        const integers = INTEGER_TYPES.has(e.left.type) && INTEGER_TYPES.has(e.right.type);
        const l = d.widenInteger(this.expr(e.left), integers);
        const r = d.widenInteger(this.expr(e.right), integers);
        switch (e.op) {
          case "add":
            return `(${l} + ${r})`;
          case "sub":
            return `(${l} - ${r})`;
          case "mul":
            return `(${l} * ${r})`;
          case "div":
            return d.divide(l, r, integers);
          case "mod":
            return d.modulo(l, r);
        }
        break;
      }
      case "comparison":
        return this.comparison(e);
      case "in": {
        const operand = this.expr(e.operand);
        const nonNull = e.values.filter((v) => v.kind !== "constant" || v.value !== null);
        const parts: string[] = [];
        const plainColumn = e.operand.kind === "property" && !e.operand.attribute.externalValues;
        if (nonNull.length > IN_LIST_AS_ARRAY && plainColumn && nonNull.every((v) => v.kind === "constant")) {
          parts.push(this.dialect.inArray(operand, this.b.param(this.dialect.arrayParam(nonNull.map((v) => (v as { value: unknown }).value))), e.operand.type));
        } else if (nonNull.length) parts.push(`${operand} IN (${nonNull.map((v) => this.expr(v)).join(", ")})`);
        if (nonNull.length < e.values.length) parts.push(`${operand} IS NULL`);
        return `(${parts.join(" OR ")})`;
      }
      case "call":
        return this.call(e);
    }
    throw new Error(`Unhandled expression ${(e as { kind: string }).kind}`);
  }

  private column(e: Extract<BoundExpression, { kind: "property" }>): string {
    return `${this.aliasFor(e.navigations)}.${this.q(e.attribute.column)}`;
  }

  /** `option eq 200000000` on a source that stores names becomes `column = 'Pending'`, which can use an index. */
  private externalComparison(e: Extract<BoundExpression, { kind: "comparison" }>): string | undefined {
    if (e.op !== "eq" && e.op !== "ne") return undefined;
    const [prop, constant] = e.left.kind === "property" ? [e.left, e.right] : [e.right, e.left];
    if (prop.kind !== "property" || !prop.attribute.externalValues || constant.kind !== "constant" || constant.value === null) return undefined;
    const source = prop.attribute.externalValues.toSource.get(constant.value as number);
    const column = this.column(prop);
    if (source === undefined) return e.op === "eq" ? "(1 = 0)" : `(${column} IS NOT NULL)`;
    const p = this.b.param(source);
    return e.op === "eq" ? `(${column} = ${p})` : this.dialect.nullSafeNotEquals(column, p);
  }

  private comparison(e: Extract<BoundExpression, { kind: "comparison" }>): string {
    const fast = this.externalComparison(e);
    if (fast) return fast;
    const d = this.dialect;
    const isNull = (x: BoundExpression) => x.kind === "constant" && x.value === null;
    const { left, right, op } = e;
    if (isNull(left) && isNull(right)) return op === "eq" || op === "ge" || op === "le" ? "(1 = 1)" : "(1 = 0)";
    if (isNull(left) || isNull(right)) {
      if (op !== "eq" && op !== "ne") return "(1 = 0)";
      const other = this.expr(isNull(left) ? right : left);
      return op === "eq" ? `(${other} IS NULL)` : `(${other} IS NOT NULL)`;
    }
    // A computed Boolean (a comparison, a function) is made two-valued before it is compared.
    const side = (x: BoundExpression) => (x.type === "Edm.Boolean" && x.kind !== "property" && x.kind !== "constant" ? d.coalesceBoolean(this.predicate(x)) : this.expr(x));
    const l = side(left);
    const r = side(right);
    const bothComputed = left.kind !== "constant" && right.kind !== "constant";
    switch (op) {
      case "eq":
        return bothComputed ? d.nullSafeEquals(l, r) : `(${l} = ${r})`;
      case "ne":
        return d.nullSafeNotEquals(l, r);
      case "gt":
        return `(${l} > ${r})`;
      case "ge":
        return `(${l} >= ${r})`;
      case "lt":
        return `(${l} < ${r})`;
      case "le":
        return `(${l} <= ${r})`;
    }
  }

  private call(e: Extract<BoundExpression, { kind: "call" }>): string {
    const d = this.dialect;
    const [a0, a1, a2] = e.args;
    switch (e.name) {
      case "contains":
      case "startswith":
      case "endswith": {
        if (a1!.kind === "constant" && a1!.value === null) return "(1 = 0)";
        const subject = this.expr(a0!);
        if (a1!.kind === "constant") return `(${d.matchPattern(subject, this.b.param(d.patternFor(e.name, a1!.value as string)))})`;
        const needle = this.expr(a1!);
        if (e.name === "contains") return `(${d.positionOf(subject, needle)} >= 0)`;
        if (e.name === "startswith") return `(${d.substring(subject, "0", d.length(needle))} = ${needle})`;
        return `(${d.length(subject)} >= ${d.length(needle)} AND ${d.substring(subject, `${d.length(subject)} - ${d.length(needle)}`)} = ${needle})`;
      }
      case "tolower":
        return d.lower(this.expr(a0!));
      case "toupper":
        return d.upper(this.expr(a0!));
      case "trim":
        return d.trim(this.expr(a0!));
      case "length":
        return d.length(this.expr(a0!));
      case "concat":
        return d.concat(this.expr(a0!), this.expr(a1!));
      case "indexof":
        return d.positionOf(this.expr(a0!), this.expr(a1!));
      case "substring": {
        // OData clamps a negative start or length to zero; do it here so every store agrees.
        const start = `(CASE WHEN ${this.expr(a1!)} < 0 THEN 0 ELSE ${this.expr(a1!)} END)`;
        const len = a2 ? `(CASE WHEN ${this.expr(a2)} < 0 THEN 0 ELSE ${this.expr(a2)} END)` : undefined;
        return d.substring(this.expr(a0!), start, len);
      }
      case "year":
      case "month":
      case "day":
      case "hour":
      case "minute":
      case "second":
        return d.datePart(e.name, this.expr(a0!), a0!.type);
      case "date":
        return d.dateOf(this.expr(a0!), a0!.type);
      case "now":
        return d.now();
      case "round":
        return d.round(this.expr(a0!));
      case "floor":
        return d.floor(this.expr(a0!));
      case "ceiling":
        return d.ceiling(this.expr(a0!));
    }
  }

  /** Rows strictly after `position` in the given order (nulls first ascending, last descending). */
  private keyset(rawOrder: BoundOrderBy[], exprs: string[], position: KeysetPosition): string {
    // Integer arithmetic is computed in 64 bits (widenInteger): its positions are bound as Int64 too.
    const order = rawOrder.map((t) => (t.expression.kind === "arithmetic" && INTEGER_TYPES.has(t.expression.type) ? { ...t, expression: { ...t.expression, type: "Edm.Int64" as const } } : t));
    // All ascending and no null in the position: one row-value comparison, which both stores run as an
    // index range (rows with a null key sort first, so they are rightly excluded).
    if (order.every((t) => !t.descending) && position.every((v) => v !== null)) {
      return `((${exprs.join(", ")}) > (${position.map((v, i) => this.constant(v, order[i]!.expression.type)).join(", ")}))`;
    }
    const alternatives: string[] = [];
    for (let i = 0; i < order.length; i++) {
      const parts: string[] = [];
      for (let j = 0; j < i; j++) parts.push(this.equalTo(exprs[j]!, position[j], order[j]!.expression.type));
      const after = this.after(exprs[i]!, position[i], order[i]!);
      if (after === undefined) continue;
      parts.push(after);
      alternatives.push(`(${parts.join(" AND ")})`);
    }
    return alternatives.length ? `(${alternatives.join(" OR ")})` : "(1 = 0)";
  }

  private equalTo(expr: string, value: unknown, type: string): string {
    return value === null ? `${expr} IS NULL` : `${expr} = ${this.constant(value, type)}`;
  }

  private after(expr: string, value: unknown, term: BoundOrderBy): string | undefined {
    const type = term.expression.type;
    if (!term.descending) return value === null ? `${expr} IS NOT NULL` : `${expr} > ${this.constant(value, type)}`;
    return value === null ? undefined : `(${expr} < ${this.constant(value, type)} OR ${expr} IS NULL)`;
  }
}

/** Converts a value read from the store to its OData JSON form. */
export function fromStore(attr: AttributeModel, value: unknown): unknown {
  if (value === null || value === undefined) return null;
  switch (attr.edmType) {
    case "Edm.Boolean":
      return value === true || value === 1 || value === "1" || value === "true";
    case "Edm.Int32":
    case "Edm.Int64":
    case "Edm.Decimal":
    case "Edm.Double":
      return typeof value === "number" ? value : Number(value);
    case "Edm.Guid":
      return String(value).toLowerCase();
    case "Edm.Date":
      return typeof value === "string" ? value.slice(0, 10) : value instanceof Date ? value.toISOString().slice(0, 10) : String(value);
    case "Edm.DateTimeOffset":
      if (value instanceof Date) return value.toISOString();
      return typeof value === "string" && !value.endsWith("Z") ? new Date(value.includes("T") ? value : value.replace(" ", "T") + "Z").toISOString() : value;
    default:
      return value;
  }
}
