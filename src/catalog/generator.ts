import type { AttributeDefinition, EntityDefinition, OneToManyRelationshipDefinition } from "../metadata/types.js";
import { pluralize } from "../metadata/model.js";
import type { ColumnSpec, TableSpec } from "../store/table-spec.js";
import { SQL_PROVIDER_ID } from "../store/sql-provider.js";
import { SOURCE_SYSTEM_COLUMNS, type SourceDefinition, type SourceField } from "./source-definition.js";

/** The prefix of generated names, as Human Resources uses. */
export const PREFIX = "mshr_";
/** Option values of generated option sets start here (Dataverse's customization prefix range). */
export const OPTION_VALUE_BASE = 200000000;
export const PRIMARY_NAME_ATTRIBUTE = "mshr_primaryfield";

export const logicalNameOf = (physicalName: string) => PREFIX + physicalName.toLowerCase();
export const attributeNameOf = (fieldName: string) => PREFIX + fieldName.toLowerCase();
export const lookupNameOf = (relationName: string) => `${PREFIX}fk_${relationName.toLowerCase()}_id`;

/** The source's own table: its fields under their physical names plus the system columns. */
export function sourceTableOf(source: SourceDefinition): TableSpec {
  const columns: ColumnSpec[] = [
    { name: SOURCE_SYSTEM_COLUMNS.id, kind: "uuid", nullable: false, primary: true },
    { name: SOURCE_SYSTEM_COLUMNS.created, kind: "datetime", nullable: true },
    { name: SOURCE_SYSTEM_COLUMNS.modified, kind: "datetime", nullable: true },
    { name: SOURCE_SYSTEM_COLUMNS.version, kind: "bigint", nullable: true },
    { name: SOURCE_SYSTEM_COLUMNS.createdBy, kind: "uuid", nullable: true },
    { name: SOURCE_SYSTEM_COLUMNS.modifiedBy, kind: "uuid", nullable: true },
    { name: SOURCE_SYSTEM_COLUMNS.createdOnBehalfBy, kind: "uuid", nullable: true },
    { name: SOURCE_SYSTEM_COLUMNS.modifiedOnBehalfBy, kind: "uuid", nullable: true },
  ];
  for (const f of source.Fields) columns.push(sourceColumnOf(f, source));
  for (const r of source.Relations ?? []) columns.push({ name: r.Field, kind: "uuid", nullable: true, indexed: true });
  return { name: source.PhysicalName, columns, uniques: source.Key ? [{ name: "natural_key", columns: source.Key }] : [] };
}

function sourceColumnOf(f: SourceField, source: SourceDefinition): ColumnSpec {
  const base = { name: f.Name, nullable: true, unique: f.Unique, indexed: f.Indexed || f.Name === source.PrimaryField };
  switch (f.Type) {
    case "String":
      return { ...base, kind: "string", length: f.Length };
    case "Memo":
      return { ...base, kind: "text" };
    case "Int":
      return { ...base, kind: "int" };
    case "Int64":
      return { ...base, kind: "bigint" };
    case "Real":
      return { ...base, kind: "decimal", precision: 23, scale: f.Decimals ?? 2 };
    case "Date":
      return { ...base, kind: "date" };
    case "UtcDateTime":
      return { ...base, kind: "datetime" };
    case "Enum":
      return { ...base, kind: "string", length: 60 };
    case "NoYes":
      return { ...base, kind: "boolean" };
    case "Guid":
      return { ...base, kind: "uuid" };
  }
}

