import type { AttributeModel, EntityModel, NavigationModel } from "../metadata/model.js";
import { bindSelect, clip, ExpressionBinder, type AliasValues } from "./binder.js";
import type { BoundExpression, BoundOrderBy } from "./bound.js";
import { badRequest, notImplemented } from "./errors.js";

/** One `$expand` item bound to the model, with its nested options. */
export interface ExpandItem {
  navigation: NavigationModel;
  select: AttributeModel[];
  /** The $select text, for @odata.context. */
  selectText?: string;
  filter?: BoundExpression;
  orderBy: BoundOrderBy[];
  top?: number;
  skip?: number;
  count: boolean;
  expand: ExpandItem[];
  /** The nested options as text, for the nextLink of a collection larger than its page. */
  optionsText: string;
}

/** The most nested levels of $expand (Dataverse allows a few; deeper requests are refused). */
export const MAX_EXPAND_DEPTH = 5;

/** Splits on a separator outside quotes and parentheses. */
function splitTopLevel(text: string, separator: string, option: string): { part: string; pos: number }[] {
  const parts: { part: string; pos: number }[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === "'") quoted = !quoted;
    else if (!quoted && c === "(") depth++;
    else if (!quoted && c === ")") {
      depth--;
      if (depth < 0) throw badRequest(`Syntax error in ${option} at position ${i}: unbalanced ')'`);
    } else if (!quoted && depth === 0 && c === separator) {
      parts.push({ part: text.slice(start, i), pos: start });
      start = i + 1;
    }
  }
  if (depth !== 0 || quoted) throw badRequest(`Syntax error in ${option}: unbalanced parentheses or quotes`);
  parts.push({ part: text.slice(start), pos: start });
  return parts;
}

const NESTED_OPTIONS = new Set(["$select", "$filter", "$orderby", "$top", "$skip", "$count", "$expand"]);
const UNSUPPORTED_NESTED_OPTIONS = new Set(["$levels"]);

/** One `$expand` item as written, before it is bound: its name, where it starts, its options' text. */
export interface ExpandClause {
  name: string;
  pos: number;
  optionsText?: string;
}

/** Splits `$expand` into its items, each a name with optional `(options)`. */
export function expandClauses(text: string): ExpandClause[] {
  return splitTopLevel(text, ",", "$expand").map(({ part, pos }) => {
    if (/^\s*\*/.test(part)) throw notImplemented("$expand=* is not supported; name the navigation properties");
    const m = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:\((.*)\))?\s*$/s.exec(part);
    if (!m) throw badRequest(`Syntax error in $expand at position ${pos}: '${clip(part.trim(), 200)}' is not a navigation property with options`);
    return { name: m[1]!, pos, optionsText: m[2] };
  });
}

/**
 * The nested options of an item, by lowercase name. Options in `unsupported` are a 501, others outside
 * `allowed` or given twice a 400; `check` may refuse an allowed one where it does not apply.
 */
export function expandOptions(clause: ExpandClause, allowed: ReadonlySet<string>, unsupported: ReadonlySet<string> = new Set(), check?: (key: string) => void): Map<string, string> {
  const options = new Map<string, string>();
  if (clause.optionsText === undefined || clause.optionsText.trim() === "") return options;
  for (const { part: opt } of splitTopLevel(clause.optionsText, ";", `$expand of '${clause.name}'`)) {
    const eq = opt.indexOf("=");
    const key = (eq < 0 ? opt : opt.slice(0, eq)).trim().toLowerCase();
    if (unsupported.has(key)) throw notImplemented(`${key} in $expand of '${clause.name}' is not supported`);
    if (!allowed.has(key)) throw badRequest(`The option '${clip(key, 40)}' is not allowed in $expand of '${clause.name}'`);
    if (options.has(key)) throw badRequest(`The option ${key} is given twice in $expand of '${clause.name}'`);
    check?.(key);
    options.set(key, eq < 0 ? "" : opt.slice(eq + 1));
  }
  return options;
}

/** A nested `$top` or `$skip` of an item, checked. */
export function expandInteger(clause: ExpandClause, options: ReadonlyMap<string, string>, key: string): number | undefined {
  const v = options.get(key);
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v.trim())) throw badRequest(`${key} in $expand of '${clause.name}' must be a non-negative integer below 1,000,000,000, not '${clip(v, 40)}'`);
  return Number(v.trim());
}

/**
 * Parses and binds `$expand`: each navigation is checked against the entity, each nested option against
 * the target, and options that do not apply (a $filter on a single-valued navigation) are refused.
 */
export function bindExpand(entity: EntityModel, text: string, aliases: AliasValues, depth = 1, onNavigation?: (nav: NavigationModel) => void): ExpandItem[] {
  if (depth > MAX_EXPAND_DEPTH) throw badRequest(`$expand is nested more than ${MAX_EXPAND_DEPTH} levels deep`);
  if (text.trim() === "") throw badRequest("$expand must not be empty");
  const items: ExpandItem[] = [];
  for (const clause of expandClauses(text)) {
    const { name, pos } = clause;
    const navigation = entity.navigations.get(name);
    if (!navigation) {
      const hint = entity.properties.has(name) || entity.attributes.has(name) ? " (it is a structural property; use $select)" : "";
      throw badRequest(`$expand at position ${pos}: '${name}' is not a navigation property of ${entity.logicalName}${hint}`);
    }
    if (items.some((i) => i.navigation === navigation)) throw badRequest(`$expand names '${name}' twice`);
    onNavigation?.(navigation);
    const target = navigation.target;
    const options = expandOptions(clause, NESTED_OPTIONS, UNSUPPORTED_NESTED_OPTIONS, (key) => {
      if (navigation.kind === "single" && key !== "$select" && key !== "$expand") {
        throw badRequest(`The option ${key} is not allowed in $expand of the single-valued navigation property '${name}'`);
      }
    });
    const count = options.get("$count");
    if (count !== undefined && count !== "true" && count !== "false") throw badRequest(`$count in $expand of '${name}' must be true or false`);
    const filterText = options.get("$filter");
    const orderText = options.get("$orderby");
    items.push({
      navigation,
      select: bindSelect(target, options.get("$select")),
      selectText: options.get("$select"),
      filter: filterText !== undefined ? new ExpressionBinder(target, aliases, `$filter in $expand of '${name}'`, onNavigation).bindFilter(filterText) : undefined,
      orderBy: orderText !== undefined ? new ExpressionBinder(target, aliases, `$orderby in $expand of '${name}'`, onNavigation).bindOrderBy(orderText) : [],
      top: expandInteger(clause, options, "$top"),
      skip: expandInteger(clause, options, "$skip"),
      count: count === "true",
      expand: options.has("$expand") ? bindExpand(target, options.get("$expand")!, aliases, depth + 1, onNavigation) : [],
      optionsText: [...options].filter(([k]) => k !== "$skip").map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join("&"),
    });
  }
  return items;
}

/** `nav1(col,nav2(col))` for @odata.context. */
export function expandContext(items: readonly ExpandItem[]): string {
  return items.map((i) => `${i.navigation.name}(${[...(i.selectText ? i.selectText.split(",").map((s) => s.trim()) : []), ...(i.expand.length ? [expandContext(i.expand)] : [])].join(",")})`).join(",");
}
