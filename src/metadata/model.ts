import { randomUUID } from "node:crypto";
import { DefinitionError, validateEntityDefinition, validateOptionSetDefinition, validateRelationshipDefinition } from "./schema-validation.js";
import type {
  AttributeDefinition,
  AttributeType,
  EntityDefinition,
  Label,
  LabelInput,
  ManyToManyRelationshipDefinition,
  OneToManyRelationshipDefinition,
  OptionSetDefinition,
  RelationshipDefinition,
} from "./types.js";

export type EdmPrimitiveType =
  | "Edm.String"
  | "Edm.Int32"
  | "Edm.Int64"
  | "Edm.Decimal"
  | "Edm.Double"
  | "Edm.Boolean"
  | "Edm.DateTimeOffset"
  | "Edm.Date"
  | "Edm.Guid";

export const NAMESPACE = "Microsoft.Dynamics.CRM";
export const NAMESPACE_ALIAS = "mscrm";
export const DEFAULT_LANGUAGE = 1033;

/** Default precision (total digits) of Decimal and Money columns; Dataverse's own maximum. */
export const DECIMAL_TOTAL_DIGITS = 23;

export function edmTypeOf(attr: Pick<AttributeDefinition, "AttributeType" | "DateTimeBehavior">): EdmPrimitiveType {
  switch (attr.AttributeType) {
    case "String":
    case "Memo":
      return "Edm.String";
    case "Integer":
    case "Picklist":
      return "Edm.Int32";
    case "BigInt":
      return "Edm.Int64";
    case "Decimal":
    case "Money":
      return "Edm.Decimal";
    case "Double":
      return "Edm.Double";
    case "Boolean":
      return "Edm.Boolean";
    case "DateTime":
      return attr.DateTimeBehavior === "DateOnly" ? "Edm.Date" : "Edm.DateTimeOffset";
    case "Uniqueidentifier":
    case "Lookup":
      return "Edm.Guid";
  }
}

export function toLabel(input: LabelInput | undefined): Label | undefined {
  if (input === undefined) return undefined;
  if (typeof input === "string") {
    const l = { Label: input, LanguageCode: DEFAULT_LANGUAGE };
    return { LocalizedLabels: [l], UserLocalizedLabel: l };
  }
  const user = input.LocalizedLabels.find((l) => l.LanguageCode === DEFAULT_LANGUAGE) ?? input.LocalizedLabels[0];
  return { LocalizedLabels: input.LocalizedLabels, UserLocalizedLabel: user };
}

export function labelText(input: LabelInput | undefined): string | undefined {
  return toLabel(input)?.UserLocalizedLabel?.Label;
}

/** Dataverse-style plural of a logical name for the entity set: candidate -> candidates, entity -> entities. */
export function pluralize(name: string): string {
  if (/[^aeiou]y$/.test(name)) return name.slice(0, -1) + "ies";
  if (/(s|x|z|ch|sh)$/.test(name)) return name + "es";
  return name + "s";
}

function schemaNameOf(logicalName: string): string {
  return logicalName.replace(/(^|_)([a-z])/g, (_m, sep: string, c: string) => sep + c.toUpperCase());
}

