import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openTestService, json, STORE_KINDS, type StoreKind } from "../helpers/stores.js";
import { exportedCandidate } from "../security/harness.js";
import { installLinkedInTalentHub, CANDIDATE_SOURCE, WORKER_SOURCE, HIRE_STATUS } from "../../src/linkedin/talent-hub.js";

type Service = Awaited<ReturnType<typeof openTestService>>;
type Response = Awaited<ReturnType<Service["request"]>>;

const ROOT = "http://localhost/api/data/v9.2";
const CANDIDATES = "mshr_hcmlinkedinexportedcandidateentities";
const CANDIDATE_ID = "mshr_hcmlinkedinexportedcandidateentityid";
const WORKERS = "mshr_hcmworkerentities";
const WORKER_ID = "mshr_hcmworkerentityid";
const FORMATTED = "OData.Community.Display.V1.FormattedValue";
const PREFER_FORMATTED = { Prefer: `odata.include-annotations="${FORMATTED}"` };
const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A candidate as LinkedIn Talent Hub's "Export to HRIS" sends it. */
function exported(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return exportedCandidate({ mshr_candidateid: "ATS-42", ...overrides });
}

function idFrom(response: Response, set: string): string {
  const entityId = response.headers["OData-EntityId"] ?? "";
  const m = new RegExp(`^${ROOT.replace(/[.]/g, "\\.")}/${set}\\(([0-9a-f-]{36})\\)$`).exec(entityId);
  expect(m, `OData-EntityId: ${entityId}`).not.toBeNull();
  return m![1]!;
}

async function exportCandidate(service: Service, overrides: Record<string, unknown> = {}): Promise<string> {
  const r = await service.request("POST", CANDIDATES, { body: exported(overrides) });
  expect(r.status, r.body).toBe(204);
  return idFrom(r, CANDIDATES);
}

async function count(service: Service, set: string): Promise<number> {
  const r = await service.request("GET", `${set}/$count`);
  expect(r.status, r.body).toBe(200);
  return Number(r.body);
}

async function candidate(service: Service, id: string): Promise<any> {
  const r = await service.request("GET", `${CANDIDATES}(${id})`);
  expect(r.status, r.body).toBe(200);
  return json(r);
}

function hire(service: Service, id: string, positionId?: string): Promise<Response> {
  return service.request("POST", `${CANDIDATES}(${id})/Microsoft.Dynamics.CRM.mshr_Hire`, positionId === undefined ? {} : { body: { PositionId: positionId } });
}

