import { randomBytes, randomUUID, scrypt as scryptCallback, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import { createRemoteJWKSet, importJWK, jwtVerify, SignJWT, decodeJwt, type JWK, type JWTPayload, type JWTVerifyGetKey } from "jose";
import type { EntityModel, Model, NavigationModel } from "../metadata/model.js";
import type { MetadataService } from "../metadata/metadata-service.js";
import type { EntityDefinition } from "../metadata/types.js";
import { ErrorCodes, ODataError, badRequest, forbidden, notFound, notImplemented } from "../odata/errors.js";
import type { EntityHooks, OperationDefinition } from "../odata/operations.js";
import type { WriteContext } from "../providers/data-provider.js";
import type { Store } from "../store/store.js";
import { SqlDataProvider } from "../store/sql-provider.js";
import { isGuid } from "../metadata/guid.js";
import { METADATA_PRIVILEGES, privilegeName, RIGHTS, type Caller, type RequestCredentials, type SecurityPolicy } from "./access.js";
import {
  AAD_APPLICATION,
  BUSINESS_UNIT_ID,
  DEPTHS,
  OAUTH_CLIENT_TABLE,
  ORGANIZATION_ID,
  PRIVILEGE,
  ROLE,
  ROLE_PRIVILEGE_TABLE,
  SECURITY_ENTITIES,
  SECURITY_RELATIONSHIPS,
  SIGNING_KEY_TABLE,
  stableId,
  SYSTEM_ADMINISTRATOR_ROLE,
  SYSTEM_ADMINISTRATOR_ROLE_ID,
  SYSTEMUSER,
  USER_ROLES,
  type Depth,
} from "./security-model.js";

const scrypt = promisify(scryptCallback) as (password: string, salt: Buffer, keylen: number) => Promise<Buffer>;

export const IMPERSONATE_PRIVILEGE = "prvActOnBehalfOfAnotherUser";
export const INTERNAL_ISSUER = "urn:virtual-entity-provider";
/** Failure records kept for the token endpoint's throttle before the evictable ones are dropped. */
const MAX_FAILURE_RECORDS = 10_000;
/** One network address may fail this many times the per-client limit, across all client ids, per window. */
const SOURCE_FAILURE_FACTOR = 10;
/** One client may fail this many times the per-address limit, from all addresses together, per window. */
const CLIENT_FAILURE_FACTOR = 5;
/** Secrets are 16 to this many characters; longer ones are refused without hashing. */
export const MAX_SECRET_LENGTH = 512;
export const INTERNAL_AUDIENCE = "urn:virtual-entity-provider:api";

export interface TokenAuthOptions {
  /** Lifetime of tokens from the built-in endpoint, in seconds (900). */
  tokenLifetimeSeconds?: number;
  /** Trusted outside issuers (Microsoft Entra ID…): tokens with this `iss` are verified with these keys. */
  external?: { issuer: string; audience: string | string[]; jwksUrl?: string; keys?: JWK[] }[];
  /**
   * Failed token requests allowed in `throttleWindowSeconds` (60) before 429: `maxFailures` (5) per client
   * from one network address, five times that per client from all addresses together, and
   * `maxFailuresPerAddress` (50) per address across all client ids; 0 turns the last off (behind a reverse
   * proxy every caller has the proxy's address).
   */
  maxFailures?: number;
  maxFailuresPerAddress?: number;
  throttleWindowSeconds?: number;
  /**
   * Where clients get tokens, announced in the 401 challenge as Dataverse does (`authorization_uri`), so
   * clients that discover the authority by sending a request without a token find it. Defaults to the
   * Microsoft Entra authorize endpoint of the first trusted `login.microsoftonline.com`/`sts.windows.net`
   * issuer; without one, the challenge names no authority (the built-in endpoint is POST /oauth2/token).
   */
  authorizationUri?: string;
}

/** `https://login.microsoftonline.com/<tenant>/oauth2/authorize` for an Entra issuer, else undefined. */
function entraAuthorizeUri(issuer: string): string | undefined {
  const m = /^https:\/\/(?:login\.microsoftonline\.com\/([0-9a-f-]{36})\/v2\.0|sts\.windows\.net\/([0-9a-f-]{36})\/?)$/i.exec(issuer);
  return m ? `https://login.microsoftonline.com/${m[1] ?? m[2]}/oauth2/authorize` : undefined;
}

/** The privileges every entity has, Dataverse-style. */
export function entityPrivileges(logicalName: string): string[] {
  return RIGHTS.map((r) => privilegeName(r, logicalName));
}

const ALL_METADATA_PRIVILEGES = [...Object.values(METADATA_PRIVILEGES), IMPERSONATE_PRIVILEGE];

/**
 * Stored security entities whose built-in attributes have since been made read-only (a store created by an
 * earlier version), with those attributes made read-only; everything else of the stored definition is kept.
 */
function hardenedSecurityEntities(model: Model): EntityDefinition[] {
  const changed: EntityDefinition[] = [];
  for (const builtIn of SECURITY_ENTITIES) {
    const stored = model.entities.get(builtIn.LogicalName)?.def;
    if (!stored) continue;
    const readOnly = builtIn.Attributes.filter((a) => a.IsValidForUpdate === false).map((a) => a.LogicalName);
    if (stored.Attributes.every((a) => !readOnly.includes(a.LogicalName) || a.IsValidForUpdate === false)) continue;
    const def = structuredClone(stored);
    for (const a of def.Attributes) if (readOnly.includes(a.LogicalName)) a.IsValidForUpdate = false;
    changed.push(def);
  }
  return changed;
}

export function applicationIdOf(clientId: string): string {
  return isGuid(clientId) ? clientId.toLowerCase() : stableId("client", clientId);
}

function unauthorized(message: string, error = "invalid_token", authorizationUri?: string): ODataError {
  const authority = authorizationUri ? `, authorization_uri="${authorizationUri.replace(/["\\]/g, "")}"` : "";
  return new ODataError(401, ErrorCodes.unauthorized, message, { "WWW-Authenticate": `Bearer realm="virtual-entity-provider"${authority}, error="${error}"` });
}

/**
 * Users, roles and privileges (Dataverse's model), bearer-token authentication and the built-in OAuth 2.0
 * client-credentials endpoint. Every request is authenticated and every privilege checked here, from the
 * store, so a change of roles takes effect on the next request.
 */
export class SecurityService implements SecurityPolicy {
  private pendingSync: Promise<void> = Promise.resolve();
  private signingKey?: { kid: string; key: Uint8Array };
  private readonly external: { issuer: string; audience: string | string[]; keys: JWTVerifyGetKey }[] = [];
  private readonly failures = new Map<string, number[]>();
  private unknownClientHash?: Promise<string>;
  readonly tokenLifetime: number;

  private constructor(
    readonly store: Store,
    readonly metadata: MetadataService,
    readonly options: TokenAuthOptions,
  ) {
    this.tokenLifetime = options.tokenLifetimeSeconds ?? 900;
  }

  private unauthorized(message: string, error?: string): ODataError {
    const authority = this.options.authorizationUri ?? this.options.external?.map((e) => entraAuthorizeUri(e.issuer)).find((u) => u !== undefined);
    return unauthorized(message, error, authority);
  }

  static async open(store: Store, metadata: MetadataService, options: TokenAuthOptions = {}): Promise<SecurityService> {
    const service = new SecurityService(store, metadata, options);
    await store.syncTables([ROLE_PRIVILEGE_TABLE, OAUTH_CLIENT_TABLE, SIGNING_KEY_TABLE]);
    const missing = SECURITY_ENTITIES.filter((e) => !metadata.model.entities.has(e.LogicalName));
    const missingRelationships = SECURITY_RELATIONSHIPS.filter((r) => !metadata.model.relationships.has(r.SchemaName));
    const hardened = hardenedSecurityEntities(metadata.model);
    if (missing.length || missingRelationships.length || hardened.length) await metadata.apply({ entities: [...missing, ...hardened], relationships: [...missingRelationships] }, { builtIn: true });
    metadata.reserveBuiltIn(SECURITY_ENTITIES.map((e) => e.LogicalName), SECURITY_RELATIONSHIPS.map((r) => r.SchemaName));
    await service.ensureBuiltIns();
    await service.syncPrivileges(metadata.model);
    await service.dropPrivilegesOfRemovedEntities();
    let previous = metadata.model;
    metadata.onChange((model) => {
      const removed = [...previous.entities.keys()].filter((name) => !model.entities.has(name));
      previous = model;
      service.pendingSync = service.pendingSync.then(() => service.syncPrivileges(model, removed)).catch((e) => console.error("[virtual-entity-provider] privilege sync failed:", e));
    });
    for (const ext of options.external ?? []) {
      let keys: JWTVerifyGetKey;
      if (ext.jwksUrl) keys = createRemoteJWKSet(new URL(ext.jwksUrl));
      else if (ext.keys?.length) {
        const imported = await Promise.all(ext.keys.map(async (k) => ({ kid: k.kid, key: await importJWK(k, k.alg ?? "RS256") })));
        keys = async (header) => {
          const found = imported.find((k) => !header.kid || k.kid === header.kid);
          if (!found) throw new Error("no matching key");
          return found.key as Awaited<ReturnType<JWTVerifyGetKey>>;
        };
      } else throw new Error(`External issuer ${ext.issuer} needs jwksUrl or keys`);
      service.external.push({ issuer: ext.issuer, audience: ext.audience, keys });
    }
    return service;
  }

  private q(s: string) {
    return this.store.dialect.quote(s);
  }
  private p(n: number, type?: string) {
    const d = this.store.dialect;
    return type ? d.typedParam(d.placeholder(n), type) : d.placeholder(n);
  }
  private get model(): Model {
    return this.metadata.model;
  }

  // ------------------------------------------------------------------ built-ins and privileges

  private async ensureBuiltIns(): Promise<void> {
    const role = this.model.entity(ROLE)!;
    const exists = await this.store.executor.query(`SELECT 1 FROM ${this.q(role.table)} WHERE ${this.q(role.primaryId.column)} = ${this.p(1, "Edm.Guid")}`, [SYSTEM_ADMINISTRATOR_ROLE_ID]);
    if (!exists.length) await this.insert(role, { roleid: SYSTEM_ADMINISTRATOR_ROLE_ID, name: SYSTEM_ADMINISTRATOR_ROLE, description: "Holds every privilege." });
    const key = await this.store.executor.query<{ keyid: string; secret: string }>(`SELECT ${this.q("keyid")}, ${this.q("secret")} FROM ${this.q(SIGNING_KEY_TABLE.name)}`);
    if (key.length) this.signingKey = { kid: key[0]!.keyid, key: Buffer.from(key[0]!.secret, "base64url") };
    else {
      const secret = randomBytes(32);
      const kid = randomUUID();
      await this.store.executor.execute(`INSERT INTO ${this.q(SIGNING_KEY_TABLE.name)} (${this.q("keyid")}, ${this.q("secret")}, ${this.q("createdon")}) VALUES (${this.p(1)}, ${this.p(2)}, ${this.p(3)})`, [kid, secret.toString("base64url"), new Date().toISOString()]);
      this.signingKey = { kid, key: secret };
    }
  }

  /** Built-in and security rows are written like any other, through the store's own provider. */
  private async insert(entity: EntityModel, values: Record<string, unknown>, options: { ignoreDuplicate?: boolean } = {}): Promise<void> {
    const outcome = await new SqlDataProvider(this.store.executor).create(entity, values);
    if (outcome.status === "conflict" && !options.ignoreDuplicate) throw new Error(outcome.message);
  }

  /** Every entity gets its six privileges (virtual ones when generated), plus the metadata privileges. */
  private async syncPrivileges(model: Model, removed: readonly string[] = []): Promise<void> {
    const privilege = model.entity(PRIVILEGE);
    if (!privilege) return;
    const existing = new Set((await this.store.executor.query<{ name: string }>(`SELECT ${this.q("name")} FROM ${this.q(privilege.table)}`)).map((r) => r.name));
    const wanted: { name: string; right: string; entity: string | null; global: boolean }[] = [];
    for (const name of ALL_METADATA_PRIVILEGES) wanted.push({ name, right: "Read", entity: null, global: true });
    for (const e of model.entities.values()) {
      for (const right of RIGHTS) wanted.push({ name: privilegeName(right, e.logicalName), right, entity: e.logicalName, global: true });
    }
    for (const w of wanted) {
      if (existing.has(w.name)) continue;
      const basic = w.entity ? model.entity(w.entity)?.def.OwnershipType === "UserOwned" : false;
      // Another process may have added it meanwhile (PostgreSQL scale-out): the same id, so a duplicate is fine.
      await this.insert(privilege, { privilegeid: stableId("privilege", w.name), name: w.name, accessright: w.right, entitylogicalname: w.entity, canbeglobal: true, canbebasic: basic }, { ignoreDuplicate: true });
    }
    // The privileges of entities this change removed go, with their grants: privilege ids are stable by name,
    // so grants left behind would apply again to a later entity of the same name. Only those: another
    // process on the same store may serve entities this one does not know yet.
    const gone = removed.filter((name) => !model.entities.has(name));
    if (gone.length) await this.dropPrivileges(gone);
  }

  /** The six privileges of each entity, and every grant of them. */
  private async dropPrivileges(entities: readonly string[]): Promise<void> {
    const privilege = this.model.entity(PRIVILEGE)!;
    await this.store.executor.transaction(async (tx) => {
      for (const entity of entities) {
        for (const right of RIGHTS) {
          const id = stableId("privilege", privilegeName(right, entity));
          await tx.execute(`DELETE FROM ${this.q(ROLE_PRIVILEGE_TABLE.name)} WHERE ${this.q("privilegeid")} = ${this.p(1, "Edm.Guid")}`, [id]);
          await tx.execute(`DELETE FROM ${this.q(privilege.table)} WHERE ${this.q(privilege.primaryId.column)} = ${this.p(1, "Edm.Guid")}`, [id]);
        }
      }
    });
  }

  /**
   * At start, the privileges (and grants) of entities no stored definition has any more: removed while
   * security was off, by an earlier version, or by a process that stopped first. The stored definitions
   * are read afresh, so an entity another process defined meanwhile keeps its privileges.
   */
  private async dropPrivilegesOfRemovedEntities(): Promise<void> {
    const privilege = this.model.entity(PRIVILEGE);
    if (!privilege) return;
    const col = (n: string) => this.q(privilege.attributes.get(n)!.column);
    const privileged = await this.store.executor.query<{ entity: string }>(`SELECT DISTINCT ${col("entitylogicalname")} AS ${this.q("entity")} FROM ${this.q(privilege.table)} WHERE ${col("entitylogicalname")} IS NOT NULL`);
    const stored = new Set((await this.metadata.repository.loadAll()).entities.map((e) => e.LogicalName));
    const gone = privileged.map((p) => p.entity).filter((name) => !stored.has(name));
    if (gone.length) await this.dropPrivileges(gone);
  }

  /** Waits for privileges of the latest model changes to exist. */
  ready(): Promise<void> {
    return this.pendingSync;
  }

  // ------------------------------------------------------------------ authorization

  /** The user's roles that still exist (a deleted role grants nothing, whatever links are left). */
  async rolesOf(userId: string): Promise<string[]> {
    const role = this.model.entity(ROLE)!;
    const rows = await this.store.executor.query<{ roleid: string }>(
      `SELECT ur.${this.q("roleid")} AS ${this.q("roleid")} FROM ${this.q("systemuserroles")} ur JOIN ${this.q(role.table)} r ON r.${this.q(role.primaryId.column)} = ur.${this.q("roleid")} WHERE ur.${this.q("systemuserid")} = ${this.p(1, "Edm.Guid")}`,
      [userId],
    );
    return rows.map((r) => String(r.roleid).toLowerCase());
  }

  /** Write hooks of the security entities: the built-in role stays, privileges are read-only, links go with their role. */
  hooks(): Map<string, EntityHooks> {
    const readOnly = (what: string) => async () => {
      throw new ODataError(405, ErrorCodes.methodNotAllowed, `${what} are read-only: they are created with the entities they protect`, { Allow: "GET" });
    };
    return new Map<string, EntityHooks>([
      [PRIVILEGE, { beforeCreate: readOnly("Privileges"), update: readOnly("Privileges"), beforeDelete: readOnly("Privileges") }],
      [
        ROLE,
        {
          beforeDelete: async (id) => {
            if (id === SYSTEM_ADMINISTRATOR_ROLE_ID) throw forbidden(`The built-in ${SYSTEM_ADMINISTRATOR_ROLE} role cannot be deleted`);
            await this.store.executor.execute(`DELETE FROM ${this.q(ROLE_PRIVILEGE_TABLE.name)} WHERE ${this.q("roleid")} = ${this.p(1, "Edm.Guid")}`, [id]);
            await this.store.executor.execute(`DELETE FROM ${this.q("systemuserroles")} WHERE ${this.q("roleid")} = ${this.p(1, "Edm.Guid")}`, [id]);
          },
        },
      ],
    ]);
  }

  /** The caller's privileges among `names` (all of them for a System Administrator). */
  async heldPrivileges(userId: string, names: readonly string[]): Promise<Set<string>> {
    const roles = await this.rolesOf(userId);
    if (roles.includes(SYSTEM_ADMINISTRATOR_ROLE_ID)) return new Set(names);
    if (!roles.length || !names.length) return new Set();
    const privilege = this.model.entity(PRIVILEGE)!;
    const params: unknown[] = [...roles, ...names];
    const rolePlaceholders = roles.map((_r, i) => this.p(i + 1, "Edm.Guid")).join(", ");
    const namePlaceholders = names.map((_n, i) => this.p(roles.length + i + 1)).join(", ");
    const rows = await this.store.executor.query<{ name: string }>(
      `SELECT DISTINCT p.${this.q("name")} AS ${this.q("name")} FROM ${this.q(ROLE_PRIVILEGE_TABLE.name)} rp JOIN ${this.q(privilege.table)} p ON p.${this.q("privilegeid")} = rp.${this.q("privilegeid")} WHERE rp.${this.q("roleid")} IN (${rolePlaceholders}) AND p.${this.q("name")} IN (${namePlaceholders})`,
      params,
    );
    return new Set(rows.map((r) => r.name));
  }

  async require(caller: Caller, privileges: readonly string[]): Promise<void> {
    if (!privileges.length) return;
    await this.pendingSync;
    const held = await this.heldPrivileges(caller.userId, privileges);
    const missing = privileges.find((p) => !held.has(p));
    if (missing) {
      const roles = await this.rolesOf(caller.userId);
      throw forbidden(`Principal user (Id=${caller.userId}, type=8, roleCount=${roles.length}) is missing ${missing} privilege (Id=${stableId("privilege", missing)})`);
    }
    // Impersonation never widens access: the user acting needs the privilege as well as the one acted for.
    if (caller.impersonatedBy) {
      const actor = await this.heldPrivileges(caller.impersonatedBy, privileges);
      const lacking = privileges.find((p) => !actor.has(p));
      if (lacking) {
        throw forbidden(`Principal user (Id=${caller.impersonatedBy}), acting on behalf of user ${caller.userId}, is missing ${lacking} privilege (Id=${stableId("privilege", lacking)}); both users must hold it`);
      }
    }
  }

  /** Privileges a caller may use: under impersonation, only those both users hold, as in Dataverse. */
  private async usablePrivileges(caller: Caller, names: readonly string[]): Promise<Set<string>> {
    const held = await this.heldPrivileges(caller.userId, names);
    if (!caller.impersonatedBy) return held;
    const actor = await this.heldPrivileges(caller.impersonatedBy, names);
    return new Set([...held].filter((n) => actor.has(n)));
  }

  private async isAdministrator(caller: Caller): Promise<boolean> {
    for (const userId of caller.impersonatedBy ? [caller.userId, caller.impersonatedBy] : [caller.userId]) {
      if (!(await this.rolesOf(userId)).includes(SYSTEM_ADMINISTRATOR_ROLE_ID)) return false;
    }
    return true;
  }

  /**
   * Writes through a virtual entity by an application are recorded as the user its client id is mapped to
   * (the Human Resources "Azure Active Directory applications" page); without a mapping they are refused.
   */
  async writeContext(caller: Caller, entity: EntityModel): Promise<WriteContext> {
    if (!caller.applicationId || !entity.isVirtual) return { userId: caller.userId };
    const app = this.model.entity(AAD_APPLICATION)!;
    const rows = await this.store.executor.query<{ userid: string | null }>(
      `SELECT ${this.q(app.attributes.get("mshr_userid")!.column)} AS ${this.q("userid")} FROM ${this.q(app.table)} WHERE ${this.q(app.attributes.get("mshr_clientid")!.column)} = ${this.p(1, "Edm.Guid")}`,
      [caller.applicationId],
    );
    const userId = rows[0]?.userid;
    if (!userId) {
      throw forbidden(`The application ${caller.applicationId} is not mapped to a user who writes data (add it to ${app.entitySetName}, the Microsoft Entra ID applications page); nothing was written to ${entity.logicalName}`);
    }
    return { userId: String(userId).toLowerCase() };
  }

  /** A caller may only assign a role whose privileges it holds itself (no escalation through roles). */
  async checkLink(caller: Caller, navigation: NavigationModel, sourceId: string, targetId: string, associate: boolean): Promise<void> {
    if (navigation.relationship.SchemaName !== USER_ROLES || !associate) return;
    const roleId = navigation.source.logicalName === ROLE ? sourceId : targetId;
    if (await this.isAdministrator(caller)) return;
    if (roleId === SYSTEM_ADMINISTRATOR_ROLE_ID) throw forbidden(`Only a System Administrator can assign the ${SYSTEM_ADMINISTRATOR_ROLE} role`);
    const privilege = this.model.entity(PRIVILEGE)!;
    const names = (
      await this.store.executor.query<{ name: string }>(
        `SELECT p.${this.q("name")} AS ${this.q("name")} FROM ${this.q(ROLE_PRIVILEGE_TABLE.name)} rp JOIN ${this.q(privilege.table)} p ON p.${this.q("privilegeid")} = rp.${this.q("privilegeid")} WHERE rp.${this.q("roleid")} = ${this.p(1, "Edm.Guid")}`,
        [roleId],
      )
    ).map((r) => r.name);
    const held = await this.usablePrivileges(caller, names);
    const missing = names.find((n) => !held.has(n));
    if (missing) throw forbidden(`Principal user (Id=${caller.impersonatedBy ?? caller.userId}) cannot assign a role with ${missing}, which it does not hold${caller.impersonatedBy ? ` together with user ${caller.userId}` : ""}`);
  }

  // ------------------------------------------------------------------ authentication

  private async findUser(column: "applicationid" | "azureactivedirectoryobjectid" | "systemuserid", value: string): Promise<{ systemuserid: string; fullname: string; isdisabled: unknown; applicationid: string | null } | undefined> {
    const user = this.model.entity(SYSTEMUSER)!;
    const col = (n: string) => this.q(user.attributes.get(n)!.column);
    const rows = await this.store.executor.query<{ systemuserid: string; fullname: string; isdisabled: unknown; applicationid: string | null }>(
      `SELECT ${col("systemuserid")} AS ${this.q("systemuserid")}, ${col("fullname")} AS ${this.q("fullname")}, ${col("isdisabled")} AS ${this.q("isdisabled")}, ${col("applicationid")} AS ${this.q("applicationid")} FROM ${this.q(user.table)} WHERE ${col(column)} = ${this.p(1, "Edm.Guid")}`,
      [value.toLowerCase()],
    );
    return rows[0];
  }

  async authenticate(request: RequestCredentials): Promise<Caller> {
    const header = request.headers["authorization"];
    const value = Array.isArray(header) ? header[0] : header;
    if (!value) throw this.unauthorized("A bearer token is required: send 'Authorization: Bearer <token>' (get one from POST /oauth2/token)", "invalid_request");
    const m = /^Bearer\s+([A-Za-z0-9_\-.]+)$/i.exec(value.trim());
    if (!m) throw this.unauthorized("The Authorization header must be 'Bearer <token>'", "invalid_request");
    const claims = await this.verify(m[1]!);
    const internal = claims.iss === INTERNAL_ISSUER;
    const appId = (claims.appid ?? claims.azp) as string | undefined;
    // Entra names the client app (appid/azp) in every token; a delegated token (scp, or idtyp "user") acts
    // for the signed-in user (oid), as Dataverse authenticates it, never as the app it came through.
    const delegated = !internal && (claims.scp !== undefined || claims.idtyp === "user");
    let user;
    if (!delegated && typeof appId === "string" && appId) {
      // Outside issuers name applications by their GUID application id; a free-form client id could
      // otherwise stand for one of this service's own clients (vep-admin).
      if (!internal && !isGuid(appId)) throw this.unauthorized(`An application token from '${claims.iss}' must name the application by its GUID application id (appid/azp), not '${appId}'`);
      user = await this.findUser("applicationid", applicationIdOf(appId));
      if (!user) throw forbidden(`The application with client id ${appId} is not an application user of this environment`);
    } else if (typeof claims.oid === "string" && isGuid(claims.oid)) {
      user = await this.findUser("azureactivedirectoryobjectid", claims.oid);
      if (!user) throw forbidden(`The user with object id ${claims.oid} is not a user of this environment`);
    } else throw this.unauthorized(delegated ? "A delegated token (scp) must name its user by object id (oid)" : "The token names neither an application (appid/azp) nor a user (oid)");
    if (user.isdisabled === true || user.isdisabled === 1) throw forbidden(`The user ${user.systemuserid} (${user.fullname}) is disabled`);
    const caller: Caller = { userId: String(user.systemuserid).toLowerCase(), fullName: user.fullname, applicationId: user.applicationid ? String(user.applicationid).toLowerCase() : undefined };
    return this.impersonate(caller, request);
  }

  /** MSCRMCallerID / CallerObjectId: honoured for callers holding prvActOnBehalfOfAnotherUser, refused otherwise. */
  private async impersonate(caller: Caller, request: RequestCredentials): Promise<Caller> {
    const get = (name: string) => {
      const v = request.headers[name];
      return Array.isArray(v) ? v[0] : v;
    };
    const byId = get("mscrmcallerid");
    const byObject = get("callerobjectid");
    // Present but empty is refused like any other value that is not a GUID, never taken as absent.
    if (byId === undefined && byObject === undefined) return caller;
    if (byId !== undefined && byObject !== undefined) throw badRequest("Send either MSCRMCallerID or CallerObjectId, not both");
    const target = (byId ?? byObject)!.trim();
    if (!isGuid(target)) throw badRequest(`${byId !== undefined ? "MSCRMCallerID" : "CallerObjectId"} must be a GUID, not '${target}'`);
    const held = await this.heldPrivileges(caller.userId, [IMPERSONATE_PRIVILEGE]);
    if (!held.has(IMPERSONATE_PRIVILEGE)) {
      throw forbidden(`Principal user (Id=${caller.userId}) is missing ${IMPERSONATE_PRIVILEGE} privilege and cannot act on behalf of another user`);
    }
    const user = await this.findUser(byId !== undefined ? "systemuserid" : "azureactivedirectoryobjectid", target);
    if (!user) throw forbidden(`The user to act on behalf of (${target}) does not exist`);
    if (user.isdisabled === true || user.isdisabled === 1) throw forbidden(`The user to act on behalf of (${target}) is disabled`);
    return { userId: String(user.systemuserid).toLowerCase(), fullName: user.fullname, applicationId: user.applicationid ? String(user.applicationid).toLowerCase() : undefined, impersonatedBy: caller.userId };
  }

  private async verify(token: string): Promise<JWTPayload> {
    let issuer: string | undefined;
    try {
      issuer = decodeJwt(token).iss;
    } catch {
      throw this.unauthorized("The bearer token is malformed");
    }
    try {
      if (issuer === INTERNAL_ISSUER) {
        const { payload } = await jwtVerify(token, this.signingKey!.key, { issuer: INTERNAL_ISSUER, audience: INTERNAL_AUDIENCE, algorithms: ["HS256"] });
        return payload;
      }
      const ext = this.external.find((e) => e.issuer === issuer);
      if (!ext) throw this.unauthorized(`Tokens from the issuer '${issuer ?? "(none)"}' are not trusted here`);
      const { payload } = await jwtVerify(token, ext.keys, { issuer: ext.issuer, audience: ext.audience, algorithms: ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"] });
      return payload;
    } catch (e) {
      if (e instanceof ODataError) throw e;
      const code = (e as { code?: string }).code;
      if (code === "ERR_JWT_EXPIRED") throw this.unauthorized("The bearer token has expired");
      throw this.unauthorized("The bearer token is not valid (bad signature, audience or issuer)");
    }
  }

  // ------------------------------------------------------------------ OAuth clients and tokens

  private async hash(secret: string, salt: Buffer = randomBytes(16)): Promise<string> {
    const key = await scrypt(secret, salt, 32);
    return `scrypt$${salt.toString("base64url")}$${key.toString("base64url")}`;
  }

  private async matches(secret: string, stored: string): Promise<boolean> {
    const [, salt, expected] = stored.split("$");
    const actual = await scrypt(secret, Buffer.from(salt!, "base64url"), 32);
    const want = Buffer.from(expected!, "base64url");
    return want.length === actual.length && timingSafeEqual(want, actual);
  }

  /**
   * Registers a client of the token endpoint, with an application user for it. Returns the secret, which
   * is stored only as a hash: show it once. With `secret`, that secret is used (VEP_ADMIN_CLIENT_SECRET).
   */
  async addClient(clientId: string, options: { name?: string; secret?: string; roles?: string[] } = {}): Promise<{ clientId: string; secret: string; userId: string }> {
    if (!/^[A-Za-z0-9_.:-]{1,100}$/.test(clientId)) throw badRequest("A client id is 1 to 100 letters, digits or ._:-");
    const secret = options.secret ?? randomBytes(32).toString("base64url");
    if (secret.length < 16 || secret.length > MAX_SECRET_LENGTH) throw badRequest(`A client secret must be 16 to ${MAX_SECRET_LENGTH} characters long`);
    const hash = await this.hash(secret);
    const t = this.q(OAUTH_CLIENT_TABLE.name);
    // A new secret for an existing client keeps its name unless one is given.
    const updated = await this.store.executor.execute(`UPDATE ${t} SET ${this.q("secrethash")} = ${this.p(1)}, ${this.q("name")} = COALESCE(${this.p(2)}, ${this.q("name")}) WHERE ${this.q("clientid")} = ${this.p(3)}`, [hash, options.name ?? null, clientId]);
    if (!updated.changes) {
      await this.store.executor.execute(`INSERT INTO ${t} (${this.q("clientid")}, ${this.q("name")}, ${this.q("secrethash")}, ${this.q("createdon")}) VALUES (${this.p(1)}, ${this.p(2)}, ${this.p(3)}, ${this.p(4)})`, [clientId, options.name ?? clientId, hash, new Date().toISOString()]);
    }
    const applicationId = applicationIdOf(clientId);
    let user = await this.findUser("applicationid", applicationId);
    if (!user) {
      const userId = randomUUID();
      await this.insert(this.model.entity(SYSTEMUSER)!, { systemuserid: userId, fullname: options.name ?? `# ${clientId}`, applicationid: applicationId, isdisabled: false });
      user = { systemuserid: userId, fullname: options.name ?? clientId, isdisabled: false, applicationid: applicationId };
    }
    for (const roleId of options.roles ?? []) await this.assignRole(String(user.systemuserid), roleId);
    return { clientId, secret, userId: String(user.systemuserid).toLowerCase() };
  }

  async assignRole(userId: string, roleId: string): Promise<void> {
    const nav = this.model.entity(SYSTEMUSER)!.navigations.get("systemuserroles_association")!;
    const d = this.store.dialect;
    const i = nav.intersect!;
    const exists = await this.store.executor.query(`SELECT 1 FROM ${this.q(i.table)} WHERE ${this.q(i.sourceColumn)} = ${this.p(1, "Edm.Guid")} AND ${this.q(i.targetColumn)} = ${this.p(2, "Edm.Guid")}`, [userId, roleId]);
    if (exists.length) return;
    await this.store.executor.execute(`INSERT INTO ${this.q(i.table)} (${this.q(`${i.table}id`)}, ${this.q(i.sourceColumn)}, ${this.q(i.targetColumn)}) VALUES (${this.p(1, "Edm.Guid")}, ${this.p(2, "Edm.Guid")}, ${this.p(3, "Edm.Guid")})`, [randomUUID(), d.toParam(userId), roleId]);
  }

  /** Maps an application (client id) to the user its writes through virtual entities are recorded as. */
  async mapApplication(clientId: string, userId: string, name: string): Promise<void> {
    const app = this.model.entity(AAD_APPLICATION)!;
    const applicationId = applicationIdOf(clientId);
    const col = (n: string) => this.q(app.attributes.get(n)!.column);
    const exists = await this.store.executor.query(`SELECT 1 FROM ${this.q(app.table)} WHERE ${col("mshr_clientid")} = ${this.p(1, "Edm.Guid")}`, [applicationId]);
    if (exists.length) return;
    await this.insert(app, { [app.primaryId.logicalName]: randomUUID(), mshr_clientid: applicationId, mshr_name: name, mshr_userid: userId });
  }

  async hasClient(clientId: string): Promise<boolean> {
    return (await this.store.executor.query(`SELECT 1 FROM ${this.q(OAUTH_CLIENT_TABLE.name)} WHERE ${this.q("clientid")} = ${this.p(1)}`, [clientId])).length > 0;
  }

  async hasClients(): Promise<boolean> {
    return (await this.store.executor.query(`SELECT 1 FROM ${this.q(OAUTH_CLIENT_TABLE.name)} LIMIT 1`)).length > 0;
  }

  async roleIdByName(name: string): Promise<string | undefined> {
    const role = this.model.entity(ROLE)!;
    const rows = await this.store.executor.query<{ id: string }>(`SELECT ${this.q(role.primaryId.column)} AS ${this.q("id")} FROM ${this.q(role.table)} WHERE ${this.q("name")} = ${this.p(1)}`, [name]);
    return rows[0] ? String(rows[0].id).toLowerCase() : undefined;
  }

  private recordFailure(key: string, at: number): void {
    const times = this.failures.get(key);
    if (times) times.push(at);
    else this.failures.set(key, [at]);
  }

  /** Seconds to wait before `key` may try again (0: now); its failures in the sliding window are kept. */
  private throttled(key: string, max: number): number {
    const now = Date.now();
    if (this.failures.size > MAX_FAILURE_RECORDS) this.evictFailures(now);
    const windowMs = (this.options.throttleWindowSeconds ?? 60) * 1000;
    const recent = (this.failures.get(key) ?? []).filter((t) => now - t < windowMs);
    this.failures.set(key, recent);
    if (recent.length >= max) return Math.ceil((recent[0]! + windowMs - now) / 1000);
    return 0;
  }

  /**
   * Bounded memory under a spray of client ids: expired records go first, then the oldest of those that
   * hold fewer failures than a lock takes. A locked record is never dropped before its window ends, or a
   * spray of other ids would reopen it to guessing.
   */
  private evictFailures(now: number): void {
    const windowMs = (this.options.throttleWindowSeconds ?? 60) * 1000;
    const lock = this.options.maxFailures ?? 5;
    for (const [id, times] of this.failures) if (!times.length || now - times[times.length - 1]! >= windowMs) this.failures.delete(id);
    for (const [id, times] of this.failures) {
      if (this.failures.size <= MAX_FAILURE_RECORDS) break;
      if (times.length < lock) this.failures.delete(id);
    }
  }

  /**
   * OAuth 2.0 client-credentials grant. Returns the token response or an RFC 6749 error. `source` (the
   * caller's network address) keys the lock, so failures from one address do not lock a client out for
   * every other, and limits the failures one address may make across all client ids.
   */
  async issueToken(clientId: string, clientSecret: string, source?: string): Promise<{ status: number; body: Record<string, unknown>; headers?: Record<string, string> }> {
    const lock = this.options.maxFailures ?? 5;
    const perAddress = this.options.maxFailuresPerAddress ?? lock * SOURCE_FAILURE_FACTOR;
    // Each key with the failures it may hold: the client from this address, the client from anywhere
    // (bounds guessing spread over many addresses), and this address for any client (bounds sprays of ids).
    const keys: [string, number][] = [[source === undefined ? clientId : `${clientId}\u0000${source}`, lock]];
    if (source !== undefined) {
      keys.push([`${clientId}\u0000*`, lock * CLIENT_FAILURE_FACTOR]);
      if (perAddress > 0) keys.push([`\u0000${source}`, perAddress]);
    }
    const wait = Math.max(...keys.map(([key, max]) => this.throttled(key, max)));
    if (wait > 0) return { status: 429, body: { error: "invalid_client", error_description: `Too many failed attempts for this client; retry in ${wait} s` }, headers: { "Retry-After": String(wait) } };
    // Counted as a failure until it succeeds, so simultaneous guesses cannot all slip past the limit.
    const attempt = Date.now();
    for (const [key] of keys) this.recordFailure(key, attempt);
    const failed = { status: 401, body: { error: "invalid_client", error_description: "Client authentication failed" }, headers: { "WWW-Authenticate": 'Basic realm="virtual-entity-provider"' } };
    // Longer than any id or secret this service issues: refused before any hashing, whoever the client is.
    if (clientId.length > 100 || clientSecret.length > MAX_SECRET_LENGTH) return failed;
    const rows = await this.store.executor.query<{ secrethash: string }>(`SELECT ${this.q("secrethash")} FROM ${this.q(OAUTH_CLIENT_TABLE.name)} WHERE ${this.q("clientid")} = ${this.p(1)}`, [clientId]);
    // One hash either way (against a fixed hash for an unknown client), so timing does not tell which ids exist.
    const stored = rows[0]?.secrethash ?? (await (this.unknownClientHash ??= this.hash("not-a-client")));
    const ok = (await this.matches(clientSecret, stored)) && rows.length > 0;
    if (!ok) return failed;
    this.failures.delete(keys[0]![0]);
    const token = await new SignJWT({ appid: clientId, azp: clientId })
      .setProtectedHeader({ alg: "HS256", kid: this.signingKey!.kid, typ: "JWT" })
      .setIssuer(INTERNAL_ISSUER)
      .setAudience(INTERNAL_AUDIENCE)
      .setSubject(clientId)
      .setIssuedAt()
      .setJti(randomUUID())
      .setExpirationTime(`${this.tokenLifetime}s`)
      .sign(this.signingKey!.key);
    return { status: 200, body: { access_token: token, token_type: "Bearer", expires_in: this.tokenLifetime } };
  }

  // ------------------------------------------------------------------ operations

  /** `Microsoft.Dynamics.CRM.AddPrivilegesRole` bound to a role. */
  addPrivilegesRoleAction(): OperationDefinition<Caller> {
    return {
      name: "AddPrivilegesRole",
      kind: "action",
      boundTo: ROLE,
      parameters: [{ name: "Privileges", type: { kind: "complex", name: "RolePrivilege", collection: true } }],
      requiredPrivileges: () => [privilegeName("Write", ROLE)],
      handler: async ({ binding, parameters, caller }) => {
        await this.pendingSync;
        const list = parameters.Privileges;
        if (!Array.isArray(list) || list.length === 0) throw badRequest("Privileges must be a non-empty array of {PrivilegeId, Depth}");
        const privilege = this.model.entity(PRIVILEGE)!;
        const grants: { id: string; name: string; depth: Depth }[] = [];
        for (const [i, item] of list.entries()) {
          if (!item || typeof item !== "object") throw badRequest(`Privileges[${i}] must be an object`);
          const { PrivilegeId, PrivilegeName, Depth: depth } = item as Record<string, unknown>;
          if (!DEPTHS.includes(depth as Depth)) throw badRequest(`Privileges[${i}].Depth must be one of ${DEPTHS.join(", ")}`);
          let row: { privilegeid: string; name: string; entitylogicalname: string | null } | undefined;
          const cols = `${this.q("privilegeid")}, ${this.q("name")}, ${this.q("entitylogicalname")}`;
          if (typeof PrivilegeId === "string" && isGuid(PrivilegeId)) {
            row = (await this.store.executor.query<typeof row & object>(`SELECT ${cols} FROM ${this.q(privilege.table)} WHERE ${this.q("privilegeid")} = ${this.p(1, "Edm.Guid")}`, [PrivilegeId.toLowerCase()]))[0];
          } else if (typeof PrivilegeName === "string") {
            row = (await this.store.executor.query<typeof row & object>(`SELECT ${cols} FROM ${this.q(privilege.table)} WHERE ${this.q("name")} = ${this.p(1)}`, [PrivilegeName]))[0];
          } else throw badRequest(`Privileges[${i}] needs a PrivilegeId (GUID) or a PrivilegeName`);
          if (!row) throw notFound(`Privileges[${i}]: no privilege ${String(PrivilegeId ?? PrivilegeName)}`);
          const owner = row.entitylogicalname ? this.model.entity(row.entitylogicalname) : undefined;
          if (depth !== "Global" && (!owner || owner.def.OwnershipType !== "UserOwned")) {
            throw badRequest(`Privileges[${i}]: ${row.name} is for an organization-owned entity (or the organization) and takes Depth Global only`);
          }
          // Basic, Local and Deep limit access to records by owner and business unit, which are not modelled
          // yet: granting one would grant every record, so it is refused rather than widened.
          if (depth !== "Global") throw notImplemented(`Privileges[${i}]: Depth ${depth} needs record ownership, which this version does not model; grant Depth Global`);
          grants.push({ id: String(row.privilegeid).toLowerCase(), name: row.name, depth: depth as Depth });
        }
        // No escalation: a caller grants only privileges it holds itself.
        const held = await this.usablePrivileges(caller, grants.map((g) => g.name));
        const missing = grants.find((g) => !held.has(g.name));
        if (missing) throw forbidden(`Principal user (Id=${caller.impersonatedBy ?? caller.userId}) cannot grant ${missing.name}, which it does not hold${caller.impersonatedBy ? ` together with user ${caller.userId}` : ""}`);
        await this.store.executor.transaction(async (tx) => {
          const t = this.q(ROLE_PRIVILEGE_TABLE.name);
          for (const g of grants) {
            const updated = await tx.execute(`UPDATE ${t} SET ${this.q("depth")} = ${this.p(1)} WHERE ${this.q("roleid")} = ${this.p(2, "Edm.Guid")} AND ${this.q("privilegeid")} = ${this.p(3, "Edm.Guid")}`, [g.depth, binding!.id, g.id]);
            if (!updated.changes) {
              await tx.execute(`INSERT INTO ${t} (${this.q("roleprivilegeid")}, ${this.q("roleid")}, ${this.q("privilegeid")}, ${this.q("depth")}) VALUES (${this.p(1, "Edm.Guid")}, ${this.p(2, "Edm.Guid")}, ${this.p(3, "Edm.Guid")}, ${this.p(4)})`, [randomUUID(), binding!.id, g.id, g.depth]);
            }
          }
        });
        return { kind: "none" };
      },
    };
  }

  /** `Microsoft.Dynamics.CRM.RemovePrivilegeRole` bound to a role, with a PrivilegeId. */
  removePrivilegeRoleAction(): OperationDefinition<Caller> {
    return {
      name: "RemovePrivilegeRole",
      kind: "action",
      boundTo: ROLE,
      parameters: [{ name: "PrivilegeId", type: { kind: "primitive", type: "Edm.Guid" } }],
      requiredPrivileges: () => [privilegeName("Write", ROLE)],
      handler: async ({ binding, parameters }) => {
        const id = String(parameters.PrivilegeId);
        if (!isGuid(id)) throw badRequest("PrivilegeId must be a GUID");
        const r = await this.store.executor.execute(`DELETE FROM ${this.q(ROLE_PRIVILEGE_TABLE.name)} WHERE ${this.q("roleid")} = ${this.p(1, "Edm.Guid")} AND ${this.q("privilegeid")} = ${this.p(2, "Edm.Guid")}`, [binding!.id, id.toLowerCase()]);
        if (!r.changes) throw notFound(`The role ${binding!.id} does not hold the privilege ${id}`);
        return { kind: "none" };
      },
    };
  }

  /** The unbound function `WhoAmI()`. */
  whoAmIFunction(): OperationDefinition<Caller> {
    return {
      name: "WhoAmI",
      kind: "function",
      parameters: [],
      returns: { kind: "complex", name: "WhoAmIResponse" },
      handler: async ({ caller }) => ({ kind: "complex", typeName: "WhoAmIResponse", value: { BusinessUnitId: BUSINESS_UNIT_ID, UserId: caller.userId, OrganizationId: ORGANIZATION_ID } }),
    };
  }
}
