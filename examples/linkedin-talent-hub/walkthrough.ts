/**
 * The LinkedIn Talent Hub integration, set up and used over HTTP as the Human Resources document
 * describes: a security role with organization-level Read on Entity, Field and Relationship, the
 * application user "Dynamics365 HR LinkedIn HRIS Integration" holding it, the mapping of its client id to a
 * user who writes personnel data, Generate/refresh of the candidate entity, an export with the
 * application's own token, and a hire by an HR user.
 *
 *   npx tsx examples/linkedin-talent-hub/walkthrough.ts          (starts its own in-memory service)
 *
 * Against a running service, set VEP_URL (e.g. http://127.0.0.1:5555), VEP_ADMIN_CLIENT_ID/SECRET,
 * LINKEDIN_CLIENT_SECRET and HR_CLIENT_ID/HR_CLIENT_SECRET (clients registered with `vep clients add`).
 */
import { pathToFileURL } from "node:url";

export const LINKEDIN_CLIENT_ID = "3a225c96-d62a-44ce-b3ec-bd4e8e9befef";
export const HR_CLIENT_ID = "5b7d2a34-0c6e-4f1a-9e3b-7a2c8d9e1f40";
export const ROLE_NAME = "LinkedIn Talent Hub HRIS Integration";
export const APPLICATION_USER_NAME = "Dynamics365 HR LinkedIn HRIS Integration";
const CANDIDATES = "mshr_hcmlinkedinexportedcandidateentities";
const CANDIDATE = "mshr_hcmlinkedinexportedcandidateentity";
const WORKER = "mshr_hcmworkerentity";

export interface Credentials {
  admin: { clientId: string; secret: string };
  linkedIn: { clientId: string; secret: string };
  hr: { clientId: string; secret: string };
}

export interface WalkthroughResult {
  candidateId: string;
  worker: Record<string, unknown>;
  refused: Record<string, number>;
}

class Client {
  constructor(
    readonly base: string,
    readonly token: string,
  ) {}
  get root() {
    return `${this.base}/api/data/v9.2`;
  }
  async call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${this.root}/${path}`, {
      method,
      headers: { Authorization: `Bearer ${this.token}`, Accept: "application/json", ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...headers },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
  }
  async ok(method: string, path: string, body?: unknown, headers?: Record<string, string>) {
    const r = await this.call(method, path, body, headers);
    if (r.status >= 300) throw new Error(`${method} ${path} → ${r.status}: ${JSON.stringify(r.json)}`);
    return r;
  }
}

/** The id in an OData-EntityId header: `…/roles(<id>)`. */
const idOf = (headers: Headers) => /\(([0-9a-f-]{36})\)$/.exec(headers.get("OData-EntityId") ?? "")![1]!;

export async function token(base: string, clientId: string, secret: string): Promise<string> {
  const res = await fetch(`${base}/oauth2/token`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "client_credentials", client_id: clientId, client_secret: secret }),
  });
  const body = (await res.json()) as { access_token?: string; error?: string };
  if (!body.access_token) throw new Error(`No token for ${clientId}: ${body.error}`);
  return body.access_token;
}

async function privilegeIds(admin: Client, names: string[]): Promise<{ PrivilegeId: string; Depth: string }[]> {
  const filter = `name in (${names.map((n) => `'${n}'`).join(",")})`;
  const r = await admin.ok("GET", `privileges?$select=name&$filter=${encodeURIComponent(filter)}`);
  const found = r.json.value as { privilegeid: string; name: string }[];
  if (found.length !== names.length) throw new Error(`Missing privileges: ${names.filter((n) => !found.some((f) => f.name === n)).join(", ")}`);
  return found.map((p) => ({ PrivilegeId: p.privilegeid, Depth: "Global" }));
}

async function createRole(admin: Client, name: string, privileges: string[]): Promise<string> {
  const role = idOf((await admin.ok("POST", "roles", { name })).headers);
  await admin.ok("POST", `roles(${role})/Microsoft.Dynamics.CRM.AddPrivilegesRole`, { Privileges: await privilegeIds(admin, privileges) });
  return role;
}

async function assignRole(admin: Client, userId: string, roleId: string): Promise<void> {
  await admin.ok("POST", `systemusers(${userId})/systemuserroles_association/$ref`, { "@odata.id": `${admin.root}/roles(${roleId})` });
}

/** Finds the application user of a client id, or creates it (an administrator does this in the admin center). */
async function applicationUser(admin: Client, applicationId: string, fullname: string): Promise<string> {
  const found = await admin.ok("GET", `systemusers?$select=fullname&$filter=applicationid eq ${applicationId}`);
  if (found.json.value.length) return found.json.value[0].systemuserid;
  return idOf((await admin.ok("POST", "systemusers", { fullname, applicationid: applicationId })).headers);
}

export async function runWalkthrough(base: string, credentials: Credentials, log: (line: string) => void = console.log): Promise<WalkthroughResult> {
  const admin = new Client(base, await token(base, credentials.admin.clientId, credentials.admin.secret));
  log(`Signed in as the administrator (${(await admin.ok("GET", "WhoAmI()")).json.UserId})`);

  // Generate the entities first so their privileges exist (Generate/refresh on the Virtual entities tab).
  for (const label of ["Worker", "LinkedIn exported candidate"]) {
    const row = (await admin.ok("GET", `virtualentitycatalogs?$select=label,status&$filter=${encodeURIComponent(`label eq '${label}'`)}`)).json.value[0];
    const generated = await admin.ok("POST", `virtualentitycatalogs(${row.virtualentitycatalogid})/Microsoft.Dynamics.CRM.GenerateOrRefresh`);
    log(`Generate/refresh '${label}': ${generated.json.status} (${generated.json.statusmessage})`);
  }

  const integrationRole = await createRole(admin, ROLE_NAME, ["prvReadEntity", "prvReadAttribute", "prvReadRelationship", `prvCreate${CANDIDATE}`, `prvRead${CANDIDATE}`, `prvWrite${CANDIDATE}`]);
  log(`Created the role '${ROLE_NAME}' with organization-level Read on Entity, Field and Relationship, and the export's rights on candidates`);

