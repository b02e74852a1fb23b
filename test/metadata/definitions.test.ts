import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createService, DefinitionError, type EntityDefinition } from "../../src/index.js";
import { json, openTestService, STORE_KINDS } from "../helpers/stores.js";

const PROJECT: EntityDefinition = {
  LogicalName: "new_project",
  PrimaryNameAttribute: "new_name",
  Attributes: [
    { LogicalName: "new_name", AttributeType: "String", MaxLength: 100, RequiredLevel: "ApplicationRequired" },
    { LogicalName: "new_budget", AttributeType: "Money" },
  ],
};

describe("definition validation", () => {
  const cases: [string, unknown, RegExp][] = [
    ["String without MaxLength", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "String" }] }, /\$\.Attributes\[0\].*MaxLength.*rule 'required'/],
    ["upper-case logical name", { LogicalName: "New_A", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] }, /\$\.LogicalName must match pattern/],
    ["unknown attribute type", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Text" }] }, /\$\.Attributes\[0\]\.AttributeType must be equal to one of the allowed values/],
    ["MaxLength on an Integer", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer", MaxLength: 5 }] }, /Attributes\[0\].*rule 'not'/],
    ["Picklist without options", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Picklist" }] }, /Attributes\[0\]/],
    ["unknown property", { LogicalName: "new_a", Colour: "red", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] }, /unknown property 'Colour'/],
    ["virtual without provider", { LogicalName: "new_a", TableType: "Virtual", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] }, /ExternalName|DataProviderId/],
    ["an option set named like an entity (one $metadata name, two elements)", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Picklist", OptionSet: { Name: "new_a", Options: [{ Value: 1, Label: "A" }] } }] }, /option set 'new_a'.*name of an entity/],
    ["two local option sets of one name", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Picklist", OptionSet: { Name: "new_opts", Options: [{ Value: 1, Label: "A" }] } }, { LogicalName: "new_y", AttributeType: "Picklist", OptionSet: { Name: "new_opts", Options: [{ Value: 2, Label: "B" }] } }] }, /option set name 'new_opts' is already used by new_a\.new_x/],
    ["an entity set named like a function of the service", { LogicalName: "new_a", EntitySetName: "WhoAmI", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] }, /WhoAmI/],
    ["an Integer range beyond 32 bits", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer", MaxValue: 1e12 }] }, /new_a\.new_x.*MaxValue 1000000000000 is not a 32-bit integer/],
    ["an empty range", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer", MinValue: 10, MaxValue: 1 }] }, /MinValue 10 is greater than MaxValue 1/],
    ["a text default on an Integer", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer", DefaultValue: "abc" }] }, /DefaultValue "abc" is not an integer/],
    ["a default longer than MaxLength", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "String", MaxLength: 2, DefaultValue: "abcdef" }] }, /at most 2 characters/],
    ["an auto-number longer than MaxLength", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "String", MaxLength: 3, AutoNumberFormat: "ABCDEF{SEQNUM:9}" }] }, /longer than MaxLength 3/],
    ["an option value given twice", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Picklist", OptionSet: { Name: "new_a_x", Options: [{ Value: 1, Label: "A" }, { Value: 1, Label: "B" }] } }] }, /option value 1 is given twice/],
    ["a key naming one attribute twice", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }], Keys: [{ LogicalName: "new_k", KeyAttributes: ["new_x", "new_x"] }] }, /names attribute 'new_x' twice/],
    ["two keys of one name", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }, { LogicalName: "new_y", AttributeType: "Integer" }], Keys: [{ LogicalName: "new_k", KeyAttributes: ["new_x"] }, { LogicalName: "new_k", KeyAttributes: ["new_y"] }] }, /key 'new_k' is defined twice/],
    ["a key on a Boolean", { LogicalName: "new_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Boolean" }], Keys: [{ LogicalName: "new_k", KeyAttributes: ["new_x"] }] }, /not a key-able attribute/],
  ];
  it.each(cases)("refuses %s, naming the JSON path and the rule", async (_name, def, message) => {
    const service = await createService({ database: ":memory:", security: "none" });
    try {
      await expect(service.defineEntity(def as EntityDefinition)).rejects.toThrow(message);
      await expect(service.defineEntity(def as EntityDefinition)).rejects.toBeInstanceOf(DefinitionError);
      expect(service.model.entities.has((def as { LogicalName: string }).LogicalName)).toBe(false);
    } finally {
      await service.close();
    }
  });

  it("leaves nothing half-registered when one definition of a change is invalid", async () => {
    const service = await createService({ database: ":memory:", security: "none" });
    try {
      const lookup = { LogicalName: "new_task", Attributes: [{ LogicalName: "new_projectref", AttributeType: "Lookup", Targets: ["new_missing"] }] } as EntityDefinition;
      await expect(service.define({ entities: [PROJECT, lookup] })).rejects.toThrow(/lookup target 'new_missing' is not defined/);
      expect(service.model.entities.has("new_project")).toBe(false);
      expect((await service.request("GET", "new_projects")).status).toBe(404);
      const stored = await service.store.executor.query(`SELECT * FROM vep_definition WHERE kind = 'entity' AND name = 'new_project'`);
      expect(stored).toHaveLength(0);
    } finally {
      await service.close();
    }
  });
});

