/**
 * The service's $metadata document: a model that uses every attribute type, a one-to-many and a
 * many-to-many relationship, global and local option sets and an alternate key. The CSDL XML must
 * validate against the OASIS XSDs, the CSDL JSON against the OASIS JSON schema, and both must say
 * what the definitions say (keys, EDM types, facets, navigation properties, bindings, enums, keys).
 */
import { XMLParser } from "fast-xml-parser";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VirtualEntityService } from "../../src/index.js";
import { validateCsdlJson, validateCsdlXml } from "../csdl/validate-csdl.js";
import { json, openTestService, type StoreKind } from "../helpers/stores.js";

type Service = VirtualEntityService & { dispose(): Promise<void> };

const NS = "Microsoft.Dynamics.CRM";
const ALIAS = "mscrm";
const TRICKY_LABEL = `Price & <Cost> "net"`;

/** The model under test; every attribute type and facet the definitions can carry. */
async function defineModel(service: Service): Promise<void> {
  await service.defineOptionSet({
    Name: "new_color",
    Options: [
      { Value: 1, Label: "Red" },
      { Value: 2, Label: "Green" },
      { Value: 3, Label: "Dark blue" },
      { Value: 4, Label: "2nd choice" },
    ],
  });
  await service.defineEntity({
    LogicalName: "new_parent",
    EntitySetName: "new_parents",
    PrimaryNameAttribute: "new_name",
    DisplayName: "Parent",
    Attributes: [
      { LogicalName: "new_name", AttributeType: "String", MaxLength: 100, RequiredLevel: "ApplicationRequired" },
      { LogicalName: "new_code", AttributeType: "String", MaxLength: 20 },
      { LogicalName: "new_email", AttributeType: "String", MaxLength: 200, Format: "Email" },
      { LogicalName: "new_notes", AttributeType: "Memo", MaxLength: 10000 },
      { LogicalName: "new_qty", AttributeType: "Integer", MinValue: 0, MaxValue: 1000 },
      { LogicalName: "new_big", AttributeType: "BigInt" },
      { LogicalName: "new_price", AttributeType: "Decimal", Precision: 4, DisplayName: TRICKY_LABEL },
      { LogicalName: "new_whole", AttributeType: "Decimal", Precision: 0 },
      { LogicalName: "new_ratio", AttributeType: "Double", Precision: 3 },
      { LogicalName: "new_amount", AttributeType: "Money" },
      { LogicalName: "new_active", AttributeType: "Boolean" },
      { LogicalName: "new_seen", AttributeType: "DateTime", DateTimeBehavior: "UserLocal" },
      { LogicalName: "new_tzi", AttributeType: "DateTime", DateTimeBehavior: "TimeZoneIndependent" },
      { LogicalName: "new_birthday", AttributeType: "DateTime", DateTimeBehavior: "DateOnly" },
      { LogicalName: "new_ref", AttributeType: "Uniqueidentifier" },
      {
        LogicalName: "new_size",
        AttributeType: "Picklist",
        OptionSet: { Name: "new_parent_new_size", Options: [{ Value: 100000000, Label: "Small" }, { Value: 100000001, Label: "Large" }] },
      },
      { LogicalName: "new_color", AttributeType: "Picklist", GlobalOptionSetName: "new_color" },
    ],
    Keys: [{ LogicalName: "new_code_key", KeyAttributes: ["new_code"] }],
  });
  await service.defineEntity({
    LogicalName: "new_child",
    // Deliberately not the entity's name: bindings must target entity *sets*.
    EntitySetName: "new_kids",
    PrimaryNameAttribute: "new_name",
    Attributes: [
      { LogicalName: "new_name", AttributeType: "String", MaxLength: 50 },
      { LogicalName: "new_parentref", AttributeType: "Lookup", Targets: ["new_parent"] },
    ],
  });
  await service.defineEntity({
    LogicalName: "new_tag",
    EntitySetName: "new_tags",
    PrimaryNameAttribute: "new_name",
    Attributes: [{ LogicalName: "new_name", AttributeType: "String", MaxLength: 40 }],
  });
  await service.defineRelationship({
    SchemaName: "new_parent_child",
    RelationshipType: "OneToManyRelationship",
    ReferencedEntity: "new_parent",
    ReferencedAttribute: "new_parentid",
    ReferencingEntity: "new_child",
    ReferencingAttribute: "new_parentref",
    ReferencedEntityNavigationPropertyName: "new_children",
    ReferencingEntityNavigationPropertyName: "new_parentref",
  });
  await service.defineRelationship({
    SchemaName: "new_parent_tag",
    RelationshipType: "ManyToManyRelationship",
    Entity1LogicalName: "new_parent",
    Entity2LogicalName: "new_tag",
    IntersectEntityName: "new_parent_tag",
    Entity1IntersectAttribute: "new_parentid",
    Entity2IntersectAttribute: "new_tagid",
    Entity1NavigationPropertyName: "new_tags",
    Entity2NavigationPropertyName: "new_parents",
  });
}