  const appUser = await applicationUser(admin, credentials.linkedIn.clientId, APPLICATION_USER_NAME);
  await assignRole(admin, appUser, integrationRole);
  log(`Application user '${APPLICATION_USER_NAME}' (Application ID ${credentials.linkedIn.clientId}) holds the role`);

  const writerRole = await createRole(admin, "Personnel writer", [`prvCreate${CANDIDATE}`, `prvRead${CANDIDATE}`, `prvWrite${CANDIDATE}`, `prvCreate${WORKER}`, `prvRead${WORKER}`, `prvWrite${WORKER}`]);
  const writer = idOf((await admin.ok("POST", "systemusers", { fullname: "Personnel data writer" })).headers);
  await assignRole(admin, writer, writerRole);
  await admin.ok("POST", "mshr_aadapplications", { mshr_clientid: credentials.linkedIn.clientId, mshr_name: ROLE_NAME, "mshr_userid@odata.bind": `/systemusers(${writer})` });
  log(`Mapped client ${credentials.linkedIn.clientId} to the user who writes personnel data (${writer})`);

  const hrRole = await createRole(admin, "HR recruiter", [`prvRead${CANDIDATE}`, `prvWrite${CANDIDATE}`, `prvAppend${CANDIDATE}`, `prvCreate${WORKER}`, `prvRead${WORKER}`, `prvAppendTo${WORKER}`]);
  const hrUser = await applicationUser(admin, credentials.hr.clientId, "HR recruiter");
  await assignRole(admin, hrUser, hrRole);
  // The HR portal signs in as an application too; it writes personnel data as its own user.
  await admin.ok("POST", "mshr_aadapplications", { mshr_clientid: credentials.hr.clientId, mshr_name: "HR portal", "mshr_userid@odata.bind": `/systemusers(${hrUser})` });

  // Export to HRIS, with the application's own token.
  const ats = new Client(base, await token(base, credentials.linkedIn.clientId, credentials.linkedIn.secret));
  for (const set of ["EntityDefinitions?$select=LogicalName", `EntityDefinitions(LogicalName='${CANDIDATE}')/Attributes?$select=LogicalName`, "RelationshipDefinitions?$select=SchemaName"]) await ats.ok("GET", set);
  const exported = await ats.ok("POST", CANDIDATES, {
    mshr_candidateid: `ATS-${Date.now()}`,
    mshr_firstname: "Katherine",
    mshr_lastname: "Johnson",
    mshr_email: "katherine.johnson@example.com",
    mshr_phonenumber: "+1 757 555 0142",
    mshr_startdate: "2027-03-01",
    mshr_jobtitle: "Mathematician",
    mshr_location: "Hampton, VA",
  });
  const candidateId = idOf(exported.headers);
  log(`LinkedIn Talent Hub exported candidate ${candidateId}`);