describe("the service's own entities and tables", () => {
  it("refuses to redefine or remove a built-in entity, or to put an entity on another's or the store's own table", async () => {
    const service = await createService({ database: ":memory:" });
    try {
      const columns = (await service.store.executor.query<{ name: string }>(`SELECT name FROM pragma_table_info('systemuser')`)).map((c) => c.name);
      for (const name of ["systemuser", "role", "privilege", "virtualentitycatalog"]) {
        await expect(service.defineEntity({ LogicalName: name, Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] }), name).rejects.toThrow(/built-in entity/);
        await expect(service.define({ removeEntities: [name] }), name).rejects.toThrow(/built-in entity/);
      }
      expect((await service.store.executor.query<{ name: string }>(`SELECT name FROM pragma_table_info('systemuser')`)).map((c) => c.name)).toEqual(columns);
      for (const table of ["vep_definition", "roleprivileges", "systemuser"]) {
        await expect(service.defineEntity({ LogicalName: "new_clash", ExternalName: table, Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] }), table).rejects.toThrow(DefinitionError);
      }
      await service.defineEntity({ LogicalName: "new_one", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] });
      await expect(service.defineEntity({ LogicalName: "new_two", ExternalName: "new_one", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] })).rejects.toThrow(/share the table/);
      // Nor may a many-to-many relationship put its links in a table that is not its own, or touch a built-in relationship.
      await service.defineEntity({ LogicalName: "new_two", Attributes: [{ LogicalName: "new_y", AttributeType: "Integer" }] });
      const link = (table: string) => ({ SchemaName: "new_one_two", RelationshipType: "ManyToManyRelationship" as const, Entity1LogicalName: "new_one", Entity2LogicalName: "new_two", IntersectEntityName: table, Entity1IntersectAttribute: "new_oneid", Entity2IntersectAttribute: "new_twoid", Entity1NavigationPropertyName: "new_twos", Entity2NavigationPropertyName: "new_ones" });
      for (const table of ["systemuser", "systemuserroles", "vep_definition", "new_one"]) await expect(service.defineRelationship(link(table)), table).rejects.toThrow(DefinitionError);
      await service.defineRelationship(link("new_one_two"));
      await expect(service.define({ removeRelationships: ["systemuserroles_association"] })).rejects.toThrow(/built-in relationship/);
      // A removed relationship may come back on its table; no entity may take a relationship's table.
      await service.define({ removeRelationships: ["new_one_two"] });
      await service.defineRelationship(link("new_one_two"));
      for (const name of ["systemuserroles", "new_one_two"]) {
        await expect(service.defineEntity({ LogicalName: name, Attributes: [{ LogicalName: "new_z", AttributeType: "Integer" }] }), name).rejects.toThrow(DefinitionError);
      }
      // A choice's default is one of its options, the global option set's too.
      await service.defineOptionSet({ Name: "new_levels", Options: [{ Value: 1, Label: "Low" }] });
      await expect(service.defineEntity({ LogicalName: "new_three", Attributes: [{ LogicalName: "new_level", AttributeType: "Picklist", GlobalOptionSetName: "new_levels", DefaultValue: 99 }] })).rejects.toThrow(/DefaultValue 99 is not one of the option values/);
      await service.defineEntity({ LogicalName: "new_three", Attributes: [{ LogicalName: "new_level", AttributeType: "Picklist", GlobalOptionSetName: "new_levels", DefaultValue: 1 }] });
      // Nor may the set lose the option a default names.
      await expect(service.defineOptionSet({ Name: "new_levels", Options: [{ Value: 2, Label: "High" }] })).rejects.toThrow(/new_three\.new_level.*DefaultValue 1/);
    } finally {
      await service.close();
    }
  });
});

