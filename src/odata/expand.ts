import type { AttributeModel, EntityModel, NavigationModel } from "../metadata/model.js";
import { bindSelect, ExpressionBinder, type AliasValues } from "./binder.js";
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
export function splitTopLevel(text: string, separator: string, option: string): { part: string; pos: number }[] {
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

/**
 * Parses and binds `$expand`: each navigation is checked against the entity, each nested option against
 * the target, and options that do not apply (a $filter on a single-valued navigation) are refused.
 */
export function bindExpand(entity: EntityModel, text: string, aliases: AliasValues, depth = 1, onNavigation?: (nav: NavigationModel) => void): ExpandItem[] {
  if (depth > MAX_EXPAND_DEPTH) throw badRequest(`$expand is nested more than ${MAX_EXPAND_DEPTH} levels deep`);
  if (text.trim() === "") throw badRequest("$expand must not be empty");
  const items: ExpandItem[] = [];
  for (const { part, pos } of splitTopLevel(text, ",", "$expand")) {
    if (/^\s*\*/.test(part)) throw notImplemented("$expand=* is not supported; name the navigation properties");
    const m = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?:\((.*)\))?\s*$/s.exec(part);
    if (!m) throw badRequest(`Syntax error in $expand at position ${pos}: '${part.trim()}' is not a navigation property with options`);
    const name = m[1]!;
    const navigation = entity.navigations.get(name);
    if (!navigation) {
      const hint = entity.properties.has(name) || entity.attributes.has(name) ? " (it is a structural property; use $select)" : "";
      throw badRequest(`$expand at position ${pos}: '${name}' is not a navigation property of ${entity.logicalName}${hint}`);
    }
    if (items.some((i) => i.navigation === navigation)) throw badRequest(`$expand names '${name}' twice`);
    onNavigation?.(navigation);
    const target = navigation.target;
    const options = new Map<string, string>();
    if (m[2] !== undefined && m[2].trim() !== "") {
      for (const { part: opt } of splitTopLevel(m[2], ";", `$expand of '${name}'`)) {
        const eq = opt.indexOf("=");
        const key = (eq < 0 ? opt : opt.slice(0, eq)).trim().toLowerCase();
        const value = eq < 0 ? "" : opt.slice(eq + 1);
        if (key === "$levels") throw notImplemented(`$levels in $expand of '${name}' is not supported`);
        if (!NESTED_OPTIONS.has(key)) throw badRequest(`The option '${key}' is not allowed in $expand of '${name}'`);
        if (options.has(key)) throw badRequest(`The option ${key} is given twice in $expand of '${name}'`);
        if (navigation.kind === "single" && key !== "$select" && key !== "$expand") {
          throw badRequest(`The option ${key} is not allowed in $expand of the single-valued navigation property '${name}'`);
        }
        options.set(key, value);
      }
    }
    const int = (key: string) => {
      const v = options.get(key);
      if (v === undefined) return undefined;
      if (!/^\d{1,9}$/.test(v.trim())) throw badRequest(`${key} in $expand of '${name}' must be a non-negative integer below 1,000,000,000, not '${v}'`);
      return Number(v.trim());
    };
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
      top: int("$top"),
      skip: int("$skip"),
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
