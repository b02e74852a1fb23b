import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SYSTEM_ADMINISTRATOR_ROLE_ID } from "../../src/security/security-model.js";
import { json, openTestService } from "../helpers/stores.js";
import { principal, tokenFor, type Principal, type Service } from "./harness.js";

/**
 * Access depths: organization-owned entities take Global only; Basic/Local/Deep would limit records by
 * owner, which is not modelled, so they are refused (501) instead of silently granting every record.
 */
describe("privilege depths in AddPrivilegesRole", () => {
  let service: Service;
  let admin: Principal;
  let role = "";
  const privilegeId = async (name: string) => json((await admin.call("GET", `privileges?$select=name&$filter=name eq '${name}'`))).value[0].privilegeid as string;
  const grant = (name: string, depth: string) => privilegeId(name).then((id) => admin.call("POST", `roles(${role})/Microsoft.Dynamics.CRM.AddPrivilegesRole`, { body: { Privileges: [{ PrivilegeId: id, Depth: depth }] } }));

  beforeAll(async () => {
    service = await openTestService("sqlite", { security: {} });
    const client = await service.security!.addClient("depth-admin", { roles: [SYSTEM_ADMINISTRATOR_ROLE_ID] });
    admin = principal(service, client, await tokenFor(service, client.clientId, client.secret));
    await service.defineEntity({ LogicalName: "new_memo", OwnershipType: "UserOwned", Attributes: [{ LogicalName: "new_text", AttributeType: "String", MaxLength: 50 }] });
    await service.security!.ready();
    role = /\(([^)]+)\)$/.exec((await admin.call("POST", "roles", { body: { name: "Depths" } })).headers["OData-EntityId"]!)![1]!;
  });
  afterAll(() => service.dispose());

  it("grants Global on any entity", async () => {
    expect((await grant("prvReadnew_memo", "Global")).status).toBe(204);
    expect((await grant("prvReadvirtualentitycatalog", "Global")).status).toBe(204);
  });

  it("refuses a narrower depth on an organization-owned entity with 400", async () => {
    const r = await grant("prvReadvirtualentitycatalog", "Basic");
    expect(r.status).toBe(400);
    expect(json(r).error.message).toMatch(/organization-owned .* Global only/);
  });

  it.each(["Basic", "Local", "Deep"])("refuses %s on a user-owned entity with 501 rather than granting every record", async (depth) => {
    const r = await grant("prvWritenew_memo", depth);
    expect(r.status).toBe(501);
    expect(json(r).error.message).toMatch(/record ownership/);
  });

  it("refuses an unknown depth with 400", async () => {
    expect((await grant("prvReadnew_memo", "Everything")).status).toBe(400);
  });
});
