import { randomUUID } from "node:crypto";
import { expect } from "vitest";
import { json, openTestService, type StoreKind } from "../helpers/stores.js";
import { installLinkedInTalentHub } from "../../src/linkedin/talent-hub.js";
import { SYSTEM_ADMINISTRATOR_ROLE_ID } from "../../src/security/security-model.js";
import type { TokenAuthOptions } from "../../src/security/security-service.js";

/** Shared helpers of the security suites: tokens, application users, roles, privileges. */

export type Service = Awaited<ReturnType<typeof openTestService>>;
export type Response = Awaited<ReturnType<Service["request"]>>;
export interface RequestInit {
  headers?: Record<string, string>;
  body?: unknown;
}

export const ROOT = "http://localhost/api/data/v9.2";
export const TOKEN_URL = "/oauth2/token";
export const FORM = { "content-type": "application/x-www-form-urlencoded" };
export const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const CANDIDATE = "mshr_hcmlinkedinexportedcandidateentity";
export const CANDIDATES = "mshr_hcmlinkedinexportedcandidateentities";
export const WORKER = "mshr_hcmworkerentity";
export const WORKERS = "mshr_hcmworkerentities";
export const WORKER_LOOKUP = "mshr_fk_worker_id";
export const WORKER_CANDIDATES = "mshr_hcmlinkedinexportedcandidateentity_fk_worker";
export const CATALOG = "virtualentitycatalog";
export const CATALOGS = "virtualentitycatalogs";

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** POST /oauth2/token with a client-credentials form. */
export function requestToken(service: Service, clientId: string, secret: string, extra = ""): Promise<Response> {
  return service.request("POST", TOKEN_URL, { headers: FORM, body: `grant_type=client_credentials&client_id=${encodeURIComponent(clientId)}&client_secret=${encodeURIComponent(secret)}${extra}` });
}

export async function tokenFor(service: Service, clientId: string, secret: string): Promise<string> {
  const r = await requestToken(service, clientId, secret);
  expect(r.status, r.body).toBe(200);
  const token = json(r).access_token as string;
  expect(typeof token).toBe("string");
  return token;
}

/** A registered client with its application user and a bearer token; `call` sends requests as it. */
export interface Principal {
  clientId: string;
  secret: string;
  userId: string;
  token: string;
  call(method: string, url: string, init?: RequestInit): Promise<Response>;
}

export function principal(service: Service, client: { clientId: string; secret: string; userId: string }, token: string): Principal {
  return {
    ...client,
    token,
    call: (method, url, init = {}) => service.request(method, url, { ...init, headers: { Authorization: `Bearer ${token}`, ...(init.headers ?? {}) } }),
  };
}

/** Registers a client (a GUID client id, so its application id is that GUID) and gets it a token. */
export async function newClient(service: Service, options: { clientId?: string; roles?: string[]; name?: string } = {}): Promise<Principal> {
  const clientId = options.clientId ?? randomUUID();
  const client = await service.security!.addClient(clientId, { roles: options.roles, name: options.name });
  expect(client.userId).toMatch(GUID);
  return principal(service, client, await tokenFor(service, clientId, client.secret));
}

/** The id in a response's OData-EntityId header. */
export function idFrom(response: Response): string {
  const entityId = response.headers["OData-EntityId"] ?? "";
  const m = /\(([0-9a-f-]{36})\)$/.exec(entityId);
  expect(m, `OData-EntityId: '${entityId}' (status ${response.status}: ${response.body})`).not.toBeNull();
  return m![1]!;
}

export async function created(r: Promise<Response>): Promise<string> {
  const response = await r;
  expect(response.status, response.body).toBe(204);
  return idFrom(response);
}

/** Expects a 403 whose message names the missing privilege and the caller. */
export function expectMissingPrivilege(r: Response, privilege: string, userId: string): void {
  expect(r.status, `${privilege} missing: ${(r.body ?? "").slice(0, 300)}`).toBe(403);
  const message = json(r).error?.message as string;
  expect(message).toContain(privilege);
  expect(message.toLowerCase()).toContain(userId.toLowerCase());
}

/** A secured service with the LinkedIn entities generated and an administrator mapped for virtual-entity writes. */
export interface SecuredService {
  service: Service;
  admin: Principal;
  privilegeIds: Map<string, string>;
  createRole(name: string, privileges: readonly string[]): Promise<string>;
  assignRole(userId: string, roleId: string): Promise<void>;
  unassignRole(userId: string, roleId: string): Promise<void>;
  /** Maps an application to the user that writes virtual-entity data for it (mshr_aadapplications). */
  mapApplication(applicationId: string, userId: string): Promise<string>;
}

export async function openSecured(kind: StoreKind, options: TokenAuthOptions = {}): Promise<SecuredService> {
  const service = await openTestService(kind, { security: options });
  await installLinkedInTalentHub(service, { generate: true });
  const admin = await newClient(service, { roles: [SYSTEM_ADMINISTRATOR_ROLE_ID], name: "Administrator" });
  const privileges = await admin.call("GET", "privileges?$select=name");
  expect(privileges.status, privileges.body).toBe(200);
  const privilegeIds = new Map<string, string>((json(privileges).value as { name: string; privilegeid: string }[]).map((p) => [p.name, p.privilegeid]));
  const secured: SecuredService = {
    service,
    admin,
    privilegeIds,
    async createRole(name, names) {
      const roleId = await created(admin.call("POST", "roles", { body: { name } }));
      if (names.length) {
        const grants = names.map((n) => {
          const id = privilegeIds.get(n);
          expect(id, `privilege ${n}`).toBeDefined();
          return { PrivilegeId: id, Depth: "Global" };
        });
        const r = await admin.call("POST", `roles(${roleId})/Microsoft.Dynamics.CRM.AddPrivilegesRole`, { body: { Privileges: grants } });
        expect(r.status, r.body).toBe(204);
      }
      return roleId;
    },
    async assignRole(userId, roleId) {
      const r = await admin.call("POST", `systemusers(${userId})/systemuserroles_association/$ref`, { body: { "@odata.id": `${ROOT}/roles(${roleId})` } });
      expect(r.status, r.body).toBe(204);
    },
    async unassignRole(userId, roleId) {
      const r = await admin.call("DELETE", `systemusers(${userId})/systemuserroles_association(${roleId})/$ref`);
      expect(r.status, r.body).toBe(204);
    },
    async mapApplication(applicationId, userId) {
      return created(admin.call("POST", "mshr_aadapplications", { body: { mshr_clientid: applicationId, mshr_name: `app ${applicationId}`, "mshr_userid@odata.bind": `/systemusers(${userId})` } }));
    },
  };
  await secured.mapApplication(admin.clientId, admin.userId);
  return secured;
}

let serial = 0;
/** A candidate as LinkedIn Talent Hub exports it; unique candidate ids. */
export function exportedCandidate(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  serial += 1;
  return {
    mshr_candidateid: `ATS-${process.pid}-${serial}-${randomUUID().slice(0, 8)}`,
    mshr_firstname: "Ingrid",
    mshr_lastname: "Solberg",
    mshr_email: "ingrid.solberg@example.com",
    mshr_phonenumber: "+47 22 33 44 55",
    mshr_startdate: "2026-09-01",
    mshr_jobtitle: "Platform engineer",
    mshr_location: "Oslo",
    ...overrides,
  };
}