// ------------------------------------------------------------------ XML helpers

const ARRAYS = new Set([
  "edmx:Reference", "edmx:Include", "Schema", "EntityType", "ComplexType", "EnumType", "Member", "Property", "NavigationProperty",
  "ReferentialConstraint", "PropertyRef", "Annotation", "Record", "PropertyValue", "Collection", "EntitySet", "NavigationPropertyBinding",
  "Action", "Function", "ActionImport", "FunctionImport", "Parameter", "Singleton",
]);

type XmlNode = Record<string, any>;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: "@_",
  parseAttributeValue: false,
  parseTagValue: false,
  isArray: (name) => ARRAYS.has(name),
});

interface ParsedCsdl {
  root: XmlNode;
  schema: XmlNode;
  /** alias or namespace of every referenced vocabulary -> its namespace */
  vocabularies: Map<string, string>;
  entityType(name: string): XmlNode;
  enumType(name: string): XmlNode;
  entitySet(name: string): XmlNode;
}

function parseCsdl(xml: string): ParsedCsdl {
  const doc = parser.parse(xml) as XmlNode;
  const root = doc["edmx:Edmx"] as XmlNode;
  expect(root, "document element edmx:Edmx").toBeDefined();
  const schemas = (root["edmx:DataServices"]["Schema"] as XmlNode[]).filter((s) => s["@_Namespace"] === NS);
  expect(schemas).toHaveLength(1);
  const schema = schemas[0]!;
  const vocabularies = new Map<string, string>();
  for (const ref of (root["edmx:Reference"] ?? []) as XmlNode[]) {
    for (const inc of (ref["edmx:Include"] ?? []) as XmlNode[]) {
      vocabularies.set(inc["@_Namespace"], inc["@_Namespace"]);
      if (inc["@_Alias"]) vocabularies.set(inc["@_Alias"], inc["@_Namespace"]);
    }
  }
  const find = (list: XmlNode[] | undefined, name: string, what: string): XmlNode => {
    const found = (list ?? []).filter((n) => n["@_Name"] === name);
    expect(found, `${what} ${name} (exactly once)`).toHaveLength(1);
    return found[0]!;
  };
  return {
    root,
    schema,
    vocabularies,
    entityType: (name) => find(schema.EntityType, name, "EntityType"),
    enumType: (name) => find(schema.EnumType, name, "EnumType"),
    entitySet: (name) => find(schema.EntityContainer.EntitySet, name, "EntitySet"),
  };
}

/** A qualified name with the schema alias replaced by the namespace, so `mscrm.x` and `Microsoft.Dynamics.CRM.x` compare equal. */
function qualified(name: string): string {
  const m = /^Collection\((.*)\)$/.exec(name);
  if (m) return `Collection(${qualified(m[1]!)})`;
  return name.startsWith(`${ALIAS}.`) ? `${NS}.${name.slice(ALIAS.length + 1)}` : name;
}

/** A term with its vocabulary alias replaced by the vocabulary namespace. */
function term(csdl: ParsedCsdl, name: string): string {
  const dot = name.lastIndexOf(".");
  const prefix = name.slice(0, dot);
  return `${csdl.vocabularies.get(prefix) ?? prefix}.${name.slice(dot + 1)}`;
}

