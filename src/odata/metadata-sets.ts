import { EntityModel, type Model } from "../metadata/model.js";
import type { AttributeDefinition, EntityDefinition } from "../metadata/types.js";
import type { Row } from "../providers/data-provider.js";

/**
 * The read-only metadata sets (EntityDefinitions, Attributes, RelationshipDefinitions,
 * GlobalOptionSetDefinitions) described as entity types, so the same binder, evaluator and serializer
 * serve them; their rows are built from the model's definitions.
 */
type SyntheticAttribute = Pick<AttributeDefinition, "LogicalName" | "AttributeType"> & Partial<AttributeDefinition>;

function synthetic(name: string, attrs: SyntheticAttribute[], complex: Record<string, string>, setName: string): EntityModel {
  const def: EntityDefinition = {
    LogicalName: name,
    SchemaName: name,
    EntitySetName: setName,
    PrimaryIdAttribute: "MetadataId",
    Attributes: attrs.map((a) => ({ IsValidForCreate: false, IsValidForUpdate: false, IsValidForRead: true, RequiredLevel: "None", ...a }) as AttributeDefinition),
  };
  const model = new EntityModel(def, new Map());
  for (const [k, v] of Object.entries(complex)) model.complexProperties.set(k, v);
  return model;
}

const str = (LogicalName: string): SyntheticAttribute => ({ LogicalName, AttributeType: "String", MaxLength: 400 });
const bool = (LogicalName: string): SyntheticAttribute => ({ LogicalName, AttributeType: "Boolean" });
const guid = (LogicalName: string): SyntheticAttribute => ({ LogicalName, AttributeType: "Uniqueidentifier" });
const int = (LogicalName: string): SyntheticAttribute => ({ LogicalName, AttributeType: "Integer" });
const dbl = (LogicalName: string): SyntheticAttribute => ({ LogicalName, AttributeType: "Double" });

export const ENTITY_METADATA = synthetic(
  "EntityMetadata",
  [guid("MetadataId"), str("LogicalName"), str("SchemaName"), str("EntitySetName"), str("LogicalCollectionName"), str("PrimaryIdAttribute"), str("PrimaryNameAttribute"), str("OwnershipType"), str("TableType"), str("ExternalName"), str("ExternalCollectionName"), guid("DataProviderId"), bool("IsCustomEntity")],
  { DisplayName: "mscrm.Label", DisplayCollectionName: "mscrm.Label", Description: "mscrm.Label" },
  "EntityDefinitions",
);

export const ATTRIBUTE_METADATA = synthetic(
  "AttributeMetadata",
  [guid("MetadataId"), str("LogicalName"), str("SchemaName"), str("EntityLogicalName"), str("AttributeType"), bool("IsPrimaryId"), bool("IsPrimaryName"), bool("IsValidForCreate"), bool("IsValidForUpdate"), bool("IsValidForRead"), bool("IsCustomAttribute"), str("ExternalName"), int("MaxLength"), str("Format"), dbl("MinValue"), dbl("MaxValue"), int("Precision"), str("AutoNumberFormat")],
  { DisplayName: "mscrm.Label", Description: "mscrm.Label", RequiredLevel: "mscrm.AttributeRequiredLevelManagedProperty", DateTimeBehavior: "mscrm.DateTimeBehavior", OptionSet: "mscrm.OptionSetMetadata", Targets: "Collection(Edm.String)", AttributeTypeName: "mscrm.AttributeTypeDisplayName" },
  "Attributes",
);

export const RELATIONSHIP_METADATA = synthetic(
  "RelationshipMetadataBase",
  [guid("MetadataId"), str("SchemaName"), str("RelationshipType"), str("ReferencedEntity"), str("ReferencedAttribute"), str("ReferencingEntity"), str("ReferencingAttribute"), str("ReferencedEntityNavigationPropertyName"), str("ReferencingEntityNavigationPropertyName"), str("Entity1LogicalName"), str("Entity2LogicalName"), str("IntersectEntityName"), str("Entity1IntersectAttribute"), str("Entity2IntersectAttribute"), str("Entity1NavigationPropertyName"), str("Entity2NavigationPropertyName")],
  {},
  "RelationshipDefinitions",
);

export const OPTIONSET_METADATA = synthetic(
  "OptionSetMetadataBase",
  [guid("MetadataId"), str("Name"), bool("IsGlobal"), str("OptionSetType")],
  { DisplayName: "mscrm.Label", Options: "Collection(mscrm.OptionMetadata)" },
  "GlobalOptionSetDefinitions",
);

