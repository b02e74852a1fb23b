import { DECIMAL_TOTAL_DIGITS, NAMESPACE, NAMESPACE_ALIAS, labelText, type AttributeModel, type EntityModel, type Model } from "../metadata/model.js";
import type { OptionSetDefinition } from "../metadata/types.js";
import { METADATA_COMPLEX_TYPES, METADATA_DERIVED_TYPES, ATTRIBUTE_METADATA, ENTITY_METADATA, KEY_METADATA, OPTIONSET_METADATA, RELATIONSHIP_METADATA } from "./metadata-sets.js";
import type { OperationRegistry, OperationType } from "./operations.js";

/**
 * CSDL of the whole service, derived from the model alone: the entity types with keys, facets and
 * navigation properties, option sets as enumeration types, the metadata sets, the operations, the container.
 */
interface CsdlProperty {
  name: string;
  type: string;
  nullable: boolean;
  maxLength?: number;
  precision?: number;
  scale?: number;
  description?: string;
}

interface CsdlNavigation {
  name: string;
  type: string;
  collection: boolean;
  partner?: string;
  constraint?: { property: string; referenced: string };
  containsTarget?: boolean;
}

interface CsdlEntityType {
  name: string;
  /** A derived type (the metadata sets' StringAttributeMetadata…): its key and properties are its base's. */
  baseType?: string;
  key: string;
  properties: CsdlProperty[];
  navigations: CsdlNavigation[];
  alternateKeys: string[][];
  description?: string;
}

const q = (t: string) => `${NAMESPACE_ALIAS}.${t}`;

function propertyOf(a: AttributeModel): CsdlProperty {
  const p: CsdlProperty = { name: a.propertyName, type: a.edmType, nullable: a.nullable, description: labelText(a.def.DisplayName) };
  if (a.type === "String" || a.type === "Memo") p.maxLength = a.def.MaxLength;
  if (a.type === "Decimal" || a.type === "Money") {
    p.precision = DECIMAL_TOTAL_DIGITS;
    p.scale = a.def.Precision;
  }
  if (a.edmType === "Edm.DateTimeOffset") p.precision = 3;
  return p;
}

function entityTypeOf(e: EntityModel): CsdlEntityType {
  const properties = [...e.attributes.values()].filter((a) => a.isReadable).map(propertyOf);
  for (const [name, type] of e.complexProperties) properties.push({ name, type, nullable: true });
  const navigations: CsdlNavigation[] = [...e.navigations.values()].map((n) => ({
    name: n.name,
    type: q(n.target.logicalName),
    collection: n.kind === "collection",
    partner: n.partnerName,
    constraint: n.kind === "single" ? { property: n.lookup!.propertyName, referenced: n.target.primaryId.propertyName } : undefined,
  }));
  return {
    name: e.logicalName,
    key: e.primaryId.propertyName,
    properties,
    navigations,
    alternateKeys: e.keys.map((k) => k.attributes.map((a) => a.propertyName)),
    description: labelText(e.def.DisplayName),
  };
}

function metadataTypes(): CsdlEntityType[] {
  const types = [ENTITY_METADATA, ATTRIBUTE_METADATA, RELATIONSHIP_METADATA, OPTIONSET_METADATA, KEY_METADATA].map(entityTypeOf);
  types[0]!.navigations.push(
    { name: "Attributes", type: q("AttributeMetadata"), collection: true, containsTarget: true },
    { name: "Keys", type: q("EntityKeyMetadata"), collection: true, containsTarget: true },
    { name: "ManyToOneRelationships", type: q("OneToManyRelationshipMetadata"), collection: true },
    { name: "OneToManyRelationships", type: q("OneToManyRelationshipMetadata"), collection: true },
    { name: "ManyToManyRelationships", type: q("ManyToManyRelationshipMetadata"), collection: true },
  );
  // The types rows of the metadata sets name in @odata.type, and type casts address.
  for (const [name, base] of METADATA_DERIVED_TYPES) types.push({ name, baseType: q(base), key: "", properties: [], navigations: [], alternateKeys: [] });
  return types;
}