function propertyOf(type: XmlNode, name: string): XmlNode {
  const found = ((type.Property ?? []) as XmlNode[]).filter((p) => p["@_Name"] === name);
  expect(found, `Property ${type["@_Name"]}.${name} (exactly once)`).toHaveLength(1);
  return found[0]!;
}

function navigationOf(type: XmlNode, name: string): XmlNode {
  const found = ((type.NavigationProperty ?? []) as XmlNode[]).filter((p) => p["@_Name"] === name);
  expect(found, `NavigationProperty ${type["@_Name"]}.${name} (exactly once)`).toHaveLength(1);
  return found[0]!;
}

const ALTERNATE_KEY_TERMS = new Set(["Org.OData.Core.V1.AlternateKeys", "OData.Community.Keys.V1.AlternateKeys"]);

/** The alternate keys of an entity type, as lists of property paths. */
function alternateKeysOf(csdl: ParsedCsdl, type: XmlNode): string[][] {
  const annotations = ((type.Annotation ?? []) as XmlNode[]).filter((a) => ALTERNATE_KEY_TERMS.has(term(csdl, a["@_Term"])));
  expect(annotations, `one AlternateKeys annotation on ${type["@_Name"]}`).toHaveLength(1);
  const records = (annotations[0]!.Collection[0].Record ?? []) as XmlNode[];
  return records.map((record) => {
    const keyValue = (record.PropertyValue as XmlNode[]).find((pv) => pv["@_Property"] === "Key")!;
    expect(keyValue, "the Key property of an AlternateKey record").toBeDefined();
    return ((keyValue.Collection[0].Record ?? []) as XmlNode[]).map((ref) => {
      const nameValue = (ref.PropertyValue as XmlNode[]).find((pv) => pv["@_Property"] === "Name")!;
      expect(nameValue, "the Name of a PropertyRef record").toBeDefined();
      // Name is an Edm.PropertyPath: it must be a path expression, not a string.
      expect(nameValue["@_PropertyPath"], "PropertyRef Name as PropertyPath").toBeDefined();
      return nameValue["@_PropertyPath"] as string;
    });
  });
}

function description(csdl: ParsedCsdl, node: XmlNode): string | undefined {
  const a = ((node.Annotation ?? []) as XmlNode[]).find((x) => term(csdl, x["@_Term"]) === "Org.OData.Core.V1.Description");
  return a?.["@_String"];
}

// ------------------------------------------------------------------ expectations shared by XML and JSON

interface ExpectedProperty {
  type: string;
  maxLength?: number;
  scale?: number;
  nullable?: boolean;
}

const PARENT_PROPERTIES: Record<string, ExpectedProperty> = {
  new_parentid: { type: "Edm.Guid", nullable: false },
  new_name: { type: "Edm.String", maxLength: 100 },
  new_code: { type: "Edm.String", maxLength: 20 },
  new_email: { type: "Edm.String", maxLength: 200 },
  new_notes: { type: "Edm.String", maxLength: 10000 },
  new_qty: { type: "Edm.Int32" },
  new_big: { type: "Edm.Int64" },
  new_price: { type: "Edm.Decimal", scale: 4 },
  new_whole: { type: "Edm.Decimal", scale: 0 },
  new_ratio: { type: "Edm.Double" },
  new_amount: { type: "Edm.Decimal", scale: 2 },
  new_active: { type: "Edm.Boolean" },
  new_seen: { type: "Edm.DateTimeOffset" },
  new_tzi: { type: "Edm.DateTimeOffset" },
  new_birthday: { type: "Edm.Date" },
  new_ref: { type: "Edm.Guid" },
  new_size: { type: "Edm.Int32" },
  new_color: { type: "Edm.Int32" },
  createdon: { type: "Edm.DateTimeOffset" },
  modifiedon: { type: "Edm.DateTimeOffset" },
  versionnumber: { type: "Edm.Int64" },
};

