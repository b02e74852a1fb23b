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

/**
 * Writes rows as OData JSON, driven by the model: lookups as `_x_value` with their annotations,
 * option labels on request, the ETag on every entity.
 */
export class EntitySerializer {
  private readonly formatted: boolean;
  private readonly lookupAnnotations: boolean;
  constructor(
    readonly entity: EntityModel,
    readonly prefs: Preferences,
  ) {
    this.formatted = annotationRequested(prefs, FORMATTED_VALUE);
    this.lookupAnnotations = annotationRequested(prefs, ASSOCIATED_NAVIGATION);
  }

  /** Formatted values for lookups need the referenced rows' names; the caller supplies them. */
  serialize(row: Row, attributes: readonly AttributeModel[], lookupNames?: ReadonlyMap<string, string>): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    const etag = etagOf(row);
    if (etag) out["@odata.etag"] = etag;
    for (const a of attributes) {
      const value = row[a.logicalName];
      if (value === undefined) continue;
      const name = a.propertyName;
      if (a.type === "Lookup") {
        if (value !== null) {
          if (this.formatted && lookupNames?.has(value as string)) out[`${name}@${FORMATTED_VALUE}`] = lookupNames.get(value as string);
          if (this.lookupAnnotations && a.navigation) out[`${name}@${ASSOCIATED_NAVIGATION}`] = a.navigation.name;
          out[`${name}@${LOOKUP_LOGICAL_NAME}`] = a.def.Targets![0];
        }
        out[name] = value;
        continue;
      }
      if (this.formatted && value !== null) {
        const formatted = formatValue(a, value);
        if (formatted !== undefined) out[`${name}@${FORMATTED_VALUE}`] = formatted;
      }
      out[name] = value;
    }
    return out;
  }

  get wantsLookupNames(): boolean {
    return this.formatted;
  }
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