/** Maps one source field to a Dataverse attribute (types as Human Resources maps them). */
export function attributeOf(source: SourceDefinition, f: SourceField): AttributeDefinition {
  const a: AttributeDefinition = {
    LogicalName: attributeNameOf(f.Name),
    AttributeType: "String",
    DisplayName: f.Label ?? f.Name,
    ExternalName: f.Name,
    // A field of the source's natural key is required: a record without it could not be addressed by it.
    RequiredLevel: f.Mandatory || source.Key?.includes(f.Name) ? "ApplicationRequired" : "None",
  };
  switch (f.Type) {
    case "String":
      Object.assign(a, { AttributeType: "String", MaxLength: f.Length });
      if (f.Format) a.Format = f.Format;
      break;
    case "Memo":
      Object.assign(a, { AttributeType: "Memo", MaxLength: f.Length ?? 1048576 });
      break;
    case "Int":
      a.AttributeType = "Integer";
      break;
    case "Int64":
      a.AttributeType = "BigInt";
      break;
    case "Real":
      Object.assign(a, { AttributeType: "Decimal", Precision: f.Decimals ?? 2 });
      break;
    case "Date":
      Object.assign(a, { AttributeType: "DateTime", DateTimeBehavior: "DateOnly" });
      break;
    case "UtcDateTime":
      Object.assign(a, { AttributeType: "DateTime", DateTimeBehavior: "TimeZoneIndependent" });
      break;
    case "Enum":
      a.AttributeType = "Picklist";
      a.OptionSet = {
        Name: `${logicalNameOf(source.PhysicalName)}_${f.Name.toLowerCase()}`,
        Options: f.EnumValues!.map((v) => ({ Value: OPTION_VALUE_BASE + v.Value, Label: v.Label ?? v.Name, ExternalValue: v.Name })),
      };
      break;
    case "NoYes":
      a.AttributeType = "Boolean";
      break;
    case "Guid":
      a.AttributeType = "Uniqueidentifier";
      break;
  }
  if (f.Default !== undefined) {
    if (f.Type === "Enum") {
      const v = f.EnumValues!.find((x) => x.Name === f.Default);
      if (!v) throw new Error(`Field '${f.Name}' of ${source.PhysicalName}: default '${f.Default}' is not one of its enum values`);
      a.DefaultValue = OPTION_VALUE_BASE + v.Value;
    } else a.DefaultValue = f.Default;
  }
  if (f.AutoNumber) a.AutoNumberFormat = f.AutoNumber;
  if (f.Unique) a.IsUnique = true;
  if (f.Indexed) a.IsIndexed = true;
  if (f.ReadOnly || f.AutoNumber) {
    a.IsValidForCreate = false;
    a.IsValidForUpdate = false;
    if (a.RequiredLevel === "ApplicationRequired") a.RequiredLevel = "None";
  }
  return a;
}

export interface GeneratedEntity {
  entity: EntityDefinition;
  /** Relationships to generated targets, with this entity on the referencing side. */
  relationships: OneToManyRelationshipDefinition[];
}

/**
 * The virtual entity of a source. Relations become lookups only when their target is generated too
 * (`isGenerated`), so generating the target later adds them by regenerating this one.
 */