/** Columns every entity has, as in Dataverse; added when absent so definitions stay short. */
export const SYSTEM_ATTRIBUTES: readonly AttributeDefinition[] = [
  { LogicalName: "createdon", AttributeType: "DateTime", DateTimeBehavior: "UserLocal", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Created On" },
  { LogicalName: "modifiedon", AttributeType: "DateTime", DateTimeBehavior: "UserLocal", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Modified On" },
  { LogicalName: "versionnumber", AttributeType: "BigInt", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Version Number" },
  { LogicalName: "createdby", AttributeType: "Uniqueidentifier", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Created By" },
  { LogicalName: "modifiedby", AttributeType: "Uniqueidentifier", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Modified By" },
  // The user who really acted when a write was made on behalf of another (MSCRMCallerID / CallerObjectId).
  { LogicalName: "createdonbehalfby", AttributeType: "Uniqueidentifier", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Created By (Delegate)" },
  { LogicalName: "modifiedonbehalfby", AttributeType: "Uniqueidentifier", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Modified By (Delegate)" },
];

/**
 * Fills the defaults Dataverse would (names, labels, ids, the primary key and system columns) so the stored
 * definition is complete and stable: MetadataIds are assigned once and kept across restarts and refreshes.
 */
export function normalizeEntityDefinition(input: EntityDefinition, previous?: EntityDefinition): EntityDefinition {
  validateEntityDefinition(input);
  // Checked when a definition is made or changed, not when a stored one is loaded: a store made before a
  // check was added still opens.
  input.Attributes.forEach((a, i) => checkFacets(input.LogicalName, a, i));
  checkKeys(input);
  const def: EntityDefinition = structuredClone(input);
  def.SchemaName ??= previous?.SchemaName ?? schemaNameOf(def.LogicalName);
  def.EntitySetName ??= previous?.EntitySetName ?? pluralize(def.LogicalName);
  def.DisplayName = toLabel(def.DisplayName ?? def.SchemaName);
  def.DisplayCollectionName = toLabel(def.DisplayCollectionName ?? labelText(def.DisplayName) + "s");
  if (def.Description !== undefined) def.Description = toLabel(def.Description);
  def.OwnershipType ??= "OrganizationOwned";
  def.TableType ??= "Standard";
  def.MetadataId ??= previous?.MetadataId ?? randomUUID();
  def.PrimaryIdAttribute ??= `${def.LogicalName}id`;
  const previousAttributes = new Map((previous?.Attributes ?? []).map((a) => [a.LogicalName, a]));
  const names = new Set(def.Attributes.map((a) => a.LogicalName));
  if (!names.has(def.PrimaryIdAttribute)) {
    def.Attributes.unshift({ LogicalName: def.PrimaryIdAttribute, AttributeType: "Uniqueidentifier", IsValidForUpdate: false, RequiredLevel: "SystemRequired" });
  }
  for (const sys of SYSTEM_ATTRIBUTES) if (!names.has(sys.LogicalName)) def.Attributes.push(structuredClone(sys));
  def.Attributes = def.Attributes.map((a) => normalizeAttribute(a, previousAttributes.get(a.LogicalName)));
  return def;
}

function normalizeAttribute(input: AttributeDefinition, previous?: AttributeDefinition): AttributeDefinition {
  const a = { ...input };
  a.SchemaName ??= previous?.SchemaName ?? schemaNameOf(a.LogicalName);
  a.DisplayName = toLabel(a.DisplayName ?? a.SchemaName);
  if (a.Description !== undefined) a.Description = toLabel(a.Description);
  a.RequiredLevel ??= "None";
  a.IsValidForCreate ??= true;
  a.IsValidForUpdate ??= true;
  a.IsValidForRead ??= true;
  a.MetadataId ??= previous?.MetadataId ?? randomUUID();
  if (a.AttributeType === "DateTime") a.DateTimeBehavior ??= "UserLocal";
  if ((a.AttributeType === "Decimal" || a.AttributeType === "Money") && a.Precision === undefined) a.Precision = 2;
  if (a.OptionSet) {
    a.OptionSet = {
      ...a.OptionSet,
      IsGlobal: false,
      MetadataId: a.OptionSet.MetadataId ?? previous?.OptionSet?.MetadataId ?? randomUUID(),
      Options: a.OptionSet.Options.map((o) => ({ ...o, Label: toLabel(o.Label)! })),
    };
  }
  return a;
}

export function normalizeOptionSetDefinition(input: OptionSetDefinition, previous?: OptionSetDefinition): OptionSetDefinition {
  validateOptionSetDefinition(input);
  const twice = repeatedOptionValue(input.Options);
  if (twice) throw new DefinitionError(`Invalid option set definition '${input.Name}': option value ${twice.value} is given twice`, `$.Options[${twice.index}].Value`, "unique");
  return {
    ...input,
    IsGlobal: true,
    MetadataId: input.MetadataId ?? previous?.MetadataId ?? randomUUID(),
    DisplayName: toLabel(input.DisplayName ?? input.Name),
    Options: input.Options.map((o) => ({ ...o, Label: toLabel(o.Label)! })),
  };
}

export function normalizeRelationshipDefinition(input: RelationshipDefinition, previous?: RelationshipDefinition): RelationshipDefinition {
  validateRelationshipDefinition(input);
  return { ...input, MetadataId: input.MetadataId ?? previous?.MetadataId ?? randomUUID() };
}

export interface OptionModel {
  value: number;
  label: string;
  externalValue?: string;
}

/** An attribute resolved against the model: its OData property name, EDM type and store column. */
export class AttributeModel {
  readonly logicalName: string;
  readonly type: AttributeType;
  readonly edmType: EdmPrimitiveType;
  /** The OData property: the logical name, or `_<name>_value` for a lookup. */
  readonly propertyName: string;
  /** The column in the store: ExternalName when the data lives in a source with its own names. */
  readonly column: string;
  readonly options?: ReadonlyMap<number, OptionModel>;
  /** Option values as the source stores them, when the options declare ExternalValue (virtual entities). */
  readonly externalValues?: { toSource: ReadonlyMap<number, string>; fromSource: ReadonlyMap<string, number> };
  navigation?: NavigationModel;

  constructor(
    readonly entity: EntityModel,
    readonly def: AttributeDefinition,
    optionSet: OptionSetDefinition | undefined,
  ) {
    this.logicalName = def.LogicalName;
    this.type = def.AttributeType;
    this.edmType = edmTypeOf(def);
    this.propertyName = def.AttributeType === "Lookup" ? `_${def.LogicalName}_value` : def.LogicalName;
    this.column = def.ExternalName ?? def.LogicalName;
    if (optionSet) {
      this.options = new Map(optionSet.Options.map((o) => [o.Value, { value: o.Value, label: labelText(o.Label) ?? String(o.Value), externalValue: o.ExternalValue }]));
      if (optionSet.Options.every((o) => o.ExternalValue !== undefined)) {
        this.externalValues = {
          toSource: new Map(optionSet.Options.map((o) => [o.Value, o.ExternalValue!])),
          fromSource: new Map(optionSet.Options.map((o) => [o.ExternalValue!, o.Value])),
        };
      }
    }
  }

  get isPrimaryId(): boolean {
    return this.entity.def.PrimaryIdAttribute === this.logicalName;
  }
  get isReadable(): boolean {
    return this.def.IsValidForRead !== false;
  }
  get isCreatable(): boolean {
    return this.def.IsValidForCreate !== false;
  }
  get isUpdatable(): boolean {
    return this.def.IsValidForUpdate !== false;
  }
  get isRequiredOnCreate(): boolean {
    return (this.def.RequiredLevel === "ApplicationRequired" || this.def.RequiredLevel === "SystemRequired") && !this.isPrimaryId && !this.isStoreAssigned;
  }
  /** Values the store fills itself when a create leaves them out. */
  get isStoreAssigned(): boolean {
    return this.def.DefaultValue !== undefined || this.def.AutoNumberFormat !== undefined;
  }
  get nullable(): boolean {
    return !this.isPrimaryId;
  }
  get isIndexed(): boolean {
    return this.type === "Lookup" || this.def.IsIndexed === true || this.entity.def.PrimaryNameAttribute === this.logicalName;
  }
}

export interface NavigationModel {
  name: string;
  /** The entity that declares the navigation property. */
  source: EntityModel;
  target: EntityModel;
  relationship: RelationshipDefinition;
  /** single: many-to-one through a lookup on the source; collection: one-to-many or many-to-many. */
  kind: "single" | "collection";
  /** single: the source's lookup. one-to-many collection: the lookup on the target pointing back. */
  lookup?: AttributeModel;
  /** many-to-many: the intersect table and its two columns (this side, other side). */
  intersect?: { table: string; sourceColumn: string; targetColumn: string };
  /** The navigation on the other side of the relationship. */
  partnerName: string;
}

export interface AlternateKeyModel {
  logicalName: string;
  attributes: AttributeModel[];
}

/** An entity resolved against the model. */
export class EntityModel {
  readonly logicalName: string;
  readonly entitySetName: string;
  readonly attributes = new Map<string, AttributeModel>();
  /** OData structural properties by name (lookups appear as `_x_value`). */
  readonly properties = new Map<string, AttributeModel>();
  readonly navigations = new Map<string, NavigationModel>();
  readonly keys: AlternateKeyModel[] = [];
  /** Selectable but not filterable values (labels of the metadata sets), with their CSDL types. */
  readonly complexProperties = new Map<string, string>();
  readonly primaryId: AttributeModel;
  readonly primaryName?: AttributeModel;

  constructor(
    readonly def: EntityDefinition,
    optionSets: ReadonlyMap<string, OptionSetDefinition>,
  ) {
    this.logicalName = def.LogicalName;
    this.entitySetName = def.EntitySetName!;
    for (const [i, a] of def.Attributes.entries()) {
      if (this.attributes.has(a.LogicalName)) {
        throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': attribute '${a.LogicalName}' is defined twice`, `$.Attributes[${i}].LogicalName`, "unique");
      }
      let optionSet = a.OptionSet;
      if (a.GlobalOptionSetName) {
        optionSet = optionSets.get(a.GlobalOptionSetName);
        if (!optionSet) {
          throw new DefinitionError(`Invalid entity definition '${def.LogicalName}.${a.LogicalName}': global option set '${a.GlobalOptionSetName}' is not defined`, `$.Attributes[${i}].GlobalOptionSetName`, "reference");
        }
      }
      const model = new AttributeModel(this, a, optionSet);
      this.attributes.set(a.LogicalName, model);
      this.properties.set(model.propertyName, model);
    }
    const primary = this.attributes.get(def.PrimaryIdAttribute!);
    if (!primary || primary.type !== "Uniqueidentifier") {
      throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': PrimaryIdAttribute '${def.PrimaryIdAttribute}' must be a Uniqueidentifier attribute`, "$.PrimaryIdAttribute", "reference");
    }
    this.primaryId = primary;
    if (def.PrimaryNameAttribute) {
      const name = this.attributes.get(def.PrimaryNameAttribute);
      if (!name || (name.type !== "String" && name.type !== "Memo")) {
        throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': PrimaryNameAttribute '${def.PrimaryNameAttribute}' must be a String attribute`, "$.PrimaryNameAttribute", "reference");
      }
      this.primaryName = name;
    }
    for (const [i, k] of (def.Keys ?? []).entries()) {
      const attrs = k.KeyAttributes.map((n, j) => {
        const a = this.attributes.get(n);
        if (!a || a.type === "Memo") {
          throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': key '${k.LogicalName}' names attribute '${n}', which is not a key-able attribute`, `$.Keys[${i}].KeyAttributes[${j}]`, "reference");
        }
        return a;
      });
      this.keys.push({ logicalName: k.LogicalName, attributes: attrs });
    }
    const columns = new Map<string, string>();
    // Read-only attributes may show a column another attribute writes (a virtual entity's primary name).
    for (const a of [...this.attributes.values()].filter((x) => x.isCreatable || x.isUpdatable || x.isPrimaryId)) {
      const key = a.column.toLowerCase();
      if (columns.has(key)) {
        throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': attributes '${columns.get(key)}' and '${a.logicalName}' map to the same column '${a.column}'`, "$.Attributes", "unique");
      }
      columns.set(key, a.logicalName);
    }
  }

  get isVirtual(): boolean {
    return this.def.TableType === "Virtual";
  }
  /** The table (or source) holding the rows. */
  get table(): string {
    return this.def.ExternalName ?? this.logicalName;
  }
  get schemaName(): string {
    return this.def.SchemaName!;
  }
}

const INT32 = { min: -2147483648, max: 2147483647 };

/** Keys as Dataverse takes them: one name each, each attribute once, no yes/no attribute. */
function checkKeys(def: EntityDefinition): void {
  const types = new Map(def.Attributes.map((a) => [a.LogicalName, a.AttributeType]));
  for (const [i, k] of (def.Keys ?? []).entries()) {
    if ((def.Keys ?? []).findIndex((other) => other.LogicalName === k.LogicalName) !== i) throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': key '${k.LogicalName}' is defined twice`, `$.Keys[${i}].LogicalName`, "unique");
    for (const [j, n] of k.KeyAttributes.entries()) {
      if (k.KeyAttributes.indexOf(n) !== j) throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': key '${k.LogicalName}' names attribute '${n}' twice`, `$.Keys[${i}].KeyAttributes[${j}]`, "unique");
      if (types.get(n) === "Boolean") throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': key '${k.LogicalName}' names attribute '${n}', which is not a key-able attribute (a Boolean)`, `$.Keys[${i}].KeyAttributes[${j}]`, "reference");
    }
  }
}

/** The first option value given a second time in a list of options, with its index. */
function repeatedOptionValue(options: readonly { Value: number }[]): { value: number; index: number } | undefined {
  const seen = new Set<number>();
  for (const [index, o] of options.entries()) {
    if (seen.has(o.Value)) return { value: o.Value, index };
    seen.add(o.Value);
  }
  return undefined;
}

/**
 * What the JSON schema cannot say of one attribute: ranges that fit the type and are not empty, a default
 * of the attribute's own type and size, auto-numbers that fit, option values given once. (That a choice's
 * default is one of its options is checked against the whole model, global option sets included.)
 */
function checkFacets(entity: string, a: AttributeDefinition, i: number): void {
  const fail = (message: string, path: string, rule: string): never => {
    throw new DefinitionError(`Invalid entity definition '${entity}.${a.LogicalName}': ${message}`, `$.Attributes[${i}]${path}`, rule);
  };
  const integer = a.AttributeType === "Integer" || a.AttributeType === "Picklist";
  if (a.AttributeType === "Integer") {
    for (const f of ["MinValue", "MaxValue"] as const) {
      const v = a[f];
      if (v !== undefined && (!Number.isInteger(v) || v < INT32.min || v > INT32.max)) fail(`${f} ${v} is not a 32-bit integer (${INT32.min} to ${INT32.max})`, `.${f}`, "range");
    }
  }
  if (a.MinValue !== undefined && a.MaxValue !== undefined && a.MinValue > a.MaxValue) fail(`MinValue ${a.MinValue} is greater than MaxValue ${a.MaxValue}`, ".MinValue", "range");
  const d = a.DefaultValue;
  if (d !== undefined) {
    const wrong = (what: string) => fail(`DefaultValue ${JSON.stringify(d)} is not ${what}`, ".DefaultValue", "type");
    switch (a.AttributeType) {
      case "String":
      case "Memo":
        if (typeof d !== "string") wrong("text");
        else if (a.MaxLength !== undefined && d.length > a.MaxLength) wrong(`at most ${a.MaxLength} characters long`);
        break;
      case "Integer":
      case "BigInt":
      case "Picklist":
        if (typeof d !== "number" || !Number.isInteger(d)) wrong("an integer");
        else if ((a.MinValue !== undefined && d < a.MinValue) || (a.MaxValue !== undefined && d > a.MaxValue) || (integer && (d < INT32.min || d > INT32.max))) wrong("within the attribute's range");
        break;
      case "Decimal":
      case "Money":
      case "Double":
        if (typeof d !== "number") wrong("a number");
        break;
      case "Boolean":
        if (typeof d !== "boolean") wrong("true or false");
        break;
      case "DateTime":
        if (d !== "now()" && (typeof d !== "string" || Number.isNaN(Date.parse(d)))) wrong('a date or "now()"');
        break;
      default:
        fail(`a ${a.AttributeType} attribute takes no DefaultValue`, ".DefaultValue", "type");
    }
  }
  if (a.AutoNumberFormat !== undefined) {
    if (a.AttributeType !== "String") fail("AutoNumberFormat is for String attributes", ".AutoNumberFormat", "type");
    const longest = a.AutoNumberFormat.replace(/\{SEQNUM:(\d{1,2})\}/g, (_m, n: string) => "9".repeat(Number(n)));
    if (a.MaxLength !== undefined && longest.length > a.MaxLength) fail(`AutoNumberFormat '${a.AutoNumberFormat}' makes values longer than MaxLength ${a.MaxLength}`, ".AutoNumberFormat", "range");
  }
  const twice = repeatedOptionValue(a.OptionSet?.Options ?? []);
  if (twice) fail(`option value ${twice.value} is given twice`, `.OptionSet.Options[${twice.index}].Value`, "unique");
}

/**
 * Option sets are EnumTypes of the same CSDL schema as entity types: one name, one element. Checked on
 * every change of the model (not when a stored model is loaded, so an older store still opens).
 */
export function checkSchemaNames(model: Model, previous?: Model): void {
  const known = new Set(previous ? schemaNameClashes(previous).map((e) => e.message) : []);
  // Only a clash the change brings is refused: one an older store already holds does not block other changes.
  const added = schemaNameClashes(model).find((e) => !known.has(e.message));
  if (added) throw added;
}

function schemaNameClashes(model: Model): DefinitionError[] {
  const clashes: DefinitionError[] = [];
  const optionSetOwner = new Map<string, string>([...model.optionSets.keys()].map((n) => [n, `the global option set '${n}'`]));
  for (const entity of model.entities.values()) {
    for (const a of entity.attributes.values()) {
      const local = a.def.OptionSet?.Name;
      if (local === undefined) continue;
      const other = optionSetOwner.get(local);
      if (other) clashes.push(new DefinitionError(`Invalid entity definition '${entity.logicalName}.${a.logicalName}': option set name '${local}' is already used by ${other}`, "$.Attributes.OptionSet.Name", "unique"));
      else optionSetOwner.set(local, `${entity.logicalName}.${a.logicalName}`);
    }
  }
  for (const [name, owner] of optionSetOwner) {
    if (model.entities.has(name)) clashes.push(new DefinitionError(`The option set '${name}' (${owner}) has the name of an entity; each name in $metadata must be unique`, "$.Name", "unique"));
  }
  return clashes;
}

/**
 * The whole model: every entity, relationship and global option set, resolved and cross-checked.
 * Immutable: a change builds a new Model, so a request keeps the one it started with.
 */
export class Model {
  readonly entities = new Map<string, EntityModel>();
  readonly entitySets = new Map<string, EntityModel>();
  readonly relationships = new Map<string, RelationshipDefinition>();
  readonly optionSets = new Map<string, OptionSetDefinition>();

  constructor(
    entityDefs: readonly EntityDefinition[],
    relationshipDefs: readonly RelationshipDefinition[],
    optionSetDefs: readonly OptionSetDefinition[],
    /** Names that already mean something at the service root (EntityDefinitions, $batch...). */
    reservedSetNames: ReadonlySet<string> = new Set(),
  ) {
    for (const o of optionSetDefs) this.optionSets.set(o.Name, o);
    for (const def of entityDefs) {
      if (this.entities.has(def.LogicalName)) throw new DefinitionError(`Entity '${def.LogicalName}' is defined twice`, "$.LogicalName", "unique");
      const entity = new EntityModel(def, this.optionSets);
      if (this.entitySets.has(entity.entitySetName) || reservedSetNames.has(entity.entitySetName)) {
        throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': EntitySetName '${entity.entitySetName}' is already in use`, "$.EntitySetName", "unique");
      }
      this.entities.set(def.LogicalName, entity);
      this.entitySets.set(entity.entitySetName, entity);
    }
    for (const entity of this.entities.values()) {
      for (const a of entity.attributes.values()) {
        if (a.type === "Lookup" && !this.entities.has(a.def.Targets![0]!)) {
          throw new DefinitionError(`Invalid entity definition '${entity.logicalName}.${a.logicalName}': lookup target '${a.def.Targets![0]}' is not defined`, "$.Attributes.Targets", "reference");
        }
      }
    }
    for (const r of relationshipDefs) {
      if (this.relationships.has(r.SchemaName)) throw new DefinitionError(`Relationship '${r.SchemaName}' is defined twice`, "$.SchemaName", "unique");
      this.relationships.set(r.SchemaName, r);
      if (r.RelationshipType === "OneToManyRelationship") this.bindOneToMany(r);
      else this.bindManyToMany(r);
    }
  }

  entity(logicalName: string): EntityModel | undefined {
    return this.entities.get(logicalName);
  }

  private requireEntity(name: string, rel: string, path: string): EntityModel {
    const e = this.entities.get(name);
    if (!e) throw new DefinitionError(`Invalid relationship definition '${rel}': entity '${name}' is not defined`, path, "reference");
    return e;
  }

  private addNavigation(nav: NavigationModel, path: string): void {
    const { source, name } = nav;
    if (source.navigations.has(name) || source.properties.has(name)) {
      throw new DefinitionError(`Invalid relationship definition '${nav.relationship.SchemaName}': '${source.logicalName}' already has a property named '${name}'`, path, "unique");
    }
    source.navigations.set(name, nav);
  }

  private bindOneToMany(r: OneToManyRelationshipDefinition): void {
    const referenced = this.requireEntity(r.ReferencedEntity, r.SchemaName, "$.ReferencedEntity");
    const referencing = this.requireEntity(r.ReferencingEntity, r.SchemaName, "$.ReferencingEntity");
    if (referenced.primaryId.logicalName !== r.ReferencedAttribute) {
      throw new DefinitionError(`Invalid relationship definition '${r.SchemaName}': ReferencedAttribute '${r.ReferencedAttribute}' must be the primary key of '${referenced.logicalName}'`, "$.ReferencedAttribute", "reference");
    }
    const lookup = referencing.attributes.get(r.ReferencingAttribute);
    if (!lookup || lookup.type !== "Lookup" || lookup.def.Targets![0] !== referenced.logicalName) {
      throw new DefinitionError(`Invalid relationship definition '${r.SchemaName}': ReferencingAttribute '${r.ReferencingAttribute}' must be a lookup of '${referencing.logicalName}' targeting '${referenced.logicalName}'`, "$.ReferencingAttribute", "reference");
    }
    const single: NavigationModel = { name: r.ReferencingEntityNavigationPropertyName, source: referencing, target: referenced, relationship: r, kind: "single", lookup, partnerName: r.ReferencedEntityNavigationPropertyName };
    const collection: NavigationModel = { name: r.ReferencedEntityNavigationPropertyName, source: referenced, target: referencing, relationship: r, kind: "collection", lookup, partnerName: r.ReferencingEntityNavigationPropertyName };
    this.addNavigation(single, "$.ReferencingEntityNavigationPropertyName");
    this.addNavigation(collection, "$.ReferencedEntityNavigationPropertyName");
    lookup.navigation = single;
  }

  private bindManyToMany(r: ManyToManyRelationshipDefinition): void {
    const e1 = this.requireEntity(r.Entity1LogicalName, r.SchemaName, "$.Entity1LogicalName");
    const e2 = this.requireEntity(r.Entity2LogicalName, r.SchemaName, "$.Entity2LogicalName");
    const table = r.IntersectEntityName;
    this.addNavigation({ name: r.Entity1NavigationPropertyName, source: e1, target: e2, relationship: r, kind: "collection", intersect: { table, sourceColumn: r.Entity1IntersectAttribute, targetColumn: r.Entity2IntersectAttribute }, partnerName: r.Entity2NavigationPropertyName }, "$.Entity1NavigationPropertyName");
    this.addNavigation({ name: r.Entity2NavigationPropertyName, source: e2, target: e1, relationship: r, kind: "collection", intersect: { table, sourceColumn: r.Entity2IntersectAttribute, targetColumn: r.Entity1IntersectAttribute }, partnerName: r.Entity1NavigationPropertyName }, "$.Entity2NavigationPropertyName");
  }
}
