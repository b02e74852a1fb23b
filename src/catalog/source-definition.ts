import Ajv from "ajv";
import sourceSchema from "../../schemas/source-definition.schema.json";
import { DefinitionError } from "../metadata/schema-validation.js";

export type SourceFieldType = "String" | "Memo" | "Int" | "Int64" | "Real" | "Date" | "UtcDateTime" | "Enum" | "NoYes" | "Guid";

export interface SourceField {
  Name: string;
  Label?: string;
  Type: SourceFieldType;
  Length?: number;
  Decimals?: number;
  Mandatory?: boolean;
  Format?: "Email" | "Phone" | "Url";
  EnumName?: string;
  EnumValues?: { Name: string; Value: number; Label?: string }[];
  Default?: string | number | boolean;
  AutoNumber?: string;
  Unique?: boolean;
  Indexed?: boolean;
  ReadOnly?: boolean;
}

export interface SourceRelation {
  Name: string;
  Target: string;
  Field: string;
}

/** A data entity of the underlying store: the catalog's input for generating a virtual entity. */
export interface SourceDefinition {
  PhysicalName: string;
  Label: string;
  Description?: string;
  PrimaryField?: string;
  Key?: string[];
  Fields: SourceField[];
  Relations?: SourceRelation[];
}

/** Columns every source table has besides its fields: the row id, times and version. */
export const SOURCE_SYSTEM_COLUMNS = { id: "Id", created: "CreatedDateTime", modified: "ModifiedDateTime", version: "RecVersion", createdBy: "CreatedBy", modifiedBy: "ModifiedBy", createdOnBehalfBy: "CreatedOnBehalfBy", modifiedOnBehalfBy: "ModifiedOnBehalfBy" } as const;

let validate: ReturnType<Ajv["compile"]> | undefined;

/** Validates a source definition against its JSON Schema and its own cross-references. */
export function validateSourceDefinition(input: unknown): asserts input is SourceDefinition {
  validate ??= new Ajv({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true }).compile(sourceSchema);
  if (!validate(input)) {
    const e = validate.errors![0]!;
    const path = "$" + e.instancePath.replace(/\/(\d+)/g, "[$1]").replace(/\//g, ".");
    throw new DefinitionError(`Invalid source definition: ${path} ${e.message} (rule '${e.keyword}')`, path, e.keyword);
  }
  const def = input as SourceDefinition;
  const names = new Set<string>();
  for (const [i, f] of def.Fields.entries()) {
    const lower = f.Name.toLowerCase();
    if (names.has(lower)) throw new DefinitionError(`Invalid source definition '${def.PhysicalName}': field '${f.Name}' is defined twice`, `$.Fields[${i}].Name`, "unique");
    if (Object.values(SOURCE_SYSTEM_COLUMNS).some((c) => c.toLowerCase() === lower)) {
      throw new DefinitionError(`Invalid source definition '${def.PhysicalName}': '${f.Name}' is a system column of every source`, `$.Fields[${i}].Name`, "reserved");
    }
    names.add(lower);
  }
  for (const [i, r] of (def.Relations ?? []).entries()) {
    const lower = r.Field.toLowerCase();
    if (names.has(lower)) throw new DefinitionError(`Invalid source definition '${def.PhysicalName}': relation '${r.Name}' field '${r.Field}' clashes with a field or another relation`, `$.Relations[${i}].Field`, "unique");
    if (Object.values(SOURCE_SYSTEM_COLUMNS).some((c) => c.toLowerCase() === lower)) {
      throw new DefinitionError(`Invalid source definition '${def.PhysicalName}': relation '${r.Name}' field '${r.Field}' is a system column of every source`, `$.Relations[${i}].Field`, "reserved");
    }
    names.add(lower);
  }
  for (const k of def.Key ?? []) if (!names.has(k.toLowerCase())) throw new DefinitionError(`Invalid source definition '${def.PhysicalName}': key field '${k}' is not a field`, "$.Key", "reference");
  if (def.PrimaryField && !names.has(def.PrimaryField.toLowerCase())) throw new DefinitionError(`Invalid source definition '${def.PhysicalName}': PrimaryField '${def.PrimaryField}' is not a field`, "$.PrimaryField", "reference");
}
