import type { AttributeModel, EntityModel } from "../metadata/model.js";
import type { Row } from "../providers/data-provider.js";
import { annotationRequested, type Preferences } from "./query-options.js";

export const FORMATTED_VALUE = "OData.Community.Display.V1.FormattedValue";
export const LOOKUP_LOGICAL_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname";
export const ASSOCIATED_NAVIGATION = "Microsoft.Dynamics.CRM.associatednavigationproperty";

/** Weak ETag from the row version, as Dataverse does: W/"<versionnumber>". */
export function etagOf(row: Row): string | undefined {
  const v = row.versionnumber;
  if (v === undefined || v === null) return undefined;
  // Most rows have small versions: their ETags are made once, not once per row of every page.
  if (typeof v === "number" && v >= 0 && v < SMALL_ETAGS.length && Number.isInteger(v)) return (SMALL_ETAGS[v] ??= `W/"${v}"`);
  return `W/"${v}"`;
}

const SMALL_ETAGS: (string | undefined)[] = new Array(1024);

/** The version an If-Match / If-None-Match ETag names; undefined for `*`; null for a malformed one. */
export function versionFromEtag(etag: string): number | null | undefined {
  const t = etag.trim();
  if (t === "*") return undefined;
  const m = /^(?:W\/)?"(\d{1,18})"$/.exec(t);
  return m ? Number(m[1]) : null;
}

export function keySegment(id: string): string {
  return `(${id})`;
}

/** Turns one row into its OData JSON object; lookupNames are the primary names of rows lookups point at. */
type RowSerializer = (row: Row, lookupNames: ReadonlyMap<string, string> | undefined) => Record<string, unknown>;

/** Compiled serializers per entity, by attribute list and annotations asked for (dropped with the model). */
const compiled = new WeakMap<EntityModel, Map<string, RowSerializer>>();
const COMPILED_PER_ENTITY = 64;

/**
 * Writes rows as OData JSON, driven by the model: lookups as `_x_value` with their annotations,
 * option labels on request, the ETag on every entity.
 */
export class EntitySerializer {
  private readonly formatted: boolean;
  private readonly lookupAnnotations: boolean;
  private last?: { attributes: readonly AttributeModel[]; write: RowSerializer };
  constructor(
    readonly entity: EntityModel,
    readonly prefs: Preferences,
  ) {
    this.formatted = annotationRequested(prefs, FORMATTED_VALUE);
    this.lookupAnnotations = annotationRequested(prefs, ASSOCIATED_NAVIGATION);
  }

  /** Formatted values for lookups need the referenced rows' names; the caller supplies them. */
  serialize(row: Row, attributes: readonly AttributeModel[], lookupNames?: ReadonlyMap<string, string>): Record<string, unknown> {
    if (this.last?.attributes !== attributes) this.last = { attributes, write: this.serializerFor(attributes) };
    return this.last.write(row, lookupNames);
  }

  get wantsLookupNames(): boolean {
    return this.formatted;
  }

  private serializerFor(attributes: readonly AttributeModel[]): RowSerializer {
    let byShape = compiled.get(this.entity);
    if (!byShape) compiled.set(this.entity, (byShape = new Map()));
    const key = `${this.formatted ? "f" : ""}${this.lookupAnnotations ? "a" : ""}:${attributes.map((a) => a.logicalName).join(",")}`;
    let write = byShape.get(key);
    if (!write) {
      write = compileRowSerializer(attributes, this.formatted, this.lookupAnnotations);
      if (byShape.size < COMPILED_PER_ENTITY) byShape.set(key, write);
    }
    return write;
  }
}

/**
 * A row serializer made for one attribute list. Each property is written under a constant name, so the
 * engine stores it as a named property instead of looking up a computed key per row and property:
 * pages of thousands of rows are written several times faster. Names come from validated metadata
 * and are embedded as JSON string literals.
 */
function compileRowSerializer(attributes: readonly AttributeModel[], formatted: boolean, lookupAnnotations: boolean): RowSerializer {
  const lit = (s: string) => JSON.stringify(s);
  const formatters: ((v: unknown) => string | undefined)[] = [];
  const lines = ["const o = {};", "const e = etagOf(row);", `if (e !== undefined) o["@odata.etag"] = e;`];
  attributes.forEach((a, i) => {
    const name = a.propertyName;
    lines.push(`const v${i} = row[${lit(a.logicalName)}];`, `if (v${i} !== undefined) {`);
    if (a.type === "Lookup") {
      lines.push(`if (v${i} !== null) {`);
      if (formatted) lines.push(`const n${i} = lookupNames === undefined ? undefined : lookupNames.get(v${i});`, `if (n${i} !== undefined) o[${lit(`${name}@${FORMATTED_VALUE}`)}] = n${i};`);
      if (lookupAnnotations && a.navigation) lines.push(`o[${lit(`${name}@${ASSOCIATED_NAVIGATION}`)}] = ${lit(a.navigation.name)};`);
      lines.push(`o[${lit(`${name}@${LOOKUP_LOGICAL_NAME}`)}] = ${lit(a.def.Targets![0]!)};`, "}");
    } else if (formatted) {
      formatters[i] = (v) => formatValue(a, v);
      lines.push(`if (v${i} !== null) { const f${i} = formatters[${i}](v${i}); if (f${i} !== undefined) o[${lit(`${name}@${FORMATTED_VALUE}`)}] = f${i}; }`);
    }
    lines.push(`o[${lit(name)}] = v${i};`, "}");
  });
  lines.push("return o;");
  const factory = new Function("etagOf", "formatters", `return function serializeRow(row, lookupNames) {\n${lines.join("\n")}\n};`) as (etag: typeof etagOf, f: typeof formatters) => RowSerializer;
  return factory(etagOf, formatters);
}

/** Dataverse's formatted values: option labels, Yes/No, grouped numbers, dates as the user sees them. */
export function formatValue(a: AttributeModel, value: unknown): string | undefined {
  switch (a.type) {
    case "Picklist":
      return a.options?.get(value as number)?.label;
    case "Boolean":
      return value ? "Yes" : "No";
    case "Integer":
    case "BigInt":
      return (value as number).toLocaleString("en-US");
    case "Decimal":
    case "Double":
      return (value as number).toLocaleString("en-US", { minimumFractionDigits: a.def.Precision ?? 0, maximumFractionDigits: a.def.Precision ?? 10 });
    case "Money":
      return (value as number).toLocaleString("en-US", { style: "currency", currency: "USD", minimumFractionDigits: a.def.Precision ?? 2 });
    case "DateTime":
      if (a.def.DateTimeBehavior === "DateOnly") {
        const [y, m, d] = (value as string).split("-");
        return `${Number(m)}/${Number(d)}/${y}`;
      }
      return new Date(value as string).toLocaleString("en-US", { timeZone: "UTC" });
    default:
      return undefined;
  }
}