const CHILD_PROPERTIES: Record<string, ExpectedProperty> = {
  new_childid: { type: "Edm.Guid", nullable: false },
  new_name: { type: "Edm.String", maxLength: 50 },
  _new_parentref_value: { type: "Edm.Guid" },
};

const TAG_PROPERTIES: Record<string, ExpectedProperty> = {
  new_tagid: { type: "Edm.Guid", nullable: false },
  new_name: { type: "Edm.String", maxLength: 40 },
};

/** Navigation properties: [entity type, name] -> type, partner, constraint. */
const NAVIGATIONS: { entity: string; name: string; type: string; partner: string; constraint?: [string, string] }[] = [
  { entity: "new_child", name: "new_parentref", type: `${NS}.new_parent`, partner: "new_children", constraint: ["_new_parentref_value", "new_parentid"] },
  { entity: "new_parent", name: "new_children", type: `Collection(${NS}.new_child)`, partner: "new_parentref" },
  { entity: "new_parent", name: "new_tags", type: `Collection(${NS}.new_tag)`, partner: "new_parents" },
  { entity: "new_tag", name: "new_parents", type: `Collection(${NS}.new_parent)`, partner: "new_tags" },
];

const BINDINGS: Record<string, Record<string, string>> = {
  new_parents: { new_children: "new_kids", new_tags: "new_tags" },
  new_kids: { new_parentref: "new_parents" },
  new_tags: { new_parents: "new_parents" },
};

const SIMPLE_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;

// ------------------------------------------------------------------ tests

async function getXml(service: Service, headers: Record<string, string> = { Accept: "application/xml" }): Promise<string> {
  const r = await service.request("GET", "$metadata", { headers });
  expect(r.status, r.body).toBe(200);
  expect(r.headers["Content-Type"]).toMatch(/^application\/xml/);
  expect(r.headers["OData-Version"]).toBe("4.0");
  return r.body!;
}

async function getJson(service: Service, how: "format" | "accept"): Promise<Record<string, any>> {
  const r = how === "format"
    ? await service.request("GET", "$metadata?$format=json")
    : await service.request("GET", "$metadata", { headers: { Accept: "application/json" } });
  expect(r.status, r.body).toBe(200);
  expect(r.headers["Content-Type"]).toMatch(/^application\/json/);
  expect(r.headers["OData-Version"]).toBe("4.0");
  return json(r);
}

async function expectValidXml(xml: string): Promise<void> {
  const result = await validateCsdlXml(xml);
  if (!result.valid) console.error("CSDL XML is not valid against the OASIS XSD:\n" + result.errors.join("\n"));
  expect(result.errors).toEqual([]);
  expect(result.valid).toBe(true);
}

function expectValidJson(doc: unknown): void {
  const result = validateCsdlJson(doc);
  if (!result.valid) console.error("CSDL JSON is not valid against the OASIS JSON schema:\n" + result.errors.join("\n"));
  expect(result.errors).toEqual([]);
  expect(result.valid).toBe(true);
}

