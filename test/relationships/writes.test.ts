/**
 * Writing relationships: @odata.bind on create and update, $ref links (single-valued, one-to-many and
 * many-to-many), deep insert in one transaction, upsert by primary and alternate key (also concurrent),
 * and alternate-key addressing.
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installLinkedInTalentHub } from "../../src/linkedin/talent-hub.js";
import { json, openTestService, STORE_KINDS, type StoreKind } from "../helpers/stores.js";
import { count, counts, create, defineCrm, getJson, idFrom, ROOT, type Service } from "./model.js";

const MISSING = "00000000-0000-0000-0000-0000000000ff";

describe.each(STORE_KINDS)("relationship writes (%s)", (kind: StoreKind) => {
  let service: Service;
  let seq = 0;
  const unique = (prefix: string) => `${prefix}-${++seq}`;

  beforeAll(async () => {
    service = await openTestService(kind);
    await defineCrm(service);
  });
  afterAll(async () => {
    await service?.dispose();
  });

  const get = (url: string, headers?: Record<string, string>) => getJson(service, url, headers);
  const account = (name = unique("acct")) => create(service, "new_accounts", { new_name: name, new_code: unique("A") });
  const contact = (extra: Record<string, unknown> = {}) => create(service, "new_contacts", { new_name: unique("contact"), ...extra });
  const tag = () => create(service, "new_tags", { new_name: unique("tag") });
  const accountOf = async (contactId: string) => (await get(`new_contacts(${contactId})?$select=_new_accountref_value`))._new_accountref_value;
  const tagIds = async (contactId: string) => ((await get(`new_contacts(${contactId})/new_tags?$select=new_name`)).value as any[]).map((t) => t.new_tagid).sort();

  // ---------------------------------------------------------------- @odata.bind

  describe("@odata.bind", () => {
    it("sets a lookup on POST, with a relative, a root-relative or an absolute URL, or an alternate key", async () => {
      const a = await account();
      const code = (await get(`new_accounts(${a})?$select=new_code`)).new_code;
      for (const ref of [`/new_accounts(${a})`, `new_accounts(${a})`, `${ROOT}/new_accounts(${a})`, `/new_accounts(${a.toUpperCase()})`, `/new_accounts(new_code='${code}')`]) {
        const id = await contact({ "new_accountref@odata.bind": ref });
        expect(await accountOf(id), ref).toBe(a);
      }
    });

    it("sets and changes a lookup on PATCH, and null clears it", async () => {
      const [a1, a2] = [await account(), await account()];
      const c = await contact();
      expect(await accountOf(c)).toBeNull();
      let r = await service.request("PATCH", `new_contacts(${c})`, { body: { "new_accountref@odata.bind": `${ROOT}/new_accounts(${a1})` } });
      expect(r.status, r.body).toBe(204);
      expect(await accountOf(c)).toBe(a1);
      r = await service.request("PATCH", `new_contacts(${c})`, { body: { "new_accountref@odata.bind": `/new_accounts(${a2})`, new_city: "Oslo" } });
      expect(r.status, r.body).toBe(204);
      expect(await get(`new_contacts(${c})?$select=new_city,_new_accountref_value`)).toMatchObject({ new_city: "Oslo", _new_accountref_value: a2 });
      r = await service.request("PATCH", `new_contacts(${c})`, { body: { "new_accountref@odata.bind": null } });
      expect(r.status, r.body).toBe(204);
      expect(await accountOf(c)).toBeNull();
      // Dataverse also takes the navigation property's own name with null.
      expect((await service.request("PATCH", `new_contacts(${c})`, { body: { "new_accountref@odata.bind": `/new_accounts(${a1})` } })).status).toBe(204);
      r = await service.request("PATCH", `new_contacts(${c})`, { body: { new_accountref: null, new_city: "Bergen" } });
      expect(r.status, r.body).toBe(204);
      expect(await get(`new_contacts(${c})?$select=new_city,_new_accountref_value`)).toMatchObject({ new_city: "Bergen", _new_accountref_value: null });
    });

    it("returns the written record with $expand on create and on update (Prefer: return=representation)", async () => {
      const a = await account("Expanded Ltd");
      const r = await service.request("POST", "new_contacts?$select=new_name&$expand=new_accountref($select=new_name)", { body: { new_name: "With account", "new_accountref@odata.bind": `/new_accounts(${a})` }, headers: { Prefer: "return=representation" } });
      expect(r.status, r.body).toBe(201);
      const created = json(r);
      expect(created.new_accountref).toMatchObject({ new_accountid: a, new_name: "Expanded Ltd" });
      expect(created["@odata.context"]).toContain("new_accountref(new_name)");
      const c = created.new_contactid as string;
      await service.request("POST", "new_tasks", { body: { new_name: "task of c", "new_contactref@odata.bind": `/new_contacts(${c})` } });
      const u = await service.request("PATCH", `new_contacts(${c})?$select=new_city&$expand=new_tasks($select=new_name),new_accountref($select=new_name)`, { body: { new_city: "Turku" }, headers: { Prefer: "return=representation" } });
      expect(u.status, u.body).toBe(200);
      const updated = json(u);
      expect(updated.new_city).toBe("Turku");
      expect(updated.new_tasks.map((t: any) => t.new_name)).toEqual(["task of c"]);
      expect(updated.new_accountref.new_name).toBe("Expanded Ltd");
    });

    it("an unknown navigation in a write's $expand is a 400 and writes nothing", async () => {
      const before = await counts(service);
      const r = await service.request("POST", "new_contacts?$expand=new_nothing", { body: { new_name: "never" }, headers: { Prefer: "return=representation" } });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain("new_nothing");
      expect(await counts(service)).toEqual(before);
    });

    it("ignores the @odata.context of a payload a client received and sends back", async () => {
      const r = await service.request("POST", "new_accounts", { body: { "@odata.context": `${ROOT}/$metadata#new_accounts/$entity`, new_name: "From a template" } });
      expect(r.status, r.body).toBe(204);
      const other = await service.request("POST", "new_accounts", { body: { "@odata.count": 1, new_name: "x" } });
      expect(other.status, "other control information is still refused").toBe(400);
      expect(json(other).error.message).toContain("@odata.count");
    });

    it("returns the bound lookup with Prefer: return=representation", async () => {
      const a = await account("Represented Ltd");
      const r = await service.request("POST", "new_contacts?$select=new_name,_new_accountref_value", { body: { new_name: "Rep", "new_accountref@odata.bind": `/new_accounts(${a})` }, headers: { Prefer: 'return=representation,odata.include-annotations="*"' } });
      expect(r.status, r.body).toBe(201);
      const body = json(r);
      expect(body._new_accountref_value).toBe(a);
      expect(body["_new_accountref_value@OData.Community.Display.V1.FormattedValue"]).toBe("Represented Ltd");
    });

    it("a bind to a missing row is a 400 naming the navigation property and the id; nothing is written", async () => {
      const before = await counts(service);
      const r = await service.request("POST", "new_contacts", { body: { new_name: "Orphan", "new_accountref@odata.bind": `/new_accounts(${MISSING})` } });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain("new_accountref");
      expect(json(r).error.message).toContain(MISSING);
      expect(await counts(service)).toEqual(before);

      const a = await account();
      const c = await contact({ "new_accountref@odata.bind": `/new_accounts(${a})`, new_city: "Riga" });
      const p = await service.request("PATCH", `new_contacts(${c})`, { body: { new_city: "Lima", "new_accountref@odata.bind": `/new_accounts(${MISSING})` } });
      expect(p.status, p.body).toBe(400);
      expect(json(p).error.message).toContain("new_accountref");
      expect(json(p).error.message).toContain(MISSING);
      expect(await get(`new_contacts(${c})?$select=new_city,_new_accountref_value`)).toMatchObject({ new_city: "Riga", _new_accountref_value: a });

      const byKey = await service.request("POST", "new_contacts", { body: { new_name: "Orphan", "new_accountref@odata.bind": "/new_accounts(new_code='NO-SUCH-CODE')" } });
      expect(byKey.status, byKey.body).toBe(400);
      expect(json(byKey).error.message).toContain("new_accountref");
      expect(json(byKey).error.message).toContain("NO-SUCH-CODE");
      expect(await counts(service)).toEqual({ ...before, new_accounts: before.new_accounts! + 1, new_contacts: before.new_contacts! + 1 });
    });

    it("a bind to the wrong entity set, to an unknown navigation property or with a malformed value is a 400", async () => {
      const t = await tag();
      const before = await count(service, "new_contacts");
      for (const [body, what] of [
        [{ new_name: "x", "new_accountref@odata.bind": `/new_tags(${t})` }, "new_accountref"],
        [{ new_name: "x", "new_nope@odata.bind": `/new_accounts(${MISSING})` }, "new_nope"],
        [{ new_name: "x", "new_accountref@odata.bind": 42 }, "new_accountref"],
        [{ new_name: "x", "new_accountref@odata.bind": "/new_accounts(not-a-guid)" }, undefined],
      ] as const) {
        const r = await service.request("POST", "new_contacts", { body });
        expect(r.status, `${JSON.stringify(body)}: ${r.body}`).toBe(400);
        if (what) expect(json(r).error.message).toContain(what);
      }
      expect(await count(service, "new_contacts")).toBe(before);
    });
  });

  // ---------------------------------------------------------------- $ref

  describe("$ref", () => {
    it("PUT set(id)/single-valued/$ref sets the lookup; DELETE set(id)/single-valued/$ref clears it", async () => {
      const [a1, a2] = [await account(), await account()];
      const c = await contact();
      let r = await service.request("PUT", `new_contacts(${c})/new_accountref/$ref`, { body: { "@odata.id": `${ROOT}/new_accounts(${a1})` } });
      expect(r.status, r.body).toBe(204);
      expect(await accountOf(c)).toBe(a1);
      r = await service.request("PUT", `new_contacts(${c})/new_accountref/$ref`, { body: { "@odata.id": `new_accounts(${a2})` } });
      expect(r.status, r.body).toBe(204);
      expect(await accountOf(c)).toBe(a2);
      r = await service.request("DELETE", `new_contacts(${c})/new_accountref/$ref`);
      expect(r.status, r.body).toBe(204);
      expect(await accountOf(c)).toBeNull();
      expect((await service.request("GET", `new_contacts(${c})/new_accountref`)).status).toBe(204);
    });

    it("PUT $ref to a missing row or to the wrong set is refused and changes nothing", async () => {
      const a = await account();
      const c = await contact({ "new_accountref@odata.bind": `/new_accounts(${a})` });
      const t = await tag();
      for (const ref of [`${ROOT}/new_accounts(${MISSING})`, `${ROOT}/new_tags(${t})`]) {
        const r = await service.request("PUT", `new_contacts(${c})/new_accountref/$ref`, { body: { "@odata.id": ref } });
        expect(r.status, r.body).toBeGreaterThanOrEqual(400);
        expect(r.status, r.body).toBeLessThan(500);
      }
      expect(await accountOf(c)).toBe(a);
      const missing = await service.request("PUT", `new_contacts(${MISSING})/new_accountref/$ref`, { body: { "@odata.id": `${ROOT}/new_accounts(${a})` } });
      expect(missing.status).toBe(404);
    });

    it("POST set(id)/one-to-many/$ref sets the related row's lookup; DELETE set(id)/nav(otherId)/$ref clears it", async () => {
      const a = await account();
      const c = await contact();
      let r = await service.request("POST", `new_accounts(${a})/new_contacts/$ref`, { body: { "@odata.id": `${ROOT}/new_contacts(${c})` } });
      expect(r.status, r.body).toBe(204);
      expect(await accountOf(c)).toBe(a);
      expect((await get(`new_accounts(${a})/new_contacts`)).value.map((x: any) => x.new_contactid)).toEqual([c]);
      r = await service.request("DELETE", `new_accounts(${a})/new_contacts(${c})/$ref`);
      expect(r.status, r.body).toBe(204);
      expect(await accountOf(c)).toBeNull();
    });

    it("many-to-many: POST set(id)/nav/$ref associates, from either side", async () => {
      const c = await contact();
      const [t1, t2] = [await tag(), await tag()];
      let r = await service.request("POST", `new_contacts(${c})/new_tags/$ref`, { body: { "@odata.id": `${ROOT}/new_tags(${t1})` } });
      expect(r.status, r.body).toBe(204);
      r = await service.request("POST", `new_tags(${t2})/new_contacts/$ref`, { body: { "@odata.id": `${ROOT}/new_contacts(${c})` } });
      expect(r.status, r.body).toBe(204);
      expect(await tagIds(c)).toEqual([t1, t2].sort());
      expect((await get(`new_tags(${t2})/new_contacts`)).value.map((x: any) => x.new_contactid)).toEqual([c]);
    });

    it("many-to-many: DELETE set(id)/nav(otherId)/$ref and DELETE set(id)/nav/$ref?$id=<url> dissociate", async () => {
      const c = await contact();
      const [t1, t2, t3] = [await tag(), await tag(), await tag()];
      for (const t of [t1, t2, t3]) expect((await service.request("POST", `new_contacts(${c})/new_tags/$ref`, { body: { "@odata.id": `${ROOT}/new_tags(${t})` } })).status).toBe(204);
      let r = await service.request("DELETE", `new_contacts(${c})/new_tags(${t1})/$ref`);
      expect(r.status, r.body).toBe(204);
      expect(await tagIds(c)).toEqual([t2, t3].sort());
      r = await service.request("DELETE", `new_contacts(${c})/new_tags/$ref?$id=${encodeURIComponent(`${ROOT}/new_tags(${t2})`)}`);
      expect(r.status, r.body).toBe(204);
      expect(await tagIds(c)).toEqual([t3]);
      r = await service.request("DELETE", `new_tags(${t3})/new_contacts(${c})/$ref`);
      expect(r.status, r.body).toBe(204);
      expect(await tagIds(c)).toEqual([]);
      // the rows themselves stay
      expect((await service.request("GET", `new_tags(${t1})`)).status).toBe(200);
    });

    it("many-to-many: associating a missing row is refused and links nothing", async () => {
      const c = await contact();
      const links = (await counts(service)).new_contact_tag;
      const r = await service.request("POST", `new_contacts(${c})/new_tags/$ref`, { body: { "@odata.id": `${ROOT}/new_tags(${MISSING})` } });
      expect(r.status, r.body).toBeGreaterThanOrEqual(400);
      expect(r.status, r.body).toBeLessThan(500);
      expect((await counts(service)).new_contact_tag).toBe(links);
      const noBody = await service.request("DELETE", `new_contacts(${c})/new_tags/$ref`);
      expect(noBody.status, noBody.body).toBe(400);
    });
  });

  // ---------------------------------------------------------------- deleting related rows

  describe("deleting a related row", () => {
    it("does not leave a child's lookup pointing at a deleted parent (refused, or the link removed as Dataverse's default RemoveLink does)", async () => {
      const a = await account();
      const c = await contact({ "new_accountref@odata.bind": `/new_accounts(${a})` });
      const d = await service.request("DELETE", `new_accounts(${a})`);
      const parentGone = (await service.request("GET", `new_accounts(${a})`)).status === 404;
      if (d.status < 300) expect(parentGone).toBe(true);
      else expect(parentGone).toBe(false);
      const child = await get(`new_contacts(${c})?$select=_new_accountref_value&$expand=new_accountref($select=new_name)`);
      if (parentGone) {
        expect(child._new_accountref_value, "lookup of a contact whose account was deleted").toBeNull();
        expect(child.new_accountref).toBeNull();
      } else expect(child._new_accountref_value).toBe(a);
    });

    it("removes the many-to-many links of a deleted row", async () => {
      const c = await contact();
      const t = await tag();
      expect((await service.request("POST", `new_contacts(${c})/new_tags/$ref`, { body: { "@odata.id": `${ROOT}/new_tags(${t})` } })).status).toBe(204);
      const ex = service.store.executor;
      const linksOf = async () => Number((await ex.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${ex.dialect.quote("new_contact_tag")} WHERE ${ex.dialect.quote("new_tagid")} = ${ex.dialect.placeholder(1)}`, [t]))[0]!.n);
      expect(await linksOf()).toBe(1);
      const d = await service.request("DELETE", `new_tags(${t})`);
      expect(d.status, d.body).toBe(204);
      expect(await tagIds(c)).toEqual([]);
      // a new row that happens to get the deleted row's id (an upsert by id) must not inherit its links
      const reborn = await service.request("PATCH", `new_tags(${t})`, { body: { new_name: "reborn" } });
      expect(reborn.status, reborn.body).toBe(204);
      expect(await tagIds(c), "links of a deleted tag resurface on a new tag with its id").toEqual([]);
      expect(await linksOf(), "intersect rows of the deleted tag").toBe(0);
    });
  });

  // ---------------------------------------------------------------- deep insert

  describe("deep insert", () => {
    function deepAccount(marker: string, overrides: { task?: Record<string, unknown>; tag?: Record<string, unknown>; contact2?: Record<string, unknown> } = {}) {
      return {
        new_name: `Deep ${marker}`,
        new_code: `D-${marker}`,
        new_contacts: [
          {
            new_name: `First ${marker}`,
            new_age: 41,
            new_tasks: [
              { new_name: `Call ${marker}`, new_priority: 2 },
              { new_name: `Mail ${marker}`, new_priority: 3, ...overrides.task },
            ],
            new_tags: [{ new_name: `Tag ${marker}`, ...overrides.tag }],
          },
          { new_name: `Second ${marker}`, ...overrides.contact2 },
        ],
      };
    }

    it("creates a parent with collection-valued children, grandchildren and many-to-many rows in one request (201 with them all)", async () => {
      const before = await counts(service);
      const r = await service.request("POST", "new_accounts", { body: deepAccount("ok"), headers: { Prefer: "return=representation" } });
      expect(r.status, r.body).toBe(201);
      const body = json(r);
      const id = idFrom(r, "new_accounts");
      expect(body.new_accountid).toBe(id);
      expect(body["@odata.etag"]).toMatch(/^W\/"\d+"$/);
      expect(body.new_contacts).toHaveLength(2);
      expect(body.new_contacts[0].new_tasks).toHaveLength(2);
      expect(body.new_contacts[0].new_tags).toHaveLength(1);
      expect(body.new_contacts[0]._new_accountref_value).toBe(id);
      expect(body.new_contacts[0].new_tasks[1]).toMatchObject({ new_name: "Mail ok", new_priority: 3, _new_contactref_value: body.new_contacts[0].new_contactid });
      expect(await counts(service)).toEqual({ ...before, new_accounts: before.new_accounts! + 1, new_contacts: before.new_contacts! + 2, new_tasks: before.new_tasks! + 2, new_tags: before.new_tags! + 1, new_contact_tag: before.new_contact_tag! + 1 });
      // all linked as nested
      const stored = await get(`new_accounts(${id})?$expand=new_contacts($orderby=new_name;$expand=new_tasks($orderby=new_name),new_tags)`);
      expect(stored.new_contacts.map((c: any) => c.new_name)).toEqual(["First ok", "Second ok"]);
      expect(stored.new_contacts[0].new_tasks.map((t: any) => t.new_name)).toEqual(["Call ok", "Mail ok"]);
      expect(stored.new_contacts[0].new_tags.map((t: any) => t.new_tagid)).toEqual([body.new_contacts[0].new_tags[0].new_tagid]);
      expect(stored.new_contacts[1].new_tasks).toEqual([]);
    });

    it("without return=representation answers 204 with the parent's OData-EntityId", async () => {
      const r = await service.request("POST", "new_accounts", { body: deepAccount("min") });
      expect(r.status, r.body).toBe(204);
      const id = idFrom(r, "new_accounts");
      expect((await get(`new_accounts(${id})/new_contacts`)).value).toHaveLength(2);
    });

    it("creates a child with a nested single-valued parent (and the parent's own nested row)", async () => {
      const before = await counts(service);
      const r = await service.request("POST", "new_tasks", {
        body: { new_name: "Nested up", new_contactref: { new_name: "Up contact", new_accountref: { new_name: "Up account", new_code: "D-up" } } },
        headers: { Prefer: "return=representation" },
      });
      expect(r.status, r.body).toBe(201);
      const body = json(r);
      expect(body.new_contactref.new_name).toBe("Up contact");
      expect(body.new_contactref.new_accountref.new_name).toBe("Up account");
      expect(body._new_contactref_value).toBe(body.new_contactref.new_contactid);
      const stored = await get(`new_tasks(${body.new_taskid})?$expand=new_contactref($expand=new_accountref)`);
      expect(stored.new_contactref.new_accountref.new_code).toBe("D-up");
      expect(await counts(service)).toEqual({ ...before, new_accounts: before.new_accounts! + 1, new_contacts: before.new_contacts! + 1, new_tasks: before.new_tasks! + 1 });
    });

    it.each([
      ["an invalid grandchild (priority out of range)", { task: { new_priority: 99 } }, "new_priority"],
      ["a many-to-many row missing its required name", { tag: { new_name: null } }, "new_name"],
      ["a second child with an unknown attribute", { contact2: { new_nope: 1 } }, "new_nope"],
      ["a grandchild bound to a missing row", { task: { "new_contactref@odata.bind": `/new_contacts(${MISSING})` } }, "new_contactref"],
    ] as const)("with %s is a 400 and writes nothing at all", async (_what, overrides, named) => {
      const before = await counts(service);
      const r = await service.request("POST", "new_accounts", { body: deepAccount(unique("bad"), overrides as any), headers: { Prefer: "return=representation" } });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain(named);
      expect(await counts(service)).toEqual(before);
    });

    it("with a nested single-valued parent that is invalid is a 400 and writes nothing", async () => {
      const before = await counts(service);
      const r = await service.request("POST", "new_tasks", { body: { new_name: "t", new_contactref: { new_name: "c", new_age: -5, new_accountref: { new_name: "a" } } } });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain("new_age");
      expect(await counts(service)).toEqual(before);
    });

    it("with a nested child duplicating an alternate key is a 4xx and writes nothing", async () => {
      await contact({ new_code: "DUP-DEEP" });
      const before = await counts(service);
      const r = await service.request("POST", "new_accounts", { body: deepAccount(unique("dup"), { contact2: { new_code: "DUP-DEEP" } }) });
      expect(r.status, r.body).toBeGreaterThanOrEqual(400);
      expect(r.status, r.body).toBeLessThan(500);
      expect(await counts(service)).toEqual(before);
    });
  });

  // ---------------------------------------------------------------- upsert

  describe("upsert", () => {
    it("PATCH to a missing primary key creates the row (204 + OData-EntityId); a second PATCH updates it", async () => {
      const id = randomUUID();
      const before = await count(service, "new_accounts");
      let r = await service.request("PATCH", `new_accounts(${id})`, { body: { new_name: "Upserted", new_rank: 1 } });
      expect(r.status, r.body).toBe(204);
      expect(r.headers["OData-EntityId"]).toBe(`${ROOT}/new_accounts(${id})`);
      expect(await get(`new_accounts(${id})?$select=new_name,new_rank`)).toMatchObject({ new_accountid: id, new_name: "Upserted", new_rank: 1 });
      r = await service.request("PATCH", `new_accounts(${id})`, { body: { new_rank: 2 } });
      expect(r.status, r.body).toBe(204);
      expect(await get(`new_accounts(${id})?$select=new_name,new_rank`)).toMatchObject({ new_name: "Upserted", new_rank: 2 });
      expect(await count(service, "new_accounts")).toBe(before + 1);
    });

    it("If-Match: * makes it update-only: 404 for a missing row (nothing created), 204 for an existing one", async () => {
      const id = randomUUID();
      const before = await count(service, "new_accounts");
      const r = await service.request("PATCH", `new_accounts(${id})`, { body: { new_name: "Never" }, headers: { "If-Match": "*" } });
      expect(r.status, r.body).toBe(404);
      expect(await count(service, "new_accounts")).toBe(before);
      const byKey = await service.request("PATCH", "new_accounts(new_code='NEVER-1')", { body: { new_name: "Never" }, headers: { "If-Match": "*" } });
      expect(byKey.status, byKey.body).toBe(404);
      expect(await count(service, "new_accounts")).toBe(before);
      const existing = await account();
      const ok = await service.request("PATCH", `new_accounts(${existing})`, { body: { new_rank: 5 }, headers: { "If-Match": "*" } });
      expect(ok.status, ok.body).toBe(204);
      expect((await get(`new_accounts(${existing})`)).new_rank).toBe(5);
    });

    it("If-None-Match: * makes it create-only: 412 for an existing row (unchanged), 204 for a new one", async () => {
      const existing = await account("Kept");
      const r = await service.request("PATCH", `new_accounts(${existing})`, { body: { new_name: "Overwritten" }, headers: { "If-None-Match": "*" } });
      expect(r.status, r.body).toBe(412);
      expect((await get(`new_accounts(${existing})`)).new_name).toBe("Kept");
      const id = randomUUID();
      const created = await service.request("PATCH", `new_accounts(${id})`, { body: { new_name: "Fresh" }, headers: { "If-None-Match": "*" } });
      expect(created.status, created.body).toBe(204);
      expect((await get(`new_accounts(${id})`)).new_name).toBe("Fresh");
      const code = (await get(`new_accounts(${existing})`)).new_code;
      const byKey = await service.request("PATCH", `new_accounts(new_code='${code}')`, { body: { new_name: "Overwritten" }, headers: { "If-None-Match": "*" } });
      expect(byKey.status, byKey.body).toBe(412);
      expect((await get(`new_accounts(${existing})`)).new_name).toBe("Kept");
    });

    it("an upsert that creates validates the payload like a POST (400, nothing created)", async () => {
      const before = await count(service, "new_contacts");
      const r = await service.request("PATCH", `new_contacts(${randomUUID()})`, { body: { new_age: 30 } });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain("new_name");
      const r2 = await service.request("PATCH", "new_contacts(new_code='UPS-BAD')", { body: { new_name: "x", new_age: 999 } });
      expect(r2.status, r2.body).toBe(400);
      expect(await count(service, "new_contacts")).toBe(before);
    });

    it("an upsert by alternate key whose payload names another key value is a 400 and creates nothing", async () => {
      const before = await count(service, "new_accounts");
      const r = await service.request("PATCH", "new_accounts(new_code='UPS-URL')", { body: { new_name: "Mismatch", new_code: "UPS-BODY" } });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain("new_code");
      expect(await count(service, "new_accounts")).toBe(before);
    });

    it("an upsert by alternate key creates the row with the key's value, then updates the same row", async () => {
      const before = await count(service, "new_accounts");
      let r = await service.request("PATCH", "new_accounts(new_code='UPS-1')", { body: { new_name: "By key" } });
      expect(r.status, r.body).toBe(204);
      const id = idFrom(r, "new_accounts");
      expect(await get(`new_accounts(${id})?$select=new_name,new_code`)).toMatchObject({ new_name: "By key", new_code: "UPS-1" });
      r = await service.request("PATCH", "new_accounts(new_code='UPS-1')", { body: { new_name: "By key again", new_code: "UPS-1" }, headers: { Prefer: "return=representation" } });
      expect(r.status, r.body).toBe(200);
      expect(json(r)).toMatchObject({ new_accountid: id, new_name: "By key again", new_code: "UPS-1" });
      expect(await count(service, "new_accounts")).toBe(before + 1);
    });
  });

  // ---------------------------------------------------------------- alternate keys

  describe("alternate-key addressing", () => {
    it("GET, PATCH and DELETE set(new_code='X')", async () => {
      const id = await create(service, "new_accounts", { new_name: "Keyed", new_code: "KEY-1" });
      const got = await get("new_accounts(new_code='KEY-1')?$select=new_name");
      expect(got).toMatchObject({ new_accountid: id, new_name: "Keyed" });
      const p = await service.request("PATCH", "new_accounts(new_code='KEY-1')", { body: { new_rank: 4 } });
      expect(p.status, p.body).toBe(204);
      expect(p.headers["OData-EntityId"]).toBe(`${ROOT}/new_accounts(${id})`);
      expect((await get(`new_accounts(${id})`)).new_rank).toBe(4);
      const c = await contact({ "new_accountref@odata.bind": `/new_accounts(${id})` });
      const nav = await get("new_accounts(new_code='KEY-1')/new_contacts?$select=new_name");
      expect(nav.value.map((x: any) => x.new_contactid)).toEqual([c]);
      const d = await service.request("DELETE", "new_accounts(new_code='KEY-1')");
      expect(d.status, d.body).toBe(204);
      expect((await service.request("GET", `new_accounts(${id})`)).status).toBe(404);
      expect((await service.request("GET", "new_accounts(new_code='KEY-1')")).status).toBe(404);
      expect((await service.request("DELETE", "new_accounts(new_code='KEY-1')")).status).toBe(404);
    });

    it("a key value with a quote, and keys that are not keys", async () => {
      const id = await create(service, "new_accounts", { new_name: "Quoted", new_code: "O'Neil" });
      expect((await get("new_accounts(new_code='O''Neil')")).new_accountid).toBe(id);
      const notKey = await service.request("GET", "new_accounts(new_name='Quoted')");
      expect(notKey.status, notKey.body).toBe(400);
      expect(json(notKey).error.message).toContain("new_name");
    });

    it("POST of a duplicate alternate key is a 4xx (not 500) and writes nothing", async () => {
      await create(service, "new_accounts", { new_name: "Original", new_code: "DUP-1" });
      const before = await count(service, "new_accounts");
      const r = await service.request("POST", "new_accounts", { body: { new_name: "Copy", new_code: "DUP-1" } });
      expect(r.status, r.body).toBeGreaterThanOrEqual(400);
      expect(r.status, r.body).toBeLessThan(500);
      expect(json(r).error.message).toContain("new_code");
      expect(await count(service, "new_accounts")).toBe(before);
      expect((await get("new_accounts(new_code='DUP-1')")).new_name).toBe("Original");
      const other = await account();
      const p = await service.request("PATCH", `new_accounts(${other})`, { body: { new_code: "DUP-1" } });
      expect(p.status, p.body).toBeGreaterThanOrEqual(400);
      expect(p.status, p.body).toBeLessThan(500);
    });

    it("10 concurrent upserts of the same new alternate key all succeed and leave exactly one row", async () => {
      const before = await count(service, "new_contacts");
      const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => service.request("PATCH", "new_contacts(new_code='RACE-1')", { body: { new_name: `racer ${i}`, new_age: 20 + i } })));
      for (const r of responses) {
        expect(r.status, r.body).toBeGreaterThanOrEqual(200);
        expect(r.status, r.body).toBeLessThan(300);
      }
      expect(await count(service, "new_contacts")).toBe(before + 1);
      const rows = (await get("new_contacts?$filter=new_code eq 'RACE-1'")).value;
      expect(rows).toHaveLength(1);
      expect(new Set(responses.map((r) => r.headers["OData-EntityId"]))).toEqual(new Set([`${ROOT}/new_contacts(${rows[0].new_contactid})`]));
      expect(rows[0].new_name).toMatch(/^racer \d$/);
    });

    it("10 concurrent upserts of the same new primary key all succeed and leave exactly one row", async () => {
      const before = await count(service, "new_contacts");
      const id = randomUUID();
      const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => service.request("PATCH", `new_contacts(${id})`, { body: { new_name: `pk racer ${i}` } })));
      for (const r of responses) expect(r.status, r.body).toBeLessThan(300);
      expect(responses.filter((r) => r.status === 204 && r.headers["OData-EntityId"] === `${ROOT}/new_contacts(${id})`)).toHaveLength(10);
      expect(await count(service, "new_contacts")).toBe(before + 1);
      expect((await get(`new_contacts(${id})?$select=new_name`)).new_name).toMatch(/^pk racer \d$/);
    });

    it("concurrent upserts of several new keys leave one row per key", async () => {
      const before = await count(service, "new_contacts");
      const keys = ["RACE-A", "RACE-B", "RACE-C"];
      const responses = await Promise.all(Array.from({ length: 12 }, (_, i) => service.request("PATCH", `new_contacts(new_code='${keys[i % 3]}')`, { body: { new_name: `r${i}` } })));
      for (const r of responses) expect(r.status, r.body).toBeLessThan(300);
      expect(await count(service, "new_contacts")).toBe(before + 3);
    });
  });
});

describe.each(STORE_KINDS)("LinkedIn Talent Hub re-export by alternate key (%s)", (kind: StoreKind) => {
  const CANDIDATES = "mshr_hcmlinkedinexportedcandidateentities";
  let service: Service;

  beforeAll(async () => {
    service = await openTestService(kind);
    await installLinkedInTalentHub(service, { generate: true });
  });
  afterAll(async () => {
    await service?.dispose();
  });

  const exported = (overrides: Record<string, unknown> = {}) => ({
    mshr_candidateid: "ATS-42",
    mshr_firstname: "Ingrid",
    mshr_lastname: "Solberg",
    mshr_email: "ingrid.solberg@example.com",
    mshr_startdate: "2026-09-01",
    mshr_jobtitle: "Platform engineer",
    ...overrides,
  });

  it("exporting the same candidate twice by PATCH set(mshr_candidateid='ATS-42') ends with one row, updated", async () => {
    const first = await service.request("PATCH", `${CANDIDATES}(mshr_candidateid='ATS-42')`, { body: exported() });
    expect(first.status, first.body).toBe(204);
    const id = idFrom(first, CANDIDATES);
    const second = await service.request("PATCH", `${CANDIDATES}(mshr_candidateid='ATS-42')`, { body: exported({ mshr_jobtitle: "Staff engineer" }) });
    expect(second.status, second.body).toBe(204);
    expect(idFrom(second, CANDIDATES)).toBe(id);
    const rows = json(await service.request("GET", `${CANDIDATES}?$filter=mshr_candidateid eq 'ATS-42'`)).value;
    expect(rows).toHaveLength(1);
    expect(rows[0].mshr_jobtitle).toBe("Staff engineer");
    expect(Number((await service.request("GET", `${CANDIDATES}/$count`)).body)).toBe(1);
  });

  it("the candidate is addressable by its alternate key and its worker lookup binds and expands", async () => {
    const worker = await service.request("POST", "mshr_hcmworkerentities", { body: { mshr_firstname: "Ingrid", mshr_lastname: "Solberg" } });
    expect(worker.status, worker.body).toBe(204);
    const workerId = idFrom(worker, "mshr_hcmworkerentities");
    const r = await service.request("PUT", `${CANDIDATES}(mshr_candidateid='ATS-42')/mshr_fk_worker_id/$ref`, { body: { "@odata.id": `${ROOT}/mshr_hcmworkerentities(${workerId})` } });
    expect(r.status, r.body).toBe(204);
    const candidate = json(await service.request("GET", `${CANDIDATES}(mshr_candidateid='ATS-42')?$select=mshr_candidateid,_mshr_fk_worker_id_value&$expand=mshr_fk_worker_id($select=mshr_lastname)`));
    expect(candidate._mshr_fk_worker_id_value).toBe(workerId);
    expect(candidate.mshr_fk_worker_id.mshr_lastname).toBe("Solberg");
    const back = json(await service.request("GET", `mshr_hcmworkerentities(${workerId})?$expand=mshr_hcmlinkedinexportedcandidateentity_fk_worker($select=mshr_candidateid)`));
    expect(back.mshr_hcmlinkedinexportedcandidateentity_fk_worker.map((c: any) => c.mshr_candidateid)).toEqual(["ATS-42"]);
  });

  it("10 concurrent exports of a new candidate leave exactly one row, all 2xx", async () => {
    const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => service.request("PATCH", `${CANDIDATES}(mshr_candidateid='ATS-77')`, { body: exported({ mshr_candidateid: "ATS-77", mshr_jobtitle: `Title ${i}` }) })));
    for (const r of responses) {
      expect(r.status, r.body).toBeGreaterThanOrEqual(200);
      expect(r.status, r.body).toBeLessThan(300);
    }
    expect(json(await service.request("GET", `${CANDIDATES}?$filter=mshr_candidateid eq 'ATS-77'`)).value).toHaveLength(1);
  });

  it("POST of a candidate id that already exists is a 4xx, not a 500, and writes nothing", async () => {
    const before = Number((await service.request("GET", `${CANDIDATES}/$count`)).body);
    const r = await service.request("POST", CANDIDATES, { body: exported() });
    expect(r.status, r.body).toBeGreaterThanOrEqual(400);
    expect(r.status, r.body).toBeLessThan(500);
    expect(Number((await service.request("GET", `${CANDIDATES}/$count`)).body)).toBe(before);
  });

  it("the duplicate-key error names the key attribute (mshr_candidateid), on every store", async () => {
    const r = await service.request("POST", CANDIDATES, { body: exported() });
    expect(r.status, r.body).toBe(412);
    expect(json(r).error.message).toContain("mshr_candidateid");
  });
});
