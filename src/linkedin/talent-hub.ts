import { randomUUID } from "node:crypto";
import candidateSource from "./sources/HcmLinkedInExportedCandidateEntity.json";
import workerSource from "./sources/HcmWorkerEntity.json";
import type { SourceDefinition } from "../catalog/source-definition.js";
import { logicalNameOf, lookupNameOf, OPTION_VALUE_BASE } from "../catalog/generator.js";
import type { VirtualEntityService } from "../service.js";
import { badRequest, ErrorCodes, notFound, ODataError, validationError } from "../odata/errors.js";
import { describeViolation, payloadValidator } from "../metadata/payload-schema.js";
import { privilegeName, writeContextOf, type Caller } from "../security/access.js";
import type { OperationDefinition } from "../odata/operations.js";

export const CANDIDATE_SOURCE = candidateSource as SourceDefinition;
export const WORKER_SOURCE = workerSource as SourceDefinition;
export const CANDIDATE_ENTITY = logicalNameOf(CANDIDATE_SOURCE.PhysicalName);
export const WORKER_ENTITY = logicalNameOf(WORKER_SOURCE.PhysicalName);
export const HIRE_STATUS = { Pending: OPTION_VALUE_BASE + 0, Hired: OPTION_VALUE_BASE + 1 } as const;
const WORKER_LOOKUP = lookupNameOf("Worker");

/**
 * The bound action `Microsoft.Dynamics.CRM.mshr_Hire` ("Hire new worker"): creates a worker from the
 * candidate's first and last name, start date, e-mail and phone, marks the candidate Hired with its lookup
 * to the worker, and returns the worker, in one transaction.
 */
export function hireAction(service: VirtualEntityService): OperationDefinition {
  return {
    name: "mshr_Hire",
    kind: "action",
    boundTo: CANDIDATE_ENTITY,
    parameters: [{ name: "PositionId", type: { kind: "primitive", type: "Edm.String", nullable: true }, optional: true }],
    returns: { kind: "entity", entity: WORKER_ENTITY },
    // Read on workers too: the answer is the worker record.
    requiredPrivileges: () => [privilegeName("Write", CANDIDATE_ENTITY), privilegeName("Create", WORKER_ENTITY), privilegeName("Read", WORKER_ENTITY), privilegeName("Append", CANDIDATE_ENTITY), privilegeName("AppendTo", WORKER_ENTITY)],
    handler: async ({ binding, parameters, caller }) => {
      const model = service.model;
      const candidate = model.entity(CANDIDATE_ENTITY)!;
      const worker = model.entity(WORKER_ENTITY);
      if (!worker || !candidate.attributes.has(WORKER_LOOKUP)) {
        throw badRequest(`Hiring needs the '${WORKER_SOURCE.Label}' virtual entity: generate it from the catalog first`);
      }
      const values = {
        mshr_firstname: binding!.row.mshr_firstname,
        mshr_lastname: binding!.row.mshr_lastname,
        mshr_email: binding!.row.mshr_email,
        mshr_phonenumber: binding!.row.mshr_phonenumber,
        mshr_employmentstartdate: binding!.row.mshr_startdate,
        mshr_positionid: parameters.PositionId ?? null,
      };
      const validate = payloadValidator(worker, "create");
      if (!validate(values)) throw validationError(`The candidate cannot be hired: ${describeViolation(worker, "create", validate.errors ?? []).message}`);
      const provider = service.providers.for(candidate);
      const context = await writeContextOf(service.security, caller as Caller, candidate);
      return provider.transaction(async (tx) => {
        const current = await tx.retrieve(candidate, binding!.id, [...candidate.attributes.values()]);
        if (!current) throw notFound(`${CANDIDATE_ENTITY} With Id = ${binding!.id} Does Not Exist`);
        if (current.mshr_hirestatus === HIRE_STATUS.Hired) {
          throw new ODataError(409, ErrorCodes.conflict, `The candidate ${binding!.id} has already been hired (worker ${current[WORKER_LOOKUP]})`);
        }
        const created = await tx.create(worker, { ...values, [worker.primaryId.logicalName]: randomUUID() }, context);
        if (created.status !== "ok") throw new ODataError(409, ErrorCodes.conflict, `The worker could not be created: ${created.status === "conflict" ? created.message : created.status}`);
        const workerId = created.row[worker.primaryId.logicalName] as string;
        const updated = await tx.update(candidate, binding!.id, { mshr_hirestatus: HIRE_STATUS.Hired, [WORKER_LOOKUP]: workerId }, current.versionnumber as number, context);
        if (updated.status !== "ok") throw new ODataError(409, ErrorCodes.conflict, `The candidate ${binding!.id} changed while it was being hired; nothing was written`);
        return { kind: "entity", entity: worker, row: created.row };
      });
    },
  };
}