export function generateEntity(source: SourceDefinition, isGenerated: (physicalName: string) => boolean): GeneratedEntity {
  const logicalName = logicalNameOf(source.PhysicalName);
  const attributes: AttributeDefinition[] = [
    { LogicalName: `${logicalName}id`, AttributeType: "Uniqueidentifier", ExternalName: SOURCE_SYSTEM_COLUMNS.id, IsValidForUpdate: false, RequiredLevel: "SystemRequired", DisplayName: source.Label },
    ...source.Fields.map((f) => attributeOf(source, f)),
    { LogicalName: "createdon", AttributeType: "DateTime", DateTimeBehavior: "UserLocal", ExternalName: SOURCE_SYSTEM_COLUMNS.created, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Created On" },
    { LogicalName: "modifiedon", AttributeType: "DateTime", DateTimeBehavior: "UserLocal", ExternalName: SOURCE_SYSTEM_COLUMNS.modified, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Modified On" },
    { LogicalName: "versionnumber", AttributeType: "BigInt", ExternalName: SOURCE_SYSTEM_COLUMNS.version, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Version Number" },
    { LogicalName: "createdby", AttributeType: "Uniqueidentifier", ExternalName: SOURCE_SYSTEM_COLUMNS.createdBy, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Created By" },
    { LogicalName: "modifiedby", AttributeType: "Uniqueidentifier", ExternalName: SOURCE_SYSTEM_COLUMNS.modifiedBy, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Modified By" },
    { LogicalName: "createdonbehalfby", AttributeType: "Uniqueidentifier", ExternalName: SOURCE_SYSTEM_COLUMNS.createdOnBehalfBy, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Created By (Delegate)" },
    { LogicalName: "modifiedonbehalfby", AttributeType: "Uniqueidentifier", ExternalName: SOURCE_SYSTEM_COLUMNS.modifiedOnBehalfBy, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Modified By (Delegate)" },
  ];
  const primaryField = source.PrimaryField ? source.Fields.find((f) => f.Name === source.PrimaryField) : undefined;
  if (primaryField) {
    attributes.push({ LogicalName: PRIMARY_NAME_ATTRIBUTE, AttributeType: "String", MaxLength: primaryField.Type === "String" ? primaryField.Length! : 200, ExternalName: primaryField.Name, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Primary field" });
  }
  const relationships: OneToManyRelationshipDefinition[] = [];
  for (const r of source.Relations ?? []) {
    if (!isGenerated(r.Target)) continue;
    const target = logicalNameOf(r.Target);
    const lookup = lookupNameOf(r.Name);
    attributes.push({ LogicalName: lookup, AttributeType: "Lookup", Targets: [target], ExternalName: r.Field, DisplayName: r.Name });
    relationships.push({
      SchemaName: `${logicalName}_fk_${r.Name.toLowerCase()}`,
      RelationshipType: "OneToManyRelationship",
      ReferencedEntity: target,
      ReferencedAttribute: `${target}id`,
      ReferencingEntity: logicalName,
      ReferencingAttribute: lookup,
      ReferencedEntityNavigationPropertyName: `${logicalName}_fk_${r.Name.toLowerCase()}`,
      ReferencingEntityNavigationPropertyName: lookup,
    });
  }
  const entity: EntityDefinition = {
    LogicalName: logicalName,
    SchemaName: logicalName,
    EntitySetName: pluralize(logicalName),
    DisplayName: source.Label,
    DisplayCollectionName: pluralize(source.Label),
    Description: source.Description,
    PrimaryIdAttribute: `${logicalName}id`,
    PrimaryNameAttribute: primaryField ? PRIMARY_NAME_ATTRIBUTE : undefined,
    OwnershipType: "OrganizationOwned",
    TableType: "Virtual",
    ExternalName: source.PhysicalName,
    ExternalCollectionName: source.PhysicalName,
    DataProviderId: SQL_PROVIDER_ID,
    Attributes: attributes,
    Keys: source.Key ? [{ LogicalName: `${logicalName}_naturalkey`, KeyAttributes: source.Key.map(attributeNameOf), DisplayName: `${source.Label} key` }] : undefined,
  };
  if (entity.Description === undefined) delete entity.Description;
  if (entity.Keys === undefined) delete entity.Keys;
  if (entity.PrimaryNameAttribute === undefined) delete entity.PrimaryNameAttribute;
  return { entity, relationships };
}

/** What a refresh changed, attribute by attribute, for the catalog's status message. */
export function describeChanges(before: EntityDefinition | undefined, after: EntityDefinition): string[] {
  if (!before) return [`Generated ${after.LogicalName} with ${after.Attributes.length} attributes`];
  const strip = (a: AttributeDefinition) => JSON.stringify({ ...a, MetadataId: undefined, SchemaName: undefined, DisplayName: undefined, OptionSet: a.OptionSet ? { ...a.OptionSet, MetadataId: undefined } : undefined });
  const old = new Map(before.Attributes.map((a) => [a.LogicalName, a]));
  const now = new Map(after.Attributes.map((a) => [a.LogicalName, a]));
  const changes: string[] = [];
  for (const [name, a] of now) {
    const o = old.get(name);
    if (!o) changes.push(`added ${name}`);
    else if (strip(o) !== strip(a)) changes.push(`changed ${name}`);
  }
  for (const name of old.keys()) if (!now.has(name)) changes.push(`removed ${name}`);
  return changes;
}
