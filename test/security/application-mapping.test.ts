import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { json, STORE_KINDS, type StoreKind } from "../helpers/stores.js";
import { CANDIDATE_SOURCE } from "../../src/linkedin/talent-hub.js";
import { SYSTEM_ADMINISTRATOR_ROLE_ID } from "../../src/security/security-model.js";
import {
  CANDIDATE,
  CANDIDATES,
  created,
  exportedCandidate,
  newClient,
  openSecured,
  WORKER,
  type Principal,
  type SecuredService,
} from "./harness.js";

/**
 * Human Resources' "Microsoft Entra ID applications" page: writes through virtual entities by an application
 * are recorded as the user its client id is mapped to, and refused without a mapping.
 */

const CLIENT_ID = "3a225c96-d62a-44ce-b3ec-bd4e8e9befef";
const SOURCE_TABLE = `"${CANDIDATE_SOURCE.PhysicalName}"`;

describe.each(STORE_KINDS)("application to user mapping (%s)", (kind: StoreKind) => {
  let s: SecuredService;
  let app: Principal;
  /** The user the application writes as once mapped (an ordinary user, not the application user). */
  let hrUser: string;

  const sourceRows = () => s.service.store.executor.query<{ CreatedBy: string | null; ModifiedBy: string | null }>(`SELECT "CreatedBy", "ModifiedBy" FROM ${SOURCE_TABLE}`);
  const norm = (v: unknown) => (v === null || v === undefined ? v : String(v).toLowerCase());

  beforeAll(async () => {
    s = await openSecured(kind);
    app = await newClient(s.service, { clientId: CLIENT_ID, name: "LinkedIn Talent Hub" });
    const role = await s.createRole("Talent Hub export", [`prvCreate${CANDIDATE}`, `prvWrite${CANDIDATE}`, `prvRead${CANDIDATE}`]);
    await s.assignRole(app.userId, role);
    hrUser = await created(s.admin.call("POST", "systemusers", { body: { fullname: "HR integration user" } }));
  });
  afterAll(async () => {
    await s?.service.dispose();
  });

  it("the application user's application id is the GUID client id", async () => {
    const r = await s.admin.call("GET", `systemusers(${app.userId})?$select=applicationid`);
    expect(json(r).applicationid).toBe(CLIENT_ID);
    expect(app.userId).not.toBe(hrUser);
  });

  it("without a mapping, POST of a candidate is 403 naming the missing mapping, and nothing is written", async () => {
    const r = await app.call("POST", CANDIDATES, { body: exportedCandidate() });
    expect(r.status, r.body).toBe(403);
    const message = json(r).error.message as string;
    expect(message).toContain(CLIENT_ID);
    expect(message).toContain("mshr_aadapplications");
    expect(message).toContain(CANDIDATE);
    expect(await sourceRows()).toEqual([]);
    const count = await s.admin.call("GET", `${CANDIDATES}/$count`);
    expect(count.body).toBe("0");
  });

  it("without a mapping, an upsert by alternate key and a $batch change set are refused too, with nothing written", async () => {
    const upsert = await app.call("PATCH", `${CANDIDATES}(mshr_candidateid='ATS-UNMAPPED-1')`, { body: { mshr_firstname: "Up", mshr_lastname: "Sert" } });
    expect(upsert.status, upsert.body).toBe(403);
    expect(json(upsert).error.message).toContain(CLIENT_ID);
    const batch = await app.call("POST", "$batch", { body: { requests: [{ id: "1", method: "POST", url: CANDIDATES, body: exportedCandidate(), atomicityGroup: "g" }] } });
    expect(batch.status, batch.body).toBe(200);
    const [inner] = json(batch).responses;
    expect(inner.status).toBe(403);
    expect(inner.body.error.message).toContain(CLIENT_ID);
    expect(await sourceRows()).toEqual([]);
  });

  it("the mapping is needed even by a System Administrator application", async () => {
    const admin2 = await newClient(s.service, { roles: [SYSTEM_ADMINISTRATOR_ROLE_ID] });
    const r = await admin2.call("POST", CANDIDATES, { body: exportedCandidate() });
    expect(r.status, r.body).toBe(403);
    expect(json(r).error.message).toContain(admin2.clientId);
    expect(await sourceRows()).toEqual([]);
  });

  it("a mapping without a user still refuses the write", async () => {
    const mapping = await created(s.admin.call("POST", "mshr_aadapplications", { body: { mshr_clientid: CLIENT_ID, mshr_name: "LinkedIn Talent Hub (no user yet)" } }));
    try {
      const r = await app.call("POST", CANDIDATES, { body: exportedCandidate() });
      expect(r.status, r.body).toBe(403);
      expect(json(r).error.message).toContain(CLIENT_ID);
      expect(await sourceRows()).toEqual([]);
    } finally {
      expect((await s.admin.call("DELETE", `mshr_aadapplications(${mapping})`)).status).toBe(204);
    }
  });

  describe("with the mapping", () => {
    let mapping: string;
    beforeAll(async () => {
      // Client ids are GUIDs: the mapping matches whatever case it was entered in.
      mapping = await created(
        s.admin.call("POST", "mshr_aadapplications", { body: { mshr_clientid: CLIENT_ID.toUpperCase(), mshr_name: "LinkedIn Talent Hub", "mshr_userid@odata.bind": `/systemusers(${hrUser})` } }),
      );
    });

    it("POST of a candidate is 204 and is recorded as created by the mapped user", async () => {
      const r = await app.call("POST", CANDIDATES, { body: exportedCandidate({ mshr_firstname: "Mapped" }) });
      expect(r.status, r.body).toBe(204);
      const rows = await sourceRows();
      expect(rows).toHaveLength(1);
      expect(norm(rows[0]!.CreatedBy)).toBe(hrUser);
      expect(norm(rows[0]!.ModifiedBy)).toBe(hrUser);
      const id = /\(([0-9a-f-]{36})\)$/.exec(r.headers["OData-EntityId"] ?? "")![1]!;
      const got = await app.call("GET", `${CANDIDATES}(${id})?$select=createdby,modifiedby`);
      expect(got.status, got.body).toBe(200);
      expect(json(got).createdby).toBe(hrUser);
      expect(json(got).modifiedby).toBe(hrUser);
      expect(json(got).createdby).not.toBe(app.userId);
    });

    it("an update is recorded as modified by the mapped user", async () => {
      const id = await created(s.admin.call("POST", CANDIDATES, { body: exportedCandidate() }));
      const before = json(await s.admin.call("GET", `${CANDIDATES}(${id})?$select=createdby,modifiedby`));
      expect(before.createdby).toBe(s.admin.userId);
      const r = await app.call("PATCH", `${CANDIDATES}(${id})`, { body: { mshr_jobtitle: "Updated by the integration" } });
      expect(r.status, r.body).toBe(204);
      const after = json(await s.admin.call("GET", `${CANDIDATES}(${id})?$select=createdby,modifiedby,mshr_jobtitle`));
      expect(after).toMatchObject({ createdby: s.admin.userId, modifiedby: hrUser, mshr_jobtitle: "Updated by the integration" });
    });

    it("removing the mapping refuses writes again, with nothing written", async () => {
      const count = (await sourceRows()).length;
      expect((await s.admin.call("DELETE", `mshr_aadapplications(${mapping})`)).status).toBe(204);
      const r = await app.call("POST", CANDIDATES, { body: exportedCandidate() });
      expect(r.status, r.body).toBe(403);
      expect(json(r).error.message).toContain(CLIENT_ID);
      expect((await sourceRows()).length).toBe(count);
      mapping = await created(s.admin.call("POST", "mshr_aadapplications", { body: { mshr_clientid: CLIENT_ID, mshr_name: "LinkedIn Talent Hub", "mshr_userid@odata.bind": `/systemusers(${hrUser})` } }));
      expect((await app.call("POST", CANDIDATES, { body: exportedCandidate() })).status).toBe(204);
    });
  });

  it("writes to entities that are not virtual need no mapping and are recorded as the application user", async () => {
    const other = await newClient(s.service);
    await s.assignRole(other.userId, await s.createRole(`role maker ${randomUUID()}`, ["prvCreaterole", "prvReadrole"]));
    const id = await created(other.call("POST", "roles", { body: { name: `made by an unmapped app ${randomUUID()}` } }));
    const got = await other.call("GET", `roles(${id})?$select=createdby`);
    expect(json(got).createdby).toBe(other.userId);
  });

  it("a write on behalf of a user (MSCRMCallerID) is recorded as that user", async () => {
    const person = await created(s.admin.call("POST", "systemusers", { body: { fullname: "Recruiter" } }));
    await s.assignRole(person, await s.createRole(`recruiter ${randomUUID()}`, [`prvCreate${CANDIDATE}`]));
    const r = await s.admin.call("POST", CANDIDATES, { body: exportedCandidate({ mshr_firstname: "OnBehalf" }), headers: { MSCRMCallerID: person } });
    expect(r.status, r.body).toBe(204);
    const id = /\(([0-9a-f-]{36})\)$/.exec(r.headers["OData-EntityId"] ?? "")![1]!;
    const row = json(await s.admin.call("GET", `${CANDIDATES}(${id})?$select=createdby,createdonbehalfby,modifiedonbehalfby`));
    expect(row.createdby).toBe(person);
    // The delegate: who really wrote it, as Dataverse's createdonbehalfby.
    expect(row.createdonbehalfby).toBe(s.admin.userId);
    expect(row.modifiedonbehalfby).toBe(s.admin.userId);
    // A later write without impersonation has no delegate.
    expect((await s.admin.call("PATCH", `${CANDIDATES}(${id})`, { body: { mshr_jobtitle: "Lead" } })).status).toBe(204);
    const after = json(await s.admin.call("GET", `${CANDIDATES}(${id})?$select=modifiedby,createdonbehalfby,modifiedonbehalfby`));
    expect(after).toMatchObject({ modifiedby: s.admin.userId, createdonbehalfby: s.admin.userId, modifiedonbehalfby: null });
  });

  it("hiring through mshr_Hire records both the worker and the candidate as the mapped user", async () => {
    const hirer = await newClient(s.service);
    await s.assignRole(hirer.userId, await s.createRole(`hirer ${randomUUID()}`, [`prvRead${CANDIDATE}`, `prvWrite${CANDIDATE}`, `prvCreate${WORKER}`, `prvRead${WORKER}`, `prvAppend${CANDIDATE}`, `prvAppendTo${WORKER}`]));
    const id = await created(s.admin.call("POST", CANDIDATES, { body: exportedCandidate() }));
    const unmapped = await hirer.call("POST", `${CANDIDATES}(${id})/Microsoft.Dynamics.CRM.mshr_Hire`, { body: {} });
    expect(unmapped.status, unmapped.body).toBe(403);
    expect(json(unmapped).error.message).toContain(hirer.clientId);
    expect(json(await s.admin.call("GET", "mshr_hcmworkerentities/$count")).toString()).toBe("0");
    await s.mapApplication(hirer.clientId, hrUser);
    const r = await hirer.call("POST", `${CANDIDATES}(${id})/Microsoft.Dynamics.CRM.mshr_Hire`, { body: {} });
    expect(r.status, r.body).toBe(200);
    expect(json(r).createdby).toBe(hrUser);
    const candidate = json(await s.admin.call("GET", `${CANDIDATES}(${id})?$select=modifiedby,createdby`));
    expect(candidate.modifiedby).toBe(hrUser);
    expect(candidate.createdby).toBe(s.admin.userId);
  });

  it("hiring on behalf of a user (MSCRMCallerID) records the worker and the candidate as that user, with the caller as delegate", async () => {
    const recruiter = await created(s.admin.call("POST", "systemusers", { body: { fullname: "Hiring manager" } }));
    await s.assignRole(recruiter, await s.createRole(`hiring manager ${randomUUID()}`, [`prvRead${CANDIDATE}`, `prvWrite${CANDIDATE}`, `prvCreate${WORKER}`, `prvRead${WORKER}`, `prvAppend${CANDIDATE}`, `prvAppendTo${WORKER}`]));
    const id = await created(s.admin.call("POST", CANDIDATES, { body: exportedCandidate() }));
    const r = await s.admin.call("POST", `${CANDIDATES}(${id})/Microsoft.Dynamics.CRM.mshr_Hire`, { body: {}, headers: { MSCRMCallerID: recruiter } });
    expect(r.status, r.body).toBe(200);
    expect(json(r)).toMatchObject({ createdby: recruiter, createdonbehalfby: s.admin.userId, modifiedonbehalfby: s.admin.userId });
    const candidate = json(await s.admin.call("GET", `${CANDIDATES}(${id})?$select=modifiedby,modifiedonbehalfby`));
    expect(candidate).toMatchObject({ modifiedby: recruiter, modifiedonbehalfby: s.admin.userId });
  });
});
