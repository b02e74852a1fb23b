import Ajv, { type ErrorObject, type ValidateFunction } from "ajv";
import addFormats from "ajv-formats";
import type { AttributeModel, EntityModel } from "./model.js";

export type WriteMode = "create" | "update";

/**
 * JSON Schema of a create or update payload, generated from the attribute metadata: types, lengths,
 * ranges, option values, formats, required fields and which fields may be written at all.
 */
export function payloadSchemaOf(entity: EntityModel, mode: WriteMode): Record<string, unknown> {
  const properties: Record<string, unknown> = {};
  const required: string[] = [];
  for (const a of entity.attributes.values()) {
    if (a.type === "Lookup") continue; // written through `<navigation>@odata.bind`
    const writable = mode === "create" ? a.isCreatable : a.isUpdatable;
    if (!writable) continue;
    properties[a.logicalName] = attributeSchema(a, mode);
    if (mode === "create" && a.isRequiredOnCreate) required.push(a.logicalName);
  }
  return { type: "object", properties, required, additionalProperties: false };
}

function attributeSchema(a: AttributeModel, mode: WriteMode): Record<string, unknown> {
  const nullable = (s: Record<string, unknown>): Record<string, unknown> => {
    if (a.isPrimaryId) return s;
    if (mode === "create" ? a.isRequiredOnCreate : a.def.RequiredLevel === "ApplicationRequired" || a.def.RequiredLevel === "SystemRequired") return s;
    return { anyOf: [s, { type: "null" }] };
  };
  const d = a.def;
  switch (a.type) {
    case "String":
    case "Memo": {
      const s: Record<string, unknown> = { type: "string", maxUtf16Length: d.MaxLength };
      if (a.isRequiredOnCreate || d.RequiredLevel === "ApplicationRequired" || d.RequiredLevel === "SystemRequired") s.minLength = 1;
      if (d.Format === "Email") s.format = "email";
      if (d.Format === "Url") s.format = "uri";
      if (d.Format === "Phone") s.pattern = "^[+0-9()./ x-]{1,50}$";
      return nullable(s);
    }
    case "Integer":
      return nullable({ type: "integer", minimum: d.MinValue ?? -2147483648, maximum: d.MaxValue ?? 2147483647 });
    case "BigInt":
      return nullable({ type: "integer", minimum: d.MinValue ?? Number.MIN_SAFE_INTEGER, maximum: d.MaxValue ?? Number.MAX_SAFE_INTEGER });
    case "Decimal":
    case "Money":
      return nullable({ type: "number", minimum: d.MinValue ?? -100000000000, maximum: d.MaxValue ?? 100000000000, decimalPlaces: d.Precision ?? 2 });
    case "Double":
      return nullable({ type: "number", minimum: d.MinValue ?? -100000000000, maximum: d.MaxValue ?? 100000000000 });
    case "Boolean":
      return nullable({ type: "boolean" });
    case "DateTime":
      return nullable(d.DateTimeBehavior === "DateOnly" ? { type: "string", format: "dataverse-date" } : { type: "string", format: "dataverse-date-time" });
    case "Uniqueidentifier":
      return nullable({ type: "string", format: "uuid" });
    case "Picklist":
      return nullable({ type: "integer", enum: [...(a.options?.keys() ?? [])] });
    case "Lookup":
      return { type: "string", format: "uuid" };
  }
}

export interface PayloadViolation {
  field: string;
  message: string;
}

/** Dataverse's date range: 1753-01-01 to 9999-12-31 (SQL Server's datetime), the same on every store. */
export const MIN_DATE = "1753-01-01";
export const MAX_DATE = "9999-12-31";
const DATE = /^\d{4}-\d{2}-\d{2}$/;
// Seconds up to 59: a leap second (:60) has no JavaScript or PostgreSQL instant of its own.
// "T" or a space between date and time, and offsets with or without a colon, as RFC 3339 readers take them.
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)$/i;

/** A date that exists in the (proleptic Gregorian) calendar: not 2021-02-29 or 2024-04-31. */
function isCalendarDate(date: string): boolean {
  const [y, m, d] = date.split("-").map(Number) as [number, number, number];
  if (m < 1 || m > 12 || d < 1) return false;
  const days = [31, y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m - 1]!;
  return d <= days;
}

/** Whether a date-time's instant falls on a UTC day in Dataverse's range (what is stored is the UTC instant). */
function utcDayInRange(text: string): boolean {
  const instant = toInstant(text);
  if (Number.isNaN(instant)) return false;
  const day = new Date(instant).toISOString().slice(0, 10);
  return day >= MIN_DATE && day <= MAX_DATE;
}