export const KEY_METADATA = synthetic(
  "EntityKeyMetadata",
  [guid("MetadataId"), str("LogicalName"), str("SchemaName"), str("EntityLogicalName")],
  { DisplayName: "mscrm.Label", KeyAttributes: "Collection(Edm.String)" },
  "Keys",
);

/** Derived types of the metadata sets (name → base), as Dataverse declares them; rows name them in @odata.type. */
export const METADATA_DERIVED_TYPES: ReadonlyMap<string, string> = new Map([
  ...Object.values({
    String: "StringAttributeMetadata", Memo: "MemoAttributeMetadata", Integer: "IntegerAttributeMetadata", BigInt: "BigIntAttributeMetadata",
    Decimal: "DecimalAttributeMetadata", Double: "DoubleAttributeMetadata", Money: "MoneyAttributeMetadata", Boolean: "BooleanAttributeMetadata",
    DateTime: "DateTimeAttributeMetadata", Uniqueidentifier: "UniqueIdentifierAttributeMetadata", Picklist: "PicklistAttributeMetadata", Lookup: "LookupAttributeMetadata",
  }).map((n): [string, string] => [n, "AttributeMetadata"]),
  ["OneToManyRelationshipMetadata", "RelationshipMetadataBase"],
  ["ManyToManyRelationshipMetadata", "RelationshipMetadataBase"],
]);

/** Complex types the metadata sets use, for $metadata. */
export const METADATA_COMPLEX_TYPES: { name: string; properties: { name: string; type: string; nullable?: boolean }[] }[] = [
  { name: "LocalizedLabel", properties: [{ name: "Label", type: "Edm.String" }, { name: "LanguageCode", type: "Edm.Int32", nullable: false }] },
  { name: "Label", properties: [{ name: "LocalizedLabels", type: "Collection(mscrm.LocalizedLabel)" }, { name: "UserLocalizedLabel", type: "mscrm.LocalizedLabel" }] },
  { name: "AttributeRequiredLevelManagedProperty", properties: [{ name: "Value", type: "Edm.String" }, { name: "CanBeChanged", type: "Edm.Boolean" }, { name: "ManagedPropertyLogicalName", type: "Edm.String" }] },
  { name: "DateTimeBehavior", properties: [{ name: "Value", type: "Edm.String" }] },
  { name: "AttributeTypeDisplayName", properties: [{ name: "Value", type: "Edm.String" }] },
  { name: "OptionMetadata", properties: [{ name: "Value", type: "Edm.Int32" }, { name: "Label", type: "mscrm.Label" }, { name: "ExternalValue", type: "Edm.String" }] },
  { name: "OptionSetMetadata", properties: [{ name: "MetadataId", type: "Edm.Guid" }, { name: "Name", type: "Edm.String" }, { name: "IsGlobal", type: "Edm.Boolean" }, { name: "OptionSetType", type: "Edm.String" }, { name: "Options", type: "Collection(mscrm.OptionMetadata)" }] },
];

export const METADATA_SETS: ReadonlyMap<string, EntityModel> = new Map([
  ["EntityDefinitions", ENTITY_METADATA],
  ["RelationshipDefinitions", RELATIONSHIP_METADATA],
  ["GlobalOptionSetDefinitions", OPTIONSET_METADATA],
]);

const label = (l: unknown) => l ?? { LocalizedLabels: [], UserLocalizedLabel: null };

export function entityMetadataRow(def: EntityDefinition): Row {
  return {
    MetadataId: def.MetadataId,
    LogicalName: def.LogicalName,
    SchemaName: def.SchemaName,
    EntitySetName: def.EntitySetName,
    LogicalCollectionName: def.EntitySetName,
    PrimaryIdAttribute: def.PrimaryIdAttribute,
    PrimaryNameAttribute: def.PrimaryNameAttribute ?? null,
    OwnershipType: def.OwnershipType,
    TableType: def.TableType,
    ExternalName: def.ExternalName ?? null,
    ExternalCollectionName: def.ExternalCollectionName ?? null,
    DataProviderId: def.DataProviderId ?? null,
    IsCustomEntity: true,
    DisplayName: label(def.DisplayName),
    DisplayCollectionName: label(def.DisplayCollectionName),
    Description: label(def.Description),
  };
}

