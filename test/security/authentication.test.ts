import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createService } from "../../src/index.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { base64url, decodeJwt, generateKeyPair, SignJWT, UnsecuredJWT } from "jose";
import { json } from "../helpers/stores.js";
import { IMPERSONATE_PRIVILEGE, INTERNAL_AUDIENCE, INTERNAL_ISSUER } from "../../src/security/security-service.js";
import { SYSTEM_ADMINISTRATOR_ROLE_ID } from "../../src/security/security-model.js";
import {
  CANDIDATES,
  created,
  FORM,
  GUID,
  newClient,
  openSecured,
  requestToken,
  sleep,
  TOKEN_URL,
  tokenFor,
  type Principal,
  type Response,
  type SecuredService,
} from "./harness.js";

function bearer(token: string): Record<string, string> {
  return { Authorization: `Bearer ${token}` };
}

function expectUnauthorized(r: Response, message?: RegExp): void {
  expect(r.status, r.body).toBe(401);
  expect(r.headers["WWW-Authenticate"] ?? "").toMatch(/^Bearer\b/);
  const body = json(r);
  expect(body.error.code).toBe("0x80040223");
  if (message) expect(body.error.message).toMatch(message);
}

/** Flips one character in the middle of the token's signature (never the last one, whose low bits are padding). */
function tamperSignature(token: string): string {
  const [header, payload, signature] = token.split(".") as [string, string, string];
  const i = Math.floor(signature.length / 2);
  const flipped = signature[i] === "A" ? "B" : "A";
  return `${header}.${payload}.${signature.slice(0, i)}${flipped}${signature.slice(i + 1)}`;
}

/** Replaces a claim in the payload, keeping the original signature. */
function tamperClaims(token: string, claims: Record<string, unknown>): string {
  const [header, payload, signature] = token.split(".") as [string, string, string];
  const decoded = JSON.parse(new TextDecoder().decode(base64url.decode(payload)));
  return `${header}.${base64url.encode(JSON.stringify({ ...decoded, ...claims }))}.${signature}`;
}

