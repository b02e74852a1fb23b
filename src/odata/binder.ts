import type { AttributeModel, EdmPrimitiveType, EntityModel, NavigationModel } from "../metadata/model.js";
import { badRequest, notImplemented } from "./errors.js";
import { isGuid } from "../metadata/guid.js";
import { type SyntaxNode, parseFilterSyntax, parseOrderBySyntax, normalizeDateTimeOffset, isValidDate } from "./syntax.js";
import { type BoundExpression, type BoundOrderBy, type BoundType, type FunctionName, INTEGER_TYPES, NUMERIC_TYPES } from "./bound.js";

/** Parameter aliases (`@p=value`) of the request, still as text: they are parsed where they are used. */
export type AliasValues = ReadonlyMap<string, string>;

interface FunctionSignature {
  params: (EdmPrimitiveType | "numeric" | "datetime")[][];
  returns: (args: BoundExpression[]) => EdmPrimitiveType;
}

const STRING = "Edm.String" as const;
const fixed = (t: EdmPrimitiveType) => () => t;

const FUNCTIONS: Record<FunctionName, FunctionSignature> = {
  contains: { params: [[STRING, STRING]], returns: fixed("Edm.Boolean") },
  startswith: { params: [[STRING, STRING]], returns: fixed("Edm.Boolean") },
  endswith: { params: [[STRING, STRING]], returns: fixed("Edm.Boolean") },
  tolower: { params: [[STRING]], returns: fixed(STRING) },
  toupper: { params: [[STRING]], returns: fixed(STRING) },
  trim: { params: [[STRING]], returns: fixed(STRING) },
  length: { params: [[STRING]], returns: fixed("Edm.Int32") },
  concat: { params: [[STRING, STRING]], returns: fixed(STRING) },
  indexof: { params: [[STRING, STRING]], returns: fixed("Edm.Int32") },
  substring: { params: [[STRING, "Edm.Int32"], [STRING, "Edm.Int32", "Edm.Int32"]], returns: fixed(STRING) },
  year: { params: [["datetime"]], returns: fixed("Edm.Int32") },
  month: { params: [["datetime"]], returns: fixed("Edm.Int32") },
  day: { params: [["datetime"]], returns: fixed("Edm.Int32") },
  hour: { params: [["datetime"]], returns: fixed("Edm.Int32") },
  minute: { params: [["datetime"]], returns: fixed("Edm.Int32") },
  second: { params: [["datetime"]], returns: fixed("Edm.Int32") },
  date: { params: [["datetime"]], returns: fixed("Edm.Date") },
  now: { params: [[]], returns: fixed("Edm.DateTimeOffset") },
  // Defined on Edm.Decimal and Edm.Double; an integer argument is promoted to Edm.Decimal.
  round: { params: [["numeric"]], returns: (a) => (a[0]!.type === "Edm.Double" ? "Edm.Double" : "Edm.Decimal") },
  floor: { params: [["numeric"]], returns: (a) => (a[0]!.type === "Edm.Double" ? "Edm.Double" : "Edm.Decimal") },
  ceiling: { params: [["numeric"]], returns: (a) => (a[0]!.type === "Edm.Double" ? "Edm.Double" : "Edm.Decimal") },
};

/** Functions defined by OData that this library does not translate: a 501, never a silent drop. */
const KNOWN_UNSUPPORTED = new Set([
  "matchesPattern", "matchespattern", "fractionalseconds", "totaloffsetminutes", "totalseconds", "maxdatetime", "mindatetime", "time",
  "geo.distance", "geo.intersects", "geo.length", "cast", "isof", "case", "hassubset", "hassubsequence",
]);

