import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { openTestService, json, databaseFor, STORE_KINDS, type StoreKind } from "../helpers/stores.js";
import { createService } from "../../src/index.js";
import { installLinkedInTalentHub, CANDIDATE_SOURCE, WORKER_SOURCE } from "../../src/linkedin/talent-hub.js";
import { SOURCE_SYSTEM_COLUMNS, type SourceDefinition } from "../../src/catalog/source-definition.js";

type Service = Awaited<ReturnType<typeof openTestService>>;

const CANDIDATE = "mshr_hcmlinkedinexportedcandidateentity";
const CANDIDATES = "mshr_hcmlinkedinexportedcandidateentities";
const WORKER = "mshr_hcmworkerentity";
const WORKERS = "mshr_hcmworkerentities";
const RELATIONSHIP = `${CANDIDATE}_fk_worker`;
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

/** A source with one field of every source type, to check the type mapping rules. */
const TYPED_SOURCE: SourceDefinition = {
  PhysicalName: "HcmTypeSampleEntity",
  Label: "Type sample",
  Description: "One field of each source type.",
  PrimaryField: "Code",
  Key: ["Code"],
  Fields: [
    { Name: "Code", Label: "Code", Type: "String", Length: 20 },
    { Name: "Notes", Type: "Memo" },
    { Name: "ShortNotes", Type: "Memo", Length: 2000 },
    { Name: "Quantity", Type: "Int" },
    { Name: "BigQuantity", Type: "Int64" },
    { Name: "Amount", Type: "Real", Decimals: 4 },
    { Name: "ValidFrom", Type: "Date" },
    { Name: "StampedAt", Type: "UtcDateTime" },
    { Name: "IsActive", Label: "Active", Type: "NoYes" },
    { Name: "ExternalRef", Type: "Guid" },
    { Name: "Website", Type: "String", Length: 200, Format: "Url" },
    {
      Name: "Level",
      Label: "Level",
      Type: "Enum",
      EnumName: "SampleLevel",
      EnumValues: [
        { Name: "Low", Value: 0, Label: "Low level" },
        { Name: "Medium", Value: 1 },
        { Name: "High", Value: 5, Label: "High level" },
      ],
      Default: "Medium",
    },
  ],
};

async function catalogRows(service: Service): Promise<any[]> {
  const r = await service.request("GET", "virtualentitycatalogs");
  expect(r.status).toBe(200);
  return json(r).value;
}

async function catalogRow(service: Service, physicalName: string): Promise<any> {
  const r = await service.request("GET", `virtualentitycatalogs(physicalname='${physicalName}')`);
  expect(r.status, r.body).toBe(200);
  return json(r);
}

async function attributesOf(service: Service, logicalName: string): Promise<Map<string, any>> {
  const r = await service.request("GET", `EntityDefinitions(LogicalName='${logicalName}')/Attributes`);
  expect(r.status, r.body).toBe(200);
  return new Map(json(r).value.map((a: any) => [a.LogicalName, a]));
}

async function metadataXml(service: Service): Promise<string> {
  const r = await service.request("GET", "$metadata");
  expect(r.status).toBe(200);
  return r.body!;
}

function entityTypeXml(xml: string, name: string): string | undefined {
  return new RegExp(`<EntityType Name="${name}"[\\s\\S]*?</EntityType>`).exec(xml)?.[0];
}

function idFrom(response: { headers: Record<string, string> }): string {
  const m = /\(([0-9a-f-]{36})\)$/.exec(response.headers["OData-EntityId"] ?? "");
  expect(m, `OData-EntityId: ${response.headers["OData-EntityId"]}`).not.toBeNull();
  return m![1]!;
}

async function count(service: Service, set: string): Promise<number> {
  const r = await service.request("GET", `${set}/$count`);
  expect(r.status, r.body).toBe(200);
  return Number(r.body);
}

async function createWorkers(service: Service, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const r = await service.request("POST", WORKERS, {
      body: { mshr_firstname: `First${i}`, mshr_lastname: `Last${i}`, mshr_email: `w${i}@example.com`, mshr_phonenumber: `+47 555 000${i}`, mshr_employmentstartdate: `2026-0${(i % 9) + 1}-15`, mshr_positionid: `POS-${i}` },
    });
    expect(r.status, r.body).toBe(204);
    ids.push(idFrom(r));
  }
  return ids;
}

/** Checks that the candidate → worker relationship is there on both sides. */
async function expectRelationship(service: Service): Promise<void> {
  const rel = await service.request("GET", `RelationshipDefinitions?$filter=SchemaName eq '${RELATIONSHIP}'`);
  expect(rel.status, rel.body).toBe(200);
  expect(json(rel).value).toHaveLength(1);
  expect(json(rel).value[0]).toMatchObject({
    RelationshipType: "OneToManyRelationship",
    ReferencedEntity: WORKER,
    ReferencedAttribute: `${WORKER}id`,
    ReferencingEntity: CANDIDATE,
    ReferencingAttribute: "mshr_fk_worker_id",
    ReferencingEntityNavigationPropertyName: "mshr_fk_worker_id",
    ReferencedEntityNavigationPropertyName: RELATIONSHIP,
  });
  const attrs = await attributesOf(service, CANDIDATE);
  expect(attrs.get("mshr_fk_worker_id")).toMatchObject({ AttributeType: "Lookup", Targets: [WORKER], ExternalName: "WorkerId" });
  const xml = await metadataXml(service);
  const candidateType = entityTypeXml(xml, CANDIDATE)!;
  const workerType = entityTypeXml(xml, WORKER)!;
  expect(candidateType).toMatch(new RegExp(`<NavigationProperty Name="mshr_fk_worker_id" Type="mscrm\\.${WORKER}"`));
  expect(workerType).toMatch(new RegExp(`<NavigationProperty Name="${RELATIONSHIP}" Type="Collection\\(mscrm\\.${CANDIDATE}\\)"`));
  // The lookup is served on the candidate's rows.
  const rows = await service.request("GET", `${CANDIDATES}?$select=_mshr_fk_worker_id_value`);
  expect(rows.status, rows.body).toBe(200);
}

