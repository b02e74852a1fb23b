import type { AttributeModel, EdmPrimitiveType, EntityModel, NavigationModel } from "../metadata/model.js";

/**
 * The query after binding: every name resolved against the model, every node typed. Providers receive
 * this tree (never a string) and either translate it or say they cannot.
 */
export type BoundType = EdmPrimitiveType | "null";

export type ComparisonOperator = "eq" | "ne" | "gt" | "ge" | "lt" | "le";
export type ArithmeticOperator = "add" | "sub" | "mul" | "div" | "mod";

export type StringFunction = "contains" | "startswith" | "endswith" | "tolower" | "toupper" | "length" | "trim" | "concat" | "substring" | "indexof";
export type DateFunction = "year" | "month" | "day" | "hour" | "minute" | "second" | "date" | "now";
export type MathFunction = "round" | "floor" | "ceiling";
export type FunctionName = StringFunction | DateFunction | MathFunction;

export type BoundExpression =
  | { kind: "constant"; type: BoundType; value: unknown }
  /** A structural property, possibly reached through single-valued navigations (lookups). */
  | { kind: "property"; type: EdmPrimitiveType; attribute: AttributeModel; navigations: NavigationModel[] }
  | { kind: "comparison"; type: "Edm.Boolean"; op: ComparisonOperator; left: BoundExpression; right: BoundExpression }
  | { kind: "logical"; type: "Edm.Boolean"; op: "and" | "or"; left: BoundExpression; right: BoundExpression }
  | { kind: "not"; type: "Edm.Boolean"; operand: BoundExpression }
  | { kind: "arithmetic"; type: EdmPrimitiveType; op: ArithmeticOperator; left: BoundExpression; right: BoundExpression }
  | { kind: "negate"; type: EdmPrimitiveType; operand: BoundExpression }
  | { kind: "call"; type: EdmPrimitiveType; name: FunctionName; args: BoundExpression[] }
  | { kind: "in"; type: "Edm.Boolean"; operand: BoundExpression; values: BoundExpression[] };

export interface BoundOrderBy {
  expression: BoundExpression;
  descending: boolean;
}

export interface BoundExpand {
  navigation: NavigationModel;
  query: BoundQuery;
}

/** Everything a provider needs to answer a collection request. */
export interface BoundQuery {
  entity: EntityModel;
  filter?: BoundExpression;
  orderBy: BoundOrderBy[];
  /** The attributes to return; the primary key is always among them. */
  select: AttributeModel[];
  top?: number;
  skip?: number;
  count: boolean;
  expand: BoundExpand[];
  /**
   * Only rows linked through a many-to-many navigation to one of these rows (`set(id)/nav`, `$expand`);
   * each returned row carries the id it is linked to as `__parent` (a row linked to two appears twice).
   */
  relatedTo?: { navigation: NavigationModel; ids: string[] };
  /**
   * Single-valued navigations read in the same statement (a join): each row then carries the related row,
   * or null, under `JOINED_PREFIX + navigation name`. Sent only to providers that declare `joins`.
   */
  joins?: { navigation: NavigationModel; select: AttributeModel[] }[];
}

export const JOINED_PREFIX = "@joined:";

export const NUMERIC_TYPES: ReadonlySet<string> = new Set(["Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"]);
export const INTEGER_TYPES: ReadonlySet<string> = new Set(["Edm.Int32", "Edm.Int64"]);

/** Walks a bound expression. */
export function visitExpression(e: BoundExpression, visit: (e: BoundExpression) => void): void {
  visit(e);
  switch (e.kind) {
    case "comparison":
    case "logical":
    case "arithmetic":
      visitExpression(e.left, visit);
      visitExpression(e.right, visit);
      break;
    case "not":
    case "negate":
      visitExpression(e.operand, visit);
      break;
    case "call":
      for (const a of e.args) visitExpression(a, visit);
      break;
    case "in":
      visitExpression(e.operand, visit);
      for (const v of e.values) visitExpression(v, visit);
      break;
    default:
      break;
  }
}

/**
 * The order a page really has, and what its paging position holds: the requested terms, then the primary
 * key so paging is deterministic. A term that reads no property (`now()`, a literal) ties every row: it
 * cannot change the order, and as a position it would change between requests, so it is left out.
 * Every provider pages by this order, so a nextLink's position means the same to all of them.
 */
export function effectiveOrder(query: BoundQuery): BoundOrderBy[] {
  const pk = query.entity.primaryId;
  const terms = query.orderBy.filter((t) => readsProperty(t.expression));
  const hasPk = terms.some((t) => t.expression.kind === "property" && t.expression.navigations.length === 0 && t.expression.attribute === pk);
  if (!hasPk) terms.push({ expression: { kind: "property", type: pk.edmType, attribute: pk, navigations: [] }, descending: false });
  return terms;
}

function readsProperty(e: BoundExpression): boolean {
  let found = false;
  visitExpression(e, (x) => {
    if (x.kind === "property") found = true;
  });
  return found;
}