function literalType(node: Extract<SyntaxNode, { kind: "literal" }>): BoundType {
  switch (node.type) {
    case "null":
      return "null";
    case "boolean":
      return "Edm.Boolean";
    case "int":
      return Math.abs(node.value as number) > 2147483647 ? "Edm.Int64" : "Edm.Int32";
    case "decimal":
      return "Edm.Decimal";
    case "double":
      return "Edm.Double";
    case "string":
      return "Edm.String";
    case "guid":
      return "Edm.Guid";
    case "date":
      return "Edm.Date";
    case "datetimeoffset":
      return "Edm.DateTimeOffset";
    case "duration":
      throw notImplemented("Duration literals are not supported");
  }
}

/**
 * Binds $filter and $orderby syntax to an entity: resolves every name, checks every type, and turns
 * literals into typed constants. Errors name the property or position that is wrong.
 */
export class ExpressionBinder {
  constructor(
    readonly entity: EntityModel,
    readonly aliases: AliasValues = new Map(),
    readonly option = "$filter",
    /** Checked for every navigation a filter crosses (authorization of lookups). */
    readonly onNavigation?: (nav: NavigationModel) => void,
  ) {}

  bindFilter(text: string): BoundExpression {
    const bound = this.bind(parseFilterSyntax(text, this.option));
    if (bound.type !== "Edm.Boolean") throw badRequest(`${this.option} must be a Boolean expression, but it is of type ${bound.type}`);
    return bound;
  }

  bindOrderBy(text: string): BoundOrderBy[] {
    return parseOrderBySyntax(text).map((item) => {
      const expression = this.bind(item.expression);
      if (expression.type === "null") throw badRequest(`$orderby at position ${item.expression.pos}: cannot order by null`);
      return { expression, descending: item.descending };
    });
  }

  private at(node: SyntaxNode): string {
    return `${this.option} at position ${node.pos}`;
  }

  bind(node: SyntaxNode): BoundExpression {
    switch (node.kind) {
      case "literal":
        return { kind: "constant", type: literalType(node), value: node.value };
      case "alias":
        return this.bindAlias(node);
      case "path":
        return this.bindPath(node);
      case "unary": {
        const operand = this.bind(node.operand);
        if (node.op === "not") {
          if (operand.type !== "Edm.Boolean") throw badRequest(`${this.at(node)}: 'not' needs a Boolean operand, not ${operand.type}`);
          return { kind: "not", type: "Edm.Boolean", operand };
        }
        if (!NUMERIC_TYPES.has(operand.type)) throw badRequest(`${this.at(node)}: '-' needs a numeric operand, not ${operand.type}`);
        return { kind: "negate", type: operand.type as EdmPrimitiveType, operand };
      }
      case "binary":
        return this.bindBinary(node);
      case "in":
        return this.bindIn(node);
      case "call":
        return this.bindCall(node);
      case "lambda":
        throw notImplemented(`${this.at(node)}: the lambda operator '${node.op}' on '${node.path.join("/")}' is not supported`);
    }
  }

