import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createService, type VirtualEntityService } from "../../src/index.js";
import { installOffices } from "./office-provider.js";

const SEED = [
  { new_officeid: "11111111-1111-4111-8111-111111111111", new_name: "HQ", new_city: "Seattle", new_desks: 400 },
  { new_officeid: "22222222-2222-4222-8222-222222222222", new_name: "Dublin", new_city: "Dublin", new_desks: 120 },
  { new_officeid: "33333333-3333-4333-8333-333333333333", new_name: "Pune", new_city: "Pune", new_desks: 250 },
];

describe("a virtual entity served by a provider that is not SQL-backed", () => {
  let service: VirtualEntityService;
  beforeEach(async () => {
    service = await createService({ database: ":memory:", security: "none" });
    await installOffices(service, SEED);
  });
  afterEach(() => service.close());

  it("answers filtered, ordered, counted queries through the same OData layer", async () => {
    const r = await service.request("GET", "new_offices?$filter=new_desks gt 200&$orderby=new_desks desc&$count=true&$select=new_name");
    expect(r.status).toBe(200);
    const body = JSON.parse(r.body!);
    expect(body["@odata.count"]).toBe(2);
    expect(body.value.map((o: { new_name: string }) => o.new_name)).toEqual(["HQ", "Pune"]);
  });

  it("pages with nextLinks from its own positions", async () => {
    const first = JSON.parse((await service.request("GET", "new_offices?$orderby=new_name", { headers: { Prefer: "odata.maxpagesize=2" } })).body!);
    expect(first.value).toHaveLength(2);
    const next = new URL(first["@odata.nextLink"]);
    const second = JSON.parse((await service.request("GET", next.pathname + next.search)).body!);
    expect([...first.value, ...second.value].map((o: { new_name: string }) => o.new_name)).toEqual(["Dublin", "HQ", "Pune"]);
  });

  it("pages by the same positions as the SQL store, whatever the order: its key, constants, several terms", async () => {
    for (const orderby of ["new_officeid", "1,new_name", "now(),new_desks desc", "new_city,new_officeid desc"]) {
      const names: string[] = [];
      let url: string | undefined = `new_offices?$select=new_name&$orderby=${encodeURIComponent(orderby)}`;
      for (let pages = 0; url && pages < 10; pages++) {
        const r = await service.request("GET", url, { headers: { Prefer: "odata.maxpagesize=1" } });
        expect(r.status, `${orderby}: ${r.body}`).toBe(200);
        const body = JSON.parse(r.body!);
        names.push(...body.value.map((o: { new_name: string }) => o.new_name));
        url = body["@odata.nextLink"] ? new URL(body["@odata.nextLink"]).pathname + new URL(body["@odata.nextLink"]).search : undefined;
      }
      expect(url, orderby).toBeUndefined();
      expect([...names].sort(), orderby).toEqual(["Dublin", "HQ", "Pune"]);
    }
  });

  it("a value that cannot be written as JSON is a logged 500 answer, not a broken response", async () => {
    const errors: unknown[] = [];
    const failing = await createService({ database: ":memory:", security: "none", onError: (e) => errors.push(e) });
    try {
      await installOffices(failing, [{ ...SEED[0]!, new_desks: 10n as unknown as number }]);
      const r = await failing.request("GET", "new_offices");
      expect(r.status).toBe(500);
      expect(JSON.parse(r.body!).error.message).toMatch(/unexpected error/);
      expect(errors).toHaveLength(1);
    } finally {
      await failing.close();
    }
  });

  it("creates, updates with ETags and deletes", async () => {
    const created = await service.request("POST", "new_offices", { body: { new_name: "Oslo", new_desks: 30 }, headers: { Prefer: "return=representation" } });
    expect(created.status).toBe(201);
    const office = JSON.parse(created.body!);
    const stale = await service.request("PATCH", `new_offices(${office.new_officeid})`, { body: { new_desks: 31 }, headers: { "If-Match": 'W/"99"' } });
    expect(stale.status).toBe(412);
    const ok = await service.request("PATCH", `new_offices(${office.new_officeid})`, { body: { new_desks: 31 }, headers: { "If-Match": office["@odata.etag"] } });
    expect(ok.status).toBe(204);
    expect(JSON.parse((await service.request("GET", `new_offices(${office.new_officeid})`)).body!).new_desks).toBe(31);
    expect((await service.request("DELETE", `new_offices(${office.new_officeid})`)).status).toBe(204);
    expect((await service.request("GET", `new_offices(${office.new_officeid})`)).status).toBe(404);
  });

  it("validates payloads from the metadata before the provider sees them", async () => {
    const r = await service.request("POST", "new_offices", { body: { new_name: "X", new_desks: -1 } });
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body!).error.message).toContain("new_desks");
  });

  it("is listed as a virtual entity with its provider", async () => {
    const r = JSON.parse((await service.request("GET", "EntityDefinitions(LogicalName='new_office')?$select=TableType,DataProviderId,ExternalName")).body!);
    expect(r).toMatchObject({ TableType: "Virtual", ExternalName: "offices", DataProviderId: "7d3f0c1e-2b9a-4c55-8e61-4a2f6b9d0c11" });
  });
});