  const refused: Record<string, number> = {
    hire: (await ats.call("POST", `${CANDIDATES}(${candidateId})/Microsoft.Dynamics.CRM.mshr_Hire`, {})).status,
    delete: (await ats.call("DELETE", `${CANDIDATES}(${candidateId})`)).status,
    readWorkers: (await ats.call("GET", "mshr_hcmworkerentities")).status,
  };
  log(`The application may not hire (${refused.hire}), delete (${refused.delete}) or read workers (${refused.readWorkers})`);

  // Candidates to hire, then Hire, as an HR user.
  const hr = new Client(base, await token(base, credentials.hr.clientId, credentials.hr.secret));
  const pending = await hr.ok("GET", `${CANDIDATES}?$select=mshr_firstname,mshr_lastname,mshr_hirestatus&$filter=mshr_hirestatus eq 200000000`, undefined, { Prefer: 'odata.include-annotations="OData.Community.Display.V1.FormattedValue"' });
  log(`Candidates to hire: ${pending.json.value.map((c: Record<string, string>) => `${c.mshr_firstname} ${c.mshr_lastname} (${c["mshr_hirestatus@OData.Community.Display.V1.FormattedValue"]})`).join(", ")}`);
  const hired = await hr.ok("POST", `${CANDIDATES}(${candidateId})/Microsoft.Dynamics.CRM.mshr_Hire`, { PositionId: "P-0042" });
  log(`Hired as worker ${hired.json.mshr_personnelnumber}: ${hired.json.mshr_firstname} ${hired.json.mshr_lastname}, starts ${hired.json.mshr_employmentstartdate}, ${hired.json.mshr_email}, ${hired.json.mshr_phonenumber}`);
  return { candidateId, worker: hired.json, refused };
}

async function main() {
  if (process.env.VEP_URL) {
    const env = (name: string) => {
      const v = process.env[name];
      if (!v) throw new Error(`Set ${name}`);
      return v;
    };
    await runWalkthrough(process.env.VEP_URL.replace(/\/$/, ""), {
      admin: { clientId: env("VEP_ADMIN_CLIENT_ID"), secret: env("VEP_ADMIN_CLIENT_SECRET") },
      linkedIn: { clientId: LINKEDIN_CLIENT_ID, secret: env("LINKEDIN_CLIENT_SECRET") },
      hr: { clientId: env("HR_CLIENT_ID"), secret: env("HR_CLIENT_SECRET") },
    });
    return;
  }
  const local = await startLocalService();
  try {
    await runWalkthrough(local.base, local.credentials);
  } finally {
    await local.close();
  }
}

/**
 * An in-memory service with the integration installed, listening on a free port, and the three clients
 * the walkthrough signs in with (registered through the library, as `vep clients add` does).
 */
export async function startLocalService() {
  const { createService } = await import("../../src/index.js");
  const { installLinkedInTalentHub } = await import("../../src/linkedin/talent-hub.js");
  const { SYSTEM_ADMINISTRATOR_ROLE_ID } = await import("../../src/security/security-model.js");
  const service = await createService({ database: ":memory:" });
  await installLinkedInTalentHub(service);
  const security = service.security!;
  const credentials: Credentials = {
    admin: await security.addClient("walkthrough-admin", { roles: [SYSTEM_ADMINISTRATOR_ROLE_ID] }),
    linkedIn: await security.addClient(LINKEDIN_CLIENT_ID, { name: APPLICATION_USER_NAME }),
    hr: await security.addClient(HR_CLIENT_ID, { name: "HR recruiter" }),
  };
  const listening = await service.listen(0);
  return {
    service,
    credentials,
    base: listening.url.replace(/\/api\/data\/v9\.2\/$/, ""),
    close: async () => {
      await listening.close();
      await service.close();
    },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