  private bindAlias(node: Extract<SyntaxNode, { kind: "alias" }>): BoundExpression {
    const text = this.aliases.get(node.name);
    if (text === undefined) throw badRequest(`${this.at(node)}: the parameter alias '@${node.name}' has no value in the query`);
    if (/(^|[^A-Za-z0-9_'])@[A-Za-z_]/.test(text.replace(/'(?:[^']|'')*'/g, "''"))) throw badRequest(`The value of the parameter alias '@${node.name}' refers to another alias; an alias's value must not use aliases`);
    const syntax = parseFilterSyntax(text, `@${node.name}`);
    return new ExpressionBinder(this.entity, new Map(), `@${node.name}`, this.onNavigation).bind(syntax);
  }

  private bindPath(node: Extract<SyntaxNode, { kind: "path" }>): BoundExpression {
    let entity = this.entity;
    const navigations: NavigationModel[] = [];
    const segs = node.segments;
    for (let i = 0; i < segs.length; i++) {
      const name = segs[i]!;
      const last = i === segs.length - 1;
      const attr = entity.properties.get(name);
      if (attr) {
        if (!last) throw badRequest(`${this.at(node)}: '${name}' is a property of ${entity.logicalName}, not a navigation property`);
        if (!attr.isReadable) throw badRequest(`${this.at(node)}: the property '${name}' of ${entity.logicalName} cannot be read`);
        return { kind: "property", type: attr.edmType, attribute: attr, navigations };
      }
      const nav = entity.navigations.get(name);
      if (nav) {
        if (last) throw badRequest(`${this.at(node)}: the navigation property '${name}' must be followed by a property of ${nav.target.logicalName}`);
        if (nav.kind !== "single") throw badRequest(`${this.at(node)}: '${name}' is a collection; use any/all to filter across it`);
        this.onNavigation?.(nav);
        navigations.push(nav);
        entity = nav.target;
        continue;
      }
      const lookup = entity.attributes.get(name);
      if (lookup && lookup.type === "Lookup") {
        throw badRequest(`${this.at(node)}: '${name}' is a lookup; use '${lookup.propertyName}' for its value or its navigation property`);
      }
      throw badRequest(`${this.at(node)}: Could not find a property named '${name}' on type '${entity.def.SchemaName ?? entity.logicalName}' (${entity.logicalName})`);
    }
    throw badRequest(`${this.at(node)}: empty property path`);
  }

  private bindBinary(node: Extract<SyntaxNode, { kind: "binary" }>): BoundExpression {
    const op = node.op;
    if (op === "has") throw notImplemented(`${this.at(node)}: the 'has' operator (enumeration flags) is not supported`);
    if (op === "divby") throw notImplemented(`${this.at(node)}: the 'divby' operator is not supported`);
    const left = this.bind(node.left);
    const right = this.bind(node.right);
    if (op === "and" || op === "or") {
      for (const [side, e] of [["left", left], ["right", right]] as const) {
        if (e.type !== "Edm.Boolean") throw badRequest(`${this.at(node)}: the ${side} operand of '${op}' must be Boolean, not ${e.type}`);
      }
      return { kind: "logical", type: "Edm.Boolean", op, left, right };
    }
    if (op === "add" || op === "sub" || op === "mul" || op === "div" || op === "mod") {
      for (const [side, e] of [["left", left], ["right", right]] as const) {
        if (e.type === "Edm.DateTimeOffset" || e.type === "Edm.Date") throw notImplemented(`${this.at(node)}: date arithmetic with '${op}' is not supported`);
        if (!NUMERIC_TYPES.has(e.type) && e.type !== "null") throw badRequest(`${this.at(node)}: the ${side} operand of '${op}' must be numeric, not ${e.type}`);
      }
      return { kind: "arithmetic", type: promote(left.type, right.type), op, left, right };
    }
    const [l, r] = this.coerceComparison(node, left, right);
    // NaN is unequal to every value, null included, and orders with none; SQLite cannot even bind it (it
    // becomes NULL), so the comparison is decided here, the same on every store.
    if ((l.kind === "constant" && Number.isNaN(l.value)) || (r.kind === "constant" && Number.isNaN(r.value))) {
      return { kind: "constant", type: "Edm.Boolean", value: op === "ne" };
    }
    if ((op === "gt" || op === "ge" || op === "lt" || op === "le") && (l.type === "Edm.Boolean" || r.type === "Edm.Boolean")) {
      throw badRequest(`${this.at(node)}: '${op}' cannot compare Boolean values`);
    }
    return { kind: "comparison", type: "Edm.Boolean", op, left: l, right: r };
  }

  /** Makes both sides of a comparison the same kind of value, or says why they cannot be compared. */
  private coerceComparison(node: SyntaxNode, left: BoundExpression, right: BoundExpression): [BoundExpression, BoundExpression] {
    const l = this.coerceLiteral(left, right.type);
    const r = this.coerceLiteral(right, l.type);
    if (l.type === "null" || r.type === "null" || l.type === r.type) return [l, r];
    if (NUMERIC_TYPES.has(l.type) && NUMERIC_TYPES.has(r.type)) return [l, r];
    const describe = (e: BoundExpression) => (e.kind === "property" ? `'${e.attribute.propertyName}' (${e.type})` : e.type);
    throw badRequest(`${this.at(node)}: cannot compare ${describe(l)} with ${describe(r)}`);
  }

  /** A literal takes the type of what it is compared with when its text allows (a date for a DateTimeOffset, a GUID in quotes). */
  private coerceLiteral(e: BoundExpression, target: BoundType): BoundExpression {
    if (e.kind !== "constant" || e.type === target || e.type === "null") return e;
    if (target === "Edm.DateTimeOffset" && e.type === "Edm.Date") return { kind: "constant", type: target, value: `${e.value as string}T00:00:00.000Z` };
    if (target === "Edm.DateTimeOffset" && e.type === "Edm.String") {
      const v = normalizeDateTimeOffset(e.value as string);
      if (v) return { kind: "constant", type: target, value: v };
    }
    if (target === "Edm.Date" && e.type === "Edm.String" && isValidDate(e.value as string)) return { kind: "constant", type: target, value: e.value };
    if (target === "Edm.Guid" && e.type === "Edm.String" && isGuid(e.value as string)) {
      return { kind: "constant", type: target, value: (e.value as string).toLowerCase() };
    }
    return e;
  }

  private bindIn(node: Extract<SyntaxNode, { kind: "in" }>): BoundExpression {
    const operand = this.bind(node.operand);
    let list = node.list;
    if (list.length === 1 && list[0]!.kind === "alias") {
      const alias = list[0] as Extract<SyntaxNode, { kind: "alias" }>;
      const text = this.aliases.get(alias.name);
      if (text === undefined) throw badRequest(`${this.at(alias)}: the parameter alias '@${alias.name}' has no value in the query`);
      const inner = text.trim();
      const notAList = () => badRequest(`The parameter alias '@${alias.name}' used with 'in' must be one list of literals in parentheses, not '${clip(inner)}'`);
      if (!(inner.startsWith("(") && inner.endsWith(")")) && !(inner.startsWith("[") && inner.endsWith("]"))) throw notAList();
      // Parsed as the list it claims to be: a value like `(1) or x eq (2)` is not one list.
      let syntax: SyntaxNode;
      try {
        syntax = parseFilterSyntax(`x in (${inner.slice(1, -1)})`, `@${alias.name}`);
      } catch {
        throw notAList();
      }
      if (syntax.kind !== "in" || syntax.operand.kind !== "path" || syntax.operand.segments.join("/") !== "x") throw notAList();
      list = syntax.list;
    }
    const values = list.map((item) => {
      const v = this.bind(item);
      if (v.kind !== "constant") throw badRequest(`${this.at(item)}: the list of 'in' may hold only literal values`);
      const [, coerced] = this.coerceComparison(item, operand, v);
      return coerced;
    });
    return { kind: "in", type: "Edm.Boolean", operand, values };
  }

  private bindCall(node: Extract<SyntaxNode, { kind: "call" }>): BoundExpression {
    const name = node.name;
    const sig = FUNCTIONS[name as FunctionName];
    if (!sig) {
      if (KNOWN_UNSUPPORTED.has(name) || name.includes(".")) throw notImplemented(`${this.at(node)}: the function '${name}' is not supported`);
      throw badRequest(`${this.at(node)}: unknown function '${name}'`);
    }
    const args = node.args.map((a) => this.bind(a));
    const shape = sig.params.find((p) => p.length === args.length);
    if (!shape) throw badRequest(`${this.at(node)}: '${name}' takes ${sig.params.map((p) => p.length).join(" or ")} argument(s), not ${args.length}`);
    const coerced = args.map((a, i) => {
      const want = shape[i]!;
      if (a.type === "null") return a;
      if (want === "numeric") {
        if (!NUMERIC_TYPES.has(a.type)) throw badRequest(`${this.at(node)}: argument ${i + 1} of '${name}' must be numeric, not ${a.type}`);
        return a;
      }
      if (want === "datetime") {
        if (a.type !== "Edm.DateTimeOffset" && a.type !== "Edm.Date") throw badRequest(`${this.at(node)}: argument ${i + 1} of '${name}' must be a date or date-time, not ${a.type}`);
        return a;
      }
      if (want === "Edm.Int32" && INTEGER_TYPES.has(a.type)) return a;
      if (a.type !== want) throw badRequest(`${this.at(node)}: argument ${i + 1} of '${name}' must be ${want}, not ${a.type}`);
      return a;
    });
    if (name === "substring" && coerced.length === 3) {
      // OData: a negative length is a bad request (a negative start counts as 0, on both stores).
      const length = coerced[2]!;
      if (length.kind === "constant" && typeof length.value === "number" && length.value < 0) throw badRequest(`${this.at(node)}: the length of substring must not be negative (${length.value})`);
    }
    return { kind: "call", type: sig.returns(coerced), name: name as FunctionName, args: coerced };
  }
}

function promote(a: BoundType, b: BoundType): EdmPrimitiveType {
  const order = ["Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double"];
  if (a === "null") return (b === "null" ? "Edm.Int32" : b) as EdmPrimitiveType;
  if (b === "null") return a as EdmPrimitiveType;
  return order[Math.max(order.indexOf(a), order.indexOf(b))] as EdmPrimitiveType;
}

/** The attributes named by $select, checked against the entity; the primary key is always included. */
const readableOf = new WeakMap<EntityModel, AttributeModel[]>();

export function bindSelect(entity: EntityModel, text: string | undefined): AttributeModel[] {
  let readable = readableOf.get(entity);
  if (!readable) readableOf.set(entity, (readable = [...entity.attributes.values()].filter((a) => a.isReadable)));
  if (text === undefined || text.trim() === "*") return [...readable];
  const chosen = new Set<AttributeModel>([entity.primaryId]);
  let pos = 0;
  for (const raw of text.split(",")) {
    const name = raw.trim();
    if (name === "") throw badRequest(`$select at position ${pos}: empty property name`);
    if (name === "*") {
      for (const a of readable) chosen.add(a);
    } else {
      const attr = entity.properties.get(name) ?? (entity.attributes.get(name)?.type === "Lookup" ? entity.attributes.get(name) : undefined);
      if (!attr) {
        if (entity.navigations.has(name)) throw badRequest(`$select at position ${pos}: '${name}' is a navigation property; use $expand`);
        const [head, ...path] = name.split("/");
        if (path.length && entity.navigations.has(head!)) throw badRequest(`$select at position ${pos}: '${clip(name, 100)}' reaches through the navigation property '${head}'; use $expand=${head}($select=${path.join("/")})`);
        if (!entity.complexProperties.has(name)) {
          throw badRequest(`$select at position ${pos}: Could not find a property named '${name}' on type '${entity.def.SchemaName ?? entity.logicalName}'`);
        }
      } else {
        if (!attr.isReadable) throw badRequest(`$select at position ${pos}: the property '${name}' cannot be read`);
        chosen.add(attr);
      }
    }
    pos += raw.length + 1;
  }
  return [...entity.attributes.values()].filter((a) => chosen.has(a));
}

/** Complex (non-filterable) properties named by $select, for the metadata sets. */
export function selectedComplexProperties(entity: EntityModel, text: string | undefined): string[] {
  if (text === undefined || text.trim() === "*") return [...entity.complexProperties.keys()];
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => entity.complexProperties.has(s));
}

/** Echoed input, cut short so an error never carries a whole oversized request back. */
export function clip(text: string, max = 200): string {
  return text.length > max ? `${text.slice(0, max)}… (${text.length} characters)` : text;
}
