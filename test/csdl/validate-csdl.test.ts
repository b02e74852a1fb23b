/**
 * Tests of the CSDL validation kit itself (test/csdl/validate-csdl.ts): it must
 * accept valid documents and reject broken ones, so that tests using it on the
 * served $metadata actually prove something.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { CSDL_FIXTURES_DIR, validateCsdlJson, validateCsdlXml } from "./validate-csdl.js";

const sample = (name: string): string =>
  readFileSync(new URL(`samples/${name}`, CSDL_FIXTURES_DIR), "utf8");

/** Wraps Schema children into a minimal Dataverse-style CSDL XML document. */
const xmlDoc = (schemaBody: string, version = "4.0"): string => `<?xml version="1.0" encoding="utf-8"?>
<edmx:Edmx Version="${version}" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx">
  <edmx:DataServices>
    <Schema Namespace="Microsoft.Dynamics.CRM" Alias="mscrm" xmlns="http://docs.oasis-open.org/odata/ns/edm">
      ${schemaBody}
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>`;

const entityWith = (members: string): string =>
  `<EntityType Name="account"><Key><PropertyRef Name="accountid" /></Key><Property Name="accountid" Type="Edm.Guid" Nullable="false" />${members}</EntityType>`;

describe("validateCsdlXml (OASIS edmx.xsd / edm.xsd via xmllint-wasm)", () => {
  it("accepts the valid Dataverse-style sample (OData 4.0 schemas)", async () => {
    const result = await validateCsdlXml(sample("valid-dataverse.xml"));
    expect(result.errors).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it("picks the 4.01 schemas for Version=\"4.01\" and still accepts the sample", async () => {
    const xml = sample("valid-dataverse.xml").replace('Version="4.0"', 'Version="4.01"');
    expect(await validateCsdlXml(xml)).toEqual({ valid: true, errors: [] });
    // The 4.0 edmx.xsd only allows Version="4.0".
    const forced = await validateCsdlXml(xml, { schemaVersion: "4.0" });
    expect(forced.valid).toBe(false);
    expect(forced.errors.join("\n")).toMatch(/Version/);
  });

  it("rejects an EntityType without Name", async () => {
    const result = await validateCsdlXml(sample("invalid-entitytype-missing-name.xml"));
    expect(result.valid).toBe(false);
    expect(result.errors.join("\n")).toMatch(/EntityType.*'Name' is required/);
  });

  it("rejects an unknown element", async () => {
    const result = await validateCsdlXml(sample("invalid-unknown-element.xml"));
    expect(result.valid).toBe(false);
    expect(result.errors.join("\n")).toMatch(/Column': This element is not expected/);
  });

  it("rejects badly cased or unqualified attribute values", async () => {
    const result = await validateCsdlXml(sample("invalid-facets.xml"));
    expect(result.valid).toBe(false);
    const text = result.errors.join("\n");
    expect(text).toMatch(/attribute 'Nullable': 'False'/);
    expect(text).toMatch(/attribute 'Scale': 'Variable'/);
    expect(text).toMatch(/attribute 'Type': 'String'/);
    expect(text).toMatch(/attribute 'Bool': 'True'/);
    expect(result.errors).toHaveLength(4);
  });

  it("rejects XML that is not well-formed", async () => {
    const result = await validateCsdlXml(
      '<edmx:Edmx Version="4.0" xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx"><edmx:DataServices></edmx:Edmx>',
    );
    expect(result.valid).toBe(false);
    expect(result.errors.join("\n")).toMatch(/parser error/);
  });

  it("rejects a document whose root is not edmx:Edmx", async () => {
    const bareSchema = `<Schema Namespace="Microsoft.Dynamics.CRM" xmlns="http://docs.oasis-open.org/odata/ns/edm">${entityWith("")}</Schema>`;
    const result = await validateCsdlXml(bareSchema);
    expect(result.valid).toBe(false);
    expect(result.errors[0]).toMatch(/document element must be .*Edmx/);
  });

  it("accepts Edm.Untyped and lower-case facet keywords; knows 4.0 vs 4.01 differences", async () => {
    const ok = await validateCsdlXml(
      xmlDoc(
        entityWith(
          '<Property Name="u" Type="Edm.Untyped" /><Property Name="c" Type="Collection(Edm.Untyped)" />' +
            '<Property Name="d" Type="Edm.Decimal" Scale="variable" /><Property Name="s" Type="Edm.String" MaxLength="max" />',
        ),
      ),
    );
    expect(ok).toEqual({ valid: true, errors: [] });

    // Scale="floating" is new in 4.01.
    const floating = entityWith('<Property Name="d" Type="Edm.Decimal" Scale="floating" />');
    expect((await validateCsdlXml(xmlDoc(floating, "4.0"))).valid).toBe(false);
    expect((await validateCsdlXml(xmlDoc(floating, "4.01"))).valid).toBe(true);

    // 4.0: ReturnType must be the last child of a Function (no Annotation after it).
    const fn = '<Function Name="WhoAmI"><ReturnType Type="Edm.String" /><Annotation Term="Org.OData.Core.V1.Description" String="x" /></Function>';
    expect((await validateCsdlXml(xmlDoc(fn, "4.0"))).valid).toBe(false);
    expect((await validateCsdlXml(xmlDoc(fn, "4.01"))).valid).toBe(true);

    // 4.0: Unicode is a Property/TypeDefinition facet only, not allowed on Parameter/ReturnType.
    const param = '<Function Name="f"><Parameter Name="p" Type="Edm.String" Unicode="false" /><ReturnType Type="Edm.String" /></Function>';
    const paramResult = await validateCsdlXml(xmlDoc(param, "4.0"));
    expect(paramResult.errors.join("\n")).toMatch(/attribute 'Unicode': The attribute 'Unicode' is not allowed/);
    expect((await validateCsdlXml(xmlDoc(param, "4.01"))).valid).toBe(true);

    // Both: an EntityContainer needs at least one child; attributes in foreign namespaces are not allowed.
    expect((await validateCsdlXml(xmlDoc(entityWith("") + '<EntityContainer Name="System" />'))).valid).toBe(false);
    expect(
      (await validateCsdlXml(xmlDoc(entityWith('<Property xmlns:x="urn:x" x:hint="1" Name="n" Type="Edm.String" />')))).valid,
    ).toBe(false);
  });
});

describe("validateCsdlJson (OASIS CSDL JSON 4.01 JSON Schema via Ajv)", () => {
  it("accepts the valid Dataverse-style sample, parsed or as text", () => {
    const text = sample("valid-dataverse.json");
    expect(validateCsdlJson(JSON.parse(text))).toEqual({ valid: true, errors: [] });
    expect(validateCsdlJson(text)).toEqual({ valid: true, errors: [] });
  });

  it("rejects an unknown $Kind", () => {
    const result = validateCsdlJson(JSON.parse(sample("invalid-json-unknown-kind.json")));
    expect(result.valid).toBe(false);
    expect(result.errors.join("\n")).toMatch(/\/Microsoft\.Dynamics\.CRM\/account\/\$Kind: must be equal to one of the allowed values/);
  });

  it("rejects wrongly typed facets", () => {
    const result = validateCsdlJson(JSON.parse(sample("invalid-json-bad-facets.json")));
    expect(result.valid).toBe(false);
    const text = result.errors.join("\n");
    expect(text).toMatch(/accountid\/\$Nullable: must be boolean/);
    expect(text).toMatch(/name\/\$MaxLength: must be integer/);
    expect(text).toMatch(/exchangerate\/\$Scale/);
  });

  it("rejects a document without $Version and with unknown $-members", () => {
    const result = validateCsdlJson(JSON.parse(sample("invalid-json-missing-version.json")));
    expect(result.valid).toBe(false);
    const text = result.errors.join("\n");
    expect(text).toMatch(/must have required property '\$Version'/);
    expect(text).toMatch(/must NOT have additional properties \(\$Bogus\)/);
  });

  it("rejects text that is not JSON and non-object documents", () => {
    expect(validateCsdlJson("<edmx:Edmx/>").valid).toBe(false);
    expect(validateCsdlJson(null).valid).toBe(false);
    expect(validateCsdlJson([]).valid).toBe(false);
  });
});