async function expectNoRelationship(service: Service): Promise<void> {
  const rel = await service.request("GET", "RelationshipDefinitions");
  expect(rel.status).toBe(200);
  expect(json(rel).value.filter((r: any) => r.SchemaName === RELATIONSHIP)).toEqual([]);
  expect(await metadataXml(service)).not.toContain(`NavigationProperty Name="mshr_fk_worker_id"`);
  expect(await metadataXml(service)).not.toContain(`NavigationProperty Name="${RELATIONSHIP}"`);
}

describe.each(STORE_KINDS)("virtual entity catalog Generate/refresh (%s)", (kind: StoreKind) => {
  let service: Service;

  beforeEach(async () => {
    service = await openTestService(kind);
  });
  afterEach(async () => {
    await service?.dispose();
  });

  describe("before generation", () => {
    it("lists the store's two sources, none generated", async () => {
      expect(await catalogRows(service)).toEqual([]);
      await installLinkedInTalentHub(service);
      const rows = await catalogRows(service);
      expect(rows).toHaveLength(2);
      const byName = new Map(rows.map((r) => [r.physicalname, r]));
      expect(byName.get("HcmLinkedInExportedCandidateEntity")).toMatchObject({
        label: "LinkedIn exported candidate",
        physicalname: "HcmLinkedInExportedCandidateEntity",
        logicalname: CANDIDATE,
        isgenerated: false,
        status: "NotGenerated",
        statusmessage: null,
        lastgeneratedon: null,
        lastrefreshedon: null,
      });
      expect(byName.get("HcmWorkerEntity")).toMatchObject({
        label: "Worker",
        physicalname: "HcmWorkerEntity",
        logicalname: WORKER,
        isgenerated: false,
        status: "NotGenerated",
      });
      for (const r of rows) expect(r.virtualentitycatalogid).toMatch(GUID);

      const filtered = await service.request("GET", "virtualentitycatalogs?$filter=label eq 'LinkedIn exported candidate'");
      expect(filtered.status).toBe(200);
      expect(json(filtered).value).toHaveLength(1);
      expect(json(filtered).value[0]).toMatchObject({ physicalname: "HcmLinkedInExportedCandidateEntity", isgenerated: false });

      const none = await service.request("GET", "virtualentitycatalogs?$filter=isgenerated eq true");
      expect(json(none).value).toEqual([]);
    });

    it("refuses a source whose relation or table clashes, naming it, and stays usable for the next one", async () => {
      const base: Omit<SourceDefinition, "PhysicalName"> = { Label: "Clash", Fields: [{ Name: "Code", Type: "String", Length: 10 }] };
      const bad: [string, SourceDefinition, RegExp][] = [
        ["a relation on a system column", { ...base, PhysicalName: "ClashA", Relations: [{ Name: "R", Target: "ClashA", Field: "Id" }] }, /relation 'R' field 'Id' is a system column/],
        ["two relations on one field", { ...base, PhysicalName: "ClashB", Relations: [{ Name: "R1", Target: "ClashB", Field: "Ref" }, { Name: "R2", Target: "ClashB", Field: "Ref" }] }, /relation 'R2' field 'Ref' clashes/],
        ["the store's own table", { ...base, PhysicalName: "vep_definition" }, /already has a table of that name/],
      ];
      for (const [what, def, message] of bad) await expect(service.catalog.registerSource(def), what).rejects.toThrow(message);
      await service.catalog.registerSource({ ...base, PhysicalName: "ClashOk" });
      await expect(service.catalog.registerSource({ ...base, PhysicalName: "CLASHOK" })).rejects.toThrow(/registered as 'ClashOk'/);
      await expect(service.catalog.registerSource({ ...base, PhysicalName: "ClashOther", Label: "CLASH" })).rejects.toThrow(/label 'CLASH' is already the label of the source 'ClashOk'/);
      await installLinkedInTalentHub(service, { generate: true });
      expect(await catalogRows(service)).toHaveLength(3);
    });

    it("registering the same source twice keeps one catalog row", async () => {
      await installLinkedInTalentHub(service);
      await service.catalog.registerSource(clone(WORKER_SOURCE));
      await installLinkedInTalentHub(service);
      expect(await catalogRows(service)).toHaveLength(2);
    });

    it("serves no entity set, $metadata type or EntityDefinitions row for an ungenerated source", async () => {
      await installLinkedInTalentHub(service);
      for (const set of [CANDIDATES, WORKERS]) {
        const r = await service.request("GET", set);
        expect(r.status, set).toBe(404);
        const post = await service.request("POST", set, { body: { mshr_firstname: "A", mshr_lastname: "B" } });
        expect(post.status, set).toBe(404);
      }
      const xml = await metadataXml(service);
      expect(entityTypeXml(xml, CANDIDATE)).toBeUndefined();
      expect(entityTypeXml(xml, WORKER)).toBeUndefined();
      expect(xml).not.toContain(CANDIDATES);
      for (const name of [CANDIDATE, WORKER]) {
        const def = await service.request("GET", `EntityDefinitions(LogicalName='${name}')`);
        expect(def.status, name).toBe(404);
      }
      const defs = await service.request("GET", "EntityDefinitions?$select=LogicalName");
      expect(defs.status).toBe(200);
      const names = json(defs).value.map((d: any) => d.LogicalName);
      expect(names).not.toContain(CANDIDATE);
      expect(names).not.toContain(WORKER);
      const doc = await service.request("GET", "");
      expect(json(doc).value.map((v: any) => v.name)).not.toContain(CANDIDATES);
    });
  });

  describe("generation", () => {
    it("generates the candidate over OData with the mapping rules", async () => {
      await installLinkedInTalentHub(service);
      const row = json(await service.request("GET", "virtualentitycatalogs?$filter=label eq 'LinkedIn exported candidate'")).value[0];
      const gen = await service.request("POST", `virtualentitycatalogs(${row.virtualentitycatalogid})/Microsoft.Dynamics.CRM.GenerateOrRefresh`);
      expect(gen.status, gen.body).toBe(200);
      expect(json(gen)).toMatchObject({ physicalname: "HcmLinkedInExportedCandidateEntity", isgenerated: true, status: "Generated" });
      expect(json(gen).statusmessage).toContain(CANDIDATE);
      expect(json(gen).lastgeneratedon).toEqual(expect.any(String));

      const def = await service.request("GET", `EntityDefinitions(LogicalName='${CANDIDATE}')`);
      expect(def.status, def.body).toBe(200);
      expect(json(def)).toMatchObject({
        LogicalName: CANDIDATE,
        EntitySetName: CANDIDATES,
        TableType: "Virtual",
        ExternalName: "HcmLinkedInExportedCandidateEntity",
        ExternalCollectionName: "HcmLinkedInExportedCandidateEntity",
        PrimaryIdAttribute: `${CANDIDATE}id`,
        PrimaryNameAttribute: "mshr_primaryfield",
      });
      expect(json(def).DisplayName.UserLocalizedLabel.Label).toBe("LinkedIn exported candidate");

      const attrs = await attributesOf(service, CANDIDATE);
      expect(attrs.get(`${CANDIDATE}id`)).toMatchObject({ AttributeType: "Uniqueidentifier", IsPrimaryId: true, ExternalName: "Id" });
      expect(attrs.get("mshr_primaryfield")).toMatchObject({ AttributeType: "String", MaxLength: 50, ExternalName: "CandidateId", IsPrimaryName: true, IsValidForCreate: false });
      expect(attrs.get("mshr_candidateid")).toMatchObject({ AttributeType: "String", MaxLength: 50, ExternalName: "CandidateId" });
      expect(attrs.get("mshr_firstname")).toMatchObject({ AttributeType: "String", MaxLength: 100, ExternalName: "FirstName", RequiredLevel: { Value: "ApplicationRequired" } });
      expect(attrs.get("mshr_middlename")).toMatchObject({ AttributeType: "String", MaxLength: 100, RequiredLevel: { Value: "None" } });
      expect(attrs.get("mshr_lastname")).toMatchObject({ AttributeType: "String", MaxLength: 100, ExternalName: "LastName", RequiredLevel: { Value: "ApplicationRequired" } });
      expect(attrs.get("mshr_email")).toMatchObject({ AttributeType: "String", MaxLength: 320, Format: "Email", ExternalName: "Email" });
      expect(attrs.get("mshr_phonenumber")).toMatchObject({ AttributeType: "String", MaxLength: 50, Format: "Phone", ExternalName: "PhoneNumber" });
      expect(attrs.get("mshr_startdate")).toMatchObject({ AttributeType: "DateTime", DateTimeBehavior: { Value: "DateOnly" }, ExternalName: "StartDate" });
      expect(attrs.get("mshr_jobtitle")).toMatchObject({ AttributeType: "String", MaxLength: 100, ExternalName: "JobTitle" });
      expect(attrs.get("mshr_location")).toMatchObject({ AttributeType: "String", MaxLength: 200, ExternalName: "Location" });
      expect(attrs.get("mshr_exporteddatetime")).toMatchObject({
        AttributeType: "DateTime",
        DateTimeBehavior: { Value: "TimeZoneIndependent" },
        ExternalName: "ExportedDateTime",
        IsValidForCreate: false,
        IsValidForUpdate: false,
      });
      const status = attrs.get("mshr_hirestatus");
      expect(status).toMatchObject({ AttributeType: "Picklist", ExternalName: "HireStatus", IsValidForCreate: false, IsValidForUpdate: false });
      expect(status.OptionSet.Options.map((o: any) => [o.Value, o.Label.UserLocalizedLabel.Label, o.ExternalValue])).toEqual([
        [200000000, "Pending", "Pending"],
        [200000001, "Hired", "Hired"],
      ]);
      expect(attrs.get("createdon")).toMatchObject({ ExternalName: "CreatedDateTime" });
      expect(attrs.get("modifiedon")).toMatchObject({ ExternalName: "ModifiedDateTime" });
      expect(attrs.get("versionnumber")).toMatchObject({ AttributeType: "BigInt", ExternalName: "RecVersion" });
      // The relation's target is not generated: no lookup yet.
      expect(attrs.has("mshr_fk_worker_id")).toBe(false);
      for (const a of attrs.values()) expect(a.ExternalName, a.LogicalName).toEqual(expect.any(String));

      const keys = await service.request("GET", `EntityDefinitions(LogicalName='${CANDIDATE}')/Keys`);
      expect(keys.status).toBe(200);
      expect(json(keys).value.map((k: any) => k.KeyAttributes)).toEqual([["mshr_candidateid"]]);

      // The entity is now served, listed in $metadata and the service document.
      const set = await service.request("GET", CANDIDATES);
      expect(set.status, set.body).toBe(200);
      expect(json(set).value).toEqual([]);
      const xml = await metadataXml(service);
      const type = entityTypeXml(xml, CANDIDATE)!;
      expect(type).toBeDefined();
      expect(type).toContain(`<PropertyRef Name="${CANDIDATE}id"/>`);
      expect(type).toMatch(/<Property Name="mshr_startdate" Type="Edm.Date"/);
      expect(type).toMatch(/<Property Name="mshr_exporteddatetime" Type="Edm.DateTimeOffset"/);
      expect(type).toMatch(/<Property Name="mshr_hirestatus" Type="Edm.Int32"/);
      expect(xml).toContain(`<EntitySet Name="${CANDIDATES}"`);
      expect(entityTypeXml(xml, WORKER)).toBeUndefined();
      // The worker stays as it was.
      expect((await service.request("GET", WORKERS)).status).toBe(404);
      expect(await catalogRow(service, "HcmWorkerEntity")).toMatchObject({ isgenerated: false, status: "NotGenerated" });
    });

    it("maps every source type (generated with PATCH isgenerated)", async () => {
      await service.catalog.registerSource(TYPED_SOURCE);
      const row = await catalogRow(service, "HcmTypeSampleEntity");
      expect(row).toMatchObject({ label: "Type sample", logicalname: "mshr_hcmtypesampleentity", isgenerated: false });
      const patch = await service.request("PATCH", `virtualentitycatalogs(${row.virtualentitycatalogid})`, { body: { isgenerated: true } });
      expect(patch.status, patch.body).toBeLessThan(300);
      expect(await catalogRow(service, "HcmTypeSampleEntity")).toMatchObject({ isgenerated: true, status: "Generated" });

      const attrs = await attributesOf(service, "mshr_hcmtypesampleentity");
      expect(attrs.get("mshr_hcmtypesampleentityid")).toMatchObject({ AttributeType: "Uniqueidentifier", IsPrimaryId: true });
      expect(attrs.get("mshr_code")).toMatchObject({ AttributeType: "String", MaxLength: 20, ExternalName: "Code" });
      expect(attrs.get("mshr_notes")).toMatchObject({ AttributeType: "Memo", MaxLength: 1048576, ExternalName: "Notes" });
      expect(attrs.get("mshr_shortnotes")).toMatchObject({ AttributeType: "Memo", MaxLength: 2000 });
      expect(attrs.get("mshr_quantity")).toMatchObject({ AttributeType: "Integer", ExternalName: "Quantity" });
      expect(attrs.get("mshr_bigquantity")).toMatchObject({ AttributeType: "BigInt", ExternalName: "BigQuantity" });
      expect(attrs.get("mshr_amount")).toMatchObject({ AttributeType: "Decimal", Precision: 4, ExternalName: "Amount" });
      expect(attrs.get("mshr_validfrom")).toMatchObject({ AttributeType: "DateTime", DateTimeBehavior: { Value: "DateOnly" } });
      expect(attrs.get("mshr_stampedat")).toMatchObject({ AttributeType: "DateTime", DateTimeBehavior: { Value: "TimeZoneIndependent" } });
      expect(attrs.get("mshr_isactive")).toMatchObject({ AttributeType: "Boolean", ExternalName: "IsActive" });
      expect(attrs.get("mshr_isactive").DisplayName.UserLocalizedLabel.Label).toBe("Active");
      expect(attrs.get("mshr_externalref")).toMatchObject({ AttributeType: "Uniqueidentifier", ExternalName: "ExternalRef" });
      expect(attrs.get("mshr_website")).toMatchObject({ AttributeType: "String", MaxLength: 200, Format: "Url" });
      const level = attrs.get("mshr_level");
      expect(level).toMatchObject({ AttributeType: "Picklist", ExternalName: "Level" });
      expect(level.OptionSet.Options.map((o: any) => [o.Value, o.Label.UserLocalizedLabel.Label, o.ExternalValue])).toEqual([
        [200000000, "Low level", "Low"],
        [200000001, "Medium", "Medium"],
        [200000005, "High level", "High"],
      ]);
      expect(attrs.get("mshr_primaryfield")).toMatchObject({ MaxLength: 20, ExternalName: "Code", IsPrimaryName: true });
    });

    it("stores an Enum field as the enum value's name and serves it as its option value", async () => {
      await service.catalog.registerSource(TYPED_SOURCE);
      await service.catalog.generateOrRefresh("HcmTypeSampleEntity");
      const set = "mshr_hcmtypesampleentities";
      const a = await service.request("POST", set, { body: { mshr_code: "A", mshr_level: 200000005, mshr_quantity: 3, mshr_isactive: true } });
      expect(a.status, a.body).toBe(204);
      const b = await service.request("POST", set, { body: { mshr_code: "B" } });
      expect(b.status, b.body).toBe(204);
      const rows = await service.store.executor.query<Record<string, unknown>>('SELECT "Id", "Code", "Level", "Quantity" FROM "HcmTypeSampleEntity" ORDER BY "Code"');
      expect(rows.map((r) => [r.Code, r.Level, r.Quantity === null ? null : Number(r.Quantity)])).toEqual([
        ["A", "High", 3],
        ["B", "Medium", null], // the source's Default
      ]);
      const high = await service.request("GET", `${set}?$filter=mshr_level eq 200000005&$select=mshr_code,mshr_level`, { headers: { Prefer: 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"' } });
      expect(high.status, high.body).toBe(200);
      expect(json(high).value).toHaveLength(1);
      expect(json(high).value[0]).toMatchObject({ mshr_code: "A", mshr_level: 200000005, "mshr_level@OData.Community.Display.V1.FormattedValue": "High level" });
      const patch = await service.request("PATCH", `${set}(${idFrom(b)})`, { body: { mshr_level: 200000000 } });
      expect(patch.status, patch.body).toBe(204);
      const after = await service.store.executor.query<Record<string, unknown>>(`SELECT "Level" FROM "HcmTypeSampleEntity" WHERE "Code" = 'B'`);
      expect(after[0]!.Level).toBe("Low");
      const bad = await service.request("POST", set, { body: { mshr_code: "C", mshr_level: 200000002 } });
      expect(bad.status).toBe(400);
    });
  });

  describe("relationships", () => {
    it("appears only when both sides are generated: candidate first, then worker", async () => {
      await installLinkedInTalentHub(service);
      await service.catalog.generateOrRefresh(CANDIDATE_SOURCE.PhysicalName);
      await expectNoRelationship(service);
      expect((await attributesOf(service, CANDIDATE)).has("mshr_fk_worker_id")).toBe(false);

      const result = await service.catalog.generateOrRefresh(WORKER_SOURCE.PhysicalName);
      expect(result.logicalName).toBe(WORKER);
      expect(result.alsoRegenerated).toEqual([CANDIDATE]);
      await expectRelationship(service);
    });

    it("appears only when both sides are generated: worker first, then candidate", async () => {
      await installLinkedInTalentHub(service);
      await service.catalog.generateOrRefresh(WORKER_SOURCE.PhysicalName);
      await expectNoRelationship(service);
      const result = await service.catalog.generateOrRefresh(CANDIDATE_SOURCE.PhysicalName);
      expect(result.alsoRegenerated).toEqual([]);
      await expectRelationship(service);
    });

    it("generating a related entity does not silently apply the other's pending source changes", async () => {
      await installLinkedInTalentHub(service);
      await service.catalog.generateOrRefresh(CANDIDATE_SOURCE.PhysicalName);
      const changed = clone(CANDIDATE_SOURCE);
      changed.Fields.push({ Name: "Referral", Type: "String", Length: 50 });
      await service.catalog.registerSource(changed);
      expect(await catalogRow(service, CANDIDATE_SOURCE.PhysicalName)).toMatchObject({ status: "SourceChanged" });

      await service.catalog.generateOrRefresh(WORKER_SOURCE.PhysicalName);
      await expectRelationship(service);
      // Either the candidate keeps its old shape until its own refresh, or its catalog row says it was refreshed.
      const exposed = (await attributesOf(service, CANDIDATE)).has("mshr_referral");
      const row = await catalogRow(service, CANDIDATE_SOURCE.PhysicalName);
      expect({ exposed, status: row.status }).not.toEqual({ exposed: true, status: "SourceChanged" });
    });

    it("keeps one relationship when either side is refreshed again", async () => {
      await installLinkedInTalentHub(service, { generate: true });
      await service.catalog.generateOrRefresh(WORKER_SOURCE.PhysicalName);
      await service.catalog.generateOrRefresh(CANDIDATE_SOURCE.PhysicalName);
      await expectRelationship(service);
      const all = json(await service.request("GET", "RelationshipDefinitions")).value;
      expect(all.filter((r: any) => r.ReferencingEntity === CANDIDATE)).toHaveLength(1);
    });
  });

  describe("all or nothing", () => {
    it("an Enum Default that is not one of its values leaves no entity and records the failure", async () => {
      const bad: SourceDefinition = {
        PhysicalName: "HcmBadEnumEntity",
        Label: "Bad enum",
        Fields: [
          { Name: "Code", Type: "String", Length: 10 },
          { Name: "Kind", Type: "Enum", EnumValues: [{ Name: "Alpha", Value: 0 }, { Name: "Beta", Value: 1 }], Default: "Gamma" },
        ],
      };
      await service.catalog.registerSource(bad);
      const row = await catalogRow(service, "HcmBadEnumEntity");
      const r = await service.request("POST", `virtualentitycatalogs(${row.virtualentitycatalogid})/Microsoft.Dynamics.CRM.GenerateOrRefresh`);
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain("Gamma");
      const after = await catalogRow(service, "HcmBadEnumEntity");
      expect(after).toMatchObject({ isgenerated: false, status: "Failed", lastgeneratedon: null });
      expect(after.statusmessage).toContain("Kind");
      expect(after.statusmessage).toContain("Gamma");
      expect((await service.request("GET", "EntityDefinitions(LogicalName='mshr_hcmbadenumentity')")).status).toBe(404);
      expect((await service.request("GET", "mshr_hcmbadenumentities")).status).toBe(404);
      expect(entityTypeXml(await metadataXml(service), "mshr_hcmbadenumentity")).toBeUndefined();
      await expect(service.catalog.generateOrRefresh("HcmBadEnumEntity")).rejects.toMatchObject({ status: 400 });

      // Fixing the source and generating again succeeds.
      const fixed = clone(bad);
      fixed.Fields[1]!.Default = "Beta";
      await service.catalog.registerSource(fixed);
      await service.catalog.generateOrRefresh("HcmBadEnumEntity");
      expect(await catalogRow(service, "HcmBadEnumEntity")).toMatchObject({ isgenerated: true, status: "Generated" });
      const attrs = await attributesOf(service, "mshr_hcmbadenumentity");
      expect(attrs.get("mshr_kind")).toMatchObject({ AttributeType: "Picklist" });
    });

    it("a field whose generated name collides leaves no entity and records the failure", async () => {
      const collide: SourceDefinition = {
        PhysicalName: "HcmCollideEntity",
        Label: "Collide",
        PrimaryField: "Code",
        Fields: [
          { Name: "Code", Type: "String", Length: 10 },
          { Name: "PrimaryField", Type: "String", Length: 10 }, // mshr_primaryfield, as the primary name attribute
        ],
      };
      await service.catalog.registerSource(collide);
      await expect(service.catalog.generateOrRefresh("HcmCollideEntity")).rejects.toMatchObject({ status: 400 });
      const row = await catalogRow(service, "HcmCollideEntity");
      expect(row).toMatchObject({ isgenerated: false, status: "Failed" });
      expect(row.statusmessage).toContain("mshr_primaryfield");
      expect((await service.request("GET", "EntityDefinitions(LogicalName='mshr_hcmcollideentity')")).status).toBe(404);
      expect((await service.request("GET", "mshr_hcmcollideentities")).status).toBe(404);

      const idClash: SourceDefinition = { PhysicalName: "HcmIdClash", Label: "Id clash", Fields: [{ Name: "HcmIdClashId", Type: "String", Length: 10 }] };
      await service.catalog.registerSource(idClash);
      await expect(service.catalog.generateOrRefresh("HcmIdClash")).rejects.toMatchObject({ status: 400 });
      expect(await catalogRow(service, "HcmIdClash")).toMatchObject({ isgenerated: false, status: "Failed" });
      expect((await service.request("GET", "EntityDefinitions(LogicalName='mshr_hcmidclash')")).status).toBe(404);
    });

    it("a collision in a related entity that must gain its lookup fails the whole generation", async () => {
      await installLinkedInTalentHub(service);
      // The candidate gets a field whose name is the lookup's name (mshr_fk_worker_id).
      const candidate = clone(CANDIDATE_SOURCE);
      candidate.Fields.push({ Name: "fk_Worker_id", Type: "String", Length: 20 });
      await service.catalog.registerSource(candidate);
      await service.catalog.generateOrRefresh(candidate.PhysicalName);
      const before = await attributesOf(service, CANDIDATE);

      await expect(service.catalog.generateOrRefresh(WORKER_SOURCE.PhysicalName)).rejects.toMatchObject({ status: 400 });
      const worker = await catalogRow(service, "HcmWorkerEntity");
      expect(worker).toMatchObject({ isgenerated: false, status: "Failed" });
      expect(worker.statusmessage).toContain("mshr_fk_worker_id");
      expect((await service.request("GET", WORKERS)).status).toBe(404);
      expect((await service.request("GET", `EntityDefinitions(LogicalName='${WORKER}')`)).status).toBe(404);
      // The candidate is exactly as before, still serving.
      const after = await attributesOf(service, CANDIDATE);
      expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
      expect(after.get("mshr_fk_worker_id")).toMatchObject({ AttributeType: "String", ExternalName: "fk_Worker_id" });
      expect((await service.request("GET", CANDIDATES)).status).toBe(200);
      await expectNoRelationship(service);
    });

    it("a failed refresh keeps the generated entity as it was, with its rows", async () => {
      await service.catalog.registerSource(clone(WORKER_SOURCE));
      await service.catalog.generateOrRefresh("HcmWorkerEntity");
      const ids = await createWorkers(service, 3);
      const before = await attributesOf(service, WORKER);

      const broken = clone(WORKER_SOURCE);
      broken.Fields.push({ Name: "Band", Type: "Enum", EnumValues: [{ Name: "A", Value: 0 }], Default: "Z" });
      await service.catalog.registerSource(broken);
      expect(await catalogRow(service, "HcmWorkerEntity")).toMatchObject({ status: "SourceChanged", isgenerated: true });
      await expect(service.catalog.generateOrRefresh("HcmWorkerEntity")).rejects.toMatchObject({ status: 400 });

      const row = await catalogRow(service, "HcmWorkerEntity");
      expect(row).toMatchObject({ status: "Failed", isgenerated: true, lastrefreshedon: null });
      expect(row.statusmessage).toContain("Band");
      const after = await attributesOf(service, WORKER);
      expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
      expect(after.has("mshr_band")).toBe(false);
      const list = await service.request("GET", `${WORKERS}?$orderby=mshr_firstname`);
      expect(list.status, list.body).toBe(200);
      expect(json(list).value.map((w: any) => w.mshr_hcmworkerentityid).sort()).toEqual([...ids].sort());
    });
  });

  describe("refresh after the source changed", () => {
    it("keeps every row, exposes new fields, records the changes, then reports none", async () => {
      await service.catalog.registerSource(clone(WORKER_SOURCE));
      await service.catalog.generateOrRefresh("HcmWorkerEntity");
      const ids = await createWorkers(service, 3);
      const numbers = json(await service.request("GET", `${WORKERS}?$select=mshr_personnelnumber&$orderby=mshr_personnelnumber`)).value.map((w: any) => w.mshr_personnelnumber);
      expect(numbers).toEqual(["000001", "000002", "000003"]);

      // 1. Fields added.
      const v2 = clone(WORKER_SOURCE);
      v2.Fields.push({ Name: "Grade", Label: "Grade", Type: "Int" }, { Name: "Nickname", Type: "String", Length: 10 });
      await service.catalog.registerSource(v2);
      const changed = await catalogRow(service, "HcmWorkerEntity");
      expect(changed).toMatchObject({ status: "SourceChanged", isgenerated: true });
      // Until the refresh the entity keeps its old shape.
      const early = await service.request("PATCH", `${WORKERS}(${ids[0]})`, { body: { mshr_grade: 1 } });
      expect(early.status).toBe(400);
      expect((await attributesOf(service, WORKER)).has("mshr_grade")).toBe(false);

      const r2 = await service.request("POST", `virtualentitycatalogs(${changed.virtualentitycatalogid})/Microsoft.Dynamics.CRM.GenerateOrRefresh`);
      expect(r2.status, r2.body).toBe(200);
      expect(json(r2)).toMatchObject({ status: "Refreshed", isgenerated: true });
      expect(json(r2).lastrefreshedon).toEqual(expect.any(String));
      expect(json(r2).statusmessage).toContain("added mshr_grade");
      expect(json(r2).statusmessage).toContain("added mshr_nickname");
      expect(await count(service, WORKERS)).toBe(3);
      expect((await attributesOf(service, WORKER)).get("mshr_grade")).toMatchObject({ AttributeType: "Integer", ExternalName: "Grade" });
      const p1 = await service.request("PATCH", `${WORKERS}(${ids[0]})`, { body: { mshr_grade: 2147483647, mshr_nickname: "0123456789" } });
      expect(p1.status, p1.body).toBe(204);
      const tooLong = await service.request("PATCH", `${WORKERS}(${ids[1]})`, { body: { mshr_nickname: "x".repeat(11) } });
      expect(tooLong.status).toBe(400);

      // 2. Type changed (Int → Int64), length changed, field removed, field added.
      const v3 = clone(v2);
      v3.Fields = v3.Fields.filter((f) => f.Name !== "PositionId");
      v3.Fields.find((f) => f.Name === "Grade")!.Type = "Int64";
      v3.Fields.find((f) => f.Name === "Nickname")!.Length = 40;
      v3.Fields.push({ Name: "Notes", Type: "Memo" });
      await service.catalog.registerSource(v3);
      const r3 = await service.catalog.generateOrRefresh("HcmWorkerEntity");
      expect(r3.changes).toEqual(expect.arrayContaining(["changed mshr_grade", "changed mshr_nickname", "removed mshr_positionid", "added mshr_notes"]));
      expect(r3.changes).toHaveLength(4);
      const row3 = await catalogRow(service, "HcmWorkerEntity");
      expect(row3.status).toBe("Refreshed");
      for (const c of ["changed mshr_grade", "changed mshr_nickname", "removed mshr_positionid", "added mshr_notes"]) expect(row3.statusmessage).toContain(c);

      const attrs = await attributesOf(service, WORKER);
      expect(attrs.get("mshr_grade")).toMatchObject({ AttributeType: "BigInt" });
      expect(attrs.get("mshr_nickname")).toMatchObject({ MaxLength: 40 });
      expect(attrs.get("mshr_notes")).toMatchObject({ AttributeType: "Memo" });
      expect(attrs.has("mshr_positionid")).toBe(false);
      const type = entityTypeXml(await metadataXml(service), WORKER)!;
      expect(type).toMatch(/<Property Name="mshr_grade" Type="Edm.Int64"/);
      expect(type).toMatch(/<Property Name="mshr_nickname" Type="Edm.String" MaxLength="40"/);
      expect(type).not.toContain("mshr_positionid");

      // Every row is still there, with its values.
      const list = await service.request("GET", `${WORKERS}?$orderby=mshr_personnelnumber`);
      expect(list.status, list.body).toBe(200);
      const rows = json(list).value;
      expect(rows.map((w: any) => w.mshr_hcmworkerentityid)).toEqual(ids);
      expect(rows.map((w: any) => w.mshr_personnelnumber)).toEqual(["000001", "000002", "000003"]);
      expect(rows.map((w: any) => w.mshr_firstname)).toEqual(["First0", "First1", "First2"]);
      expect(rows[0]).toMatchObject({ mshr_grade: 2147483647, mshr_nickname: "0123456789", mshr_email: "w0@example.com", mshr_employmentstartdate: "2026-01-15", mshr_notes: null });
      expect(rows[0]).not.toHaveProperty("mshr_positionid");
      const p2 = await service.request("PATCH", `${WORKERS}(${ids[1]})`, { body: { mshr_grade: 2 ** 40, mshr_nickname: "y".repeat(40), mshr_notes: "long text ".repeat(100) } });
      expect(p2.status, p2.body).toBe(204);
      expect(json(await service.request("GET", `${WORKERS}(${ids[1]})?$select=mshr_grade,mshr_nickname`))).toMatchObject({ mshr_grade: 2 ** 40, mshr_nickname: "y".repeat(40) });
      const created = await service.request("POST", WORKERS, { body: { mshr_firstname: "New", mshr_lastname: "Row", mshr_grade: 5 } });
      expect(created.status, created.body).toBe(204);
      expect(await count(service, WORKERS)).toBe(4);

      // 3. Nothing changed since: the refresh says so.
      const again = await service.catalog.generateOrRefresh("HcmWorkerEntity");
      expect(again.changes).toEqual([]);
      const row4 = await catalogRow(service, "HcmWorkerEntity");
      expect(row4).toMatchObject({ status: "Refreshed", statusmessage: "Refreshed: no changes" });
      expect(await count(service, WORKERS)).toBe(4);
    });

    it("between a source change that removes a field and the refresh, the entity keeps answering", async () => {
      await service.catalog.registerSource(clone(WORKER_SOURCE));
      await service.catalog.generateOrRefresh("HcmWorkerEntity");
      const ids = await createWorkers(service, 2);
      const v2 = clone(WORKER_SOURCE);
      v2.Fields = v2.Fields.filter((f) => f.Name !== "PositionId");
      await service.catalog.registerSource(v2);
      expect(await catalogRow(service, "HcmWorkerEntity")).toMatchObject({ status: "SourceChanged" });
      // "A generated entity keeps serving its old shape until it is refreshed."
      const list = await service.request("GET", WORKERS);
      expect(list.status, list.body).toBe(200);
      expect(json(list).value).toHaveLength(2);
      const one = await service.request("GET", `${WORKERS}(${ids[0]})`);
      expect(one.status, one.body).toBe(200);

      await service.catalog.generateOrRefresh("HcmWorkerEntity");
      const after = await service.request("GET", WORKERS);
      expect(after.status, after.body).toBe(200);
      expect(json(after).value).toHaveLength(2);
    });
  });

  describe("concurrency", () => {
    /** Keeps firing the given queries, several at a time, until `work` is done; returns every response. */
    async function pollWhile(work: () => Promise<unknown>, queries: () => Promise<{ status: number; body?: string }>[], pollers = 3) {
      const responses: { status: number; body?: string }[] = [];
      let done = false;
      const poll = async () => {
        do responses.push(...(await Promise.all(queries())));
        while (!done);
      };
      const running = [poll(), (async () => { try { await work(); } finally { done = true; } })(), ...Array.from({ length: pollers - 1 }, poll)];
      await Promise.all(running);
      return responses;
    }

    it("queries running while the source changes and is refreshed keep answering 200", async () => {
      await service.catalog.registerSource(clone(WORKER_SOURCE));
      await service.catalog.generateOrRefresh("HcmWorkerEntity");
      const v1 = clone(WORKER_SOURCE);
      v1.Fields.push({ Name: "Grade", Type: "Int" });
      await service.catalog.registerSource(v1);
      await service.catalog.generateOrRefresh("HcmWorkerEntity");
      await createWorkers(service, 4);
      const catalogId = (await catalogRow(service, "HcmWorkerEntity")).virtualentitycatalogid;

      const v2 = clone(v1);
      v2.Fields.find((f) => f.Name === "Grade")!.Type = "Int64";
      v2.Fields.find((f) => f.Name === "PositionId")!.Length = 60;
      v2.Fields.push({ Name: "Nickname", Type: "String", Length: 30 });

      const queries = () => [
        service.request("GET", `${WORKERS}?$count=true`),
        service.request("GET", `${WORKERS}?$filter=startswith(mshr_firstname,'First')&$orderby=mshr_personnelnumber desc`),
        service.request("GET", `${WORKERS}/$count`),
        service.request("GET", `${WORKERS}(mshr_personnelnumber='000002')`),
        service.request("GET", `EntityDefinitions(LogicalName='${WORKER}')/Attributes`),
        service.request("GET", "$metadata"),
        service.request("GET", "virtualentitycatalogs"),
      ];
      const refreshes: { status: number; body?: string }[] = [];
      const responses = await pollWhile(async () => {
        await service.catalog.registerSource(v2);
        refreshes.push(
          ...(await Promise.all([
            service.request("POST", `virtualentitycatalogs(${catalogId})/Microsoft.Dynamics.CRM.GenerateOrRefresh`),
            service.request("PATCH", `virtualentitycatalogs(${catalogId})`, { body: { isgenerated: true } }),
          ])),
        );
      }, queries);
      expect(responses.length).toBeGreaterThanOrEqual(3 * 7);
      for (const r of responses) expect(r.status, r.body).toBe(200);
      for (const r of responses) {
        const body = r.body!.startsWith("{") ? json(r) : undefined;
        if (body && "@odata.count" in body) expect(body["@odata.count"]).toBe(4);
      }
      expect(refreshes.map((r) => r.status)).toEqual([200, 204]);

      // Afterwards the refreshed entity has the new shape and all its rows.
      const attrs = await attributesOf(service, WORKER);
      expect(attrs.get("mshr_grade")).toMatchObject({ AttributeType: "BigInt" });
      expect(attrs.get("mshr_positionid")).toMatchObject({ MaxLength: 60 });
      expect(attrs.has("mshr_nickname")).toBe(true);
      expect(await count(service, WORKERS)).toBe(4);
      expect(await catalogRow(service, "HcmWorkerEntity")).toMatchObject({ status: "Refreshed", statusmessage: "Refreshed: no changes" });
    });

    it("queries running while a field is removed and refreshed keep answering 200", async () => {
      await service.catalog.registerSource(clone(WORKER_SOURCE));
      await service.catalog.generateOrRefresh("HcmWorkerEntity");
      await createWorkers(service, 3);
      const v2 = clone(WORKER_SOURCE);
      v2.Fields = v2.Fields.filter((f) => f.Name !== "PositionId");
      const responses = await pollWhile(
        async () => {
          await service.catalog.registerSource(v2);
          await service.catalog.generateOrRefresh("HcmWorkerEntity");
        },
        () => [service.request("GET", `${WORKERS}?$count=true`), service.request("GET", `${WORKERS}?$select=mshr_firstname`)],
      );
      expect(responses.filter((r) => r.status !== 200).map((r) => `${r.status} ${r.body}`)).toEqual([]);
      expect(await count(service, WORKERS)).toBe(3);
    });
  });

  describe("storage", () => {
    it("keeps the generated entity's data in the source table under physical column names", async () => {
      await installLinkedInTalentHub(service, { generate: true });
      const r = await service.request("POST", WORKERS, {
        body: { mshr_firstname: "Ada", mshr_lastname: "Lovelace", mshr_email: "ada@example.com", mshr_phonenumber: "+44 20 0000", mshr_employmentstartdate: "2026-04-01", mshr_positionid: "POS-9" },
      });
      expect(r.status, r.body).toBe(204);
      const id = idFrom(r);
      const rows = await service.store.executor.query<Record<string, unknown>>('SELECT * FROM "HcmWorkerEntity"');
      expect(rows).toHaveLength(1);
      const row = rows[0]!;
      // Exactly the source's system columns and fields, under their physical names.
      expect(Object.keys(row).sort()).toEqual([...Object.values(SOURCE_SYSTEM_COLUMNS), ...WORKER_SOURCE.Fields.map((f) => f.Name)].sort());
      expect(Object.keys(row)).toEqual(expect.arrayContaining(["Id", "RecVersion", "PersonnelNumber", "FirstName", "LastName", "Email", "PhoneNumber", "EmploymentStartDate", "PositionId"]));
      expect(row).toMatchObject({ Id: id, PersonnelNumber: "000001", FirstName: "Ada", LastName: "Lovelace", Email: "ada@example.com", PhoneNumber: "+44 20 0000", PositionId: "POS-9" });
      expect(String(row.EmploymentStartDate).slice(0, 10)).toBe("2026-04-01");
      expect(Number(row.RecVersion)).toBe(1);
      // The virtual entity has no table of its own.
      await expect(service.store.executor.query(`SELECT * FROM "${WORKER}"`)).rejects.toThrow();

      // A row written straight to the source table is served through the virtual entity.
      await service.store.executor.execute(
        `INSERT INTO "HcmWorkerEntity" ("Id", "PersonnelNumber", "FirstName", "LastName", "EmploymentStartDate", "RecVersion") VALUES ('22222222-2222-4222-8222-222222222222', 'EXT-1', 'Grace', 'Hopper', '2026-05-02', 1)`,
      );
      const got = await service.request("GET", `${WORKERS}(22222222-2222-4222-8222-222222222222)`);
      expect(got.status, got.body).toBe(200);
      expect(json(got)).toMatchObject({ mshr_personnelnumber: "EXT-1", mshr_firstname: "Grace", mshr_lastname: "Hopper", mshr_employmentstartdate: "2026-05-02", mshr_primaryfield: "EXT-1" });
      const byKey = await service.request("GET", `${WORKERS}(mshr_personnelnumber='EXT-1')?$select=mshr_firstname`);
      expect(byKey.status, byKey.body).toBe(200);
      expect(json(byKey).mshr_firstname).toBe("Grace");

      // An update through OData lands in the physical columns.
      const patch = await service.request("PATCH", `${WORKERS}(${id})`, { body: { mshr_lastname: "King" } });
      expect(patch.status, patch.body).toBe(204);
      const updated = await service.store.executor.query<Record<string, unknown>>(`SELECT "LastName", "RecVersion" FROM "HcmWorkerEntity" WHERE "Id" = '${id}'`);
      expect(updated[0]).toMatchObject({ LastName: "King" });
      expect(Number(updated[0]!.RecVersion)).toBe(2);
    });

    it("keeps generated entities, their rows and the catalog's state across a restart", async () => {
      const file = join(tmpdir(), `vep-catalog-${randomUUID()}.db`);
      const db = kind === "sqlite" ? { database: file, drop: () => rm(file, { force: true }) } : databaseFor(kind);
      try {
        const first = await createService({ security: "none", database: db.database });
        try {
          await installLinkedInTalentHub(first);
          await first.catalog.generateOrRefresh(WORKER_SOURCE.PhysicalName);
          const r = await first.request("POST", WORKERS, { body: { mshr_firstname: "Kept", mshr_lastname: "Row" } });
          expect(r.status, r.body).toBe(204);
        } finally {
          await first.close();
        }
        const second = await createService({ security: "none", database: db.database });
        try {
          const rows = await catalogRows(second as Service);
          expect(new Map(rows.map((r) => [r.physicalname, [r.isgenerated, r.status]]))).toEqual(
            new Map([
              ["HcmWorkerEntity", [true, "Generated"]],
              ["HcmLinkedInExportedCandidateEntity", [false, "NotGenerated"]],
            ]),
          );
          const list = await second.request("GET", `${WORKERS}?$select=mshr_firstname,mshr_personnelnumber`);
          expect(list.status, list.body).toBe(200);
          expect(json(list).value).toMatchObject([{ mshr_firstname: "Kept", mshr_personnelnumber: "000001" }]);
          expect((await second.request("GET", CANDIDATES)).status).toBe(404);
          // The sequence continues where it was.
          const next = await second.request("POST", WORKERS, { body: { mshr_firstname: "Next", mshr_lastname: "Row" }, headers: { Prefer: "return=representation" } });
          expect(next.status, next.body).toBe(201);
          expect(json(next).mshr_personnelnumber).toBe("000002");
        } finally {
          await second.close();
        }
      } finally {
        await db.drop();
      }
    });
  });
});