const ATTRIBUTE_TYPE_NAMES: Record<string, string> = {
  String: "StringType", Memo: "MemoType", Integer: "IntegerType", BigInt: "BigIntType", Decimal: "DecimalType", Double: "DoubleType",
  Money: "MoneyType", Boolean: "BooleanType", DateTime: "DateTimeType", Uniqueidentifier: "UniqueidentifierType", Picklist: "PicklistType", Lookup: "LookupType",
};
const ATTRIBUTE_ODATA_TYPES: Record<string, string> = {
  String: "StringAttributeMetadata", Memo: "MemoAttributeMetadata", Integer: "IntegerAttributeMetadata", BigInt: "BigIntAttributeMetadata",
  Decimal: "DecimalAttributeMetadata", Double: "DoubleAttributeMetadata", Money: "MoneyAttributeMetadata", Boolean: "BooleanAttributeMetadata",
  DateTime: "DateTimeAttributeMetadata", Uniqueidentifier: "UniqueIdentifierAttributeMetadata", Picklist: "PicklistAttributeMetadata", Lookup: "LookupAttributeMetadata",
};

export function attributeMetadataRow(model: Model, entity: EntityDefinition, a: AttributeDefinition): Row {
  const optionSet = a.OptionSet ?? (a.GlobalOptionSetName ? model.optionSets.get(a.GlobalOptionSetName) : undefined);
  return {
    "@odata.type": `#Microsoft.Dynamics.CRM.${ATTRIBUTE_ODATA_TYPES[a.AttributeType]}`,
    MetadataId: a.MetadataId,
    LogicalName: a.LogicalName,
    SchemaName: a.SchemaName,
    EntityLogicalName: entity.LogicalName,
    AttributeType: a.AttributeType,
    AttributeTypeName: { Value: ATTRIBUTE_TYPE_NAMES[a.AttributeType] },
    IsPrimaryId: entity.PrimaryIdAttribute === a.LogicalName,
    IsPrimaryName: entity.PrimaryNameAttribute === a.LogicalName,
    IsValidForCreate: a.IsValidForCreate !== false,
    IsValidForUpdate: a.IsValidForUpdate !== false,
    IsValidForRead: a.IsValidForRead !== false,
    IsCustomAttribute: true,
    ExternalName: a.ExternalName ?? null,
    MaxLength: a.MaxLength ?? null,
    Format: a.Format ?? null,
    MinValue: a.MinValue ?? null,
    MaxValue: a.MaxValue ?? null,
    Precision: a.Precision ?? null,
    AutoNumberFormat: a.AutoNumberFormat ?? null,
    DisplayName: label(a.DisplayName),
    Description: label(a.Description),
    RequiredLevel: { Value: a.RequiredLevel ?? "None", CanBeChanged: true, ManagedPropertyLogicalName: "canmodifyrequirementlevelsettings" },
    DateTimeBehavior: a.DateTimeBehavior ? { Value: a.DateTimeBehavior } : null,
    OptionSet: optionSet
      ? { MetadataId: optionSet.MetadataId, Name: optionSet.Name, IsGlobal: optionSet.IsGlobal ?? false, OptionSetType: "Picklist", Options: optionSet.Options.map((o) => ({ Value: o.Value, Label: o.Label, ExternalValue: o.ExternalValue ?? null })) }
      : null,
    Targets: a.Targets ?? null,
  };
}

export function relationshipMetadataRow(r: Model["relationships"] extends Map<string, infer R> ? R : never): Row {
  const row: Row = { "@odata.type": `#Microsoft.Dynamics.CRM.${r.RelationshipType === "OneToManyRelationship" ? "OneToManyRelationshipMetadata" : "ManyToManyRelationshipMetadata"}` };
  for (const a of RELATIONSHIP_METADATA.attributes.keys()) row[a] = (r as unknown as Record<string, unknown>)[a] ?? null;
  return row;
}

export function optionSetMetadataRow(o: Model["optionSets"] extends Map<string, infer O> ? O : never): Row {
  return {
    "@odata.type": "#Microsoft.Dynamics.CRM.OptionSetMetadata",
    MetadataId: o.MetadataId,
    Name: o.Name,
    IsGlobal: true,
    OptionSetType: "Picklist",
    DisplayName: label(o.DisplayName),
    Options: o.Options.map((x) => ({ Value: x.Value, Label: x.Label, ExternalValue: x.ExternalValue ?? null })),
  };
}

export function keyMetadataRow(entity: EntityDefinition, k: NonNullable<EntityDefinition["Keys"]>[number], id: string): Row {
  return { MetadataId: id, LogicalName: k.LogicalName, SchemaName: k.LogicalName, EntityLogicalName: entity.LogicalName, KeyAttributes: k.KeyAttributes, DisplayName: label(k.DisplayName) };
}