describe("$metadata (sqlite)", () => {
  let service: Service;
  let xml: string;
  let csdl: ParsedCsdl;

  beforeAll(async () => {
    service = await openTestService("sqlite");
    await defineModel(service);
    xml = await getXml(service);
    csdl = parseCsdl(xml);
  });
  afterAll(async () => {
    await service?.dispose();
  });

  describe("CSDL XML", () => {
    it("validates against the OASIS CSDL XSD (edmx.xsd + edm.xsd)", async () => {
      await expectValidXml(xml);
    });

    it("is served as XML by default and for Accept: application/xml, text/xml, */*, $format=xml", async () => {
      expect(await getXml(service, {})).toBe(xml);
      expect(await getXml(service, { Accept: "text/xml" })).toBe(xml);
      expect(await getXml(service, { Accept: "*/*" })).toBe(xml);
      const r = await service.request("GET", "$metadata?$format=xml");
      expect(r.status).toBe(200);
      expect(r.body).toBe(xml);
    });

    it("weighs Accept by quality: q=0 refuses a type, the higher q wins, no acceptable type is a 406", async () => {
      const typeFor = async (accept: string) => {
        const r = await service.request("GET", "$metadata", { headers: { Accept: accept } });
        return r.status === 200 ? r.headers["Content-Type"]!.split(";")[0] : r.status;
      };
      expect(await typeFor("application/xml;q=0, application/json")).toBe("application/json");
      expect(await typeFor("application/xml;q=0.2, application/json;q=0.8")).toBe("application/json");
      expect(await typeFor("application/json;q=0.2, application/xml")).toBe("application/xml");
      expect(await typeFor("application/json;q=0, */*")).toBe("application/xml");
      expect(await typeFor("application/xml;q=0, application/json;q=0")).toBe(406);
      // A format named outright beats one a wildcard reaches (axios's default Accept), at the same q.
      expect(await typeFor("application/json, text/plain, */*")).toBe("application/json");
      expect(await typeFor("application/json, */*")).toBe("application/json");
      expect(await typeFor("application/json;q=abc")).toBe("application/json");
      expect(await typeFor("application/json;q=")).toBe("application/json");
      expect(await typeFor("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")).toBe("application/xml");
    });

    it("declares OData 4.0, the Microsoft.Dynamics.CRM namespace with its mscrm alias, and the vocabularies it uses", () => {
      expect(csdl.root["@_Version"]).toBe("4.0");
      expect(csdl.schema["@_Namespace"]).toBe(NS);
      expect(csdl.schema["@_Alias"]).toBe(ALIAS);
      expect(csdl.vocabularies.get("Core") ?? csdl.vocabularies.get("Org.OData.Core.V1")).toBe("Org.OData.Core.V1");
      // Every annotation term used anywhere must resolve to a referenced vocabulary.
      const terms = [...xml.matchAll(/<Annotation Term="([^"]+)"/g)].map((m) => m[1]!);
      expect(terms.length).toBeGreaterThan(0);
      for (const t of new Set(terms)) {
        const prefix = t.slice(0, t.lastIndexOf("."));
        expect(csdl.vocabularies.has(prefix), `annotation term ${t} uses an undeclared vocabulary`).toBe(true);
      }
    });

    it("gives each entity type its primary key as the Key PropertyRef", () => {
      for (const [entity, key] of [["new_parent", "new_parentid"], ["new_child", "new_childid"], ["new_tag", "new_tagid"]] as const) {
        const refs = csdl.entityType(entity).Key.PropertyRef as XmlNode[];
        expect(refs.map((r) => r["@_Name"])).toEqual([key]);
      }
    });

    it.each([
      ["new_parent", PARENT_PROPERTIES],
      ["new_child", CHILD_PROPERTIES],
      ["new_tag", TAG_PROPERTIES],
    ] as const)("declares every property of %s with its EDM type and facets", (entity, expected) => {
      const type = csdl.entityType(entity);
      for (const [name, want] of Object.entries(expected)) {
        const p = propertyOf(type, name);
        expect(p["@_Type"], `${entity}.${name} Type`).toBe(want.type);
        if (want.maxLength !== undefined) expect(p["@_MaxLength"], `${entity}.${name} MaxLength`).toBe(String(want.maxLength));
        else expect(p["@_MaxLength"], `${entity}.${name} has no MaxLength`).toBeUndefined();
        if (want.scale !== undefined) {
          expect(p["@_Scale"], `${entity}.${name} Scale = Precision`).toBe(String(want.scale));
          const precision = Number(p["@_Precision"]);
          expect(Number.isInteger(precision) && precision >= want.scale && precision > 0, `${entity}.${name} Precision ${p["@_Precision"]}`).toBe(true);
        } else {
          expect(p["@_Scale"], `${entity}.${name} has no Scale`).toBeUndefined();
        }
        if (want.nullable === false) expect(p["@_Nullable"], `${entity}.${name} Nullable`).toBe("false");
        else expect(p["@_Nullable"] ?? "true", `${entity}.${name} Nullable`).toBe("true");
      }
    });

    it("exposes a lookup only as _<name>_value (Edm.Guid), never as a structural property named after the lookup", () => {
      const child = csdl.entityType("new_child");
      const names = (child.Property as XmlNode[]).map((p) => p["@_Name"]);
      expect(names).toContain("_new_parentref_value");
      expect(names).not.toContain("new_parentref");
    });

    it("carries display names as Core.Description, escaped correctly", () => {
      const parent = csdl.entityType("new_parent");
      expect(description(csdl, propertyOf(parent, "new_price"))).toBe(TRICKY_LABEL);
      expect(description(csdl, parent)).toBe("Parent");
    });

    it("declares single and collection navigation properties with Partner and ReferentialConstraint", () => {
      for (const nav of NAVIGATIONS) {
        const n = navigationOf(csdl.entityType(nav.entity), nav.name);
        expect(qualified(n["@_Type"]), `${nav.entity}.${nav.name} Type`).toBe(nav.type);
        expect(n["@_Partner"], `${nav.entity}.${nav.name} Partner`).toBe(nav.partner);
        const constraints = (n.ReferentialConstraint ?? []) as XmlNode[];
        if (nav.constraint) {
          expect(constraints.map((c) => [c["@_Property"], c["@_ReferencedProperty"]])).toEqual([nav.constraint]);
        } else {
          expect(constraints, `${nav.entity}.${nav.name} has no ReferentialConstraint`).toEqual([]);
        }
      }
      // Nothing more than the relationships define.
      expect(((csdl.entityType("new_parent").NavigationProperty ?? []) as XmlNode[]).map((n) => n["@_Name"]).sort()).toEqual(["new_children", "new_tags"]);
      expect(((csdl.entityType("new_child").NavigationProperty ?? []) as XmlNode[]).map((n) => n["@_Name"])).toEqual(["new_parentref"]);
      expect(((csdl.entityType("new_tag").NavigationProperty ?? []) as XmlNode[]).map((n) => n["@_Name"])).toEqual(["new_parents"]);
    });

    it("binds every navigation property to its target entity set in the container", () => {
      expect(csdl.schema.EntityContainer["@_Name"]).toBeTruthy();
      for (const [set, bindings] of Object.entries(BINDINGS)) {
        const es = csdl.entitySet(set);
        const got = Object.fromEntries(((es.NavigationPropertyBinding ?? []) as XmlNode[]).map((b) => [b["@_Path"], b["@_Target"]]));
        expect(got, `bindings of ${set}`).toEqual(bindings);
      }
      expect(qualified(csdl.entitySet("new_parents")["@_EntityType"])).toBe(`${NS}.new_parent`);
      expect(qualified(csdl.entitySet("new_kids")["@_EntityType"])).toBe(`${NS}.new_child`);
      expect(qualified(csdl.entitySet("new_tags")["@_EntityType"])).toBe(`${NS}.new_tag`);
    });

    it("declares the global and the local option set as EnumTypes with their values", () => {
      const global = csdl.enumType("new_color");
      expect(global["@_UnderlyingType"] ?? "Edm.Int32").toBe("Edm.Int32");
      const members = (global.Member as XmlNode[]).map((m) => [m["@_Name"], Number(m["@_Value"])] as const);
      expect(members.map(([, v]) => v)).toEqual([1, 2, 3, 4]);
      expect(members[0]).toEqual(["Red", 1]);
      expect(members[1]).toEqual(["Green", 2]);
      for (const [name] of members) expect(name, "member names are SimpleIdentifiers").toMatch(SIMPLE_IDENTIFIER);
      expect(new Set(members.map(([n]) => n)).size).toBe(members.length);

      const local = csdl.enumType("new_parent_new_size");
      expect((local.Member as XmlNode[]).map((m) => [m["@_Name"], Number(m["@_Value"])])).toEqual([
        ["Small", 100000000],
        ["Large", 100000001],
      ]);
    });

    it("declares the alternate key as an AlternateKeys annotation naming the key attribute", () => {
      expect(alternateKeysOf(csdl, csdl.entityType("new_parent"))).toEqual([["new_code"]]);
      // Entities without keys carry no such annotation.
      for (const e of ["new_child", "new_tag"]) {
        const anns = ((csdl.entityType(e).Annotation ?? []) as XmlNode[]).filter((a) => ALTERNATE_KEY_TERMS.has(term(csdl, a["@_Term"])));
        expect(anns).toEqual([]);
      }
    });

    it("lists each user entity type and entity set exactly once", () => {
      const typeNames = (csdl.schema.EntityType as XmlNode[]).map((t) => t["@_Name"]);
      for (const n of ["new_parent", "new_child", "new_tag"]) expect(typeNames.filter((t) => t === n)).toHaveLength(1);
      expect(new Set(typeNames).size).toBe(typeNames.length);
      const setNames = (csdl.schema.EntityContainer.EntitySet as XmlNode[]).map((s) => s["@_Name"]);
      expect(new Set(setNames).size).toBe(setNames.length);
      for (const n of ["new_parents", "new_kids", "new_tags"]) expect(setNames).toContain(n);
      // Schema children must have distinct names across kinds too.
      const all = ["EntityType", "ComplexType", "EnumType"].flatMap((k) => ((csdl.schema[k] ?? []) as XmlNode[]).map((x) => x["@_Name"]));
      expect(new Set(all).size).toBe(all.length);
    });
  });

  describe("CSDL JSON", () => {
    let doc: Record<string, any>;
    let schema: Record<string, any>;
    const type = (name: string) => {
      const t = schema[name];
      expect(t, `schema member ${name}`).toBeDefined();
      return t as Record<string, any>;
    };

    beforeAll(async () => {
      doc = await getJson(service, "format");
      schema = doc[NS];
    });

    it("validates against the OASIS CSDL JSON schema, for $format=json and for Accept: application/json", async () => {
      expectValidJson(doc);
      const viaAccept = await getJson(service, "accept");
      expectValidJson(viaAccept);
      expect(viaAccept).toEqual(doc);
    });

    it("declares the version, the namespace with its alias and the container", () => {
      expect(doc.$Version).toMatch(/^4\.0/);
      expect(schema.$Alias).toBe(ALIAS);
      const containerName = (doc.$EntityContainer as string).slice(NS.length + 1);
      expect(doc.$EntityContainer).toBe(`${NS}.${containerName}`);
      expect(schema[containerName].$Kind).toBe("EntityContainer");
    });

    it("gives each entity type its key", () => {
      expect(type("new_parent").$Key).toEqual(["new_parentid"]);
      expect(type("new_child").$Key).toEqual(["new_childid"]);
      expect(type("new_tag").$Key).toEqual(["new_tagid"]);
      expect(type("new_parent").$Kind).toBe("EntityType");
    });

    it.each([
      ["new_parent", PARENT_PROPERTIES],
      ["new_child", CHILD_PROPERTIES],
      ["new_tag", TAG_PROPERTIES],
    ] as const)("declares every property of %s with its EDM type and facets", (entity, expected) => {
      const t = type(entity);
      for (const [name, want] of Object.entries(expected)) {
        const p = t[name];
        expect(p, `${entity}.${name}`).toBeDefined();
        expect(p.$Kind ?? "Property").toBe("Property");
        expect(qualified(p.$Type ?? "Edm.String"), `${entity}.${name} $Type`).toBe(want.type);
        expect(p.$MaxLength, `${entity}.${name} $MaxLength`).toBe(want.maxLength);
        expect(p.$Scale, `${entity}.${name} $Scale`).toBe(want.scale);
        expect(p.$Nullable ?? false, `${entity}.${name} $Nullable`).toBe(want.nullable !== false);
      }
    });

    it("declares navigation properties with $Partner and $ReferentialConstraint", () => {
      for (const nav of NAVIGATIONS) {
        const n = type(nav.entity)[nav.name];
        expect(n?.$Kind, `${nav.entity}.${nav.name}`).toBe("NavigationProperty");
        const collection = nav.type.startsWith("Collection(");
        expect(qualified(n.$Type)).toBe(collection ? nav.type.slice("Collection(".length, -1) : nav.type);
        expect(n.$Collection ?? false).toBe(collection);
        expect(n.$Partner).toBe(nav.partner);
        expect(n.$ReferentialConstraint).toEqual(nav.constraint ? { [nav.constraint[0]]: nav.constraint[1] } : undefined);
      }
    });

    it("binds navigation properties to entity sets", () => {
      const container = schema[(doc.$EntityContainer as string).slice(NS.length + 1)];
      for (const [set, bindings] of Object.entries(BINDINGS)) {
        expect(container[set]?.$Collection, set).toBe(true);
        expect(container[set].$NavigationPropertyBinding).toEqual(bindings);
      }
    });

    it("declares the option sets as EnumTypes", () => {
      const color = type("new_color");
      expect(color.$Kind).toBe("EnumType");
      expect(color.$UnderlyingType ?? "Edm.Int32").toBe("Edm.Int32");
      const members = Object.entries(color).filter(([k]) => !k.startsWith("$") && !k.includes("@"));
      expect(members.map(([, v]) => v)).toEqual([1, 2, 3, 4]);
      expect(color.Red).toBe(1);
      expect(color.Green).toBe(2);
      const size = type("new_parent_new_size");
      expect(size.$Kind).toBe("EnumType");
      expect(size.Small).toBe(100000000);
      expect(size.Large).toBe(100000001);
    });

    it("declares the alternate key annotation with Name as a $PropertyPath", () => {
      const parent = type("new_parent");
      const keyTerms = Object.keys(parent).filter((k) => k.startsWith("@") && /\.AlternateKeys$/.test(k));
      expect(keyTerms).toHaveLength(1);
      const keys = parent[keyTerms[0]!] as { Key: { Name: unknown; Alias?: string }[] }[];
      expect(keys).toHaveLength(1);
      expect(keys[0]!.Key).toHaveLength(1);
      // CSDL JSON §14.4.1: a path value is an object {"$PropertyPath": "..."}; a bare string is a string constant.
      // (The XML form says PropertyPath="new_code", so both forms must agree.)
      expect(keys[0]!.Key[0]!.Name).toEqual({ $PropertyPath: "new_code" });
    });

    it("says the same as the XML for every user entity type: properties, types and facets", () => {
      for (const entity of ["new_parent", "new_child", "new_tag"]) {
        const x = csdl.entityType(entity);
        const j = type(entity);
        const fromXml = Object.fromEntries((x.Property as XmlNode[]).map((p) => [p["@_Name"], [qualified(p["@_Type"]), p["@_MaxLength"] ? Number(p["@_MaxLength"]) : undefined, p["@_Scale"] ? Number(p["@_Scale"]) : undefined]]));
        const fromJson = Object.fromEntries(
          Object.entries(j)
            .filter(([k, v]) => !k.startsWith("$") && !k.startsWith("@") && (v as any).$Kind !== "NavigationProperty")
            .map(([k, v]: [string, any]) => [k, [qualified(v.$Type ?? "Edm.String"), v.$MaxLength, v.$Scale]]),
        );
        expect(fromJson, entity).toEqual(fromXml);
      }
    });
  });
});

describe("$metadata (postgres)", () => {
  const kind: StoreKind = "postgres";
  let service: Service;
  let sqliteService: Service;

  beforeAll(async () => {
    service = await openTestService(kind);
    sqliteService = await openTestService("sqlite");
    await defineModel(service);
    await defineModel(sqliteService);
  });
  afterAll(async () => {
    await service?.dispose();
    await sqliteService?.dispose();
  });

  it("serves the same CSDL XML as SQLite, and it validates", async () => {
    const xml = await getXml(service);
    await expectValidXml(xml);
    expect(xml).toBe(await getXml(sqliteService));
  });

  it("serves the same CSDL JSON as SQLite, and it validates", async () => {
    const doc = await getJson(service, "format");
    expectValidJson(doc);
    expect(doc).toEqual(await getJson(sqliteService, "accept"));
  });
});
