import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";

type SigningKey = Awaited<ReturnType<typeof generateKeyPair>>["privateKey"];
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createService, type VirtualEntityService } from "../../src/index.js";
import { SYSTEM_ADMINISTRATOR_ROLE_ID } from "../../src/security/security-model.js";
import { json } from "../helpers/stores.js";

/** Tokens from an outside issuer (Microsoft Entra ID style: RS256, `appid` or `oid`), by static keys and by a JWKS URL. */
describe("tokens from a trusted outside issuer", () => {
  const ISSUER = "https://login.microsoftonline.com/00000000-0000-0000-0000-0000000000aa/v2.0";
  const AUDIENCE = "api://virtual-entity-provider";
  const JWKS_ISSUER = "https://sts.example.test/";
  let privateKey: SigningKey;
  let otherKey: SigningKey;
  let publicJwk: JWK;
  let jwksServer: Server;
  let service: VirtualEntityService;
  const appId = randomUUID();
  const objectId = randomUUID();
  let appUserId = "";
  let userId = "";

  const sign = (claims: Record<string, unknown>, options: { key?: SigningKey; issuer?: string; audience?: string; kid?: string } = {}) =>
    new SignJWT(claims)
      .setProtectedHeader({ alg: "RS256", kid: options.kid ?? "k1" })
      .setIssuer(options.issuer ?? ISSUER)
      .setAudience(options.audience ?? AUDIENCE)
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(options.key ?? privateKey);
  const whoAmI = (token: string) => service.request("GET", "WhoAmI()", { headers: { Authorization: `Bearer ${token}` } });

  beforeAll(async () => {
    const pair = await generateKeyPair("RS256");
    privateKey = pair.privateKey as SigningKey;
    otherKey = (await generateKeyPair("RS256")).privateKey as SigningKey;
    publicJwk = { ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "RS256" };
    jwksServer = createServer((_req, res) => {
      res.setHeader("Content-Type", "application/json");
      res.end(JSON.stringify({ keys: [publicJwk] }));
    });
    await new Promise<void>((r) => jwksServer.listen(0, "127.0.0.1", () => r()));
    const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/keys`;
    service = await createService({
      database: ":memory:",
      security: { external: [{ issuer: ISSUER, audience: AUDIENCE, keys: [publicJwk] }, { issuer: JWKS_ISSUER, audience: AUDIENCE, jwksUrl }] },
    });
    const admin = await service.security!.addClient("admin", { roles: [SYSTEM_ADMINISTRATOR_ROLE_ID] });
    const token = json((await service.request("POST", "/oauth2/token", { headers: { "content-type": "application/x-www-form-urlencoded" }, body: `grant_type=client_credentials&client_id=admin&client_secret=${encodeURIComponent(admin.secret)}` }))).access_token;
    const auth = { Authorization: `Bearer ${token}` };
    const app = await service.request("POST", "systemusers", { headers: auth, body: { fullname: "Entra application", applicationid: appId } });
    appUserId = /\(([^)]+)\)$/.exec(app.headers["OData-EntityId"]!)![1]!;
    const user = await service.request("POST", "systemusers", { headers: auth, body: { fullname: "Entra user", azureactivedirectoryobjectid: objectId } });
    userId = /\(([^)]+)\)$/.exec(user.headers["OData-EntityId"]!)![1]!;
  });
  afterAll(async () => {
    await service?.close();
    await new Promise((r) => jwksServer?.close(r));
  });

  it("names the Microsoft Entra authority in the 401 challenge, for clients that discover it (as Dataverse)", async () => {
    const r = await service.request("GET", "WhoAmI()");
    expect(r.status).toBe(401);
    expect(r.headers["WWW-Authenticate"]).toContain('authorization_uri="https://login.microsoftonline.com/00000000-0000-0000-0000-0000000000aa/oauth2/authorize"');
    expect(r.headers["WWW-Authenticate"]).toMatch(/^Bearer /);
  });

  it("accepts an application token (appid) signed with a configured key", async () => {
    const r = await whoAmI(await sign({ appid: appId }));
    expect(r.status).toBe(200);
    expect(json(r).UserId).toBe(appUserId);
  });

  it("accepts a user token (oid) and an application named by azp", async () => {
    expect(json(await whoAmI(await sign({ oid: objectId, sub: "someone" }))).UserId).toBe(userId);
    expect(json(await whoAmI(await sign({ azp: appId }))).UserId).toBe(appUserId);
  });

  it("authenticates a delegated token (scp) as its signed-in user, not as the application it came through", async () => {
    // Entra puts the client app in appid/azp of every token; the user of a delegated token is oid.
    const delegated = await whoAmI(await sign({ appid: appId, azp: appId, oid: objectId, scp: "user_impersonation" }));
    expect(delegated.status, delegated.body).toBe(200);
    expect(json(delegated).UserId).toBe(userId);
    expect(json(await whoAmI(await sign({ azp: appId, oid: objectId, idtyp: "user" }))).UserId).toBe(userId);
    // A delegated token for a user who is not in the environment is refused, whatever app it names.
    const stranger = await whoAmI(await sign({ appid: appId, oid: randomUUID(), scp: "user_impersonation" }));
    expect(stranger.status).toBe(403);
    expect(json(stranger).error.message).toMatch(/not a user of this environment/);
    const noUser = await whoAmI(await sign({ appid: appId, scp: "user_impersonation" }));
    expect(noUser.status).toBe(401);
  });

  it("refuses an outside application token that names the application by anything but a GUID (it could stand for a client of this service)", async () => {
    await service.security!.addClient("internal-admin", { roles: [SYSTEM_ADMINISTRATOR_ROLE_ID] });
    for (const claims of [{ azp: "internal-admin" }, { appid: "internal-admin" }]) {
      const r = await whoAmI(await sign(claims));
      expect(r.status, JSON.stringify(claims)).toBe(401);
      expect(json(r).error.message).toMatch(/GUID application id/);
    }
  });

  it("verifies with keys fetched from a JWKS URL", async () => {
    const r = await whoAmI(await sign({ appid: appId }, { issuer: JWKS_ISSUER }));
    expect(r.status).toBe(200);
    expect(json(r).UserId).toBe(appUserId);
  });

  it("refuses a wrong audience, a wrong signing key and an unknown application", async () => {
    expect((await whoAmI(await sign({ appid: appId }, { audience: "api://someone-else" }))).status).toBe(401);
    expect((await whoAmI(await sign({ appid: appId }, { key: otherKey }))).status).toBe(401);
    const unknown = await whoAmI(await sign({ appid: randomUUID() }));
    expect(unknown.status).toBe(403);
    expect(json(unknown).error.message).toMatch(/not an application user/);
  });
});
