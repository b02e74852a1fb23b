import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { MetadataService, type MetadataChange } from "./metadata/metadata-service.js";
import type { Model } from "./metadata/model.js";
import type { EntityDefinition, OptionSetDefinition, RelationshipDefinition } from "./metadata/types.js";
import { bodyText, ODataProcessor, RESERVED_SET_NAMES, type ODataRequest, type ODataResponse } from "./odata/processor.js";
import { OperationRegistry, type OperationDefinition } from "./odata/operations.js";
import { createNodeHandler, type NodeRequestHandler } from "./http/node-handler.js";
import type { DataProvider } from "./providers/data-provider.js";
import { ProviderRegistry } from "./providers/provider-registry.js";
import { methodNotAllowed } from "./odata/errors.js";
import { OpenSecurityPolicy, type Caller, type SecurityPolicy } from "./security/access.js";
import { SecurityService, type TokenAuthOptions } from "./security/security-service.js";
import { SYSTEM_ADMINISTRATOR_ROLE_ID } from "./security/security-model.js";
import { tokenRoute } from "./http/token-endpoint.js";
import { SEQUENCE_TABLE, SqlDataProvider } from "./store/sql-provider.js";
import { Store, type StoreOptions } from "./store/store.js";
import { CATALOG_ENTITY, VirtualEntityCatalog } from "./catalog/catalog.js";

export interface ServiceOptions extends StoreOptions {
  /**
   * Who may do what. By default every request needs a bearer token (from the built-in `/oauth2/token` or a
   * trusted issuer) and every privilege is checked against the caller's roles. `"none"` allows everything
   * (tests, or behind a gateway that authorizes); a SecurityPolicy replaces the whole layer.
   */
  security?: SecurityPolicy | "none" | TokenAuthOptions;
  /** Registers this client as an application user with the System Administrator role (VEP_ADMIN_CLIENT_ID/SECRET). */
  adminClient?: { clientId: string; secret: string };
  /** Service root path; `/api/data/v9.2` by default. */
  rootPath?: string;
  /** Absolute base URL for links (`https://host`); derived from each request's Host header when absent. */
  baseUrl?: string;
  /** Default and maximum page size (5000). */
  maxPageSize?: number;
  /** Where unexpected errors are reported (a 500 without details goes to the client); console.error by default. */
  onError?: (error: unknown) => void;
}

export interface ListeningService {
  url: string;
  server: Server;
  close(): Promise<void>;
}

/**
 * A Dataverse-style OData service over metadata-defined entities: open it on a store, define entities
 * (or generate virtual ones from the catalog), and serve `handler` with node:http, Express or Fastify.
 */
export class VirtualEntityService {
  readonly operations = new OperationRegistry();
  readonly providers: ProviderRegistry;
  readonly processor: ODataProcessor;
  readonly handler: NodeRequestHandler;
  private readonly extraRoutes: ((req: ODataRequest) => Promise<ODataResponse | undefined>)[] = [];

  private constructor(
    readonly store: Store,
    readonly metadata: MetadataService,
    readonly sqlProvider: SqlDataProvider,
    readonly catalog: VirtualEntityCatalog,
    /** The built-in security layer (users, roles, tokens), when it is the one in use. */
    readonly security: SecurityService | undefined,
    policy: SecurityPolicy,
    options: ServiceOptions,
  ) {
    this.providers = new ProviderRegistry(sqlProvider);
    if (security) {
      for (const [entity, hooks] of security.hooks()) this.operations.hooks.set(entity, hooks);
      this.operations.register(security.addPrivilegesRoleAction());
      this.operations.register(security.removePrivilegeRoleAction());
      this.operations.register(security.whoAmIFunction());
      this.extraRoutes.push(tokenRoute(security));
    }
    this.operations.registerComplexType({ name: "WhoAmIResponse", properties: [{ name: "BusinessUnitId", type: "Edm.Guid", nullable: false }, { name: "UserId", type: "Edm.Guid", nullable: false }, { name: "OrganizationId", type: "Edm.Guid", nullable: false }] });
    this.operations.registerComplexType({ name: "RolePrivilege", properties: [{ name: "Depth", type: "Edm.String" }, { name: "PrivilegeId", type: "Edm.Guid" }, { name: "BusinessUnitId", type: "Edm.Guid" }, { name: "PrivilegeName", type: "Edm.String" }] });
    this.operations.register(catalog.generateAction());
    this.operations.hooks.set(CATALOG_ENTITY, {
      beforeCreate: async () => {
        throw methodNotAllowed("POST", "the virtual entity catalog (its rows come from the store's sources)", ["GET", "PATCH"]);
      },
      beforeDelete: async () => {
        throw methodNotAllowed("DELETE", "the virtual entity catalog (its rows come from the store's sources)", ["GET", "PATCH"]);
      },
      update: (id, values) => catalog.onCatalogUpdate(id, values),
    });
    this.processor = new ODataProcessor({ metadata, providers: this.providers, operations: this.operations, security: policy, rootPath: options.rootPath, baseUrl: options.baseUrl, maxPageSize: options.maxPageSize, onError: options.onError });
    this.handler = createNodeHandler(this.processor, async (req) => {
      for (const route of this.extraRoutes) {
        const r = await route(req);
        if (r) return r;
      }
      return undefined;
    });
  }