/** Milliseconds of an RFC 3339 date-time (with "T" or a space, offset with or without a colon). */
export function toInstant(text: string): number {
  const t = text.toUpperCase().replace(" ", "T").replace(/([+-]\d\d)(\d\d)$/, "$1:$2");
  return Date.parse(t);
}

const validators = new WeakMap<EntityModel, Partial<Record<WriteMode, ValidateFunction>>>();
let ajv: Ajv | undefined;

function payloadAjv(): Ajv {
  if (!ajv) {
    ajv = new Ajv({ allErrors: false, strict: false });
    // MaxLength in UTF-16 code units, as Dataverse (SQL Server nvarchar) counts it; maxLength counts code points.
    ajv.addKeyword({ keyword: "maxUtf16Length", type: "string", schemaType: "number", validate: (max: number, value: string) => value.length <= max });
    addFormats(ajv);
    ajv.addFormat("dataverse-date", { type: "string", validate: (v: string) => DATE.test(v) && isCalendarDate(v) && v >= MIN_DATE && v <= MAX_DATE });
    ajv.addFormat("dataverse-date-time", { type: "string", validate: (v: string) => DATE_TIME.test(v) && isCalendarDate(v.slice(0, 10)) && utcDayInRange(v) });
    ajv.addKeyword({
      keyword: "decimalPlaces",
      type: "number",
      schemaType: "number",
      validate: (places: number, value: number) => {
        const text = String(value);
        if (text.includes("e")) return Number(value.toFixed(places)) === value;
        const dot = text.indexOf(".");
        return dot < 0 || text.length - dot - 1 <= places;
      },
      error: { message: (cxt) => `must have at most ${cxt.schemaValue} digits after the decimal point` },
    });
  }
  return ajv;
}

/** Validators are compiled once per entity definition and dropped with it (a new model, new ones). */
export function payloadValidator(entity: EntityModel, mode: WriteMode): ValidateFunction {
  let byMode = validators.get(entity);
  if (!byMode) validators.set(entity, (byMode = {}));
  return (byMode[mode] ??= payloadAjv().compile(payloadSchemaOf(entity, mode)));
}

/** The first violation of a payload, naming the field and the rule. */
export function describeViolation(entity: EntityModel, mode: WriteMode, errors: ErrorObject[]): PayloadViolation {
  const e = errors.find((x) => x.keyword !== "anyOf") ?? errors[0]!;
  if (e.keyword === "required") {
    const field = (e.params as { missingProperty: string }).missingProperty;
    return { field, message: `The attribute '${field}' is required to create a ${entity.logicalName}` };
  }
  if (e.keyword === "additionalProperties") {
    const field = (e.params as { additionalProperty: string }).additionalProperty;
    const attr = entity.attributes.get(field) ?? entity.properties.get(field);
    if (attr && attr.type !== "Lookup") {
      return { field, message: `The attribute '${field}' of ${entity.logicalName} cannot be set on ${mode}` };
    }
    if (attr?.type === "Lookup" || entity.navigations.has(field)) {
      const nav = attr?.navigation?.name ?? field;
      return { field, message: `The lookup '${field}' must be set with '${nav}@odata.bind'` };
    }
    return { field, message: `The property '${field}' does not exist on ${entity.logicalName}` };
  }
  const field = e.instancePath.split("/")[1] ?? "";
  const attr = entity.attributes.get(field);
  let detail = e.message ?? e.keyword;
  if (e.keyword === "format" && (e.params as { format: string }).format === "email") detail = "must be a valid e-mail address";
  if (e.keyword === "format" && (e.params as { format: string }).format === "dataverse-date") detail = `must be a date (YYYY-MM-DD) from ${MIN_DATE} to ${MAX_DATE}`;
  if (e.keyword === "format" && (e.params as { format: string }).format === "dataverse-date-time") detail = `must be a date and time with an offset (YYYY-MM-DDThh:mm:ssZ) from ${MIN_DATE} to ${MAX_DATE} in UTC`;
  if ((e.keyword === "maxLength" || e.keyword === "maxUtf16Length") && attr) detail = `must be at most ${attr.def.MaxLength} characters long`;
  if (e.keyword === "enum" && attr?.options) detail = `must be one of the option values ${[...attr.options.keys()].join(", ")}`;
  if (e.keyword === "minLength") detail = "must not be empty";
  return { field, message: `The value of '${field}' is invalid: it ${detail}` };
}
