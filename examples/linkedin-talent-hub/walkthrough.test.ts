import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { VirtualEntityService } from "../../src/index.js";
import { runWalkthrough, startLocalService, type WalkthroughResult } from "./walkthrough.js";

describe("the LinkedIn Talent Hub walkthrough over HTTP", () => {
  let service: VirtualEntityService;
  let result: WalkthroughResult;
  let close: () => Promise<void>;
  const lines: string[] = [];

  beforeAll(async () => {
    const local = await startLocalService();
    service = local.service;
    close = local.close;
    result = await runWalkthrough(local.base, local.credentials, (l) => lines.push(l));
  });
  afterAll(async () => {
    await close?.();
  });

  it("hires the exported candidate into a worker carrying the five imported details", () => {
    expect(result.worker).toMatchObject({
      mshr_firstname: "Katherine",
      mshr_lastname: "Johnson",
      mshr_employmentstartdate: "2027-03-01",
      mshr_email: "katherine.johnson@example.com",
      mshr_phonenumber: "+1 757 555 0142",
      mshr_positionid: "P-0042",
    });
    expect(result.worker.mshr_personnelnumber).toMatch(/^\d{6}$/);
  });

  it("lets the application export but not hire, delete or read workers", () => {
    expect(result.refused).toEqual({ hire: 403, delete: 403, readWorkers: 403 });
  });

  it("records the export as the user the application is mapped to", async () => {
    const [row] = await service.store.executor.query<{ CreatedBy: string }>(`SELECT "CreatedBy" FROM "HcmLinkedInExportedCandidateEntity" WHERE "Id" = ?1`, [result.candidateId]);
    const users = await service.store.executor.query<{ systemuserid: string; fullname: string }>(`SELECT systemuserid, fullname FROM systemuser`);
    expect(users.find((u) => u.systemuserid === row!.CreatedBy)?.fullname).toBe("Personnel data writer");
  });

  it("marks the candidate Hired with its lookup to the worker", async () => {
    const rows = await service.store.executor.query<{ HireStatus: string; WorkerId: string }>(`SELECT "HireStatus", "WorkerId" FROM "HcmLinkedInExportedCandidateEntity" WHERE "Id" = ?1`, [result.candidateId]);
    expect(rows[0]).toEqual({ HireStatus: "Hired", WorkerId: result.worker.mshr_hcmworkerentityid });
    expect(lines.some((l) => l.startsWith("Candidates to hire: Katherine Johnson (Pending)"))).toBe(true);
  });
});