describe.each(STORE_KINDS)("LinkedIn Talent Hub integration (%s)", (kind: StoreKind) => {
  let service: Service;

  beforeEach(async () => {
    service = await openTestService(kind);
    await installLinkedInTalentHub(service, { generate: true });
  });
  afterEach(async () => {
    await service?.dispose();
  });

  describe("export to HRIS", () => {
    it("accepts an exported candidate: 204 with OData-EntityId, Pending, exported time set by the store", async () => {
      const before = Date.now();
      const r = await service.request("POST", CANDIDATES, { body: exported() });
      const after = Date.now();
      expect(r.status, r.body).toBe(204);
      expect(r.body ?? "").toBe("");
      const id = idFrom(r, CANDIDATES);
      expect(id).toMatch(GUID);

      const got = await service.request("GET", r.headers["OData-EntityId"]!.slice("http://localhost".length));
      expect(got.status, got.body).toBe(200);
      const c = json(got);
      expect(c).toMatchObject({
        [CANDIDATE_ID]: id,
        mshr_candidateid: "ATS-42",
        mshr_firstname: "Ingrid",
        mshr_lastname: "Solberg",
        mshr_email: "ingrid.solberg@example.com",
        mshr_phonenumber: "+47 22 33 44 55",
        mshr_startdate: "2026-09-01",
        mshr_jobtitle: "Platform engineer",
        mshr_location: "Oslo",
        mshr_hirestatus: HIRE_STATUS.Pending,
        _mshr_fk_worker_id_value: null,
        mshr_primaryfield: "ATS-42",
      });
      expect(HIRE_STATUS.Pending).toBe(200000000);
      const exportedAt = Date.parse(c.mshr_exporteddatetime);
      expect(exportedAt).toBeGreaterThanOrEqual(before - 1000);
      expect(exportedAt).toBeLessThanOrEqual(after + 1000);

      // Stored in the source table under its physical names, the status as the enum's name.
      const rows = await service.store.executor.query<Record<string, unknown>>(`SELECT "CandidateId", "FirstName", "HireStatus", "WorkerId", "ExportedDateTime" FROM "${CANDIDATE_SOURCE.PhysicalName}"`);
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ CandidateId: "ATS-42", FirstName: "Ingrid", HireStatus: "Pending", WorkerId: null });
      expect(rows[0]!.ExportedDateTime).not.toBeNull();
    });

    it("accepts a minimal export (the ATS's candidate id, first and last name) and a job title of exactly 100 characters", async () => {
      const minimal = await service.request("POST", CANDIDATES, { body: { mshr_candidateid: "ATS-MIN", mshr_firstname: "Min", mshr_lastname: "Imal" } });
      expect(minimal.status, minimal.body).toBe(204);
      const full = await service.request("POST", CANDIDATES, { body: exported({ mshr_candidateid: "ATS-100", mshr_jobtitle: "j".repeat(100) }) });
      expect(full.status, full.body).toBe(204);
      expect(await count(service, CANDIDATES)).toBe(2);
    });

    it.each([
      ["a malformed e-mail", { mshr_email: "not-an-email" }, "mshr_email"],
      ["a missing candidate id (the key an ATS re-exports by)", { mshr_candidateid: undefined }, "mshr_candidateid"],
      ["a null candidate id", { mshr_candidateid: null }, "mshr_candidateid"],
      ["a missing first name", { mshr_firstname: undefined }, "mshr_firstname"],
      ["an empty last name", { mshr_lastname: null }, "mshr_lastname"],
      ["a job title over 100 characters", { mshr_jobtitle: "j".repeat(101) }, "mshr_jobtitle"],
      ["a malformed start date", { mshr_startdate: "2026-13-45" }, "mshr_startdate"],
      ["a start date with a time", { mshr_startdate: "2026-09-01T08:00:00Z" }, "mshr_startdate"],
      ["a hire status set by the ATS", { mshr_hirestatus: 200000001 }, "mshr_hirestatus"],
      ["a pending hire status set by the ATS", { mshr_hirestatus: 200000000 }, "mshr_hirestatus"],
      ["an exported time set by the ATS", { mshr_exporteddatetime: "2020-01-01T00:00:00Z" }, "mshr_exporteddatetime"],
      ["a worker lookup set by the ATS", { _mshr_fk_worker_id_value: "11111111-1111-4111-8111-111111111111" }, "_mshr_fk_worker_id_value"],
      ["an unknown field", { mshr_salary: 100 }, "mshr_salary"],
    ])("refuses %s with 400 naming the field, storing nothing", async (_what, overrides, field) => {
      const body = exported(overrides);
      for (const [k, v] of Object.entries(overrides)) if (v === undefined) delete body[k];
      const r = await service.request("POST", CANDIDATES, { body });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain(field);
      expect(await count(service, CANDIDATES)).toBe(0);
      const rows = await service.store.executor.query(`SELECT * FROM "${CANDIDATE_SOURCE.PhysicalName}"`);
      expect(rows).toHaveLength(0);
    });

    it("reads a candidate by its ATS id (alternate key)", async () => {
      const id = await exportCandidate(service);
      await exportCandidate(service, { mshr_candidateid: "ATS-43", mshr_firstname: "Other" });
      const r = await service.request("GET", `${CANDIDATES}(mshr_candidateid='ATS-42')`);
      expect(r.status, r.body).toBe(200);
      expect(json(r)).toMatchObject({ [CANDIDATE_ID]: id, mshr_candidateid: "ATS-42", mshr_firstname: "Ingrid" });
      const missing = await service.request("GET", `${CANDIDATES}(mshr_candidateid='ATS-404')`);
      expect(missing.status).toBe(404);
      // The ATS id is unique: a second export with it is refused.
      const dup = await service.request("POST", CANDIDATES, { body: exported() });
      expect(dup.status).toBeGreaterThanOrEqual(400);
      expect(dup.status).toBeLessThan(500);
      expect(await count(service, CANDIDATES)).toBe(2);
    });

    it("serves candidates the ATS wrote straight into the store", async () => {
      await service.store.executor.execute(
        `INSERT INTO "${CANDIDATE_SOURCE.PhysicalName}" ("Id", "CandidateId", "FirstName", "LastName", "HireStatus", "RecVersion") VALUES ('33333333-3333-4333-8333-333333333333', 'ATS-7', 'Direct', 'Row', 'Pending', 1)`,
      );
      const r = await service.request("GET", `${CANDIDATES}?$filter=mshr_hirestatus eq ${HIRE_STATUS.Pending}`, { headers: PREFER_FORMATTED });
      expect(r.status, r.body).toBe(200);
      expect(json(r).value).toHaveLength(1);
      expect(json(r).value[0]).toMatchObject({ mshr_candidateid: "ATS-7", mshr_hirestatus: HIRE_STATUS.Pending, [`mshr_hirestatus@${FORMATTED}`]: "Pending" });
    });
  });

  describe("candidates to hire", () => {
    it("lists pending candidates with the label Pending", async () => {
      const a = await exportCandidate(service, { mshr_candidateid: "ATS-1", mshr_firstname: "Anna" });
      const b = await exportCandidate(service, { mshr_candidateid: "ATS-2", mshr_firstname: "Bjørn" });
      const r = await service.request("GET", `${CANDIDATES}?$filter=mshr_hirestatus eq 200000000&$orderby=mshr_candidateid`, { headers: PREFER_FORMATTED });
      expect(r.status, r.body).toBe(200);
      expect(r.headers["Preference-Applied"]).toContain(FORMATTED);
      const value = json(r).value;
      expect(value.map((c: any) => c[CANDIDATE_ID])).toEqual([a, b]);
      for (const c of value) {
        expect(c.mshr_hirestatus).toBe(200000000);
        expect(c[`mshr_hirestatus@${FORMATTED}`]).toBe("Pending");
      }

      // Once hired, a candidate leaves the list and shows as Hired.
      expect((await hire(service, a, "POS-1")).status).toBe(200);
      const pending = await service.request("GET", `${CANDIDATES}?$filter=mshr_hirestatus eq 200000000`, { headers: PREFER_FORMATTED });
      expect(json(pending).value.map((c: any) => c[CANDIDATE_ID])).toEqual([b]);
      const hired = await service.request("GET", `${CANDIDATES}?$filter=mshr_hirestatus eq 200000001&$select=mshr_hirestatus,_mshr_fk_worker_id_value`, { headers: PREFER_FORMATTED });
      expect(hired.status, hired.body).toBe(200);
      expect(json(hired).value).toHaveLength(1);
      expect(json(hired).value[0]).toMatchObject({ [CANDIDATE_ID]: a, mshr_hirestatus: 200000001, [`mshr_hirestatus@${FORMATTED}`]: "Hired" });
      const countPending = await service.request("GET", `${CANDIDATES}/$count?$filter=mshr_hirestatus ne 200000001`);
      expect(countPending.body).toBe("1");
    });
  });

  describe("hire new worker", () => {
    it("creates the worker from the candidate and marks the candidate Hired", async () => {
      const id = await exportCandidate(service);
      const r = await hire(service, id, "POS-0042");
      expect(r.status, r.body).toBe(200);
      const worker = json(r);
      expect(worker["@odata.context"]).toBe(`${ROOT}/$metadata#${WORKERS}/$entity`);
      expect(worker[WORKER_ID]).toMatch(GUID);
      expect(r.headers["OData-EntityId"]).toBe(`${ROOT}/${WORKERS}(${worker[WORKER_ID]})`);
      expect(worker).toMatchObject({
        mshr_firstname: "Ingrid",
        mshr_lastname: "Solberg",
        mshr_employmentstartdate: "2026-09-01",
        mshr_email: "ingrid.solberg@example.com",
        mshr_phonenumber: "+47 22 33 44 55",
        mshr_positionid: "POS-0042",
      });
      expect(worker.mshr_personnelnumber).toMatch(/^\d{6}$/);

      const stored = await service.request("GET", `${WORKERS}(${worker[WORKER_ID]})`);
      expect(stored.status, stored.body).toBe(200);
      expect(json(stored)).toMatchObject({ mshr_personnelnumber: worker.mshr_personnelnumber, mshr_firstname: "Ingrid", mshr_positionid: "POS-0042", mshr_employmentstartdate: "2026-09-01" });
      const byNumber = await service.request("GET", `${WORKERS}(mshr_personnelnumber='${worker.mshr_personnelnumber}')?$select=mshr_lastname`);
      expect(byNumber.status, byNumber.body).toBe(200);
      expect(await count(service, WORKERS)).toBe(1);

      const c = await candidate(service, id);
      expect(c).toMatchObject({ mshr_hirestatus: HIRE_STATUS.Hired, _mshr_fk_worker_id_value: worker[WORKER_ID] });
      expect(HIRE_STATUS.Hired).toBe(200000001);
      // The candidate's own details are untouched.
      expect(c).toMatchObject({ mshr_firstname: "Ingrid", mshr_jobtitle: "Platform engineer", mshr_location: "Oslo", mshr_candidateid: "ATS-42" });

      // In the store: the worker row and the candidate's link to it.
      const link = await service.store.executor.query<Record<string, unknown>>(`SELECT "HireStatus", "WorkerId" FROM "${CANDIDATE_SOURCE.PhysicalName}" WHERE "Id" = '${id}'`);
      expect(link[0]).toMatchObject({ HireStatus: "Hired", WorkerId: worker[WORKER_ID] });
      const workers = await service.store.executor.query<Record<string, unknown>>(`SELECT "Id", "PersonnelNumber", "PositionId" FROM "${WORKER_SOURCE.PhysicalName}"`);
      expect(workers).toEqual([{ Id: worker[WORKER_ID], PersonnelNumber: worker.mshr_personnelnumber, PositionId: "POS-0042" }]);
    });

    it("assigns unique, increasing personnel numbers; PositionId is optional", async () => {
      const ids = [
        await exportCandidate(service, { mshr_candidateid: "ATS-1", mshr_firstname: "One" }),
        await exportCandidate(service, { mshr_candidateid: "ATS-2", mshr_firstname: "Two", mshr_email: undefined, mshr_phonenumber: undefined }),
        await exportCandidate(service, { mshr_candidateid: "ATS-3", mshr_firstname: "Three" }),
      ];
      const workers: any[] = [];
      for (const [i, id] of ids.entries()) {
        const r = i === 1 ? await hire(service, id) : await hire(service, id, `POS-${i}`);
        expect(r.status, r.body).toBe(200);
        workers.push(json(r));
      }
      const numbers = workers.map((w) => w.mshr_personnelnumber as string);
      expect(new Set(numbers).size).toBe(3);
      const values = numbers.map(Number);
      expect(values[0]).toBeLessThan(values[1]!);
      expect(values[1]).toBeLessThan(values[2]!);
      expect(workers[1]).toMatchObject({ mshr_firstname: "Two", mshr_positionid: null, mshr_email: null, mshr_phonenumber: null });
      expect(workers[2]).toMatchObject({ mshr_firstname: "Three", mshr_positionid: "POS-2" });
      expect(await count(service, WORKERS)).toBe(3);
    });

    it("refuses to hire the same candidate twice, keeping one worker", async () => {
      const id = await exportCandidate(service);
      const first = await hire(service, id, "POS-1");
      expect(first.status, first.body).toBe(200);
      const workerId = json(first)[WORKER_ID];
      const second = await hire(service, id, "POS-2");
      expect(second.status, second.body).toBeGreaterThanOrEqual(400);
      expect(second.status).toBeLessThan(500);
      expect(json(second).error.message).toEqual(expect.any(String));
      expect(await count(service, WORKERS)).toBe(1);
      expect(await candidate(service, id)).toMatchObject({ mshr_hirestatus: HIRE_STATUS.Hired, _mshr_fk_worker_id_value: workerId });
      const w = await service.request("GET", `${WORKERS}(${workerId})?$select=mshr_positionid`);
      expect(json(w).mshr_positionid).toBe("POS-1");
    });

    it("answers 404 for a candidate that does not exist, creating no worker", async () => {
      const r = await hire(service, "00000000-0000-4000-8000-000000000001", "POS-1");
      expect(r.status, r.body).toBe(404);
      expect(await count(service, WORKERS)).toBe(0);
      const byKey = await service.request("POST", `${CANDIDATES}(mshr_candidateid='ATS-404')/Microsoft.Dynamics.CRM.mshr_Hire`, { body: {} });
      expect(byKey.status, byKey.body).toBe(404);
      expect(await count(service, WORKERS)).toBe(0);
    });

    it("hires through the alternate key", async () => {
      const id = await exportCandidate(service);
      const r = await service.request("POST", `${CANDIDATES}(mshr_candidateid='ATS-42')/Microsoft.Dynamics.CRM.mshr_Hire`, { body: { PositionId: "POS-K" } });
      expect(r.status, r.body).toBe(200);
      expect(await candidate(service, id)).toMatchObject({ mshr_hirestatus: HIRE_STATUS.Hired, _mshr_fk_worker_id_value: json(r)[WORKER_ID] });
    });

    it("of two concurrent hires of one candidate exactly one succeeds", async () => {
      const id = await exportCandidate(service);
      const results = await Promise.all([hire(service, id, "POS-A"), hire(service, id, "POS-B")]);
      const statuses = results.map((r) => r.status);
      const ok = results.filter((r) => r.status === 200);
      expect(ok, JSON.stringify(results.map((r) => [r.status, r.body]))).toHaveLength(1);
      const refused = results.find((r) => r.status !== 200)!;
      expect(refused.status, refused.body).toBeGreaterThanOrEqual(400);
      expect(refused.status).toBeLessThan(500);
      expect(statuses).toContain(200);
      expect(await count(service, WORKERS)).toBe(1);
      const workerId = json(ok[0]!)[WORKER_ID];
      expect(await candidate(service, id)).toMatchObject({ mshr_hirestatus: HIRE_STATUS.Hired, _mshr_fk_worker_id_value: workerId });
      const rows = await service.store.executor.query(`SELECT "Id" FROM "${WORKER_SOURCE.PhysicalName}"`);
      expect(rows).toHaveLength(1);
    });

    it("hires several candidates concurrently, each with its own personnel number", async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await exportCandidate(service, { mshr_candidateid: `ATS-C${i}`, mshr_firstname: `C${i}` }));
      const results = await Promise.all(ids.map((id, i) => hire(service, id, `POS-C${i}`)));
      expect(results.map((r) => r.status), JSON.stringify(results.map((r) => r.body))).toEqual([200, 200, 200, 200, 200]);
      const numbers = results.map((r) => json(r).mshr_personnelnumber);
      expect(new Set(numbers).size).toBe(5);
      expect(await count(service, WORKERS)).toBe(5);
    });

    it("assigns unique personnel numbers to workers created concurrently, from the first one on", async () => {
      // The first use of the sequence is the racy moment, so try it on a few fresh stores.
      for (let round = 0; round < 3; round++) {
        const fresh = round === 0 ? service : await openTestService(kind);
        try {
          if (round > 0) await installLinkedInTalentHub(fresh, { generate: true });
          const results = await Promise.all(
            Array.from({ length: 12 }, (_, i) => fresh.request("POST", WORKERS, { body: { mshr_firstname: `W${i}`, mshr_lastname: "Concurrent" }, headers: { Prefer: "return=representation" } })),
          );
          expect(results.map((r) => r.status), `round ${round}: ${JSON.stringify(results.map((r) => r.body))}`).toEqual(results.map(() => 201));
          const numbers = results.map((r) => json(r).mshr_personnelnumber);
          expect(numbers.map(Number).sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
        } finally {
          if (fresh !== service) await fresh.dispose();
        }
      }
    });

    it("a hire the worker cannot accept writes nothing", async () => {
      const id = await exportCandidate(service);
      const r = await hire(service, id, "P".repeat(26)); // the worker's PositionId is 25 long
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain("mshr_positionid");
      expect(await count(service, WORKERS)).toBe(0);
      expect(await candidate(service, id)).toMatchObject({ mshr_hirestatus: HIRE_STATUS.Pending, _mshr_fk_worker_id_value: null });
      const bad = await service.request("POST", `${CANDIDATES}(${id})/Microsoft.Dynamics.CRM.mshr_Hire`, { body: { PositionId: 7 } });
      expect(bad.status).toBe(400);
      const unknown = await service.request("POST", `${CANDIDATES}(${id})/Microsoft.Dynamics.CRM.mshr_Hire`, { body: { Salary: 7 } });
      expect(unknown.status).toBe(400);
      const get = await service.request("GET", `${CANDIDATES}(${id})/Microsoft.Dynamics.CRM.mshr_Hire`);
      expect(get.status).toBe(405);
      expect(await count(service, WORKERS)).toBe(0);
      // And the candidate can still be hired properly afterwards.
      expect((await hire(service, id, "POS-OK")).status).toBe(200);
    });
  });

  describe("installation", () => {
    it("hiring needs the worker entity generated; nothing is written before", async () => {
      const fresh = await openTestService(kind);
      try {
        await installLinkedInTalentHub(fresh);
        expect((await fresh.request("GET", CANDIDATES)).status).toBe(404);
        await fresh.catalog.generateOrRefresh(CANDIDATE_SOURCE.PhysicalName);
        await fresh.store.executor.execute(
          `INSERT INTO "${CANDIDATE_SOURCE.PhysicalName}" ("Id", "CandidateId", "FirstName", "LastName", "HireStatus", "RecVersion") VALUES ('44444444-4444-4444-8444-444444444444', 'ATS-9', 'Early', 'Hire', 'Pending', 1)`,
        );
        const r = await hire(fresh, "44444444-4444-4444-8444-444444444444", "POS-1");
        expect(r.status, r.body).toBe(400);
        expect(json(r).error.message).toContain(WORKER_SOURCE.Label);
        const rows = await fresh.store.executor.query<Record<string, unknown>>(`SELECT "HireStatus", "WorkerId" FROM "${CANDIDATE_SOURCE.PhysicalName}"`);
        expect(rows).toEqual([{ HireStatus: "Pending", WorkerId: null }]);
        expect(await fresh.store.executor.query(`SELECT * FROM "${WORKER_SOURCE.PhysicalName}"`)).toEqual([]);

        // Generating the worker from the catalog enables it.
        const row = json(await fresh.request("GET", "virtualentitycatalogs?$filter=label eq 'Worker'")).value[0];
        const gen = await fresh.request("POST", `virtualentitycatalogs(${row.virtualentitycatalogid})/Microsoft.Dynamics.CRM.GenerateOrRefresh`);
        expect(gen.status, gen.body).toBe(200);
        const ok = await hire(fresh, "44444444-4444-4444-8444-444444444444", "POS-1");
        expect(ok.status, ok.body).toBe(200);
        expect(json(ok)).toMatchObject({ mshr_firstname: "Early", mshr_lastname: "Hire", mshr_positionid: "POS-1" });
      } finally {
        await fresh.dispose();
      }
    });

    it("installing again with generate keeps the entities and their rows", async () => {
      const id = await exportCandidate(service);
      await installLinkedInTalentHub(service, { generate: true });
      expect(await candidate(service, id)).toMatchObject({ mshr_candidateid: "ATS-42" });
      const rows = json(await service.request("GET", "virtualentitycatalogs")).value;
      expect(rows.map((r: any) => r.isgenerated)).toEqual([true, true]);
    });
  });
});