/**
 * Installs the LinkedIn Talent Hub integration: registers its two sources in the catalog and the Hire
 * action; with `generate`, runs Generate/refresh on both (worker first, so the candidate gets its lookup).
 */
export async function installLinkedInTalentHub(service: VirtualEntityService, options: { generate?: boolean; onProgress?: (s: string) => void } = {}): Promise<void> {
  await service.catalog.registerSource(WORKER_SOURCE);
  await service.catalog.registerSource(CANDIDATE_SOURCE);
  service.registerOperation(hireAction(service));
  if (options.generate) {
    for (const s of [WORKER_SOURCE, CANDIDATE_SOURCE]) {
      const row = await service.catalog.catalogRow(s.PhysicalName);
      if (row?.isgenerated !== true || row.status === "SourceChanged") await service.catalog.generateOrRefresh(s.PhysicalName, options.onProgress);
    }
  }
}

const SAMPLE_CANDIDATES = [
  { mshr_candidateid: "ATS-1001", mshr_firstname: "Ada", mshr_lastname: "Lovelace", mshr_email: "ada.lovelace@example.com", mshr_phonenumber: "+44 20 7946 0001", mshr_startdate: "2027-01-04", mshr_jobtitle: "Analytical Engineer", mshr_location: "London" },
  { mshr_candidateid: "ATS-1002", mshr_firstname: "Grace", mshr_lastname: "Hopper", mshr_email: "grace.hopper@example.com", mshr_phonenumber: "+1 202 555 0102", mshr_startdate: "2027-01-11", mshr_jobtitle: "Compiler Lead", mshr_location: "Arlington" },
  { mshr_candidateid: "ATS-1003", mshr_firstname: "Alan", mshr_lastname: "Turing", mshr_email: "alan.turing@example.com", mshr_phonenumber: "+44 161 496 0003", mshr_startdate: "2027-02-01", mshr_jobtitle: "Research Scientist", mshr_location: "Manchester" },
];

/** Exports three sample candidates, as an ATS would, when the candidate entity has no rows yet. */
export async function seedSampleCandidates(service: VirtualEntityService): Promise<number> {
  const entity = service.model.entity(CANDIDATE_ENTITY);
  if (!entity) return 0;
  const provider = service.providers.for(entity);
  const existing = await provider.count({ entity, orderBy: [], select: [entity.primaryId], count: true, expand: [] });
  if (existing > 0) return 0;
  for (const c of SAMPLE_CANDIDATES) {
    const validate = payloadValidator(entity, "create");
    if (!validate({ ...c })) throw new Error(`Sample candidate ${c.mshr_candidateid} is invalid: ${describeViolation(entity, "create", validate.errors ?? []).message}`);
    const r = await provider.create(entity, { ...c, [entity.primaryId.logicalName]: randomUUID(), mshr_hirestatus: HIRE_STATUS.Pending, mshr_exporteddatetime: new Date().toISOString() });
    if (r.status !== "ok") throw new Error(`Could not seed sample candidate ${c.mshr_candidateid}: ${r.status}`);
  }
  return SAMPLE_CANDIDATES.length;
}