/** Option sets as enumeration types: member names from labels, made valid and unique identifiers. */
function enumTypes(model: Model): { name: string; members: { name: string; value: number }[] }[] {
  const sets = new Map<string, OptionSetDefinition>();
  for (const o of model.optionSets.values()) sets.set(o.Name, o);
  for (const e of model.entities.values()) {
    for (const a of e.attributes.values()) {
      if (a.def.OptionSet) sets.set(a.def.OptionSet.Name, a.def.OptionSet);
    }
  }
  return [...sets.values()].map((o) => {
    const used = new Set<string>();
    const members = o.Options.map((opt) => {
      let name = (labelText(opt.Label) ?? `Option${opt.Value}`).replace(/[^A-Za-z0-9_]/g, "_").replace(/^([^A-Za-z_])/, "_$1");
      while (used.has(name)) name += `_${opt.Value}`;
      used.add(name);
      return { name, value: opt.Value };
    });
    return { name: o.Name, members };
  });
}

function operationTypeName(t: OperationType): string {
  const base = t.kind === "primitive" ? t.type : t.kind === "entity" ? q(t.entity) : q(t.name);
  return "collection" in t && t.collection ? `Collection(${base})` : base;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

export function csdlXml(model: Model, operations: OperationRegistry): string {
  const out: string[] = [];
  const w = (s: string) => out.push(s);
  w(`<?xml version="1.0" encoding="utf-8"?>`);
  w(`<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">`);
  w(`<edmx:Reference Uri="https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Core.V1.xml"><edmx:Include Namespace="Org.OData.Core.V1" Alias="Core"/></edmx:Reference>`);
  w(`<edmx:DataServices>`);
  w(`<Schema Namespace="${NAMESPACE}" Alias="${NAMESPACE_ALIAS}" xmlns="http://docs.oasis-open.org/odata/ns/edm">`);
  const types = [...[...model.entities.values()].map(entityTypeOf), ...metadataTypes()];
  for (const t of types) {
    w(`<EntityType Name="${esc(t.name)}"${t.baseType ? ` BaseType="${esc(t.baseType)}"` : ""}>`);
    if (!t.baseType) w(`<Key><PropertyRef Name="${esc(t.key)}"/></Key>`);
    for (const p of t.properties) {
      let attrs = `Name="${esc(p.name)}" Type="${esc(p.type)}"`;
      if (!p.nullable) attrs += ` Nullable="false"`;
      if (p.maxLength !== undefined) attrs += ` MaxLength="${p.maxLength}"`;
      if (p.precision !== undefined) attrs += ` Precision="${p.precision}"`;
      if (p.scale !== undefined) attrs += ` Scale="${p.scale}"`;
      if (p.description) w(`<Property ${attrs}><Annotation Term="Core.Description" String="${esc(p.description)}"/></Property>`);
      else w(`<Property ${attrs}/>`);
    }
    for (const n of t.navigations) {
      let attrs = `Name="${esc(n.name)}" Type="${esc(n.collection ? `Collection(${n.type})` : n.type)}"`;
      if (n.partner) attrs += ` Partner="${esc(n.partner)}"`;
      if (n.containsTarget) attrs += ` ContainsTarget="true"`;
      if (n.constraint) w(`<NavigationProperty ${attrs}><ReferentialConstraint Property="${esc(n.constraint.property)}" ReferencedProperty="${esc(n.constraint.referenced)}"/></NavigationProperty>`);
      else w(`<NavigationProperty ${attrs}/>`);
    }
    if (t.alternateKeys.length) {
      w(`<Annotation Term="Core.AlternateKeys"><Collection>`);
      for (const k of t.alternateKeys) {
        w(`<Record Type="Core.AlternateKey"><PropertyValue Property="Key"><Collection>`);
        for (const p of k) w(`<Record Type="Core.PropertyRef"><PropertyValue Property="Name" PropertyPath="${esc(p)}"/><PropertyValue Property="Alias" String="${esc(p)}"/></Record>`);
        w(`</Collection></PropertyValue></Record>`);
      }
      w(`</Collection></Annotation>`);
    }
    if (t.description) w(`<Annotation Term="Core.Description" String="${esc(t.description)}"/>`);
    w(`</EntityType>`);
  }
  for (const c of [...METADATA_COMPLEX_TYPES, ...operations.complexTypes.values()]) {
    w(`<ComplexType Name="${esc(c.name)}">`);
    for (const p of c.properties) w(`<Property Name="${esc(p.name)}" Type="${esc(p.type)}"${p.nullable === false ? ` Nullable="false"` : ""}/>`);
    w(`</ComplexType>`);
  }
  for (const e of enumTypes(model)) {
    w(`<EnumType Name="${esc(e.name)}" UnderlyingType="Edm.Int32">`);
    for (const m of e.members) w(`<Member Name="${esc(m.name)}" Value="${m.value}"/>`);
    w(`</EnumType>`);
  }
  const visible = operations.visible(model);
  for (const op of visible) {
    const tag = op.kind === "action" ? "Action" : "Function";
    w(`<${tag} Name="${esc(op.name)}"${op.boundTo ? ` IsBound="true"` : ""}>`);
    if (op.boundTo) w(`<Parameter Name="entity" Type="${q(op.boundTo)}" Nullable="false"/>`);
    for (const p of op.parameters) w(`<Parameter Name="${esc(p.name)}" Type="${esc(operationTypeName(p.type))}"${p.optional ? "" : ` Nullable="false"`}/>`);
    if (op.returns) w(`<ReturnType Type="${esc(operationTypeName(op.returns))}"${op.returns.nullable ? "" : ` Nullable="false"`}/>`);
    w(`</${tag}>`);
  }
  w(`<EntityContainer Name="System">`);
  for (const e of model.entities.values()) {
    const bindings = [...e.navigations.values()].map((n) => `<NavigationPropertyBinding Path="${esc(n.name)}" Target="${esc(n.target.entitySetName)}"/>`);
    w(`<EntitySet Name="${esc(e.entitySetName)}" EntityType="${q(e.logicalName)}">${bindings.join("")}</EntitySet>`);
  }
  w(`<EntitySet Name="EntityDefinitions" EntityType="${q("EntityMetadata")}"/>`);
  w(`<EntitySet Name="RelationshipDefinitions" EntityType="${q("RelationshipMetadataBase")}"/>`);
  w(`<EntitySet Name="GlobalOptionSetDefinitions" EntityType="${q("OptionSetMetadataBase")}"/>`);
  for (const op of visible.filter((o) => !o.boundTo)) {
    if (op.kind === "action") w(`<ActionImport Name="${esc(op.name)}" Action="${q(op.name)}"/>`);
    else w(`<FunctionImport Name="${esc(op.name)}" Function="${q(op.name)}"/>`);
  }
  w(`</EntityContainer>`);
  w(`</Schema>`);
  w(`</edmx:DataServices>`);
  w(`</edmx:Edmx>`);
  return out.join("\n");
}

/** CSDL JSON (OData 4.01 CSDL JSON format), the same model as the XML. */
export function csdlJson(model: Model, operations: OperationRegistry): Record<string, unknown> {
  const schema: Record<string, unknown> = { $Alias: NAMESPACE_ALIAS };
  const types = [...[...model.entities.values()].map(entityTypeOf), ...metadataTypes()];
  for (const t of types) {
    const body: Record<string, unknown> = t.baseType ? { $Kind: "EntityType", $BaseType: t.baseType } : { $Kind: "EntityType", $Key: [t.key] };
    for (const p of t.properties) {
      const prop: Record<string, unknown> = {};
      const collection = /^Collection\((.*)\)$/.exec(p.type);
      if (collection) prop.$Collection = true;
      const type = collection ? collection[1]! : p.type;
      if (type !== "Edm.String") prop.$Type = type;
      if (p.nullable && !collection) prop.$Nullable = true;
      if (p.maxLength !== undefined) prop.$MaxLength = p.maxLength;
      if (p.precision !== undefined) prop.$Precision = p.precision;
      if (p.scale !== undefined) prop.$Scale = p.scale;
      if (p.description) prop["@Core.Description"] = p.description;
      body[p.name] = prop;
    }
    for (const n of t.navigations) {
      const nav: Record<string, unknown> = { $Kind: "NavigationProperty", $Type: n.type };
      if (n.collection) nav.$Collection = true;
      else nav.$Nullable = true;
      if (n.partner) nav.$Partner = n.partner;
      if (n.containsTarget) nav.$ContainsTarget = true;
      if (n.constraint) nav.$ReferentialConstraint = { [n.constraint.property]: n.constraint.referenced };
      body[n.name] = nav;
    }
    if (t.alternateKeys.length) body["@Core.AlternateKeys"] = t.alternateKeys.map((k) => ({ Key: k.map((p) => ({ Name: { $PropertyPath: p }, Alias: p })) }));
    if (t.description) body["@Core.Description"] = t.description;
    schema[t.name] = body;
  }
  for (const c of [...METADATA_COMPLEX_TYPES, ...operations.complexTypes.values()]) {
    const body: Record<string, unknown> = { $Kind: "ComplexType" };
    for (const p of c.properties) {
      const collection = /^Collection\((.*)\)$/.exec(p.type);
      const prop: Record<string, unknown> = {};
      if (collection) prop.$Collection = true;
      const type = collection ? collection[1]! : p.type;
      if (type !== "Edm.String") prop.$Type = type;
      if (p.nullable !== false && !collection) prop.$Nullable = true;
      body[p.name] = prop;
    }
    schema[c.name] = body;
  }
  for (const e of enumTypes(model)) {
    const body: Record<string, unknown> = { $Kind: "EnumType", $UnderlyingType: "Edm.Int32" };
    for (const m of e.members) body[m.name] = m.value;
    schema[e.name] = body;
  }
  const visible = operations.visible(model);
  for (const op of visible) {
    const parameters: Record<string, unknown>[] = [];
    if (op.boundTo) parameters.push({ $Name: "entity", $Type: q(op.boundTo) });
    for (const p of op.parameters) {
      const param: Record<string, unknown> = { $Name: p.name, $Type: operationTypeName(p.type).replace(/^Collection\((.*)\)$/, "$1") };
      if ("collection" in p.type && p.type.collection) param.$Collection = true;
      if (p.optional) param.$Nullable = true;
      parameters.push(param);
    }
    const overload: Record<string, unknown> = { $Kind: op.kind === "action" ? "Action" : "Function" };
    if (op.boundTo) overload.$IsBound = true;
    if (parameters.length) overload.$Parameter = parameters;
    if (op.returns) {
      const rt: Record<string, unknown> = { $Type: operationTypeName(op.returns).replace(/^Collection\((.*)\)$/, "$1") };
      if ("collection" in op.returns && op.returns.collection) rt.$Collection = true;
      if (op.returns.nullable) rt.$Nullable = true;
      overload.$ReturnType = rt;
    }
    const existing = schema[op.name] as unknown[] | undefined;
    schema[op.name] = existing ? [...existing, overload] : [overload];
  }
  const container: Record<string, unknown> = { $Kind: "EntityContainer" };
  for (const e of model.entities.values()) {
    const set: Record<string, unknown> = { $Collection: true, $Type: q(e.logicalName) };
    if (e.navigations.size) set.$NavigationPropertyBinding = Object.fromEntries([...e.navigations.values()].map((n) => [n.name, n.target.entitySetName]));
    container[e.entitySetName] = set;
  }
  container.EntityDefinitions = { $Collection: true, $Type: q("EntityMetadata") };
  container.RelationshipDefinitions = { $Collection: true, $Type: q("RelationshipMetadataBase") };
  container.GlobalOptionSetDefinitions = { $Collection: true, $Type: q("OptionSetMetadataBase") };
  for (const op of visible.filter((o) => !o.boundTo)) {
    container[op.name] = op.kind === "action" ? { $Action: q(op.name) } : { $Function: q(op.name) };
  }
  schema.System = container;
  return {
    $Version: "4.0",
    $EntityContainer: `${NAMESPACE}.System`,
    $Reference: { "https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Core.V1.json": { $Include: [{ $Namespace: "Org.OData.Core.V1", $Alias: "Core" }] } },
    [NAMESPACE]: schema,
  };
}