describe("authentication (sqlite)", () => {
  let s: SecuredService;
  let admin: Principal;
  /** An application user with no roles at all. */
  let plain: Principal;

  beforeAll(async () => {
    s = await openSecured("sqlite");
    admin = s.admin;
    plain = await newClient(s.service, { name: "Plain application" });
  });
  afterAll(async () => {
    await s?.service.dispose();
  });

  describe("bearer tokens on the Web API", () => {
    it("answers 401 with WWW-Authenticate: Bearer when no token is sent", async () => {
      const r = await s.service.request("GET", "WhoAmI()");
      expectUnauthorized(r, /bearer token is required/i);
      expect(r.headers["WWW-Authenticate"]).toContain('error="invalid_request"');
      // No outside authority is configured here: the challenge names none.
      expect(r.headers["WWW-Authenticate"]).not.toContain("authorization_uri");
    });

    it.each([
      ["a Basic credential", "Basic YWRtaW46c2VjcmV0"],
      ["a bare 'Bearer'", "Bearer"],
      ["'Bearer' with two tokens", "Bearer abc.def.ghi jkl"],
      ["another scheme", "Token abc.def.ghi"],
      ["characters outside base64url", "Bearer abc$def.ghi"],
    ])("refuses a malformed Authorization header (%s) with 401", async (_what, value) => {
      const r = await s.service.request("GET", "WhoAmI()", { headers: { Authorization: value } });
      expectUnauthorized(r, /Bearer <token>/);
    });

    it("refuses a bearer value that is not a JWT with 401", async () => {
      expectUnauthorized(await s.service.request("GET", "WhoAmI()", { headers: bearer("not-a-jwt") }), /malformed/i);
      expectUnauthorized(await s.service.request("GET", "WhoAmI()", { headers: bearer("a.b.c") }), /malformed/i);
    });

    it("accepts the token it issued, and WhoAmI returns the caller's own user id", async () => {
      const r = await admin.call("GET", "WhoAmI()");
      expect(r.status, r.body).toBe(200);
      const body = json(r);
      expect(body.UserId).toBe(admin.userId);
      expect(body.BusinessUnitId).toMatch(GUID);
      expect(body.OrganizationId).toMatch(GUID);
      const other = json(await plain.call("GET", "WhoAmI()"));
      expect(other.UserId).toBe(plain.userId);
      expect(other.UserId).not.toBe(admin.userId);
    });

    it("refuses a token whose signature was tampered with (401)", async () => {
      const r = await s.service.request("GET", "WhoAmI()", { headers: bearer(tamperSignature(admin.token)) });
      expectUnauthorized(r, /not valid/i);
    });

    it("refuses a token whose claims were changed to another application (401)", async () => {
      const forged = tamperClaims(plain.token, { appid: admin.clientId, azp: admin.clientId, sub: admin.clientId });
      expect(decodeJwt(forged).appid).toBe(admin.clientId);
      const r = await s.service.request("GET", "WhoAmI()", { headers: bearer(forged) });
      expectUnauthorized(r, /not valid/i);
    });

    it("refuses a token signed with another HS256 key but the library's issuer and audience (401)", async () => {
      const header = JSON.parse(new TextDecoder().decode(base64url.decode(admin.token.split(".")[0]!)));
      const forged = await new SignJWT({ appid: admin.clientId, azp: admin.clientId })
        .setProtectedHeader({ alg: "HS256", kid: header.kid, typ: "JWT" })
        .setIssuer(INTERNAL_ISSUER)
        .setAudience(INTERNAL_AUDIENCE)
        .setSubject(admin.clientId)
        .setIssuedAt()
        .setJti(randomUUID())
        .setExpirationTime("10m")
        .sign(randomBytes(32));
      const r = await s.service.request("GET", "WhoAmI()", { headers: bearer(forged) });
      expectUnauthorized(r, /not valid/i);
      expect(r.body).not.toContain(admin.userId);
    });

    it("refuses an unsigned (alg none) token and an RS256 token claiming the library's issuer (401)", async () => {
      const unsigned = new UnsecuredJWT({ appid: admin.clientId, azp: admin.clientId }).setIssuer(INTERNAL_ISSUER).setAudience(INTERNAL_AUDIENCE).setIssuedAt().setExpirationTime("10m").encode();
      expectUnauthorized(await s.service.request("GET", "WhoAmI()", { headers: bearer(unsigned) }));
      const { privateKey } = await generateKeyPair("RS256");
      const rs = await new SignJWT({ appid: admin.clientId }).setProtectedHeader({ alg: "RS256" }).setIssuer(INTERNAL_ISSUER).setAudience(INTERNAL_AUDIENCE).setIssuedAt().setExpirationTime("10m").sign(privateKey);
      expectUnauthorized(await s.service.request("GET", "WhoAmI()", { headers: bearer(rs) }), /not valid/i);
    });

    it("refuses a token from an issuer that is not trusted (401)", async () => {
      const forged = await new SignJWT({ appid: admin.clientId }).setProtectedHeader({ alg: "HS256" }).setIssuer("https://login.microsoftonline.com/evil/v2.0").setAudience(INTERNAL_AUDIENCE).setIssuedAt().setExpirationTime("10m").sign(randomBytes(32));
      expectUnauthorized(await s.service.request("GET", "WhoAmI()", { headers: bearer(forged) }), /not trusted/i);
    });

    it.each([
      ["the service document", "GET", ""],
      ["the service document (trailing slash)", "GET", "/api/data/v9.2/"],
      ["$metadata", "GET", "$metadata"],
      ["WhoAmI", "GET", "WhoAmI()"],
      ["EntityDefinitions", "GET", "EntityDefinitions"],
      ["RelationshipDefinitions", "GET", "RelationshipDefinitions"],
      ["an entity set", "GET", CANDIDATES],
      ["a record", "GET", `roles(${SYSTEM_ADMINISTRATOR_ROLE_ID})`],
      ["$count", "GET", "systemusers/$count"],
      ["a create", "POST", "roles"],
      ["a delete", "DELETE", `roles(${SYSTEM_ADMINISTRATOR_ROLE_ID})`],
      ["an action", "POST", `roles(${SYSTEM_ADMINISTRATOR_ROLE_ID})/Microsoft.Dynamics.CRM.AddPrivilegesRole`],
      ["$batch", "POST", "$batch"],
    ])("answers 401 without a token for %s; only the token endpoint is open", async (_what, method, url) => {
      const body = method === "POST" ? { name: "x" } : undefined;
      const r = await s.service.request(method, url, { body });
      expectUnauthorized(r);
    });

    it("the token endpoint itself needs no bearer token", async () => {
      const r = await s.service.request("POST", TOKEN_URL, { headers: FORM, body: "grant_type=client_credentials" });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error).toBe("invalid_request");
    });

    it("a refused request leaves the store unchanged", async () => {
      const before = json(await admin.call("GET", "roles?$select=name")).value.length;
      const r = await s.service.request("POST", "roles", { body: { name: "sneaky role" } });
      expectUnauthorized(r);
      expect(json(await admin.call("GET", "roles?$select=name")).value.length).toBe(before);
    });
  });

  describe("the token endpoint", () => {
    it("issues a Bearer token for the right secret, without echoing the secret", async () => {
      const client = await s.service.security!.addClient("issue-ok");
      const r = await requestToken(s.service, "issue-ok", client.secret);
      expect(r.status, r.body).toBe(200);
      expect(r.headers["Cache-Control"]).toBe("no-store");
      const body = json(r);
      expect(body.token_type).toBe("Bearer");
      expect(body.expires_in).toBe(900);
      expect(r.body).not.toContain(client.secret);
      const claims = decodeJwt(body.access_token);
      expect(claims.iss).toBe(INTERNAL_ISSUER);
      expect(claims.aud).toBe(INTERNAL_AUDIENCE);
      expect(claims.appid).toBe("issue-ok");
      expect(JSON.stringify(claims)).not.toContain(client.secret);
      expect(json(await s.service.request("GET", "WhoAmI()", { headers: bearer(body.access_token) })).UserId).toBe(client.userId);
    });

    it("accepts the client credentials as HTTP Basic too", async () => {
      const client = await s.service.security!.addClient("basic-client");
      const basic = Buffer.from(`basic-client:${client.secret}`).toString("base64");
      const r = await s.service.request("POST", TOKEN_URL, { headers: { ...FORM, Authorization: `Basic ${basic}` }, body: "grant_type=client_credentials" });
      expect(r.status, r.body).toBe(200);
      expect(json(r).token_type).toBe("Bearer");
    });

    it("refuses a wrong secret with 401 invalid_client; an unknown client gets the same answer; no secret is ever echoed", async () => {
      const client = await s.service.security!.addClient("wrong-secret-client");
      const wrongSecret = `wrong-${randomUUID()}`;
      const wrong = await requestToken(s.service, "wrong-secret-client", wrongSecret);
      const unknown = await requestToken(s.service, `no-such-client-${randomUUID().slice(0, 8)}`, wrongSecret);
      for (const r of [wrong, unknown]) {
        expect(r.status, r.body).toBe(401);
        expect(json(r)).toEqual({ error: "invalid_client", error_description: "Client authentication failed" });
        expect(r.headers["WWW-Authenticate"]).toMatch(/^Basic /);
        const everything = JSON.stringify(r);
        expect(everything).not.toContain(wrongSecret);
        expect(everything).not.toContain(client.secret);
      }
      expect(wrong.headers).toEqual(unknown.headers);
      expect(wrong.body).toBe(unknown.body);
    });

    it("throttles a client after 5 failures: 429 with Retry-After, even with the right secret; other clients are unaffected", async () => {
      const victim = await s.service.security!.addClient("throttled-client");
      const bystander = await s.service.security!.addClient("bystander-client");
      const seen: Response[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await requestToken(s.service, "throttled-client", `guess-number-${i}-of-many`);
        seen.push(r);
        expect(r.status, `attempt ${i + 1}: ${r.body}`).toBe(401);
      }
      const right = await requestToken(s.service, "throttled-client", victim.secret);
      seen.push(right);
      expect(right.status, right.body).toBe(429);
      const retryAfter = Number(right.headers["Retry-After"]);
      expect(Number.isInteger(retryAfter)).toBe(true);
      expect(retryAfter).toBeGreaterThan(0);
      expect(retryAfter).toBeLessThanOrEqual(60);
      expect(json(right).error).toBe("invalid_client");
      expect(json(right).access_token).toBeUndefined();
      for (const r of seen) expect(JSON.stringify(r)).not.toContain(victim.secret);
      // Other clients keep working.
      expect((await requestToken(s.service, "bystander-client", bystander.secret)).status).toBe(200);
    });

    it("locks a client per network address: guesses from one address do not lock it out for another; one address may not spray many ids", async () => {
      const security = s.service.security!;
      const victim = await security.addClient(`by-source-${randomUUID().slice(0, 8)}`);
      for (let i = 0; i < 5; i++) expect((await security.issueToken(victim.clientId, `guess-number-${i}-of-many`, "198.51.100.7")).status).toBe(401);
      expect((await security.issueToken(victim.clientId, victim.secret, "198.51.100.7")).status).toBe(429);
      expect((await security.issueToken(victim.clientId, victim.secret, "203.0.113.9")).status).toBe(200);
      // 50 failures from one address across 50 made-up ids, then every id is refused from there, not elsewhere.
      for (let i = 0; i < 50; i++) expect((await security.issueToken(`spray-${i}-${randomUUID().slice(0, 8)}`, "x".repeat(600), "192.0.2.1")).status, `attempt ${i}`).toBe(401);
      expect((await security.issueToken(victim.clientId, victim.secret, "192.0.2.1")).status).toBe(429);
      expect((await security.issueToken(victim.clientId, victim.secret, "192.0.2.2")).status).toBe(200);
    });

    it("bounds guessing spread over many addresses: 25 failures for one client from anywhere lock it for everyone", async () => {
      const security = s.service.security!;
      const victim = await security.addClient(`spread-${randomUUID().slice(0, 8)}`);
      for (let i = 0; i < 25; i++) expect((await security.issueToken(victim.clientId, `guess-number-${i}-of-many`, `10.1.0.${i}`)).status, `guess ${i}`).toBe(401);
      expect((await security.issueToken(victim.clientId, victim.secret, "10.1.0.200")).status).toBe(429);
    });

    it("a full throttle memory never fails a token request (no 500), from a known or a new address", async () => {
      const security = s.service.security!;
      const client = await security.addClient(`after-flood-${randomUUID().slice(0, 8)}`);
      for (let i = 0; i < 4000; i++) await security.issueToken(`flood-${i}`, "x".repeat(600), `10.2.${i >> 8}.${i & 255}`);
      expect((await security.issueToken(client.clientId, client.secret, "10.3.0.1")).status).toBe(200);
      expect((await security.issueToken(client.clientId, "a-wrong-secret-of-length", "10.3.0.2")).status).toBe(401);
    });

    it("keeps a locked client locked when a spray of other ids fills the throttle's memory", async () => {
      const security = s.service.security!;
      const target = `locked-${randomUUID().slice(0, 8)}`;
      for (let i = 0; i < 5; i++) expect((await security.issueToken(target, `guess-number-${i}-of-many`)).status).toBe(401);
      // Over-long secrets are refused before any hashing, so 10,001 ids take little time.
      for (let i = 0; i <= 10_000; i++) await security.issueToken(`filler-${i}`, "x".repeat(600));
      expect((await security.issueToken(target, "guess-number-6-of-many")).status).toBe(429);
    });

    it("hashes once per attempt whether or not the client exists, and never hashes an over-long secret", async () => {
      const security = s.service.security! as unknown as { hash(secret: string): Promise<string>; matches(secret: string, stored: string): Promise<boolean> };
      const known = await s.service.security!.addClient(`hash-count-${randomUUID().slice(0, 8)}`);
      await s.service.security!.issueToken(`warm-${randomUUID()}`, "a-wrong-secret-of-length"); // the fixed hash for unknown ids
      const calls = { hash: 0, matches: 0 };
      const [hash, matches] = [security.hash, security.matches];
      security.hash = function (this: unknown, secret: string) { calls.hash++; return hash.call(this, secret); };
      security.matches = function (this: unknown, secret: string, stored: string) { calls.matches++; return matches.call(this, secret, stored); };
      try {
        await s.service.security!.issueToken(known.clientId, "a-wrong-secret-of-length");
        await s.service.security!.issueToken(`unknown-${randomUUID()}`, "a-wrong-secret-of-length");
        expect(calls).toEqual({ hash: 0, matches: 2 });
        expect((await s.service.security!.issueToken(known.clientId, "y".repeat(100_000))).status).toBe(401);
        expect(calls).toEqual({ hash: 0, matches: 2 });
      } finally {
        delete (security as Partial<typeof security>).hash;
        delete (security as Partial<typeof security>).matches;
      }
    });

    it("answers Basic credentials that are not valid percent-encoding with 400 invalid_request", async () => {
      const basic = Buffer.from("some-client:%E0%A4%A").toString("base64");
      const r = await s.service.request("POST", TOKEN_URL, { headers: { ...FORM, Authorization: `Basic ${basic}` }, body: "grant_type=client_credentials" });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error).toBe("invalid_request");
    });

    it("throttles unknown client ids the same way (no hint which ids exist)", async () => {
      const id = `ghost-${randomUUID().slice(0, 8)}`;
      for (let i = 0; i < 5; i++) expect((await requestToken(s.service, id, `guess-number-${i}-of-many`)).status).toBe(401);
      const r = await requestToken(s.service, id, "guess-number-6-of-many");
      expect(r.status, r.body).toBe(429);
      expect(r.headers["Retry-After"]).toMatch(/^\d+$/);
    });

    it("throttles concurrent guesses too: at most 5 of 12 simultaneous wrong secrets are checked, the rest are 429", async () => {
      await s.service.security!.addClient("concurrent-victim");
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => requestToken(s.service, "concurrent-victim", `parallel-guess-${i}-xxxxxxxx`)));
      const statuses = answers.map((r) => r.status);
      expect(statuses.every((st) => st === 401 || st === 429), statuses.join(",")).toBe(true);
      expect(statuses.filter((st) => st === 401).length, `statuses: ${statuses.join(",")}`).toBeLessThanOrEqual(5);
    });

    it.each([
      ["password", "grant_type=password&client_id=a&client_secret=bbbbbbbbbbbbbbbb"],
      ["authorization_code", "grant_type=authorization_code&client_id=a&client_secret=bbbbbbbbbbbbbbbb"],
      ["(missing)", "client_id=a&client_secret=bbbbbbbbbbbbbbbb"],
    ])("refuses grant_type %s with 400 unsupported_grant_type", async (_grant, body) => {
      const r = await s.service.request("POST", TOKEN_URL, { headers: FORM, body });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error).toBe("unsupported_grant_type");
    });

    it("requires a form-encoded body: JSON is 400 invalid_request", async () => {
      const client = await s.service.security!.addClient("json-body-client");
      const r = await s.service.request("POST", TOKEN_URL, { body: { grant_type: "client_credentials", client_id: "json-body-client", client_secret: client.secret } });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error).toBe("invalid_request");
      expect(r.body).not.toContain(client.secret);
      const none = await s.service.request("POST", TOKEN_URL, { headers: { "content-type": "text/plain" }, body: "grant_type=client_credentials" });
      expect(none.status).toBe(400);
    });

    it("requires client_id and client_secret (400) and POST (405)", async () => {
      const r = await s.service.request("POST", TOKEN_URL, { headers: FORM, body: "grant_type=client_credentials&client_id=someone" });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error).toBe("invalid_request");
      const get = await s.service.request("GET", TOKEN_URL);
      expect(get.status).toBe(405);
      expect(get.headers.Allow).toBe("POST");
    });

    it("stores client secrets only as hashes", async () => {
      const a = await s.service.security!.addClient("hashed-a");
      const b = await s.service.security!.addClient("hashed-b", { secret: "a-chosen-secret-of-some-length" });
      const rows = await s.service.store.executor.query<Record<string, unknown>>("SELECT * FROM vep_oauthclient");
      expect(rows.length).toBeGreaterThanOrEqual(3);
      const dump = JSON.stringify(rows);
      for (const secret of [a.secret, b.secret, admin.secret, plain.secret]) expect(dump).not.toContain(secret);
      for (const row of rows) expect(String(row.secrethash)).toMatch(/^scrypt\$[A-Za-z0-9_-]+\$[A-Za-z0-9_-]+$/);
      // Same secret, different salts.
      const c = await s.service.security!.addClient("hashed-c", { secret: "a-chosen-secret-of-some-length" });
      const hashes = (await s.service.store.executor.query<{ clientid: string; secrethash: string }>("SELECT clientid, secrethash FROM vep_oauthclient")).filter((r) => r.clientid === "hashed-b" || r.clientid === c.clientId);
      expect(hashes).toHaveLength(2);
      expect(hashes[0]!.secrethash).not.toBe(hashes[1]!.secrethash);
      expect((await requestToken(s.service, "hashed-b", "a-chosen-secret-of-some-length")).status).toBe(200);
    });
  });

  describe("disabled and removed users", () => {
    it("refuses a disabled application user with 403 on its next request, and lets it back in when re-enabled", async () => {
      const app = await newClient(s.service, { name: "To be disabled" });
      expect((await app.call("GET", "WhoAmI()")).status).toBe(200);
      const patch = await admin.call("PATCH", `systemusers(${app.userId})`, { body: { isdisabled: true } });
      expect(patch.status, patch.body).toBe(204);
      const r = await app.call("GET", "WhoAmI()");
      expect(r.status, r.body).toBe(403);
      expect(json(r).error.message).toContain(app.userId);
      expect(json(r).error.message).toMatch(/disabled/i);
      // A fresh token does not help.
      const fresh = await tokenFor(s.service, app.clientId, app.secret);
      expect((await s.service.request("GET", "$metadata", { headers: bearer(fresh) })).status).toBe(403);
      expect((await admin.call("PATCH", `systemusers(${app.userId})`, { body: { isdisabled: false } })).status).toBe(204);
      expect((await app.call("GET", "WhoAmI()")).status).toBe(200);
    });

    it("a user's identity (applicationid, azureactivedirectoryobjectid) cannot be moved, so Write on users cannot take over an administrator", async () => {
      const roleId = await s.createRole(`User manager ${Date.now()}`, ["prvReadsystemuser", "prvWritesystemuser"]);
      const manager = await newClient(s.service, { name: "User manager" });
      await s.assignRole(manager.userId, roleId);
      const own = json(await admin.call("GET", `systemusers(${manager.userId})?$select=applicationid`)).applicationid as string;
      for (const body of [{ applicationid: null }, { applicationid: randomUUID() }, { azureactivedirectoryobjectid: randomUUID() }]) {
        const r = await manager.call("PATCH", `systemusers(${admin.userId})`, { body });
        expect(r.status, `${JSON.stringify(body)}: ${r.body}`).toBe(400);
        expect(json(r).error.message).toContain(Object.keys(body)[0]);
      }
      // The two-step move in one change set: the first step is refused, so nothing of it stays.
      const batch = await manager.call("POST", "$batch", {
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          requests: [
            { id: "1", atomicityGroup: "g", method: "PATCH", url: `systemusers(${manager.userId})`, headers: { "Content-Type": "application/json" }, body: { applicationid: null } },
            { id: "2", atomicityGroup: "g", method: "PATCH", url: `systemusers(${admin.userId})`, headers: { "Content-Type": "application/json" }, body: { applicationid: own } },
          ],
        }),
      });
      expect(JSON.stringify(json(batch)), batch.body).toMatch(/"status":400/);
      expect(json(await manager.call("GET", "WhoAmI()")).UserId).toBe(manager.userId);
      expect(json(await admin.call("GET", `systemusers(${manager.userId})?$select=applicationid`)).applicationid).toBe(own);
      expect(json(await admin.call("GET", "WhoAmI()")).UserId).toBe(admin.userId);
      // Creating a user with an identity still works.
      const objectId = randomUUID();
      const made = await admin.call("POST", "systemusers", { body: { fullname: "Entra user", azureactivedirectoryobjectid: objectId } });
      expect(made.status, made.body).toBe(204);
    });

    it("a change in one process leaves the privileges of entities another process on the same store defined", async () => {
      const dir = mkdtempSync(join(tmpdir(), "vep-two-"));
      try {
        const file = join(dir, "shared.sqlite");
        const a = await createService({ database: file });
        const b = await createService({ database: file });
        try {
          await a.defineEntity({ LogicalName: "new_from_a", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] });
          await a.security!.ready();
          await b.defineEntity({ LogicalName: "new_from_b", Attributes: [{ LogicalName: "new_y", AttributeType: "Integer" }] });
          await b.security!.ready();
          const names = (await a.store.executor.query<{ name: string }>(`SELECT name FROM privilege WHERE entitylogicalname IN ('new_from_a', 'new_from_b')`)).map((r) => r.name);
          expect(names.filter((n) => n.endsWith("new_from_a"))).toHaveLength(6);
          expect(names.filter((n) => n.endsWith("new_from_b"))).toHaveLength(6);
        } finally {
          await b.close();
          await a.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it("at start, drops the privileges and grants of entities no stored definition has (removed with security off)", async () => {
      const dir = mkdtempSync(join(tmpdir(), "vep-sweep-"));
      try {
        const file = join(dir, "sweep.sqlite");
        const secure = await createService({ database: file });
        await secure.defineEntity({ LogicalName: "new_swept", Attributes: [{ LogicalName: "new_x", AttributeType: "Integer" }] });
        await secure.security!.ready();
        await secure.close();
        const open = await createService({ database: file, security: "none" });
        await open.define({ removeEntities: ["new_swept"] });
        await open.close();
        const again = await createService({ database: file });
        try {
          const left = await again.store.executor.query(`SELECT name FROM privilege WHERE entitylogicalname = 'new_swept'`);
          expect(left).toEqual([]);
        } finally {
          await again.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it("a store made before identities were read-only has them made read-only when it is opened", async () => {
      const user = s.service.model.entity("systemuser")!;
      expect(user.attributes.get("applicationid")!.def.IsValidForUpdate).toBe(false);
      // Store the old definition (identity columns updatable), then open the store again.
      const old = structuredClone(user.def);
      for (const a of old.Attributes) if (a.LogicalName === "applicationid" || a.LogicalName === "azureactivedirectoryobjectid") delete a.IsValidForUpdate;
      const dir = mkdtempSync(join(tmpdir(), "vep-harden-"));
      try {
        const file = join(dir, "old.sqlite");
        const first = await createService({ database: file });
        await first.metadata.apply({ entities: [old] }, { builtIn: true });
        expect(first.model.entity("systemuser")!.attributes.get("applicationid")!.def.IsValidForUpdate).not.toBe(false);
        await first.close();
        const again = await createService({ database: file });
        try {
          for (const name of ["applicationid", "azureactivedirectoryobjectid"]) expect(again.model.entity("systemuser")!.attributes.get(name)!.def.IsValidForUpdate, name).toBe(false);
          expect(again.model.entity("systemuser")!.attributes.get("fullname")!.def.IsValidForUpdate).not.toBe(false);
        } finally {
          await again.close();
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it("$metadata declares AddPrivilegesRole's Privileges as Collection(mscrm.RolePrivilege), the list its handler takes", async () => {
      const xml = (await admin.call("GET", "$metadata")).body!;
      expect(xml).toMatch(/<Action Name="AddPrivilegesRole"[^>]*>(?:(?!<\/Action>)[\s\S])*<Parameter Name="Privileges" Type="Collection\(mscrm\.RolePrivilege\)"/);
    });

    it("refuses a token whose application user was deleted (403)", async () => {
      const app = await newClient(s.service, { name: "To be deleted" });
      expect((await admin.call("DELETE", `systemusers(${app.userId})`)).status).toBe(204);
      const r = await app.call("GET", "WhoAmI()");
      expect(r.status, r.body).toBe(403);
      expect(json(r).error.message).toContain(app.clientId);
    });
  });

  describe("any authenticated caller, without privileges", () => {
    it("may read the service document, $metadata and WhoAmI, but nothing else", async () => {
      expect((await plain.call("GET", "")).status).toBe(200);
      expect((await plain.call("GET", "$metadata")).status).toBe(200);
      expect((await plain.call("GET", "WhoAmI()")).status).toBe(200);
      // Dataverse's samples call it without parentheses.
      const bare = await plain.call("GET", "WhoAmI");
      expect(bare.status, bare.body).toBe(200);
      expect(json(bare).UserId).toBe(plain.userId);
      const r = await plain.call("GET", "roles");
      expect(r.status).toBe(403);
      expect(json(r).error.message).toContain("prvReadrole");
      expect(json(r).error.message).toContain(plain.userId);
    });
  });

  describe("impersonation (MSCRMCallerID / CallerObjectId)", () => {
    let target: string;
    let objectUser: string;
    const objectId = randomUUID();

    beforeAll(async () => {
      target = await created(admin.call("POST", "systemusers", { body: { fullname: "Impersonated user" } }));
      objectUser = await created(admin.call("POST", "systemusers", { body: { fullname: "Entra user", azureactivedirectoryobjectid: objectId } }));
    });

    it("is refused (403) for a caller without prvActOnBehalfOfAnotherUser", async () => {
      const attempts: Record<string, string>[] = [{ MSCRMCallerID: admin.userId }, { CallerObjectId: objectId }];
      for (const headers of attempts) {
        const r = await plain.call("GET", "WhoAmI()", { headers });
        expect(r.status, r.body).toBe(403);
        expect(json(r).error.message).toContain(IMPERSONATE_PRIVILEGE);
        expect(json(r).error.message).toContain(plain.userId);
      }
    });

    it("refuses an empty or blank header (400) instead of taking it as absent", async () => {
      for (const headers of [{ MSCRMCallerID: "" }, { CallerObjectId: "" }, { MSCRMCallerID: "  " }] as Record<string, string>[]) {
        const r = await admin.call("GET", "WhoAmI()", { headers });
        expect(r.status, `${JSON.stringify(headers)}: ${r.body}`).toBe(400);
        expect(json(r).error.message).toMatch(/must be a GUID/);
      }
    });

    it("is honoured for an administrator: WhoAmI returns the impersonated user", async () => {
      const r = await admin.call("GET", "WhoAmI()", { headers: { MSCRMCallerID: target } });
      expect(r.status, r.body).toBe(200);
      expect(json(r).UserId).toBe(target);
      const upper = await admin.call("GET", "WhoAmI()", { headers: { MSCRMCallerID: target.toUpperCase() } });
      expect(json(upper).UserId).toBe(target);
    });

    it("CallerObjectId selects the user by its Microsoft Entra object id", async () => {
      const r = await admin.call("GET", "WhoAmI()", { headers: { CallerObjectId: objectId } });
      expect(r.status, r.body).toBe(200);
      expect(json(r).UserId).toBe(objectUser);
    });

    it("is honoured for a non-administrator holding prvActOnBehalfOfAnotherUser", async () => {
      const roleId = await s.createRole(`impersonator ${randomUUID()}`, [IMPERSONATE_PRIVILEGE]);
      const app = await newClient(s.service);
      await s.assignRole(app.userId, roleId);
      const r = await app.call("GET", "WhoAmI()", { headers: { MSCRMCallerID: target } });
      expect(r.status, r.body).toBe(200);
      expect(json(r).UserId).toBe(target);
    });

    it("applies the impersonated user's privileges, not the caller's", async () => {
      const r = await admin.call("GET", "roles", { headers: { MSCRMCallerID: target } });
      expect(r.status, r.body).toBe(403);
      expect(json(r).error.message).toContain("prvReadrole");
      expect(json(r).error.message).toContain(target);
    });

    describe("never widens the caller's access: both users must hold a privilege", () => {
      let impersonator: Awaited<ReturnType<typeof newClient>>;
      let administrator: string;
      beforeAll(async () => {
        // The caller may impersonate and read roles; the user it acts for is a System Administrator.
        const roleId = await s.createRole(`impersonator and reader ${randomUUID()}`, [IMPERSONATE_PRIVILEGE, "prvReadrole"]);
        impersonator = await newClient(s.service);
        await s.assignRole(impersonator.userId, roleId);
        administrator = await created(admin.call("POST", "systemusers", { body: { fullname: "Administrator acted for", azureactivedirectoryobjectid: randomUUID() } }));
        await s.assignRole(administrator, SYSTEM_ADMINISTRATOR_ROLE_ID);
      });

      it("a privilege only the impersonated user holds is refused, naming the caller", async () => {
        for (const headers of [{ MSCRMCallerID: administrator }]) {
          const r = await impersonator.call("POST", "roles", { body: { name: `escalated ${randomUUID()}` }, headers });
          expect(r.status, r.body).toBe(403);
          expect(json(r).error.message).toContain("prvCreaterole");
          expect(json(r).error.message).toContain(impersonator.userId);
        }
        expect(json(await admin.call("GET", `roles?$filter=startswith(name,'escalated')&$select=name`)).value).toEqual([]);
      });

      it("a privilege both hold is honoured", async () => {
        const r = await impersonator.call("GET", "roles?$select=name&$top=1", { headers: { MSCRMCallerID: administrator } });
        expect(r.status, r.body).toBe(200);
      });

      it("cannot assign itself a role through the user it acts for", async () => {
        const r = await impersonator.call("POST", `systemusers(${impersonator.userId})/systemuserroles_association/$ref`, {
          body: { "@odata.id": `roles(${SYSTEM_ADMINISTRATOR_ROLE_ID})` },
          headers: { MSCRMCallerID: administrator },
        });
        expect(r.status, r.body).toBe(403);
        const roles = json(await admin.call("GET", `systemusers(${impersonator.userId})/systemuserroles_association?$select=name`)).value;
        expect(roles.map((x: { roleid: string }) => x.roleid)).not.toContain(SYSTEM_ADMINISTRATOR_ROLE_ID);
        // Nor through a $batch part.
        const batch = await impersonator.call("POST", "$batch", {
          body: { requests: [{ id: "1", method: "POST", url: `systemusers(${impersonator.userId})/systemuserroles_association/$ref`, headers: { "content-type": "application/json", MSCRMCallerID: administrator }, body: { "@odata.id": `roles(${SYSTEM_ADMINISTRATOR_ROLE_ID})` } }] },
          headers: { "Content-Type": "application/json" },
        });
        expect(JSON.stringify(json(batch)), "the part is refused").toMatch(/"status":403/);
        const after = json(await admin.call("GET", `systemusers(${impersonator.userId})/systemuserroles_association?$select=name`)).value;
        expect(after.map((x: { roleid: string }) => x.roleid)).not.toContain(SYSTEM_ADMINISTRATOR_ROLE_ID);
      });
    });

    it.each([
      ["MSCRMCallerID", "not-a-guid"],
      ["MSCRMCallerID", "12345"],
      ["CallerObjectId", "someone@example.com"],
    ])("answers 400 for a %s that is not a GUID (%s)", async (name, value) => {
      const r = await admin.call("GET", "WhoAmI()", { headers: { [name]: value } });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toContain(name);
    });

    it("answers 400 when both headers are sent", async () => {
      const r = await admin.call("GET", "WhoAmI()", { headers: { MSCRMCallerID: target, CallerObjectId: objectId } });
      expect(r.status, r.body).toBe(400);
    });

    it.each(["MSCRMCallerID", "CallerObjectId"])("answers 403 for a %s naming no user", async (name) => {
      const r = await admin.call("GET", "WhoAmI()", { headers: { [name]: randomUUID() } });
      expect(r.status, r.body).toBe(403);
      expect(json(r).error.message).toMatch(/does not exist/);
    });

    it("refuses to act on behalf of a disabled user (403)", async () => {
      const disabled = await created(admin.call("POST", "systemusers", { body: { fullname: "Disabled target", isdisabled: true } }));
      const r = await admin.call("GET", "WhoAmI()", { headers: { MSCRMCallerID: disabled } });
      expect(r.status, r.body).toBe(403);
      expect(json(r).error.message).toMatch(/disabled/);
    });
  });
});

describe("token lifetime and throttle window (sqlite, short settings)", () => {
  let s: SecuredService;
  beforeAll(async () => {
    s = await openSecured("sqlite", { tokenLifetimeSeconds: 1, throttleWindowSeconds: 1, maxFailures: 2 });
  });
  afterAll(async () => {
    await s?.service.dispose();
  });

  it("refuses an expired token with 401 saying it expired", async () => {
    const client = await s.service.security!.addClient("short-lived");
    // Start just after a second boundary so the one-second token is still valid for the first call.
    await sleep(1000 - (Date.now() % 1000) + 20);
    const r = await requestToken(s.service, "short-lived", client.secret);
    expect(r.status, r.body).toBe(200);
    expect(json(r).expires_in).toBe(1);
    const token = json(r).access_token as string;
    expect((await s.service.request("GET", "WhoAmI()", { headers: bearer(token) })).status).toBe(200);
    await sleep(2100);
    const expired = await s.service.request("GET", "WhoAmI()", { headers: bearer(token) });
    expectUnauthorized(expired, /expired/i);
  });

  it("uses the configured failure limit and lets the client back in after the window", async () => {
    const client = await s.service.security!.addClient("window-client");
    expect((await requestToken(s.service, "window-client", "wrong-secret-aaaaaaaa")).status).toBe(401);
    expect((await requestToken(s.service, "window-client", "wrong-secret-bbbbbbbb")).status).toBe(401);
    const throttled = await requestToken(s.service, "window-client", client.secret);
    expect(throttled.status).toBe(429);
    expect(Number(throttled.headers["Retry-After"])).toBeLessThanOrEqual(1);
    await sleep(1100);
    expect((await requestToken(s.service, "window-client", client.secret)).status).toBe(200);
  });
});

describe("authentication (postgres smoke)", () => {
  let s: SecuredService;
  beforeAll(async () => {
    s = await openSecured("postgres");
  });
  afterAll(async () => {
    await s?.service.dispose();
  });

  it("issues tokens, authenticates them, refuses missing, forged and wrong credentials", async () => {
    const r = await s.admin.call("GET", "WhoAmI()");
    expect(r.status, r.body).toBe(200);
    expect(json(r).UserId).toBe(s.admin.userId);
    expectUnauthorized(await s.service.request("GET", "$metadata"));
    expectUnauthorized(await s.service.request("GET", "WhoAmI()", { headers: bearer(tamperSignature(s.admin.token)) }));
    const wrong = await requestToken(s.service, s.admin.clientId, "definitely-not-the-secret");
    expect(wrong.status).toBe(401);
    expect(json(wrong).error).toBe("invalid_client");
    const rows = await s.service.store.executor.query<Record<string, unknown>>("SELECT * FROM vep_oauthclient");
    expect(JSON.stringify(rows)).not.toContain(s.admin.secret);
    const plain = await newClient(s.service);
    const denied = await plain.call("GET", "roles", { headers: { MSCRMCallerID: s.admin.userId } });
    expect(denied.status).toBe(403);
    const impersonated = await s.admin.call("GET", "WhoAmI()", { headers: { MSCRMCallerID: plain.userId } });
    expect(json(impersonated).UserId).toBe(plain.userId);
  });
});
