/**
 * Metadata definitions as they are registered, stored and served (Dataverse shapes, PascalCase).
 * These are plain JSON documents validated by the schemas in `schemas/`; everything else
 * (tables, CSDL, SQL, payload validation, privileges) is derived from them.
 */

export interface LocalizedLabel {
  Label: string;
  LanguageCode: number;
}

export interface Label {
  LocalizedLabels: LocalizedLabel[];
  UserLocalizedLabel?: LocalizedLabel | null;
}

/** A label may be registered as a plain string (LanguageCode 1033) or as a Dataverse Label. */
export type LabelInput = string | Label;

export type AttributeType =
  | "String"
  | "Memo"
  | "Integer"
  | "BigInt"
  | "Decimal"
  | "Double"
  | "Money"
  | "Boolean"
  | "DateTime"
  | "Uniqueidentifier"
  | "Picklist"
  | "Lookup";

export type RequiredLevel = "None" | "Recommended" | "ApplicationRequired" | "SystemRequired";
export type DateTimeBehavior = "UserLocal" | "TimeZoneIndependent" | "DateOnly";
export type StringFormat = "Text" | "Email" | "Phone" | "Url";

export interface OptionDefinition {
  Value: number;
  Label: LabelInput;
  /** Name in the source (for example the enum value name of a virtual entity's source). */
  ExternalValue?: string;
}

export interface OptionSetDefinition {
  Name: string;
  MetadataId?: string;
  DisplayName?: LabelInput;
  IsGlobal?: boolean;
  Options: OptionDefinition[];
}

export interface AttributeDefinition {
  LogicalName: string;
  SchemaName?: string;
  AttributeType: AttributeType;
  DisplayName?: LabelInput;
  Description?: LabelInput;
  RequiredLevel?: RequiredLevel;
  IsValidForCreate?: boolean;
  IsValidForUpdate?: boolean;
  IsValidForRead?: boolean;
  ExternalName?: string;
  MetadataId?: string;
  /** String and Memo */
  MaxLength?: number;
  Format?: StringFormat;
  /** Integer, BigInt, Decimal, Double, Money */
  MinValue?: number;
  MaxValue?: number;
  /** Decimal, Double, Money: digits after the decimal point */
  Precision?: number;
  /** DateTime */
  DateTimeBehavior?: DateTimeBehavior;
  /** Picklist: a local option set, or the name of a global one */
  OptionSet?: OptionSetDefinition;
  GlobalOptionSetName?: string;
  /** Lookup: the entities it may reference (one here) */
  Targets?: string[];
  /** A value the store sets on create when the payload has none. */
  DefaultValue?: string | number | boolean;
  /** Unique in the store (a unique index); a value the store assigns when it is absent on create. */
  IsUnique?: boolean;
  /** Index the column for filters and orders on it (primary name, lookups and keys are always indexed). */
  IsIndexed?: boolean;
  AutoNumberFormat?: string;
}

export interface EntityKeyDefinition {
  LogicalName: string;
  KeyAttributes: string[];
  DisplayName?: LabelInput;
}

export type OwnershipType = "OrganizationOwned" | "UserOwned" | "None";
export type TableType = "Standard" | "Virtual";

export interface EntityDefinition {
  LogicalName: string;
  SchemaName?: string;
  EntitySetName?: string;
  DisplayName?: LabelInput;
  DisplayCollectionName?: LabelInput;
  Description?: LabelInput;
  PrimaryIdAttribute?: string;
  PrimaryNameAttribute?: string;
  OwnershipType?: OwnershipType;
  TableType?: TableType;
  ExternalName?: string;
  ExternalCollectionName?: string;
  DataProviderId?: string;
  MetadataId?: string;
  Attributes: AttributeDefinition[];
  Keys?: EntityKeyDefinition[];
}

export type RelationshipType = "OneToManyRelationship" | "ManyToManyRelationship";

export interface OneToManyRelationshipDefinition {
  SchemaName: string;
  RelationshipType: "OneToManyRelationship";
  MetadataId?: string;
  ReferencedEntity: string;
  ReferencedAttribute: string;
  ReferencingEntity: string;
  ReferencingAttribute: string;
  ReferencedEntityNavigationPropertyName: string;
  ReferencingEntityNavigationPropertyName: string;
}

export interface ManyToManyRelationshipDefinition {
  SchemaName: string;
  RelationshipType: "ManyToManyRelationship";
  MetadataId?: string;
  Entity1LogicalName: string;
  Entity2LogicalName: string;
  IntersectEntityName: string;
  Entity1IntersectAttribute: string;
  Entity2IntersectAttribute: string;
  Entity1NavigationPropertyName: string;
  Entity2NavigationPropertyName: string;
}

export type RelationshipDefinition = OneToManyRelationshipDefinition | ManyToManyRelationshipDefinition;