describe.each(STORE_KINDS)("definitions on %s", (kind) => {
  it("stays usable after a change the store refuses: the next change works", async () => {
    const service = await openTestService(kind);
    try {
      await service.defineEntity(PROJECT);
      for (const code of ["DUP", "DUP"]) expect((await service.request("POST", "new_projects", { body: { new_name: code } })).status).toBe(204);
      // A key over values that are not unique: the store refuses the unique index. The same change widens
      // new_name, which PostgreSQL alters first: that must be undone too, or the next change would have
      // the column dropped and added again (its values lost).
      const widened = { ...PROJECT, Attributes: PROJECT.Attributes.map((a) => (a.LogicalName === "new_name" ? { ...a, MaxLength: 200 } : a)) } as EntityDefinition;
      await expect(service.defineEntity({ ...widened, Keys: [{ LogicalName: "new_name_key", KeyAttributes: ["new_name"] }] })).rejects.toThrow();
      expect(service.model.entity("new_project")!.keys).toHaveLength(0);
      await service.defineEntity({ LogicalName: "new_after", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] });
      expect((await service.request("POST", "new_afters", { body: { new_x: 1 } })).status).toBe(204);
      expect(json(await service.request("GET", "new_projects/$count"))).toBe(2);
      expect(json(await service.request("GET", "new_projects?$select=new_name")).value.map((r: { new_name: string }) => r.new_name)).toEqual(["DUP", "DUP"]);
    } finally {
      await service.dispose();
    }
  });

  it("refuses a type change, or a MaxLength or Precision that stored values exceed, and changes no column", async () => {
    const service = await openTestService(kind);
    try {
      const def: EntityDefinition = {
        LogicalName: "new_cut",
        Attributes: [
          { LogicalName: "new_name", AttributeType: "String", MaxLength: 100 },
          { LogicalName: "new_num", AttributeType: "String", MaxLength: 20 },
          { LogicalName: "new_amount", AttributeType: "Decimal", Precision: 4 },
        ],
      };
      await service.defineEntity(def);
      expect((await service.request("POST", "new_cuts", { body: { new_name: "a long value of forty characters ........", new_num: "12abc", new_amount: 1.2345 } })).status).toBe(204);
      const attrs = (changes: Record<string, object>) => ({ ...def, Attributes: def.Attributes.map((a) => ({ ...a, ...(changes[a.LogicalName] ?? {}) })) }) as EntityDefinition;
      await expect(service.defineEntity(attrs({ new_num: { AttributeType: "Integer", MaxLength: undefined } }))).rejects.toThrow(/new_cut\.new_num.*keeps its type \(String\)/);
      await expect(service.defineEntity(attrs({ new_name: { MaxLength: 5 } }))).rejects.toThrow(/new_cut\.new_name.*MaxLength 5 is less than 1 stored value/);
      await expect(service.defineEntity(attrs({ new_amount: { Precision: 1 } }))).rejects.toThrow(/new_cut\.new_amount.*Precision 1/);
      const raw = await service.store.executor.query<{ new_name: string; new_amount: number | string }>(`SELECT new_name, new_amount FROM new_cut`);
      expect(raw[0]!.new_name).toBe("a long value of forty characters ........");
      expect(Number(raw[0]!.new_amount)).toBe(1.2345);
      // Widening is fine, and so is narrowing that every value fits.
      await service.defineEntity(attrs({ new_name: { MaxLength: 200 }, new_num: { MaxLength: 5 } }));
      expect(service.model.entity("new_cut")!.attributes.get("new_num")!.def.MaxLength).toBe(5);
    } finally {
      await service.dispose();
    }
  });

  it("adds a column for a new attribute without losing rows", async () => {
    const service = await openTestService(kind);
    try {
      await service.defineEntity(PROJECT);
      for (const name of ["Apollo", "Gemini", "Mercury"]) expect((await service.request("POST", "new_projects", { body: { new_name: name, new_budget: 10.5 } })).status).toBe(204);
      const before = json(await service.request("GET", "new_projects?$orderby=new_name"));
      await service.defineEntity({ ...PROJECT, Attributes: [...PROJECT.Attributes, { LogicalName: "new_code", AttributeType: "String", MaxLength: 10 }] });
      const after = json(await service.request("GET", "new_projects?$orderby=new_name"));
      expect(after.value.map((r: any) => [r.new_projectid, r.new_name, r.new_budget, r.new_code])).toEqual(before.value.map((r: any) => [r.new_projectid, r.new_name, r.new_budget, null]));
      const attr = json(await service.request("GET", "EntityDefinitions(LogicalName='new_project')/Attributes(LogicalName='new_code')?$select=LogicalName,MaxLength"));
      expect(attr).toMatchObject({ LogicalName: "new_code", MaxLength: 10 });
      // MetadataIds stay the same across the change.
      const ids = json(await service.request("GET", "EntityDefinitions(LogicalName='new_project')/Attributes?$filter=LogicalName eq 'new_name'&$select=MetadataId"));
      expect(ids.value[0].MetadataId).toBe(service.model.entity("new_project")!.attributes.get("new_name")!.def.MetadataId);
    } finally {
      await service.dispose();
    }
  });

  it("expands Attributes and Keys of EntityDefinitions, with nested options", async () => {
    const service = await openTestService(kind);
    try {
      await service.defineEntity({ ...PROJECT, Attributes: [...PROJECT.Attributes, { LogicalName: "new_code", AttributeType: "String", MaxLength: 10 }], Keys: [{ LogicalName: "new_code_key", KeyAttributes: ["new_code"] }] });
      const one = await service.request("GET", "EntityDefinitions(LogicalName='new_project')?$select=LogicalName&$expand=Attributes($select=LogicalName,AttributeType;$filter=AttributeType eq 'String';$orderby=LogicalName),Keys($select=LogicalName,KeyAttributes)");
      expect(one.status, one.body).toBe(200);
      const body = json(one);
      const strings = service.model.entity("new_project")!.def.Attributes.filter((a) => a.AttributeType === "String").map((a) => a.LogicalName).sort();
      expect(body.Attributes.map((a: any) => a.LogicalName)).toEqual(strings);
      expect(body.Attributes.every((a: any) => a.AttributeType === "String" && Object.keys(a).filter((k) => !k.startsWith("@")).sort().join() === "AttributeType,LogicalName,MetadataId")).toBe(true);
      expect(body.Keys).toHaveLength(1);
      expect(body.Keys[0]).toMatchObject({ LogicalName: "new_code_key", KeyAttributes: ["new_code"] });
      const many = json(await service.request("GET", "EntityDefinitions?$select=LogicalName&$filter=LogicalName eq 'new_project'&$expand=Attributes($select=LogicalName;$top=2)"));
      expect(many.value).toHaveLength(1);
      expect(many.value[0].Attributes).toHaveLength(2);
      for (const [url, status] of [
        ["EntityDefinitions(LogicalName='new_project')?$expand=Nope", 400],
        ["EntityDefinitions(LogicalName='new_project')?$expand=Attributes($search=x)", 400],
        ["EntityDefinitions(LogicalName='new_project')?$expand=Attributes($filter=Nope eq 1)", 400],
        ["RelationshipDefinitions?$expand=Attributes", 400],
      ] as const) {
        expect((await service.request("GET", url)).status, url).toBe(status);
      }
    } finally {
      await service.dispose();
    }
  });

  it("answers the metadata queries Dataverse clients send: type casts, OptionSet, and an entity's relationships", async () => {
    const service = await openTestService(kind);
    try {
      await service.defineEntity({ ...PROJECT, Attributes: [...PROJECT.Attributes, { LogicalName: "new_stage", AttributeType: "Picklist", OptionSet: { Name: "new_project_stage", Options: [{ Value: 1, Label: "Draft" }, { Value: 2, Label: "Live" }] } }] });
      await service.define({
        entities: [{ LogicalName: "new_task", Attributes: [{ LogicalName: "new_projectref", AttributeType: "Lookup", Targets: ["new_project"] }] }],
        relationships: [
          {
            SchemaName: "new_project_tasks",
            RelationshipType: "OneToManyRelationship",
            ReferencedEntity: "new_project",
            ReferencedAttribute: "new_projectid",
            ReferencingEntity: "new_task",
            ReferencingAttribute: "new_projectref",
            ReferencedEntityNavigationPropertyName: "new_tasks",
            ReferencingEntityNavigationPropertyName: "new_projectref",
          },
        ],
      });
      const get = async (url: string) => {
        const r = await service.request("GET", url);
        expect(r.status, `${url}: ${r.body}`).toBe(200);
        return json(r);
      };
      const picklists = await get("EntityDefinitions(LogicalName='new_project')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=OptionSet");
      expect(picklists.value.map((a: any) => a.LogicalName)).toEqual(["new_stage"]);
      expect(picklists.value[0].OptionSet.Options.map((o: any) => o.Value)).toEqual([1, 2]);
      expect(picklists["@odata.context"]).toContain("/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata");
      expect((await get("EntityDefinitions(LogicalName='new_project')/Attributes(LogicalName='new_name')/Microsoft.Dynamics.CRM.StringAttributeMetadata?$select=MaxLength")).MaxLength).toBe(100);
      expect((await service.request("GET", "EntityDefinitions(LogicalName='new_project')/Attributes(LogicalName='new_name')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata")).status).toBe(404);
      expect((await get("EntityDefinitions(LogicalName='new_task')/Attributes/Microsoft.Dynamics.CRM.LookupAttributeMetadata?$select=LogicalName,Targets")).value).toEqual([expect.objectContaining({ LogicalName: "new_projectref", Targets: ["new_project"] })]);
      const manyToOne = await get("EntityDefinitions(LogicalName='new_task')/ManyToOneRelationships?$select=SchemaName,ReferencedEntity,ReferencingAttribute");
      expect(manyToOne.value).toEqual([expect.objectContaining({ ReferencedEntity: "new_project", ReferencingAttribute: "new_projectref" })]);
      const oneToMany = await get("EntityDefinitions(LogicalName='new_project')?$select=LogicalName&$expand=OneToManyRelationships($select=ReferencingEntity)");
      expect(oneToMany.OneToManyRelationships.map((r: any) => r.ReferencingEntity)).toEqual(["new_task"]);
      expect((await get("EntityDefinitions(LogicalName='new_project')/ManyToManyRelationships")).value).toEqual([]);
      expect((await get("RelationshipDefinitions/Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata?$select=SchemaName&$filter=ReferencedEntity eq 'new_project'")).value).toHaveLength(1);
      // A cast to the set's own type is every row; one to another set's type is no type of this one.
      expect((await get("EntityDefinitions(LogicalName='new_project')/Attributes/Microsoft.Dynamics.CRM.AttributeMetadata?$select=LogicalName")).value.length).toBe(service.model.entity("new_project")!.attributes.size);
      expect((await service.request("GET", "EntityDefinitions(LogicalName='new_project')/Attributes/Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata")).status).toBe(404);
      for (const [url, status] of [
        ["EntityDefinitions(LogicalName='new_project')/Attributes/Microsoft.Dynamics.CRM.NoSuchMetadata", 404],
        ["EntityDefinitions(LogicalName='new_project')/Attributes?$expand=GlobalOptionSet", 501],
        ["EntityDefinitions(LogicalName='new_project')/LogicalName", 501],
      ] as const) {
        expect((await service.request("GET", url)).status, url).toBe(status);
      }
    } finally {
      await service.dispose();
    }
  });
});