  static async open(options: ServiceOptions = {}): Promise<VirtualEntityService> {
    const store = await Store.open(options);
    try {
      await store.syncTables([
        {
          name: SEQUENCE_TABLE,
          columns: [
            { name: "name", kind: "string", length: 200, nullable: false, primary: true },
            { name: "value", kind: "bigint", nullable: false },
          ],
        },
      ]);
      const metadata = await MetadataService.open(store, RESERVED_SET_NAMES);
      const sqlProvider = new SqlDataProvider(store.executor);
      const catalog = await VirtualEntityCatalog.open(store, metadata, sqlProvider);
      const choice = options.security;
      let security: SecurityService | undefined;
      let policy: SecurityPolicy;
      if (choice === "none") policy = new OpenSecurityPolicy();
      else if (choice && "authenticate" in choice) policy = choice;
      else policy = security = await SecurityService.open(store, metadata, choice ?? {});
      if (options.adminClient) {
        if (!security) throw new Error("adminClient needs the built-in security layer");
        const admin = await security.addClient(options.adminClient.clientId, { secret: options.adminClient.secret, name: "Administrator (VEP_ADMIN_CLIENT_ID)", roles: [SYSTEM_ADMINISTRATOR_ROLE_ID] });
        await security.mapApplication(admin.clientId, admin.userId, "Administrator");
      }
      return new VirtualEntityService(store, metadata, sqlProvider, catalog, security, policy, options);
    } catch (e) {
      await store.close();
      throw e;
    }
  }

  get model(): Model {
    return this.metadata.model;
  }

  defineEntity(def: EntityDefinition): Promise<Model> {
    return this.metadata.defineEntity(def);
  }
  defineRelationship(def: RelationshipDefinition): Promise<Model> {
    return this.metadata.defineRelationship(def);
  }
  defineOptionSet(def: OptionSetDefinition): Promise<Model> {
    return this.metadata.defineOptionSet(def);
  }
  /** Several definitions at once, all or nothing (entities that reference each other). */
  define(change: MetadataChange): Promise<Model> {
    return this.metadata.apply(change);
  }

  registerProvider(provider: DataProvider): void {
    this.providers.register(provider);
  }
  registerOperation<C = Caller>(op: OperationDefinition<C>): void {
    this.operations.register(op);
  }
  /** Routes outside the OData pipeline (the token endpoint); tried before it. */
  addRoute(route: (req: ODataRequest) => Promise<ODataResponse | undefined>): void {
    this.extraRoutes.push(route);
  }

  /** Runs one request through the pipeline without a socket; a body that is not a string or Buffer is sent as JSON. */
  request(method: string, url: string, init: { headers?: Record<string, string>; body?: unknown } = {}): Promise<ODataResponse> {
    const headers: Record<string, string> = { host: "localhost", ...Object.fromEntries(Object.entries(init.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])) };
    let body: ODataRequest["body"];
    if (init.body !== undefined) {
      body = typeof init.body === "string" || Buffer.isBuffer(init.body) ? init.body : JSON.stringify(init.body);
      headers["content-type"] ??= "application/json";
    }
    const fullUrl = url.startsWith("/") ? url : `${this.processor.rootPath}/${url}`;
    return (async () => {
      const req: ODataRequest = { method, url: fullUrl, headers, body };
      for (const route of this.extraRoutes) {
        const r = await route(req);
        if (r) return r;
      }
      return bodyText(await this.processor.process(req));
    })();
  }

  /** Serves the handler on a port (0 picks a free one). */
  async listen(port = 0, host = "127.0.0.1"): Promise<ListeningService> {
    const server = createServer(this.handler);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => resolve());
    });
    const address = server.address() as AddressInfo;
    const shownHost = host === "0.0.0.0" || host === "::" ? "localhost" : host;
    return {
      url: `http://${shownHost}:${address.port}${this.processor.rootPath}/`,
      server,
      close: () => new Promise<void>((resolve) => server.close(() => resolve())),
    };
  }

  async close(): Promise<void> {
    // Privileges of the last definitions are written after the change; let them land before the store goes.
    await this.security?.ready();
    await this.store.close();
  }
}

/** Opens a service on a store: an SQLite file, `:memory:` (the default) or a PostgreSQL URL. */
export function createService(options: ServiceOptions = {}): Promise<VirtualEntityService> {
  return VirtualEntityService.open(options);
}