describe("stores made by earlier versions", () => {
  it("open even when a stored definition would fail a check added since (the checks apply to changes)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vep-older-"));
    try {
      const file = join(dir, "older.sqlite");
      const first = await createService({ database: file, security: "none" });
      await first.defineEntity({ LogicalName: "new_old", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }, { LogicalName: "new_flag", AttributeType: "Boolean" }], Keys: [{ LogicalName: "new_x_key", KeyAttributes: ["new_x"] }] });
      expect((await first.request("POST", "new_olds", { body: { new_x: 1 } })).status).toBe(204);
      // What an earlier version let through: a 64-bit MaxValue, a key on a Boolean, an option set named like an entity.
      const stored = JSON.parse((await first.store.executor.query<{ body: string }>(`SELECT body FROM vep_definition WHERE kind = 'entity' AND name = 'new_old'`))[0]!.body);
      stored.Attributes.find((a: { LogicalName: string }) => a.LogicalName === "new_x").MaxValue = 1e12;
      stored.Keys.push({ LogicalName: "new_flag_key", KeyAttributes: ["new_flag"] });
      stored.Attributes.push({ LogicalName: "new_kind", AttributeType: "Picklist", OptionSet: { Name: "new_old", Options: [{ Value: 1, Label: "A" }] } });
      await first.store.executor.execute(`UPDATE vep_definition SET body = ?1 WHERE kind = 'entity' AND name = 'new_old'`, [JSON.stringify(stored)]);
      await first.close();
      const again = await createService({ database: file, security: "none" });
      try {
        expect(json(await again.request("GET", "new_olds?$select=new_x")).value).toEqual([expect.objectContaining({ new_x: 1 })]);
        // Unrelated changes still go through.
        await again.defineEntity({ LogicalName: "new_fresh", Attributes: [{ LogicalName: "new_y", AttributeType: "Integer" }] });
      } finally {
        await again.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("definitions survive a restart", () => {
  const dir = mkdtempSync(join(tmpdir(), "vep-restart-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("serves the same entities, ids and rows after reopening the SQLite file", async () => {
    const file = join(dir, "store.sqlite");
    const first = await createService({ database: file, security: "none" });
    await first.defineEntity(PROJECT);
    await first.request("POST", "new_projects", { body: { new_name: "Apollo" } });
    const metadataId = first.model.entity("new_project")!.def.MetadataId;
    await first.close();

    const second = await createService({ database: file, security: "none" });
    try {
      expect(second.model.entity("new_project")!.def.MetadataId).toBe(metadataId);
      const rows = json(await second.request("GET", "new_projects?$select=new_name"));
      expect(rows.value.map((r: any) => r.new_name)).toEqual(["Apollo"]);
    } finally {
      await second.close();
    }
  });
});
