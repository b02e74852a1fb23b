import { randomUUID } from "node:crypto";
import type { AttributeModel, EntityModel, Model, NavigationModel } from "../metadata/model.js";
import type { MetadataService } from "../metadata/metadata-service.js";
import { describeViolation, payloadValidator, toInstant, type WriteMode } from "../metadata/payload-schema.js";
import { unsupportedConstruct, type DataProvider, type Row, type WriteContext } from "../providers/data-provider.js";
import type { ProviderRegistry } from "../providers/provider-registry.js";
import { METADATA_PRIVILEGES, privilegeName, writeContextOf, type Caller, type Right, type SecurityPolicy } from "../security/access.js";
import { bindSelect, clip, ExpressionBinder, selectedComplexProperties } from "./binder.js";
import { JOINED_PREFIX, type BoundExpression, type BoundQuery } from "./bound.js";
import { inputErrorOf } from "../store/executor.js";
import { bindExpand, expandClauses, expandContext, expandInteger, expandOptions, type ExpandItem } from "./expand.js";
import { structuralProblemOf } from "./json-text.js";
import { jsonResponse, multipartResponse, parseBatch, partUrl, resolveReferences, serviceHosts, type BatchPart, type BatchResult } from "./batch.js";
import { csdlJson, csdlXml } from "./csdl.js";
import { badRequest, ErrorCodes, methodNotAllowed, notFound, notImplemented, ODataError, preconditionFailed, validationError } from "./errors.js";
import { queryInMemory } from "./in-memory-evaluator.js";
import { ATTRIBUTE_METADATA, METADATA_DERIVED_TYPES, attributeMetadataRow, ENTITY_METADATA, entityMetadataRow, KEY_METADATA, keyMetadataRow, METADATA_SETS, OPTIONSET_METADATA, optionSetMetadataRow, RELATIONSHIP_METADATA, relationshipMetadataRow } from "./metadata-sets.js";
import type { OperationDefinition, OperationRegistry, OperationResult } from "./operations.js";
import { parseQueryOptions, parsePrefer, type Preferences, type QueryOptions } from "./query-options.js";
import { parseKey, parseResourcePath, type PathSegment } from "./resource-path.js";
import { EntitySerializer, etagOf, versionFromEtag } from "./serializer.js";
import { decodeSkipToken, encodeSkipToken } from "./skiptoken.js";
import { SqlQueryCompiler } from "../store/sql-compiler.js";
import { isGuid, stableId } from "../metadata/guid.js";

export interface ODataRequest {
  /** Set on the requests of a $batch; `changeSet` when they run in one transaction. */
  inBatch?: { changeSet: boolean };
  method: string;
  /** Path and query, e.g. `/api/data/v9.2/accounts?$top=1`. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body?: Buffer | string | Record<string, unknown>;
  /** The caller's network address, when the request came over a socket (throttling of the token endpoint). */
  remoteAddress?: string;
}

export interface ODataResponse {
  status: number;
  headers: Record<string, string>;
  body?: string;
  /**
   * A large body in pieces (collection pages), written to the socket one by one with backpressure instead
   * of being joined into one string first. Set instead of `body`.
   */
  chunks?: Iterable<string>;
}

/** The whole body of a response as text, for consumers that need it at once ($batch parts, `service.request`). */
export function bodyText(response: ODataResponse): ODataResponse {
  if (response.chunks === undefined) return response;
  const { chunks, ...rest } = response;
  return { ...rest, body: [...chunks].join("") };
}

export interface ODataProcessorOptions {
  metadata: MetadataService;
  providers: ProviderRegistry;
  operations: OperationRegistry;
  security: SecurityPolicy;
  /** Path of the service root; Dataverse's by default. */
  rootPath?: string;
  /** Absolute base URL (scheme and host) for links; taken from the Host header when absent. */
  baseUrl?: string;
  /** Page size when the client asks for none, and the most it may ask for. */
  maxPageSize?: number;
  /** Largest accepted request body, in bytes. */
  maxBodyBytes?: number;
  /** Where unexpected errors go (the client gets a 500 without details); console.error by default. */
  onError?: (error: unknown) => void;
}

export const DEFAULT_ROOT = "/api/data/v9.2";
/** Names an entity set may not take: the metadata sets and `$` segments. */
export const RESERVED_SET_NAMES: ReadonlySet<string> = new Set(["EntityDefinitions", "RelationshipDefinitions", "GlobalOptionSetDefinitions", "$metadata", "$batch", "$crossjoin", "$all", "$entity"]);

const JSON_TYPE = "application/json; odata.metadata=minimal; odata.streaming=true; IEEE754Compatible=false; charset=utf-8";

/** Everything about one request that the steps share. */
interface RequestContext {
  model: Model;
  caller: Caller;
  prefs: Preferences;
  /** Absolute service root URL, without a trailing slash. */
  root: string;
  request: ODataRequest;
  query: string;
  method: string;
  /** One serializer per entity for the whole answer. */
  serializers?: Map<EntityModel, EntitySerializer>;
  /** A write's `$select`/`$expand`, bound once (checked before writing, used again to answer). */
  representation?: { entity: EntityModel } & RepresentationQuery;
  /** Entities the caller may read or not, as found out while answering (formatted lookup names). */
  readable?: Map<EntityModel, boolean>;
}

interface RepresentationQuery {
  select: AttributeModel[];
  selectText?: string;
  expand: ExpandItem[];
  crossed: EntityModel[];
}

function header(req: ODataRequest, name: string): string | undefined {
  const v = req.headers[name.toLowerCase()];
  return Array.isArray(v) ? v.join(", ") : v;
}

/**
 * The OData v4 request pipeline: parse the path and options, bind them to the model, authorize,
 * call the entity's data provider, serialize. Works on plain request/response objects, so the node:http
 * adapter and $batch share it.
 */
export class ODataProcessor {
  readonly rootPath: string;
  readonly maxPageSize: number;
  readonly maxBodyBytes: number;

  constructor(readonly options: ODataProcessorOptions) {
    this.rootPath = (options.rootPath ?? DEFAULT_ROOT).replace(/\/$/, "");
    this.maxPageSize = options.maxPageSize ?? 5000;
    this.maxBodyBytes = options.maxBodyBytes ?? 16 * 1024 * 1024;
  }

  get security(): SecurityPolicy {
    return this.options.security;
  }

  /** Handles one request; never throws: every failure becomes an OData error response. */
  async process(request: ODataRequest, caller?: Caller): Promise<ODataResponse> {
    try {
      return await this.dispatch(request, caller);
    } catch (e) {
      return this.errorResponse(e);
    }
  }

  errorResponse(e: unknown): ODataResponse {
    if (e instanceof ODataError) {
      return { status: e.status, headers: { "Content-Type": JSON_TYPE, "OData-Version": "4.0", ...e.headers }, body: JSON.stringify(e.toJSON()) };
    }
    // The store refusing one of the request's values is the request's fault, and is said so.
    const input = inputErrorOf(e);
    if (input) return this.errorResponse(badRequest(input));
    // An unexpected failure: log it for the operator, answer without internals.
    (this.options.onError ?? ((err) => console.error("[virtual-entity-provider] unexpected error:", err)))(e);
    return { status: 500, headers: { "Content-Type": JSON_TYPE, "OData-Version": "4.0" }, body: JSON.stringify({ error: { code: ErrorCodes.internal, message: "An unexpected error occurred; it has been logged." } }) };
  }

  baseUrlOf(request: ODataRequest): string {
    if (this.options.baseUrl) return this.options.baseUrl.replace(/\/$/, "");
    // Without a configured baseUrl, links are built from the request's Host and X-Forwarded-Proto: both are
    // checked, so a forged header cannot put another scheme or arbitrary text into nextLinks and ids.
    const host = header(request, "host") ?? "localhost";
    const proto = (header(request, "x-forwarded-proto") ?? "http").split(",")[0]!.trim().toLowerCase();
    if (proto !== "http" && proto !== "https") throw badRequest(`X-Forwarded-Proto must be http or https, not '${clip(proto, 40)}'`);
    // A registered name (letters, digits, '-', '_', '.', as container and DNS names use) or a bracketed IPv6.
    if (!/^(?:[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/.test(host)) {
      throw badRequest(`The Host header '${clip(host, 100)}' is not a host name or address`);
    }
    return `${proto}://${host}`;
  }

  private async dispatch(request: ODataRequest, knownCaller?: Caller): Promise<ODataResponse> {
    const qIndex = request.url.indexOf("?");
    const path = qIndex < 0 ? request.url : request.url.slice(0, qIndex);
    const query = qIndex < 0 ? "" : request.url.slice(qIndex + 1);
    if (!path.startsWith(this.rootPath) || (path.length > this.rootPath.length && path[this.rootPath.length] !== "/")) {
      throw notFound(`No resource at '${path}'; the service root is ${this.rootPath}/`);
    }
    const maxVersion = header(request, "odata-maxversion");
    if (maxVersion !== undefined && !/^\d{1,2}\.\d{1,2}$/.test(maxVersion.trim())) throw badRequest(`OData-MaxVersion must be a version such as 4.0, not '${clip(maxVersion, 40)}'`);
    if (maxVersion && Number.parseFloat(maxVersion) < 4) throw badRequest(`This service speaks OData 4.0; OData-MaxVersion ${maxVersion} is too low`);
    const version = header(request, "odata-version");
    if (version !== undefined && !/^4\.0(1)?$/.test(version.trim())) throw badRequest(`This service reads OData 4.0 requests; OData-Version '${clip(version, 40)}' is not one it understands`);
    const caller = knownCaller ?? (await this.security.authenticate({ method: request.method, headers: request.headers }));
    const ctx: RequestContext = {
      model: this.options.metadata.model,
      caller,
      prefs: parsePrefer(request.headers["prefer"]),
      root: this.baseUrlOf(request) + this.rootPath,
      request,
      query,
      method: request.method.toUpperCase(),
    };
    const segments = parseResourcePath(path.slice(this.rootPath.length));
    if (segments.length === 0) return this.serviceDocument(ctx);
    const first = segments[0]!;
    if (first.name === "$metadata" && segments.length === 1) return this.metadataDocument(ctx);
    if (first.name === "$batch" && segments.length === 1) {
      if (request.inBatch) throw badRequest("A $batch request cannot hold another $batch");
      return this.batch(ctx);
    }
    if (METADATA_SETS.has(first.name)) return this.metadataSet(ctx, segments);
    const entity = ctx.model.entitySets.get(first.name);
    if (!entity) {
      // Operations without parameters are called with or without parentheses (Dataverse's own samples
      // send `GET WhoAmI`).
      if (segments.length === 1) {
        const op = this.options.operations.find(first.name);
        if (op) return this.invokeOperation(ctx, op, segments[0]!, undefined);
      }
      throw notFound(`Resource not found for the segment '${first.name}'`);
    }
    return this.entitySetRequest(ctx, entity, segments);
  }

  // ---------------------------------------------------------------- documents

  private acceptsJson(ctx: RequestContext, alsoText = false): void {
    const accept = header(ctx.request, "accept");
    if (!accept) return;
    let refusedParameter: string | undefined;
    const ok = accept.split(",").some((range) => {
      const [rawType, ...params] = range.split(";");
      const t = rawType!.trim().toLowerCase();
      if (!(t === "*/*" || t === "application/*" || t === "application/json" || (alsoText && (t === "text/plain" || t === "text/*")))) return false;
      const q = params.find((p) => p.trim().toLowerCase().startsWith("q="));
      if (q !== undefined && Number(q.split("=")[1]) === 0) return false;
      const unsupported = unsupportedMediaParameter(params);
      refusedParameter ??= unsupported;
      return unsupported === undefined;
    });
    if (!ok) {
      const why = refusedParameter ? `: this service writes application/json with odata.metadata=minimal and IEEE754Compatible=false only, not '${clip(refusedParameter.trim(), 80)}'` : "; use application/json";
      throw new ODataError(406, ErrorCodes.notAcceptable, `None of the media types in Accept (${clip(accept, 200)}) can be produced${why}`);
    }
  }

  private json(status: number, body: unknown, headers: Record<string, string> = {}): ODataResponse {
    return { status, headers: { "Content-Type": JSON_TYPE, "OData-Version": "4.0", ...headers }, body: JSON.stringify(body) };
  }

  private serviceDocument(ctx: RequestContext): ODataResponse {
    this.onlyMethods(ctx, ["GET"], "the service document");
    this.acceptsJson(ctx);
    const options = parseQueryOptions(ctx.query, new Set(["$format"]));
    this.checkFormat(options);
    const value = [...ctx.model.entities.values()].map((e) => ({ name: e.entitySetName, kind: "EntitySet", url: e.entitySetName }));
    for (const name of METADATA_SETS.keys()) value.push({ name, kind: "EntitySet", url: name });
    return this.json(200, { "@odata.context": `${ctx.root}/$metadata`, value });
  }

  private checkFormat(options: QueryOptions): void {
    if (options.format !== undefined && !/^(json|application\/json)(;.*)?$/i.test(options.format)) {
      throw new ODataError(406, ErrorCodes.notAcceptable, `$format=${clip(options.format, 100)} is not supported; use json`);
    }
    const unsupported = options.format === undefined ? undefined : unsupportedMediaParameter(options.format.split(";").slice(1));
    if (unsupported !== undefined) throw new ODataError(406, ErrorCodes.notAcceptable, `$format parameter '${clip(unsupported.trim(), 80)}' is not supported: this service writes odata.metadata=minimal and IEEE754Compatible=false only`);
  }

  private metadataDocument(ctx: RequestContext): ODataResponse {
    this.onlyMethods(ctx, ["GET"], "$metadata");
    const options = parseQueryOptions(ctx.query, new Set(["$format"]));
    const accept = (header(ctx.request, "accept") ?? "").toLowerCase();
    const format = options.format?.toLowerCase();
    let wantJson: boolean;
    if (format !== undefined) {
      if (/^(json|application\/json)(;.*)?$/.test(format)) wantJson = true;
      else if (/^(xml|application\/xml)(;.*)?$/.test(format)) wantJson = false;
      else throw new ODataError(406, ErrorCodes.notAcceptable, `$format=${options.format} is not supported for $metadata; use xml or json`);
    } else if (accept) {
      // Media ranges with their quality (RFC 9110 §12.5.1): the most specific range naming a format gives its
      // q (q=0: not this one; a malformed q counts as 1). Higher q wins, then a format named outright over one
      // reached by a wildcard (axios sends "application/json, text/plain, */*"), then XML, the default.
      const ranges = accept.split(",").map((t) => {
        const [type, ...params] = t.split(";");
        const text = params.map((p) => /^\s*q\s*=\s*(.*?)\s*$/i.exec(p)?.[1]).find((v) => v !== undefined);
        const q = text !== undefined && /^(0(\.\d{0,3})?|1(\.0{0,3})?)$/.test(text) ? Number(text) : 1;
        return { type: type!.trim().toLowerCase(), q };
      });
      const preference = (...exact: string[]): [number, number] => {
        const specific = ranges.filter((r) => exact.includes(r.type));
        if (specific.length) return [Math.max(...specific.map((r) => r.q)), 2];
        const wild = ranges.filter((r) => r.type === "application/*" || r.type === "*/*");
        return wild.length ? [Math.max(...wild.map((r) => r.q)), 1] : [0, 0];
      };
      const xml = preference("application/xml", "text/xml");
      const json = preference("application/json");
      if (xml[0] === 0 && json[0] === 0) throw new ODataError(406, ErrorCodes.notAcceptable, `$metadata is available as application/xml or application/json, not ${accept}`);
      wantJson = json[0] > xml[0] || (json[0] === xml[0] && json[1] > xml[1]);
    } else wantJson = false;
    if (wantJson) return this.json(200, csdlJson(ctx.model, this.options.operations));
    return { status: 200, headers: { "Content-Type": "application/xml; charset=utf-8", "OData-Version": "4.0" }, body: csdlXml(ctx.model, this.options.operations) };
  }

  private onlyMethods(ctx: RequestContext, allowed: string[], what: string): void {
    if (!allowed.includes(ctx.method)) throw methodNotAllowed(ctx.method, what, allowed);
  }

  // ---------------------------------------------------------------- authorization

  private async require(ctx: RequestContext, privileges: string[]): Promise<void> {
    await this.security.require(ctx.caller, [...new Set(privileges)], ctx.model);
  }

  /** Whether the caller holds Read on the entity (answered once per request and entity). */
  private async mayRead(ctx: RequestContext, entity: EntityModel): Promise<boolean> {
    const known = (ctx.readable ??= new Map()).get(entity);
    if (known !== undefined) return known;
    let allowed = true;
    try {
      await this.require(ctx, [this.priv("Read", entity)]);
    } catch (e) {
      if (!(e instanceof ODataError) || e.status !== 403) throw e;
      allowed = false;
    }
    ctx.readable.set(entity, allowed);
    return allowed;
  }

  private priv(right: Right, entity: EntityModel): string {
    return privilegeName(right, entity.logicalName);
  }

  // ---------------------------------------------------------------- metadata sets

  private async metadataSet(ctx: RequestContext, segments: PathSegment[]): Promise<ODataResponse> {
    this.onlyMethods(ctx, ["GET"], "the metadata sets (they are read-only)");
    this.acceptsJson(ctx);
    const [first, second, third] = segments;
    const model = ctx.model;
    if (first!.name === "RelationshipDefinitions") {
      await this.require(ctx, [METADATA_PRIVILEGES.relationship]);
      const rows = [...model.relationships.values()].map(relationshipMetadataRow);
      return this.inMemorySet(ctx, RELATIONSHIP_METADATA, rows, "RelationshipDefinitions", first!, segments.slice(1));
    }
    if (first!.name === "GlobalOptionSetDefinitions") {
      await this.require(ctx, [METADATA_PRIVILEGES.optionSet]);
      const rows = [...model.optionSets.values()].map(optionSetMetadataRow);
      return this.inMemorySet(ctx, OPTIONSET_METADATA, rows, "GlobalOptionSetDefinitions", first!, segments.slice(1), "Name");
    }
    await this.require(ctx, [METADATA_PRIVILEGES.entity]);
    const entityRows = [...model.entities.values()].map((e) => entityMetadataRow(e.def));
    const defOf = (row: Row) => model.entities.get(row.LogicalName as string)!.def;
    // Dataverse's relationship navigations of an entity definition: the relationships it takes part in.
    const relationshipsOf = (name: string, logicalName: string) =>
      [...model.relationships.values()]
        .filter((r) =>
          name === "ManyToOneRelationships"
            ? r.RelationshipType === "OneToManyRelationship" && r.ReferencingEntity === logicalName
            : name === "OneToManyRelationships"
              ? r.RelationshipType === "OneToManyRelationship" && r.ReferencedEntity === logicalName
              : r.RelationshipType === "ManyToManyRelationship" && (r.Entity1LogicalName === logicalName || r.Entity2LogicalName === logicalName),
        )
        .map(relationshipMetadataRow);
    const RELATIONSHIP_NAVIGATIONS = ["ManyToOneRelationships", "OneToManyRelationships", "ManyToManyRelationships"];
    const expandable = new Map<string, InMemoryNavigation>([
      ["Attributes", { entity: ATTRIBUTE_METADATA, privilege: METADATA_PRIVILEGES.attribute, rowsOf: (row) => defOf(row).Attributes.map((a) => attributeMetadataRow(model, defOf(row), a)) }],
      ["Keys", { entity: KEY_METADATA, rowsOf: (row) => (defOf(row).Keys ?? []).map((k) => keyMetadataRow(defOf(row), k, stableId(`key:${defOf(row).MetadataId}`, k.LogicalName))) }],
      ...RELATIONSHIP_NAVIGATIONS.map((name): [string, InMemoryNavigation] => [name, { entity: RELATIONSHIP_METADATA, privilege: METADATA_PRIVILEGES.relationship, rowsOf: (row) => relationshipsOf(name, row.LogicalName as string) }]),
    ]);
    if (!second) return this.inMemorySet(ctx, ENTITY_METADATA, entityRows, "EntityDefinitions", first!, [], "LogicalName", expandable);
    if (first!.args === undefined) throw badRequest(`'${second.name}' needs an entity definition key: EntityDefinitions(LogicalName='…')/${second.name}`);
    const row = this.findByKey(ENTITY_METADATA, entityRows, first!.args, "LogicalName");
    const def = model.entities.get(row.LogicalName as string)!.def;
    const context = `EntityDefinitions(${row.MetadataId})`;
    if (second.name === "Attributes") {
      await this.require(ctx, [METADATA_PRIVILEGES.attribute]);
      const rows = def.Attributes.map((a) => attributeMetadataRow(model, def, a));
      return this.inMemorySet(ctx, ATTRIBUTE_METADATA, rows, `${context}/Attributes`, second, third ? segments.slice(2) : [], "LogicalName");
    }
    if (second.name === "Keys") {
      const rows = (def.Keys ?? []).map((k) => keyMetadataRow(def, k, stableId(`key:${def.MetadataId}`, k.LogicalName)));
      return this.inMemorySet(ctx, KEY_METADATA, rows, `${context}/Keys`, second, segments.slice(2), "LogicalName");
    }
    if (RELATIONSHIP_NAVIGATIONS.includes(second.name)) {
      await this.require(ctx, [METADATA_PRIVILEGES.relationship]);
      return this.inMemorySet(ctx, RELATIONSHIP_METADATA, relationshipsOf(second.name, def.LogicalName), `${context}/${second.name}`, second, segments.slice(2), "SchemaName");
    }
    if (ENTITY_METADATA.properties.has(second.name) || ENTITY_METADATA.complexProperties.has(second.name)) {
      throw notImplemented(`Addressing the property '${second.name}' of an entity definition is not supported; use $select=${second.name}`);
    }
    throw notFound(`EntityDefinitions have no '${second.name}'; use Attributes, Keys or ${RELATIONSHIP_NAVIGATIONS.join(", ")}`);
  }

  private findByKey(entity: EntityModel, rows: Row[], args: string, alternateKey?: string): Row {
    const parts = parseKey(args);
    if (parts.length !== 1) throw badRequest(`The key '(${args})' must name one value`);
    const [part] = parts;
    const name = part!.name ?? "MetadataId";
    if (name !== "MetadataId" && name !== alternateKey) throw badRequest(`'${name}' is not a key of ${entity.logicalName}; use MetadataId${alternateKey ? ` or ${alternateKey}` : ""}`);
    const value = part!.value.value;
    const found = rows.find((r) => (name === "MetadataId" ? String(r.MetadataId).toLowerCase() === String(value).toLowerCase() : r[name] === value));
    if (!found) throw notFound(`No ${entity.logicalName} with ${name} = ${part!.value.text} was found`);
    return found;
  }

  private async inMemorySet(ctx: RequestContext, entity: EntityModel, rows: Row[], contextPath: string, segment: PathSegment, rest: PathSegment[], alternateKey?: string, expandable?: ReadonlyMap<string, InMemoryNavigation>): Promise<ODataResponse> {
    // A type cast (…/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata): the rows of that type.
    const cast = rest[0] && rest[0].args === undefined ? /^(?:Microsoft\.Dynamics\.CRM|mscrm)\.([A-Za-z]+)$/.exec(rest[0].name) : null;
    if (cast) {
      const type = `#Microsoft.Dynamics.CRM.${cast[1]}`;
      // A cast names a type derived from the set's own (or the type its rows carry), never another set's.
      const derived = METADATA_DERIVED_TYPES.get(cast[1]!) === entity.logicalName;
      const own = cast[1] === entity.logicalName;
      if (!own && !derived && !rows.some((r) => r["@odata.type"] === type)) throw notFound(`'${rest[0]!.name}' is not a type of the rows of ${contextPath}`);
      if (!own) rows = rows.filter((r) => r["@odata.type"] === type);
      contextPath += `/Microsoft.Dynamics.CRM.${cast[1]}`;
      rest = rest.slice(1);
    }
    if (rest.length) throw notFound(`Resource not found for the segment '${rest[0]!.name}'`);
    const serializeRow = (row: Row, select: AttributeModel[], complex: string[]) => {
      const out: Record<string, unknown> = {};
      if (row["@odata.type"]) out["@odata.type"] = row["@odata.type"];
      for (const a of select) out[a.logicalName] = row[a.logicalName] ?? null;
      for (const c of complex) out[c] = row[c] ?? null;
      return out;
    };
    // Dataverse clients expand an attribute's OptionSet; here it is a complex property, so expanding it selects it.
    const expandsComplex = entity === ATTRIBUTE_METADATA;
    const allowed = expandable || expandsComplex ? ["$expand"] : [];
    const complexExpanded: string[] = [];
    const expansions = async (options: QueryOptions) => {
      if (options.expand !== undefined && expandsComplex) {
        for (const clause of expandClauses(options.expand)) {
          if (clause.name === "OptionSet" && !clause.optionsText?.trim()) complexExpanded.push("OptionSet");
          else if (clause.name === "OptionSet" || clause.name === "GlobalOptionSet") throw notImplemented(`$expand of '${clause.name}'${clause.optionsText ? " with options" : ""} is not supported; $expand=OptionSet gives an attribute's options`);
          else throw badRequest(`$expand at position ${clause.pos}: '${clip(clause.name, 100)}' cannot be expanded here; use OptionSet`);
        }
        return [];
      }
      return options.expand === undefined ? [] : this.bindInMemoryExpand(ctx, options, expandable);
    };
    const withExpansions = (row: Row, out: Record<string, unknown>, items: BoundInMemoryExpand[]) => {
      for (const item of items) {
        const related = queryInMemory(item.navigation.rowsOf(row), item.query, item.query.top ?? Number.MAX_SAFE_INTEGER);
        out[item.name] = related.rows.map((r) => serializeRow(r, item.query.select, item.complex));
      }
      return out;
    };
    if (segment.args !== undefined) {
      const options = parseQueryOptions(ctx.query, new Set(["$select", "$format", ...allowed]));
      this.checkFormat(options);
      const items = await expansions(options);
      const row = this.findByKey(entity, rows, segment.args, alternateKey);
      const select = bindSelect(entity, options.select);
      const complex = [...new Set([...selectedComplexProperties(entity, options.select), ...complexExpanded])];
      return this.json(200, { "@odata.context": `${ctx.root}/$metadata#${contextPath}/$entity`, ...withExpansions(row, serializeRow(row, select, complex), items) });
    }
    const options = parseQueryOptions(ctx.query, new Set(["$select", "$filter", "$orderby", "$top", "$skip", "$count", "$format", ...allowed]));
    const items = await expansions(options);
    this.checkFormat(options);
    const binder = new ExpressionBinder(entity, options.aliases);
    const query: BoundQuery = {
      entity,
      filter: options.filter !== undefined ? binder.bindFilter(options.filter) : undefined,
      orderBy: options.orderby !== undefined ? new ExpressionBinder(entity, options.aliases, "$orderby").bindOrderBy(options.orderby) : [],
      select: bindSelect(entity, options.select),
      skip: options.skip,
      top: options.top,
      count: options.count ?? false,
      expand: [],
    };
    const result = queryInMemory(rows, query, options.top ?? Number.MAX_SAFE_INTEGER);
    const complex = [...new Set([...selectedComplexProperties(entity, options.select), ...complexExpanded])];
    const body: Record<string, unknown> = { "@odata.context": `${ctx.root}/$metadata#${contextPath}` };
    if (query.count) body["@odata.count"] = result.total;
    body.value = result.rows.map((r) => withExpansions(r, serializeRow(r, query.select, complex), items));
    return this.json(200, body);
  }

  /** `$expand=Attributes($select=…;$filter=…),Keys` on metadata sets: each item bound against its set, its privilege checked. */
  private async bindInMemoryExpand(ctx: RequestContext, options: QueryOptions, expandable: ReadonlyMap<string, InMemoryNavigation> | undefined): Promise<BoundInMemoryExpand[]> {
    const items: BoundInMemoryExpand[] = [];
    for (const clause of expandClauses(options.expand!)) {
      const navigation = expandable?.get(clause.name);
      if (!navigation) throw badRequest(`$expand at position ${clause.pos}: '${clip(clause.name, 100)}' cannot be expanded here; use ${[...(expandable?.keys() ?? [])].join(" or ")}`);
      if (items.some((i) => i.name === clause.name)) throw badRequest(`$expand names '${clause.name}' twice`);
      if (navigation.privilege) await this.require(ctx, [navigation.privilege]);
      const nested = expandOptions(clause, IN_MEMORY_NESTED_OPTIONS);
      const target = navigation.entity;
      const filter = nested.get("$filter");
      const orderby = nested.get("$orderby");
      items.push({
        name: clause.name,
        navigation,
        complex: selectedComplexProperties(target, nested.get("$select")),
        query: {
          entity: target,
          filter: filter !== undefined ? new ExpressionBinder(target, options.aliases, `$filter in $expand of '${clause.name}'`).bindFilter(filter) : undefined,
          orderBy: orderby !== undefined ? new ExpressionBinder(target, options.aliases, `$orderby in $expand of '${clause.name}'`).bindOrderBy(orderby) : [],
          select: bindSelect(target, nested.get("$select")),
          top: expandInteger(clause, nested, "$top"),
          skip: expandInteger(clause, nested, "$skip"),
          count: false,
          expand: [],
        },
      });
    }
    return items;
  }

  // ---------------------------------------------------------------- entity sets

  private async entitySetRequest(ctx: RequestContext, entity: EntityModel, segments: PathSegment[]): Promise<ODataResponse> {
    const [setSegment, second, third, fourth] = segments;
    if (segments.length > 4) throw notFound(`Resource not found for the segment '${segments[4]!.name}'`);
    const provider = this.options.providers.for(entity);
    if (ctx.request.inBatch?.changeSet && ctx.method !== "GET" && (provider !== this.options.providers.defaultProvider || !provider.capabilities(entity).transactions)) {
      throw notImplemented(`${entity.logicalName} is served by the data provider '${provider.name}', whose writes cannot join a change set's transaction`);
    }
    if (setSegment!.args === undefined) {
      if (!second) {
        if (ctx.method === "GET") return this.getCollection(ctx, entity, provider);
        if (ctx.method === "POST") return this.create(ctx, entity, provider);
        throw methodNotAllowed(ctx.method, `the entity set '${entity.entitySetName}'`, ["GET", "POST"]);
      }
      if (second.name === "$count" && !third) {
        this.onlyMethods(ctx, ["GET"], "$count");
        return this.countCollection(ctx, entity, provider);
      }
      const op = this.findBoundOperation(second, entity, true);
      if (op && !third) return this.invokeOperation(ctx, op, second, undefined, entity);
      throw notFound(`Resource not found for the segment '${second.name}'`);
    }
    if (!second && ctx.method === "PATCH") return this.upsertByKey(ctx, entity, provider, setSegment!.args);
    const id = await this.resolveKey(ctx, entity, provider, setSegment!.args);
    if (!second) {
      switch (ctx.method) {
        case "GET":
          return this.getSingle(ctx, entity, provider, id);
        case "DELETE":
          return this.remove(ctx, entity, provider, id);
        default:
          throw methodNotAllowed(ctx.method, `a single ${entity.logicalName}`, ["GET", "PATCH", "DELETE"]);
      }
    }
    if (second.name === "$ref") throw notImplemented(`The reference of a single record ('${entity.entitySetName}(<id>)/$ref') is not supported; its URL is its reference`);
    const op = this.findBoundOperation(second, entity, false);
    if (op) {
      if (third) throw notFound(`Resource not found for the segment '${third.name}'`);
      return this.invokeOperation(ctx, op, second, id, entity);
    }
    const attr = entity.properties.get(second.name);
    if (attr) {
      if (second.args !== undefined) throw badRequest(`The property '${second.name}' takes no parentheses`);
      if (fourth) throw notFound(`Resource not found for the segment '${fourth.name}'`);
      if (third && third.name !== "$value") throw notFound(`Resource not found for the segment '${third.name}'`);
      return this.propertyRequest(ctx, entity, provider, id, attr, third !== undefined);
    }
    const nav = entity.navigations.get(second.name);
    if (nav) return this.navigationRequest(ctx, entity, provider, id, nav, second, segments.slice(2));
    throw notFound(`Could not find a property named '${second.name}' on ${entity.logicalName}`);
  }

  // ---------------------------------------------------------------- navigation and $ref

  /** The id a `{"@odata.id": ".../set(id)"}` body or `$id` option names, checked against the navigation's target. */
  private async referencedId(ctx: RequestContext, nav: NavigationModel, ref: unknown): Promise<string> {
    if (typeof ref !== "string") throw badRequest(`The reference must be {"@odata.id": "<${nav.target.entitySetName}(id) URL>"}`);
    const m = /^(?:.*\/)?([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)$/.exec(ref.trim());
    if (!m || m[1] !== nav.target.entitySetName) throw badRequest(`The reference '${ref}' must point at ${nav.target.entitySetName}(<id>) for '${nav.name}'`);
    const target = this.options.providers.for(nav.target);
    const id = await this.resolveKey(ctx, nav.target, target, m[2]!);
    if (!(await target.retrieve(nav.target, id, [nav.target.primaryId]))) throw notFound(`${nav.target.logicalName} With Id = ${id} Does Not Exist`);
    return id;
  }

  private async navigationRequest(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string, nav: NavigationModel, segment: PathSegment, rest: PathSegment[]): Promise<ODataResponse> {
    const [next, after] = rest;
    if (next?.name === "$count" && !after) {
      if (nav.kind === "single") throw badRequest(`'${nav.name}' is single-valued: it has no $count`);
      this.onlyMethods(ctx, ["GET"], "$count");
      await this.require(ctx, [this.priv("Read", entity)]);
      if (!(await provider.retrieve(entity, id, [entity.primaryId]))) throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
      return this.countCollection(ctx, nav.target, this.options.providers.for(nav.target), { navigation: nav, id });
    }
    if (next && next.name !== "$ref" && !after && (nav.target.properties.has(next.name) || nav.target.navigations.has(next.name))) {
      throw notImplemented(`Addressing '${next.name}' through the navigation property '${nav.name}' is not supported; use $select or $expand`);
    }
    if (after || (next && next.name !== "$ref")) throw notFound(`Resource not found for the segment '${(after ?? next)!.name}'`);
    if (!next) {
      if (segment.args !== undefined) throw notImplemented(`Addressing one related record as '${nav.name}(…)' is not supported; use ${nav.target.entitySetName}(<id>)`);
      this.onlyMethods(ctx, ["GET"], `the navigation property '${nav.name}'`);
      await this.require(ctx, [this.priv("Read", entity)]);
      if (!(await provider.retrieve(entity, id, [entity.primaryId]))) throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
      if (nav.kind === "single") {
        const row = await provider.retrieve(entity, id, [nav.lookup!]);
        const targetId = row?.[nav.lookup!.logicalName] as string | null;
        if (!targetId) return { status: 204, headers: { "OData-Version": "4.0" } };
        return this.getSingle(ctx, nav.target, this.options.providers.for(nav.target), targetId);
      }
      return this.getCollection(ctx, nav.target, this.options.providers.for(nav.target), { navigation: nav, id, path: `${entity.entitySetName}(${id})/${nav.name}` });
    }
    // $ref: links between records.
    const targetProvider = this.options.providers.for(nav.target);
    if (ctx.method === "GET") return this.getReferences(ctx, entity, provider, id, nav);
    // Authorized before either record is looked up: without the privileges, whether the ids exist is not told.
    await this.require(ctx, this.refWritePrivileges(entity, nav));
    if (!(await provider.retrieve(entity, id, [entity.primaryId]))) throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
    if (nav.kind === "single") {
      if (segment.args !== undefined) throw badRequest(`'${nav.name}' is single-valued and takes no key`);
      if (ctx.method === "PUT") {
        const targetId = await this.referencedId(ctx, nav, this.readJsonBody(ctx)["@odata.id"]);
        return this.writeLookup(ctx, entity, provider, id, nav, targetId);
      }
      if (ctx.method === "DELETE") return this.writeLookup(ctx, entity, provider, id, nav, null);
      throw methodNotAllowed(ctx.method, `${nav.name}/$ref`, ["PUT", "DELETE"]);
    }
    if (ctx.method === "POST") {
      if (segment.args !== undefined) throw badRequest(`POST to '${nav.name}/$ref' takes the reference in the body`);
      const targetId = await this.referencedId(ctx, nav, this.readJsonBody(ctx)["@odata.id"]);
      return this.link(ctx, entity, provider, targetProvider, id, nav, targetId, true);
    }
    if (ctx.method === "DELETE") {
      let targetId: string;
      if (segment.args !== undefined) targetId = await this.resolveKey(ctx, nav.target, targetProvider, segment.args);
      else {
        const options = parseQueryOptions(ctx.query, new Set(["$id"]));
        if (options.id === undefined) throw badRequest(`DELETE of '${nav.name}/$ref' needs the link to remove: ${nav.name}(<id>)/$ref or $ref?$id=<url>`);
        targetId = await this.referencedId(ctx, nav, options.id);
      }
      return this.link(ctx, entity, provider, targetProvider, id, nav, targetId, false);
    }
    throw methodNotAllowed(ctx.method, `${nav.name}/$ref`, ["POST", "DELETE"]);
  }

  /** `GET set(id)/nav/$ref`: the related records' ids as `@odata.id` URLs. */
  private async getReferences(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string, nav: NavigationModel): Promise<ODataResponse> {
    this.acceptsJson(ctx);
    // A single-valued reference is one link: query options have nothing to act on there.
    parseQueryOptions(ctx.query, nav.kind === "single" ? new Set() : new Set(["$filter", "$orderby", "$top", "$skip"]));
    await this.require(ctx, [this.priv("Read", entity), this.priv("Read", nav.target)]);
    const row = await provider.retrieve(entity, id, nav.kind === "single" ? [entity.primaryId, nav.lookup!] : [entity.primaryId]);
    if (!row) throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
    const url = (targetId: string) => `${ctx.root}/${nav.target.entitySetName}(${targetId})`;
    if (nav.kind === "single") {
      const targetId = row[nav.lookup!.logicalName] as string | null;
      if (!targetId) return { status: 204, headers: { "OData-Version": "4.0" } };
      return this.json(200, { "@odata.context": `${ctx.root}/$metadata#$ref`, "@odata.id": url(targetId) });
    }
    const options = parseQueryOptions(ctx.query, new Set(["$filter", "$orderby", "$top", "$skip"]));
    const query = this.bindCollectionQuery(ctx, nav.target, options);
    query.select = [nav.target.primaryId];
    restrictToRelated(query, nav, [id]);
    const targetProvider = this.options.providers.for(nav.target);
    this.checkSupported(targetProvider, query);
    const pageSize = Math.min(query.top ?? this.maxPageSize, this.maxPageSize);
    const { rows, next } = await targetProvider.retrieveMultiple({ query, pageSize });
    const body: Record<string, unknown> = { "@odata.context": `${ctx.root}/$metadata#Collection($ref)`, value: rows.map((r) => ({ "@odata.id": url(r[nav.target.primaryId.logicalName] as string) })) };
    // More links than a page: the rest follow by $skip (a $top larger than the page is honoured the same way).
    const remaining = query.top === undefined ? Infinity : query.top - rows.length;
    if (next && remaining > 0) {
      const paging = [`$skip=${(query.skip ?? 0) + rows.length}`, ...(query.top !== undefined ? [`$top=${remaining}`] : [])];
      body["@odata.nextLink"] = this.nextLink(ctx, `${entity.entitySetName}(${id})/${nav.name}/$ref`, ["skip", "top"], paging);
    }
    return this.json(200, body);
  }

  private async writeLookup(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string, nav: NavigationModel, targetId: string | null): Promise<ODataResponse> {
    const { version } = await this.writeCondition(ctx, entity, provider, id);
    const outcome = await provider.update(entity, id, { [nav.lookup!.logicalName]: targetId }, version, await this.writeContext(ctx, entity));
    if (outcome.status === "not-found") throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
    if (outcome.status === "precondition-failed") throw preconditionFailed(`The version of the ${entity.logicalName} record ${id} has changed; nothing was updated`);
    if (outcome.status === "conflict") throw new ODataError(412, ErrorCodes.duplicate, outcome.message);
    return { status: 204, headers: { "OData-Version": "4.0" } };
  }

  /**
   * What writing a link through `entity`'s navigation takes: a lookup is written on the record that holds
   * it (Write, Append) and points at the other (AppendTo); a many-to-many link takes Append and AppendTo.
   */
  private refWritePrivileges(entity: EntityModel, nav: NavigationModel): string[] {
    if (nav.kind === "single") return [this.priv("Write", entity), this.priv("Append", entity), this.priv("AppendTo", nav.target)];
    if (nav.intersect) return [this.priv("Append", entity), this.priv("AppendTo", nav.target)];
    return [this.priv("Write", nav.target), this.priv("Append", nav.target), this.priv("AppendTo", entity)];
  }

  /** Associates or dissociates two records through a collection-valued navigation. */
  private async link(ctx: RequestContext, entity: EntityModel, provider: DataProvider, targetProvider: DataProvider, id: string, nav: NavigationModel, targetId: string, associate: boolean): Promise<ODataResponse> {
    await this.require(ctx, this.refWritePrivileges(entity, nav));
    if (nav.intersect) {
      await this.security.checkLink?.(ctx.caller, nav, id, targetId, associate);
      if (!provider.associate || !provider.disassociate) throw notImplemented(`The data provider of ${entity.logicalName} does not support many-to-many links`);
      if (associate) await provider.associate(nav, id, targetId);
      else if (!(await provider.disassociate(nav, id, targetId))) throw notFound(`${entity.logicalName} ${id} is not linked to ${nav.target.logicalName} ${targetId} through '${nav.name}'`);
      return { status: 204, headers: { "OData-Version": "4.0" } };
    }
    // One-to-many: the link is the lookup on the related record.
    if (!associate) {
      const row = await targetProvider.retrieve(nav.target, targetId, [nav.lookup!]);
      if (row?.[nav.lookup!.logicalName] !== id) throw notFound(`${nav.target.logicalName} ${targetId} is not linked to ${entity.logicalName} ${id}`);
    }
    const outcome = await targetProvider.update(nav.target, targetId, { [nav.lookup!.logicalName]: associate ? id : null }, undefined, await this.writeContext(ctx, nav.target));
    if (outcome.status !== "ok") throw notFound(`${nav.target.logicalName} With Id = ${targetId} Does Not Exist`);
    return { status: 204, headers: { "OData-Version": "4.0" } };
  }

  private findBoundOperation(segment: PathSegment, entity: EntityModel, collection: boolean): OperationDefinition | undefined {
    const name = segment.name.startsWith("Microsoft.Dynamics.CRM.") ? segment.name.slice("Microsoft.Dynamics.CRM.".length) : segment.name.startsWith("mscrm.") ? segment.name.slice(6) : undefined;
    if (name === undefined) return undefined;
    const op = this.options.operations.find(name, entity.logicalName);
    if (!op) throw notFound(`The operation '${segment.name}' is not bound to ${entity.logicalName}`);
    if (collection) throw badRequest(`The operation '${segment.name}' is bound to a single ${entity.logicalName}; call it on ${entity.entitySetName}(<id>)`);
    return op;
  }

  /** Resolves `(guid)` or an alternate key `(name='value',...)` to the primary key value. */
  private async resolveKey(ctx: RequestContext, entity: EntityModel, provider: DataProvider, args: string): Promise<string> {
    if (isGuid(args)) return args.toLowerCase(); // the common case, without the expression parser
    const parts = parseKey(args);
    if (parts.length === 1 && (parts[0]!.name === undefined || parts[0]!.name === entity.primaryId.logicalName)) {
      const v = parts[0]!.value;
      const text = String(v.value);
      if (!(v.type === "guid" || (v.type === "string" && isGuid(text)))) {
        throw badRequest(`The key of ${entity.logicalName} must be a GUID, not ${v.text}`);
      }
      return text.toLowerCase();
    }
    if (parts.some((p) => p.name === undefined)) throw badRequest(`A key with several values must name each one: (name=value,...)`);
    const names = parts.map((p) => p.name!).sort();
    const key = entity.keys.find((k) => k.attributes.map((a) => a.logicalName).sort().join(",") === names.join(","));
    if (!key) throw badRequest(`(${names.join(",")}) is not a key of ${entity.logicalName}${entity.keys.length ? `; its alternate keys are ${entity.keys.map((k) => `(${k.attributes.map((a) => a.logicalName).join(",")})`).join(", ")}` : ""}`);
    const binder = new ExpressionBinder(entity, new Map(), "the key");
    const filter = parts
      .map((p) => binder.bind({ kind: "binary", op: "eq", left: { kind: "path", segments: [p.name!], pos: 0 }, right: p.value, pos: 0 }))
      .reduce((a, b) => ({ kind: "logical", type: "Edm.Boolean", op: "and", left: a, right: b }));
    await this.require(ctx, [this.priv("Read", entity)]);
    const { rows } = await provider.retrieveMultiple({ query: { entity, filter, orderBy: [], select: [entity.primaryId], count: false, expand: [] }, pageSize: 2 });
    // The store keeps alternate keys unique; a source that does not cannot be addressed by one.
    if (rows.length > 1) throw new ODataError(409, ErrorCodes.duplicate, `More than one ${entity.logicalName} has ${parts.map((p) => `${p.name} = ${p.value.text}`).join(" and ")}: the key does not identify one record`);
    if (rows.length === 0) {
      const e = notFound(`No ${entity.logicalName} with ${parts.map((p) => `${p.name} = ${p.value.text}`).join(" and ")} was found`);
      (e as ODataError & { alternateKey?: unknown }).alternateKey = parts;
      throw e;
    }
    return rows[0]![entity.primaryId.logicalName] as string;
  }

  private bindCollectionQuery(ctx: RequestContext, entity: EntityModel, options: QueryOptions): BoundQuery {
    const navs: EntityModel[] = [];
    const onNavigation = (nav: { target: EntityModel }) => navs.push(nav.target);
    const query: BoundQuery = {
      entity,
      filter: options.filter !== undefined ? new ExpressionBinder(entity, options.aliases, "$filter", onNavigation).bindFilter(options.filter) : undefined,
      orderBy: options.orderby !== undefined ? new ExpressionBinder(entity, options.aliases, "$orderby", onNavigation).bindOrderBy(options.orderby) : [],
      select: bindSelect(entity, options.select),
      top: options.top,
      skip: options.skip,
      count: options.count ?? false,
      expand: [],
    };
    (query as BoundQuery & { crossed?: EntityModel[] }).crossed = navs;
    return query;
  }

  private bindExpandOption(entity: EntityModel, options: QueryOptions, crossed: EntityModel[]): ExpandItem[] {
    if (options.expand === undefined) return [];
    return bindExpand(entity, options.expand, options.aliases, 1, (nav) => crossed.push(nav.target));
  }

  /** What a page must read beyond $select: lookups that single-valued expansions follow. */
  private fetchSelect(entity: EntityModel, select: AttributeModel[], expand: readonly ExpandItem[], joins?: BoundQuery["joins"]): AttributeModel[] {
    const out = withVersion(entity, select);
    for (const item of expand) {
      // A navigation read by a join needs no lookup value: the joined row carries its own key.
      if (item.navigation.kind !== "single" || joins?.some((j) => j.navigation === item.navigation)) continue;
      if (!out.includes(item.navigation.lookup!)) out.push(item.navigation.lookup!);
    }
    return out;
  }

  /**
   * Fills the expansions of a page: one query per navigation for all the page's rows (an `in` list of
   * keys, or the intersect table joined), then the nested levels for all the rows found.
   */
  private async expandRows(ctx: RequestContext, entity: EntityModel, rows: Row[], items: readonly ExpandItem[]): Promise<void> {
    if (!rows.length) return;
    for (const item of items) {
      const nav = item.navigation;
      const target = nav.target;
      const provider = this.options.providers.for(target);
      const select = this.fetchSelect(target, item.select, item.expand);
      const pk = target.primaryId;
      let found: Row[];
      const joinedKey = JOINED_PREFIX + nav.name;
      if (nav.kind === "single" && joinedKey in rows[0]!) {
        // Read with the page itself (a join): nothing more to fetch.
        found = [];
        for (const r of rows) if (r[joinedKey]) found.push(r[joinedKey] as Row);
      } else if (nav.kind === "single") {
        const ids = [...new Set(rows.map((r) => r[nav.lookup!.logicalName]).filter((v): v is string => typeof v === "string"))];
        found = ids.length ? await this.fetchAll(provider, { entity: target, filter: inFilter(pk, ids), orderBy: [], select, count: false, expand: [] }) : [];
        const byId = new Map(found.map((r) => [r[pk.logicalName] as string, r]));
        for (const r of rows) r[joinedKey] = byId.get(r[nav.lookup!.logicalName] as string) ?? null;
      } else {
        const parentIds = [...new Set(rows.map((r) => r[entity.primaryId.logicalName] as string))];
        const query: BoundQuery = { entity: target, filter: item.filter, orderBy: item.orderBy, select, count: false, expand: [] };
        restrictToRelated(query, nav, parentIds);
        if (!nav.intersect && !query.select.includes(nav.lookup!)) query.select = [...query.select, nav.lookup!];
        this.checkSupported(provider, query);
        found = await this.fetchAll(provider, query);
        const groups = new Map<string, Row[]>();
        for (const r of found) {
          const parent = (nav.intersect ? r.__parent : r[nav.lookup!.logicalName]) as string;
          let g = groups.get(parent);
          if (!g) groups.set(parent, (g = []));
          g.push(r);
        }
        const page = item.top ?? this.maxPageSize;
        const skip = item.skip ?? 0;
        // The nested options may name parameter aliases: their values travel with the link.
        const aliasParams = ctx.query.split("&").filter((p) => /^(@|%40)/i.test(p));
        for (const r of rows) {
          const id = r[entity.primaryId.logicalName] as string;
          const all = groups.get(id) ?? [];
          const slice = all.slice(skip, skip + page);
          const more = item.top === undefined && all.length > skip + page;
          r[COLLECTION_PREFIX + nav.name] = {
            rows: slice,
            count: item.count ? all.length : undefined,
            nextLink: more ? `${ctx.root}/${entity.entitySetName}(${id})/${nav.name}?${[item.optionsText, `$skip=${skip + page}`, ...aliasParams].filter(Boolean).join("&")}` : undefined,
          } satisfies Expansion;
        }
        found = [...groups.values()].flatMap((g) => g.slice(skip, skip + page));
      }
      if (item.expand.length) await this.expandRows(ctx, target, found, item.expand);
    }
  }

  /** Single-valued expansions the page's provider reads in the page's own statement (a join). */
  private joinsFor(provider: DataProvider, entity: EntityModel, expand: readonly ExpandItem[]): BoundQuery["joins"] {
    if (!provider.capabilities(entity).joins) return undefined;
    const joins = expand
      .filter((i) => i.navigation.kind === "single" && this.options.providers.for(i.navigation.target) === provider)
      .map((i) => ({ navigation: i.navigation, select: this.fetchSelect(i.navigation.target, i.select, i.expand) }));
    return joins.length ? joins : undefined;
  }

  /** Every row of a query, page after page (expansions are bounded by their parents' page). */
  private async fetchAll(provider: DataProvider, query: BoundQuery): Promise<Row[]> {
    const rows: Row[] = [];
    let after: unknown[] | undefined;
    for (;;) {
      const page = await provider.retrieveMultiple({ query, pageSize: 50_000, after });
      rows.push(...page.rows);
      if (!page.next) return rows;
      after = page.next;
    }
  }

  /**
   * Writes rows as JSON with their expansions, recursively. Built once per request so the per-row work is
   * the serializer alone: keys and serializers of every level are looked up here, not for each row.
   */
  private rowWriter(ctx: RequestContext, entity: EntityModel, select: readonly AttributeModel[], items: readonly ExpandItem[], lookupNames?: ReadonlyMap<string, string>): (row: Row) => Record<string, unknown> {
    const serializers = (ctx.serializers ??= new Map());
    let serializer = serializers.get(entity);
    if (!serializer) serializers.set(entity, (serializer = new EntitySerializer(entity, ctx.prefs)));
    const entitySerializer = serializer;
    if (!items.length) return (row) => entitySerializer.serialize(row, select, lookupNames);
    const nested = items.map((item) => {
      const name = item.navigation.name;
      const single = item.navigation.kind === "single";
      return { name, single, key: (single ? JOINED_PREFIX : COLLECTION_PREFIX) + name, countKey: `${name}@odata.count`, nextKey: `${name}@odata.nextLink`, write: this.rowWriter(ctx, item.navigation.target, item.select, item.expand, lookupNames) };
    });
    return (row) => {
      const out = entitySerializer.serialize(row, select, lookupNames);
      for (const n of nested) {
        if (n.single) {
          const related = row[n.key] as Row | null | undefined;
          if (related !== undefined) out[n.name] = related ? n.write(related) : null;
          continue;
        }
        const e = row[n.key] as Expansion | undefined;
        if (!e) continue;
        if (e.count !== undefined) out[n.countKey] = e.count;
        out[n.name] = (e.rows ?? []).map(n.write);
        if (e.nextLink) out[n.nextKey] = e.nextLink;
      }
      return out;
    };
  }

  private readPrivileges(entity: EntityModel, query: BoundQuery): string[] {
    const crossed = (query as BoundQuery & { crossed?: EntityModel[] }).crossed ?? [];
    return [this.priv("Read", entity), ...crossed.map((e) => this.priv("Read", e))];
  }

  private checkSupported(provider: DataProvider, query: BoundQuery): void {
    const unsupported = unsupportedConstruct(provider.capabilities(query.entity), query);
    if (unsupported) throw notImplemented(`The data provider '${provider.name}' of ${query.entity.logicalName} does not support ${unsupported}`);
  }

  private async getCollection(ctx: RequestContext, entity: EntityModel, provider: DataProvider, related?: { navigation: NavigationModel; id: string; path: string }): Promise<ODataResponse> {
    this.acceptsJson(ctx);
    const options = parseQueryOptions(ctx.query);
    this.checkFormat(options);
    const query = this.bindCollectionQuery(ctx, entity, options);
    if (related) restrictToRelated(query, related.navigation, [related.id]);
    const expand = this.bindExpandOption(entity, options, (query as BoundQuery & { crossed: EntityModel[] }).crossed);
    await this.require(ctx, this.readPrivileges(entity, query));
    this.checkSupported(provider, query);

    const requested = ctx.prefs.maxPageSize;
    const pageSize = Math.min(requested ?? this.maxPageSize, this.maxPageSize);
    const order = SqlQueryCompiler.orderOf(query);
    if (options.skiptoken !== undefined && options.skip !== undefined) throw badRequest("$skip cannot be combined with $skiptoken: the token already holds the position; follow the @odata.nextLink as returned");
    const state = options.skiptoken !== undefined ? decodeSkipToken(options.skiptoken, order.map((t) => t.expression.type)) : undefined;
    const returned = state?.returned ?? 0;
    const remaining = query.top !== undefined ? Math.max(0, query.top - returned) : Number.MAX_SAFE_INTEGER;
    const limit = Math.min(pageSize, remaining);

    const joins = this.joinsFor(provider, entity, expand);
    const [result, count] = await Promise.all([
      limit > 0 ? provider.retrieveMultiple({ query: { ...query, select: this.fetchSelect(entity, query.select, expand, joins), joins }, pageSize: limit, after: state?.position }) : Promise.resolve({ rows: [], next: undefined }),
      query.count ? provider.count(query) : Promise.resolve(undefined),
    ]);
    const more = result.next !== undefined && returned + result.rows.length < remaining + returned;
    await this.expandRows(ctx, entity, result.rows, expand);
    const serializer = new EntitySerializer(entity, ctx.prefs);
    const lookupNames = serializer.wantsLookupNames ? await this.allLookupNames(ctx, entity, query.select, result.rows, expand) : undefined;
    const head: Record<string, unknown> = { "@odata.context": `${ctx.root}/$metadata#${entity.entitySetName}${this.selectContext(entity, options.select, expand)}` };
    if (count !== undefined) head["@odata.count"] = count;
    const tail: Record<string, unknown> = {};
    if (more && result.next) {
      const token = encodeSkipToken({ position: result.next, returned: returned + result.rows.length });
      tail["@odata.nextLink"] = this.nextLink(ctx, related?.path ?? entity.entitySetName, ["skip", "skiptoken"], [`$skiptoken=${token}`]);
    }
    const applied: string[] = [];
    if (requested !== undefined) applied.push(`odata.maxpagesize=${pageSize}`);
    if (ctx.prefs.includeAnnotations.length) applied.push(`odata.include-annotations="${ctx.prefs.includeAnnotations.join(",")}"`);
    // Serialized here, inside the request's error handling, before any byte is sent: a value that cannot be
    // written is a logged 500, not a cut connection. The chunks are then written one by one.
    const chunks = [...collectionJson(head, result.rows, this.rowWriter(ctx, entity, query.select, expand, lookupNames), tail)];
    return { status: 200, headers: { "Content-Type": JSON_TYPE, "OData-Version": "4.0", ...(applied.length ? { "Preference-Applied": applied.join(",") } : {}) }, chunks };
  }

  /**
   * The same request on `path` with the paging options `replaced` dropped and `added` appended: an
   * absolute URL, as Dataverse returns.
   */
  private nextLink(ctx: RequestContext, path: string, replaced: readonly string[], added: readonly string[]): string {
    const dropped = new RegExp(`^(\\$|%24)?(${replaced.join("|")})=`, "i");
    const kept = ctx.query.split("&").filter((p) => p && !dropped.test(p));
    return `${ctx.root}/${path}?${[...kept, ...added].join("&")}`;
  }

  private selectContext(entity: EntityModel, select: string | undefined, expand: readonly ExpandItem[] = []): string {
    const parts = select === undefined || select.trim() === "*" ? [] : select.split(",").map((s) => s.trim());
    if (expand.length) parts.push(expandContext(expand));
    return parts.length ? `(${parts.join(",")})` : "";
  }

  /** Primary names for the lookups of a page and of every expanded level below it. */
  private async allLookupNames(ctx: RequestContext, entity: EntityModel, select: readonly AttributeModel[], rows: Row[], expand: readonly ExpandItem[], names = new Map<string, string>()): Promise<Map<string, string>> {
    await this.lookupNames(ctx, select, rows, names);
    for (const item of expand) {
      const expanded = rows.flatMap((r) => {
        if (item.navigation.kind === "single") {
          const related = r[JOINED_PREFIX + item.navigation.name] as Row | null | undefined;
          return related ? [related] : [];
        }
        return (r[COLLECTION_PREFIX + item.navigation.name] as Expansion | undefined)?.rows ?? [];
      });
      if (expanded.length) await this.allLookupNames(ctx, item.navigation.target, item.select, expanded, item.expand, names);
    }
    return names;
  }

  /**
   * Primary names of the rows the page's lookups point at, for their formatted values. One query per lookup,
   * and only into entities the caller may read: for the others the annotation is left out, as names of rows
   * the caller cannot read are not the caller's to see.
   */
  private async lookupNames(ctx: RequestContext, select: readonly AttributeModel[], rows: Row[], names = new Map<string, string>()): Promise<Map<string, string>> {
    for (const a of select) {
      if (a.type !== "Lookup" || !a.navigation) continue;
      const target = a.navigation.target;
      if (!target.primaryName || !(await this.mayRead(ctx, target))) continue;
      const ids = [...new Set(rows.map((r) => r[a.logicalName]).filter((v): v is string => typeof v === "string"))];
      if (!ids.length) continue;
      const provider = this.options.providers.for(target);
      const filter = inFilter(target.primaryId, ids);
      const { rows: found } = await provider.retrieveMultiple({ query: { entity: target, filter, orderBy: [], select: [target.primaryId, target.primaryName], count: false, expand: [] }, pageSize: ids.length });
      for (const r of found) names.set(r[target.primaryId.logicalName] as string, (r[target.primaryName.logicalName] as string) ?? "");
    }
    return names;
  }

  private async countCollection(ctx: RequestContext, entity: EntityModel, provider: DataProvider, related?: { navigation: NavigationModel; id: string }): Promise<ODataResponse> {
    this.acceptsJson(ctx, true);
    const options = parseQueryOptions(ctx.query, new Set(["$filter"]));
    const query = this.bindCollectionQuery(ctx, entity, options);
    if (related) restrictToRelated(query, related.navigation, [related.id]);
    await this.require(ctx, this.readPrivileges(entity, query));
    this.checkSupported(provider, { ...query, count: true });
    const count = await provider.count(query);
    return { status: 200, headers: { "Content-Type": "text/plain; charset=utf-8", "OData-Version": "4.0" }, body: String(count) };
  }

  private async getSingle(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string): Promise<ODataResponse> {
    this.acceptsJson(ctx);
    const options = parseQueryOptions(ctx.query, new Set(["$select", "$expand", "$format"]));
    this.checkFormat(options);
    const select = bindSelect(entity, options.select);
    const crossed: EntityModel[] = [];
    const expand = this.bindExpandOption(entity, options, crossed);
    await this.require(ctx, [this.priv("Read", entity), ...crossed.map((e) => this.priv("Read", e))]);
    const row = await provider.retrieve(entity, id, this.fetchSelect(entity, select, expand));
    if (!row) throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
    const etag = etagOf(row);
    const ifNoneMatch = header(ctx.request, "if-none-match");
    // As Dataverse: the ETag is the row's own version, which says nothing of expanded rows or of the names
    // formatted values show, so a request for either never answers 304.
    const conditional = !expand.length && !ctx.prefs.includeAnnotations.length;
    // Weak comparison (RFC 7232): "1" and W/"1" name the same version.
    if (conditional && etag && ifNoneMatch && (ifNoneMatch.trim() === "*" || ifNoneMatch.split(",").some((t) => versionFromEtag(t) === row.versionnumber))) {
      return { status: 304, headers: { "OData-Version": "4.0", ETag: etag } };
    }
    await this.expandRows(ctx, entity, [row], expand);
    const serializer = new EntitySerializer(entity, ctx.prefs);
    const lookupNames = serializer.wantsLookupNames ? await this.allLookupNames(ctx, entity, select, [row], expand) : undefined;
    const body = { "@odata.context": `${ctx.root}/$metadata#${entity.entitySetName}${this.selectContext(entity, options.select, expand)}/$entity`, ...this.rowWriter(ctx, entity, select, expand, lookupNames)(row) };
    return this.json(200, body, etag ? { ETag: etag } : {});
  }

  private async propertyRequest(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string, attr: AttributeModel, raw: boolean): Promise<ODataResponse> {
    if (ctx.method === "PUT" || ctx.method === "DELETE") {
      if (raw) throw methodNotAllowed(ctx.method, "$value", ["GET"]);
      let value: unknown = null;
      if (ctx.method === "PUT") {
        const body = this.readJsonBody(ctx);
        if (!("value" in body) || Object.keys(body).length !== 1) throw badRequest(`PUT on a property takes {"value": …}`);
        value = body.value;
      }
      return this.writeValues(ctx, entity, provider, id, { [attr.logicalName]: value }, { property: true });
    }
    this.onlyMethods(ctx, ["GET"], `the property '${attr.propertyName}'`);
    this.acceptsJson(ctx, raw);
    parseQueryOptions(ctx.query, new Set(raw ? [] : ["$format"]));
    if (!attr.isReadable) throw badRequest(`The property '${attr.propertyName}' cannot be read`);
    await this.require(ctx, [this.priv("Read", entity)]);
    const row = await provider.retrieve(entity, id, [entity.primaryId, attr]);
    if (!row) throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
    const value = row[attr.logicalName];
    if (value === null || value === undefined) return { status: 204, headers: { "OData-Version": "4.0" } };
    if (raw) return { status: 200, headers: { "Content-Type": "text/plain; charset=utf-8", "OData-Version": "4.0" }, body: String(value) };
    return this.json(200, { "@odata.context": `${ctx.root}/$metadata#${entity.entitySetName}(${id})/${attr.propertyName}`, value });
  }

  // ---------------------------------------------------------------- writes

  private readJsonBody(ctx: RequestContext): Record<string, unknown> {
    const body = ctx.request.body;
    if (body !== undefined && typeof body === "object" && !Buffer.isBuffer(body)) return body as Record<string, unknown>;
    const contentType = (header(ctx.request, "content-type") ?? "").toLowerCase();
    if (!/^application\/json\s*(;|$)/.test(contentType)) {
      throw new ODataError(415, ErrorCodes.unsupportedMediaType, `The request body must be application/json${contentType ? `, not ${contentType}` : " (Content-Type is missing)"}`);
    }
    const charset = /;\s*charset\s*=\s*"?([^";\s]+)/.exec(contentType)?.[1];
    if (charset !== undefined && charset !== "utf-8" && charset !== "utf8") throw new ODataError(415, ErrorCodes.unsupportedMediaType, `A JSON request body is UTF-8, not ${charset}`);
    const text = body === undefined ? "" : typeof body === "string" ? body : utf8Text(body);
    if (text.trim() === "") throw badRequest("The request body is empty; a JSON object was expected");
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      throw badRequest(`The request body is not valid JSON: ${(e as Error).message}`);
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw badRequest("The request body must be a JSON object");
    const problem = structuralProblemOf(text);
    if (problem) throw badRequest(problem);
    return parsed as Record<string, unknown>;
  }

  /**
   * Splits a payload into attribute values and lookup binds, validates both against the metadata, and
   * resolves binds to ids (each target must exist). Throws a 400 naming the field.
   */
  private async preparePayload(ctx: RequestContext, entity: EntityModel, body: Record<string, unknown>, mode: WriteMode): Promise<{ values: Row; privileges: string[] }> {
    const values: Row = {};
    const binds: [string, unknown][] = [];
    for (const [key, value] of Object.entries(body)) {
      if (key === "@odata.type") {
        const t = String(value).replace(/^#/, "");
        if (t !== `Microsoft.Dynamics.CRM.${entity.logicalName}` && t !== `mscrm.${entity.logicalName}`) throw validationError(`@odata.type '${value}' does not match ${entity.logicalName}`);
        continue;
      }
      if (key.endsWith("@odata.bind")) {
        binds.push([key.slice(0, -"@odata.bind".length), value]);
        continue;
      }
      // The context URL describes a payload a client received (InitializeFrom returns one); it asks nothing.
      if (key === "@odata.context") continue;
      if (key.includes("@")) throw validationError(`The annotation '${key}' is not supported in a payload`);
      // `"<single-valued navigation>": null` clears the lookup, as `"<navigation>@odata.bind": null` does.
      if (value === null && entity.navigations.get(key)?.kind === "single") {
        binds.push([key, null]);
        continue;
      }
      if (typeof value === "string" && value.includes("\u0000")) throw validationError(`The value of '${key}' must not contain NUL characters`);
      // A lone surrogate (an escape such as "\ud800") is no character: the stores would keep U+FFFD instead.
      if (typeof value === "string" && LONE_SURROGATE.test(value)) throw validationError(`The value of '${key}' holds a lone UTF-16 surrogate, which is not text`);
      values[key] = value;
    }
    const validate = payloadValidator(entity, mode);
    if (!validate(values)) {
      const v = describeViolation(entity, mode, validate.errors ?? []);
      throw validationError(v.message);
    }
    for (const [k, v] of Object.entries(values)) {
      const attr = entity.attributes.get(k)!;
      if (attr.edmType === "Edm.DateTimeOffset" && typeof v === "string") values[k] = new Date(toInstant(v)).toISOString();
      if (attr.edmType === "Edm.Guid" && typeof v === "string") values[k] = v.toLowerCase();
    }
    const privileges: string[] = [];
    for (const [navName, ref] of binds) {
      const nav = entity.navigations.get(navName);
      if (!nav) throw validationError(`'${navName}@odata.bind': ${entity.logicalName} has no navigation property '${navName}'`);
      if (nav.kind !== "single") throw notImplemented(`'${navName}@odata.bind': binding collection-valued navigation properties is not supported yet`);
      if (mode === "create" ? !nav.lookup!.isCreatable : !nav.lookup!.isUpdatable) throw validationError(`The lookup '${nav.lookup!.logicalName}' cannot be set on ${mode}`);
      // Linking and unlinking take Append and AppendTo, as DELETE …/$ref does; checked before the target is
      // looked up, so a caller without them does not learn which ids exist.
      const linkPrivileges = [this.priv("Append", entity), this.priv("AppendTo", nav.target)];
      if (ref === null) {
        if (mode === "create") throw validationError(`'${navName}@odata.bind' must reference a record, not null`);
        values[nav.lookup!.logicalName] = null;
        privileges.push(...linkPrivileges);
        continue;
      }
      await this.require(ctx, linkPrivileges);
      if (typeof ref !== "string") throw validationError(`'${navName}@odata.bind' must be a string like '/${nav.target.entitySetName}(<id>)'`);
      const m = /^(?:.*\/)?([A-Za-z_][A-Za-z0-9_]*)\(([^)]*)\)$/.exec(ref);
      if (!m || m[1] !== nav.target.entitySetName) throw validationError(`'${navName}@odata.bind' must reference ${nav.target.entitySetName}, as '/${nav.target.entitySetName}(<id>)', not '${ref}'`);
      const targetProvider = this.options.providers.for(nav.target);
      const id = await this.resolveKey(ctx, nav.target, targetProvider, m[2]!).catch((e) => {
        if (e instanceof ODataError && e.status === 404) throw validationError(`'${navName}@odata.bind': ${nav.target.logicalName} with id ${m[2]} does not exist`);
        if (e instanceof ODataError && e.status === 400) throw validationError(`'${navName}@odata.bind': ${e.message}`);
        throw e;
      });
      const exists = await targetProvider.retrieve(nav.target, id, [nav.target.primaryId]);
      if (!exists) throw validationError(`'${navName}@odata.bind': ${nav.target.logicalName} with id ${id} does not exist`);
      values[nav.lookup!.logicalName] = id;
      privileges.push(...linkPrivileges);
    }
    return { values, privileges };
  }

  private withDefaults(entity: EntityModel, values: Row): Row {
    const out = { ...values };
    for (const a of entity.attributes.values()) {
      if (out[a.logicalName] !== undefined || a.def.DefaultValue === undefined) continue;
      const d = a.def.DefaultValue;
      // "now()" on a date column is the time of the write, set by the store.
      if (a.type === "DateTime" && d === "now()") out[a.logicalName] = a.def.DateTimeBehavior === "DateOnly" ? new Date().toISOString().slice(0, 10) : new Date().toISOString();
      else out[a.logicalName] = d;
    }
    if (!out[entity.primaryId.logicalName]) out[entity.primaryId.logicalName] = randomUUID();
    return out;
  }

  private entityId(ctx: RequestContext, entity: EntityModel, id: string): string {
    return `${ctx.root}/${entity.entitySetName}(${id})`;
  }

  private async create(ctx: RequestContext, entity: EntityModel, provider: DataProvider): Promise<ODataResponse> {
    this.acceptsJson(ctx);
    const returned = this.representationQuery(ctx, entity);
    const body = this.readJsonBody(ctx);
    await this.require(ctx, [this.priv("Create", entity), ...this.representationPrivileges(ctx, entity)]);
    if (!provider.capabilities(entity).create) throw notImplemented(`The data provider of ${entity.logicalName} does not support creating records`);
    const collectionBind = (k: string) => k.endsWith("@odata.bind") && Array.isArray(body[k]);
    if (!Object.keys(body).some((k) => entity.navigations.has(k) || collectionBind(k))) {
      const { values, privileges } = await this.preparePayload(ctx, entity, body, "create");
      await this.require(ctx, privileges);
      await this.options.operations.hooks.get(entity.logicalName)?.beforeCreate?.(values);
      return this.finishCreate(ctx, entity, provider, this.withDefaults(entity, values), 201);
    }
    // Deep insert: the entity and the related ones nested in it, in one transaction.
    return provider.transaction(async () => {
      const created = await this.deepCreate(ctx, entity, body, "");
      const headers = this.createdHeaders(ctx, entity, created.row);
      if (!ctx.prefs.returnRepresentation) return { status: 204, headers: { "OData-Version": "4.0", ...headers } };
      // With $select or $expand the answer is the created record read back as asked; without, the whole tree.
      if (returned.selectText !== undefined || returned.expand.length) return this.representation(ctx, entity, created.row, 201, headers);
      const answer = { "@odata.context": `${ctx.root}/$metadata#${entity.entitySetName}/$entity`, ...this.serializeCreated(ctx, entity, created) };
      return this.json(201, answer, { ...headers, "Preference-Applied": "return=representation" });
    });
  }

  /** Creates a record and the records nested in its payload, depth first; returns them all. */
  private async deepCreate(ctx: RequestContext, entity: EntityModel, body: Record<string, unknown>, path: string): Promise<CreatedTree> {
    const provider = this.options.providers.for(entity);
    await this.require(ctx, [this.priv("Create", entity), ...(ctx.prefs.returnRepresentation ? [this.priv("Read", entity)] : [])]);
    if (!provider.capabilities(entity).create) throw notImplemented(`The data provider of ${entity.logicalName} does not support creating records`);
    const flat: Record<string, unknown> = {};
    const nested: [NavigationModel, unknown][] = [];
    const bound: [NavigationModel, unknown[]][] = [];
    for (const [k, v] of Object.entries(body)) {
      const nav = entity.navigations.get(k);
      const bindOf = k.endsWith("@odata.bind") ? entity.navigations.get(k.slice(0, -"@odata.bind".length)) : undefined;
      if (nav) nested.push([nav, v]);
      else if (bindOf?.kind === "collection" && Array.isArray(v)) bound.push([bindOf, v]);
      else flat[k] = v;
    }
    const children: CreatedTree["children"] = new Map();
    // Single-valued first: the new record points at them.
    for (const [nav, v] of nested.filter(([n]) => n.kind === "single")) {
      if (!v || typeof v !== "object" || Array.isArray(v)) throw validationError(`'${path}${nav.name}' must be an object (the ${nav.target.logicalName} to create)`);
      if (this.options.providers.for(nav.target) !== provider) throw notImplemented(`Deep insert across data providers ('${path}${nav.name}') is not supported`);
      const child = await this.deepCreate(ctx, nav.target, v as Record<string, unknown>, `${path}${nav.name}/`);
      if (flat[`${nav.name}@odata.bind`] !== undefined) throw validationError(`'${path}${nav.name}' is both nested and bound`);
      flat[`${nav.name}@odata.bind`] = `/${nav.target.entitySetName}(${child.row[nav.target.primaryId.logicalName]})`;
      children.set(nav.name, child);
    }
    const { values, privileges } = await this.preparePayload(ctx, entity, flat, "create").catch((e: unknown) => {
      if (e instanceof ODataError && path) throw new ODataError(e.status, e.code, `In '${path.slice(0, -1)}': ${e.message}`, e.headers);
      throw e;
    });
    await this.require(ctx, privileges);
    await this.options.operations.hooks.get(entity.logicalName)?.beforeCreate?.(values);
    const outcome = await provider.create(entity, this.withDefaults(entity, values), await this.writeContext(ctx, entity));
    if (outcome.status === "conflict") throw new ODataError(412, ErrorCodes.duplicate, `${path || entity.logicalName}: ${outcome.message}`);
    if (outcome.status !== "ok") throw new ODataError(500, ErrorCodes.internal, "The record could not be created");
    const id = outcome.row[entity.primaryId.logicalName] as string;
    for (const [nav, v] of nested.filter(([n]) => n.kind === "collection")) {
      if (!Array.isArray(v)) throw validationError(`'${path}${nav.name}' must be an array of ${nav.target.logicalName} records`);
      if (this.options.providers.for(nav.target) !== provider) throw notImplemented(`Deep insert across data providers ('${path}${nav.name}') is not supported`);
      const list: CreatedTree[] = [];
      for (const [i, item] of v.entries()) {
        if (!item || typeof item !== "object" || Array.isArray(item)) throw validationError(`'${path}${nav.name}[${i}]' must be an object`);
        const childBody = { ...(item as Record<string, unknown>) };
        if (!nav.intersect) {
          const partner = nav.target.navigations.get(nav.partnerName)!;
          if (childBody[`${partner.name}@odata.bind`] !== undefined || childBody[partner.name] !== undefined) throw validationError(`'${path}${nav.name}[${i}]' must not set '${partner.name}': it is the new ${entity.logicalName}`);
          childBody[`${partner.name}@odata.bind`] = `/${entity.entitySetName}(${id})`;
        }
        const child = await this.deepCreate(ctx, nav.target, childBody, `${path}${nav.name}[${i}]/`);
        if (nav.intersect) {
          await this.require(ctx, [this.priv("Append", entity), this.priv("AppendTo", nav.target)]);
          await provider.associate!(nav, id, child.row[nav.target.primaryId.logicalName] as string);
        }
        list.push(child);
      }
      children.set(nav.name, list);
    }
    // Existing records bound through a collection-valued navigation: linked to the new one.
    for (const [nav, refs] of bound) {
      const targetProvider = this.options.providers.for(nav.target);
      for (const [i, ref] of refs.entries()) {
        const targetId = await this.referencedId(ctx, nav, ref).catch((e: unknown) => {
          if (e instanceof ODataError && e.status < 500) throw validationError(`'${path}${nav.name}@odata.bind'[${i}]: ${e.message}`);
          throw e;
        });
        await this.link(ctx, entity, provider, targetProvider, id, nav, targetId, true);
      }
    }
    return { entity, row: outcome.row, children };
  }

  private serializeCreated(ctx: RequestContext, entity: EntityModel, tree: CreatedTree): Record<string, unknown> {
    const out = new EntitySerializer(entity, ctx.prefs).serialize(tree.row, bindSelect(entity, undefined));
    for (const [name, child] of tree.children) {
      out[name] = Array.isArray(child) ? child.map((c) => this.serializeCreated(ctx, c.entity, c)) : this.serializeCreated(ctx, child.entity, child);
    }
    return out;
  }

  private writeContext(ctx: RequestContext, entity: EntityModel): Promise<WriteContext> {
    return writeContextOf(this.security, ctx.caller, entity);
  }

  private async finishCreate(ctx: RequestContext, entity: EntityModel, provider: DataProvider, values: Row, representationStatus: number): Promise<ODataResponse> {
    const outcome = await provider.create(entity, values, await this.writeContext(ctx, entity));
    if (outcome.status === "conflict") throw new ODataError(412, ErrorCodes.duplicate, outcome.message);
    if (outcome.status !== "ok") throw new ODataError(500, ErrorCodes.internal, "The record could not be created");
    return this.representation(ctx, entity, outcome.row, representationStatus, this.createdHeaders(ctx, entity, outcome.row));
  }

  /** OData-EntityId and Location (the GUID form, as Dataverse) and the ETag of a created row. */
  private createdHeaders(ctx: RequestContext, entity: EntityModel, row: Row): Record<string, string> {
    const location = this.entityId(ctx, entity, row[entity.primaryId.logicalName] as string);
    const headers: Record<string, string> = { "OData-EntityId": location, Location: location };
    const etag = etagOf(row);
    if (etag) headers.ETag = etag;
    return headers;
  }

  private async representation(ctx: RequestContext, entity: EntityModel, row: Row, status: number, headers: Record<string, string>): Promise<ODataResponse> {
    if (!ctx.prefs.returnRepresentation) return { status: 204, headers: { "OData-Version": "4.0", ...headers } };
    const { select, selectText, expand } = this.representationQuery(ctx, entity);
    await this.expandRows(ctx, entity, [row], expand);
    const serializer = new EntitySerializer(entity, ctx.prefs);
    const lookupNames = serializer.wantsLookupNames ? await this.allLookupNames(ctx, entity, select, [row], expand) : undefined;
    const body = { "@odata.context": `${ctx.root}/$metadata#${entity.entitySetName}${this.selectContext(entity, selectText, expand)}/$entity`, ...this.rowWriter(ctx, entity, select, expand, lookupNames)(row) };
    const applied = ["return=representation"];
    if (ctx.prefs.includeAnnotations.length) applied.push(`odata.include-annotations="${ctx.prefs.includeAnnotations.join(",")}"`);
    return this.json(status, body, { ...headers, "Preference-Applied": applied.join(",") });
  }

  /**
   * The `$select` and `$expand` of a write's representation (Dataverse returns expanded rows on create and
   * on update alike), bound before anything is written so a bad option writes nothing.
   */
  private representationQuery(ctx: RequestContext, entity: EntityModel): RepresentationQuery {
    if (ctx.representation?.entity === entity) return ctx.representation;
    const options = parseQueryOptions(ctx.query, new Set(["$select", "$expand"]));
    const crossed: EntityModel[] = [];
    const expand = this.bindExpandOption(entity, options, crossed);
    ctx.representation = { entity, select: bindSelect(entity, options.select), selectText: options.select, expand, crossed };
    return ctx.representation;
  }

  /** Returning the written record (and what it expands) is reading it: checked before anything is written. */
  private representationPrivileges(ctx: RequestContext, entity: EntityModel): string[] {
    if (!ctx.prefs.returnRepresentation) return [];
    return [this.priv("Read", entity), ...this.representationQuery(ctx, entity).crossed.map((e) => this.priv("Read", e))];
  }

  /**
   * A write's preconditions (RFC 7232, weak comparison): If-Match `*` or a list of ETags, one of which must
   * be current; If-None-Match `*` (create only) or a list of ETags, none of which may be. The version the
   * write must still find is returned, so nothing can change between the check and the write.
   */
  private async writeCondition(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string): Promise<{ version?: number; mustExist: boolean; createOnly: boolean }> {
    const ifMatch = header(ctx.request, "if-match");
    const ifNoneMatch = header(ctx.request, "if-none-match");
    const matching = ifMatch === undefined ? undefined : etagCondition(ifMatch, "If-Match");
    const notMatching = ifNoneMatch === undefined ? undefined : etagCondition(ifNoneMatch, "If-None-Match");
    const mustExist = matching !== undefined;
    const createOnly = notMatching === "*";
    if (createOnly && mustExist) throw badRequest("If-Match and If-None-Match: * cannot be combined");
    let version = Array.isArray(matching) && matching.length === 1 ? matching[0] : undefined;
    const versionAttribute = entity.attributes.get("versionnumber");
    if (versionAttribute && ((Array.isArray(matching) && matching.length > 1) || Array.isArray(notMatching))) {
      // Comparing ETags reads the record's version: only for callers who may read it.
      await this.require(ctx, [this.priv("Read", entity)]);
      const current = (await provider.retrieve(entity, id, [entity.primaryId, versionAttribute]))?.versionnumber as number | undefined;
      if (current !== undefined && current !== null) {
        if (Array.isArray(matching) && !matching.includes(current)) throw preconditionFailed(`The ${entity.logicalName} record ${id} is at version ${current}, which If-Match '${ifMatch}' does not name; nothing was changed`);
        if (Array.isArray(notMatching) && notMatching.includes(current)) throw preconditionFailed(`The ${entity.logicalName} record ${id} is at version ${current}, which If-None-Match '${ifNoneMatch}' names; nothing was changed`);
        version ??= current;
      }
    }
    return { version, mustExist, createOnly };
  }

  /**
   * PATCH by primary or alternate key: updates the row, or creates it (upsert) with the key's values. Two
   * concurrent upserts of a new alternate key meet the unique index; the loser retries as an update.
   */
  private async upsertByKey(ctx: RequestContext, entity: EntityModel, provider: DataProvider, args: string): Promise<ODataResponse> {
    this.acceptsJson(ctx);
    this.representationQuery(ctx, entity);
    const body = this.readJsonBody(ctx);
    for (let attempt = 0; ; attempt++) {
      let id: string;
      let keyValues: Row = {};
      try {
        id = await this.resolveKey(ctx, entity, provider, args);
      } catch (e) {
        const parts = (e as { alternateKey?: { name?: string; value: { value: unknown } }[] }).alternateKey;
        if (!(e instanceof ODataError) || e.status !== 404 || !parts) throw e;
        id = randomUUID();
        keyValues = Object.fromEntries(parts.map((p) => [p.name!, p.value.value]));
        for (const [k, v] of Object.entries(keyValues)) {
          if (k in body && body[k] !== v) throw badRequest(`The payload's ${k} (${JSON.stringify(body[k])}) differs from the key in the URL (${JSON.stringify(v)})`);
        }
      }
      try {
        return await this.writeValues(ctx, entity, provider, id, { ...body, ...keyValues });
      } catch (e) {
        // Two upserts of one new key (primary or alternate) may both find it missing; the one whose insert
        // lost becomes an update, as if it had come second.
        const lostRace = e instanceof ODataError && e.code === ErrorCodes.duplicate && attempt === 0;
        if (!lostRace) throw e;
      }
    }
  }

  /**
   * PATCH of an entity (an upsert, as Dataverse's) or, with `property`, PUT/DELETE of one of its properties:
   * that only updates (a missing record is a 404; deleting a value never creates a record) and answers 204.
   */
  private async writeValues(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string, body: Record<string, unknown>, options: { property?: boolean } = {}): Promise<ODataResponse> {
    const { version, mustExist, createOnly } = await this.writeCondition(ctx, entity, provider, id);
    const existing = await provider.retrieve(entity, id, [entity.primaryId]);
    if (!existing) {
      if (mustExist || options.property) throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
      const key = body[entity.primaryId.logicalName];
      if (key !== undefined && (typeof key !== "string" || key.toLowerCase() !== id)) {
        throw validationError(`The payload's ${entity.primaryId.logicalName} (${JSON.stringify(key)}) differs from the key in the URL (${id})`);
      }
      await this.require(ctx, [this.priv("Create", entity), ...this.representationPrivileges(ctx, entity)]);
      if (!provider.capabilities(entity).create) throw notImplemented(`The data provider of ${entity.logicalName} does not support creating records`);
      const { values, privileges } = await this.preparePayload(ctx, entity, body, "create");
      await this.require(ctx, privileges);
      await this.options.operations.hooks.get(entity.logicalName)?.beforeCreate?.(values);
      return this.finishCreate(ctx, entity, provider, this.withDefaults(entity, { ...values, [entity.primaryId.logicalName]: id }), 201);
    }
    if (createOnly) throw preconditionFailed(`A record with id ${id} already exists in ${entity.logicalName}`);
    await this.require(ctx, [this.priv("Write", entity), ...this.representationPrivileges(ctx, entity)]);
    if (!provider.capabilities(entity).update) throw notImplemented(`The data provider of ${entity.logicalName} does not support updating records`);
    const { values, privileges } = await this.preparePayload(ctx, entity, body, "update");
    await this.require(ctx, privileges);
    const hooked = await this.options.operations.hooks.get(entity.logicalName)?.update?.(id, values);
    const outcome = hooked ? { status: "ok" as const, row: hooked } : await provider.update(entity, id, values, version, await this.writeContext(ctx, entity));
    if (outcome.status === "not-found") throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
    if (outcome.status === "precondition-failed") throw preconditionFailed(`The version of the ${entity.logicalName} record ${id} has changed since it was read (If-Match ${header(ctx.request, "if-match")}); nothing was updated`);
    if (outcome.status === "conflict") throw new ODataError(412, ErrorCodes.duplicate, outcome.message);
    const row = outcome.row;
    const headers: Record<string, string> = { "OData-EntityId": this.entityId(ctx, entity, id) };
    const etag = etagOf(row);
    if (etag) headers.ETag = etag;
    if (options.property) return { status: 204, headers: { ...headers, "OData-Version": "4.0" } };
    return this.representation(ctx, entity, row, 200, headers);
  }

  private async remove(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string): Promise<ODataResponse> {
    parseQueryOptions(ctx.query, new Set());
    await this.require(ctx, [this.priv("Delete", entity)]);
    if (!provider.capabilities(entity).delete) throw notImplemented(`The data provider of ${entity.logicalName} does not support deleting records`);
    const { version, createOnly } = await this.writeCondition(ctx, entity, provider, id);
    if (createOnly) {
      // If-None-Match: * lets a request act only where there is no record: a DELETE never can.
      if (await provider.retrieve(entity, id, [entity.primaryId])) throw preconditionFailed(`A record with id ${id} exists in ${entity.logicalName}, and If-None-Match: * asks for none; nothing was deleted`);
      throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
    }
    // The record goes with its links (Dataverse's RemoveLink): lookups to it are cleared, many-to-many rows deleted.
    return provider.transaction(async () => {
      await this.options.operations.hooks.get(entity.logicalName)?.beforeDelete?.(id);
      const outcome = await provider.delete(entity, id, version);
      if (outcome.status === "not-found") throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
      if (outcome.status === "precondition-failed") throw preconditionFailed(`The version of the ${entity.logicalName} record ${id} has changed since it was read; nothing was deleted`);
      await this.removeLinks(ctx, entity, provider, id);
      return { status: 204, headers: { "OData-Version": "4.0" } };
    });
  }

  private async removeLinks(ctx: RequestContext, entity: EntityModel, provider: DataProvider, id: string): Promise<void> {
    for (const nav of entity.navigations.values()) {
      if (nav.kind !== "collection") continue;
      const targetProvider = this.options.providers.for(nav.target);
      if (nav.intersect) {
        const query: BoundQuery = { entity: nav.target, orderBy: [], select: [nav.target.primaryId], count: false, expand: [] };
        restrictToRelated(query, nav, [id]);
        if (!provider.capabilities(entity).navigationFilter || !provider.disassociate) continue;
        for (const r of await this.fetchAll(targetProvider, query)) await provider.disassociate(nav, id, r[nav.target.primaryId.logicalName] as string);
        continue;
      }
      const children = await this.fetchAll(targetProvider, { entity: nav.target, filter: inFilter(nav.lookup!, [id]), orderBy: [], select: [nav.target.primaryId], count: false, expand: [] });
      for (const c of children) await targetProvider.update(nav.target, c[nav.target.primaryId.logicalName] as string, { [nav.lookup!.logicalName]: null }, undefined, await this.writeContext(ctx, nav.target));
    }
  }

  // ---------------------------------------------------------------- $batch

  /**
   * `POST $batch`: every request is parsed before any runs (a malformed batch runs nothing); change sets
   * (atomicity groups) run in one transaction and roll back as a whole; each request is authorized and
   * validated as if it were sent alone. Without `Prefer: odata.continue-on-error` the first failure stops it.
   */
  private async batch(ctx: RequestContext): Promise<ODataResponse> {
    this.onlyMethods(ctx, ["POST"], "$batch");
    parseQueryOptions(ctx.query, new Set());
    const contentType = header(ctx.request, "content-type") ?? "";
    const raw = ctx.request.body;
    const text = raw === undefined ? "" : typeof raw === "string" ? raw : Buffer.isBuffer(raw) ? utf8Text(raw) : JSON.stringify(raw);
    if (text.trim() === "") throw badRequest("The $batch body is empty");
    const parsed = parseBatch(contentType, text);
    const results: BatchResult[] = [];
    const created = new Map<string, string>();
    const failed = new Set<string>();
    const continueOnError = ctx.prefs.continueOnError === true;
    const failedDependency = (part: BatchPart): BatchResult => ({ part, response: this.errorResponse(new ODataError(424, ErrorCodes.badRequest, `Request ${part.id} was not run: a request it depends on failed`)) });
    const dependsOnFailure = (part: BatchPart) => part.dependsOn.some((d) => failed.has(d) || failed.has(`group:${d}`));
    let i = 0;
    while (i < parsed.parts.length) {
      const part = parsed.parts[i]!;
      if (!part.group) {
        i++;
        const result = dependsOnFailure(part) ? failedDependency(part) : { part, response: await this.runPart(ctx, part, created, false) };
        results.push(result);
        if (result.response.status >= 400) {
          failed.add(part.id);
          if (!continueOnError) break;
        }
        continue;
      }
      const group = parsed.parts.slice(i).filter((p, j, all) => all.slice(0, j + 1).every((q) => q.group === part.group));
      i += group.length;
      if (group.some(dependsOnFailure)) {
        results.push(...group.map(failedDependency));
        failed.add(part.group);
        if (!continueOnError) break;
        continue;
      }
      const groupCreated = new Map(created);
      const groupResults: BatchResult[] = [];
      try {
        await this.options.providers.defaultProvider.transaction(async () => {
          for (const p of group) {
            const response = await this.runPart(ctx, p, groupCreated, true);
            groupResults.push({ part: p, response });
            if (response.status >= 400) throw new ChangeSetFailure();
          }
        });
        for (const [k, v] of groupCreated) created.set(k, v);
        results.push(...groupResults);
      } catch (e) {
        if (!(e instanceof ChangeSetFailure)) throw e;
        const failure = groupResults[groupResults.length - 1]!;
        // Everything in the change set was rolled back: multipart answers with the failing request alone
        // (as Dataverse does); JSON reports the others as not applied.
        if (parsed.format === "multipart") results.push(failure);
        else for (const p of group) results.push(p === failure.part ? failure : { part: p, response: this.errorResponse(new ODataError(424, ErrorCodes.badRequest, `Request ${p.id} was rolled back: request ${failure.part.id} of its atomicity group failed`)) });
        failed.add(part.group);
        for (const p of group) failed.add(p.id);
        if (!continueOnError) break;
      }
    }
    const headers: Record<string, string> = { "OData-Version": "4.0" };
    if (continueOnError) headers["Preference-Applied"] = "odata.continue-on-error";
    if (parsed.format === "json") return { status: 200, headers: { ...headers, "Content-Type": "application/json; charset=utf-8" }, body: jsonResponse(results) };
    const multipart = multipartResponse(results);
    // Dataverse: a multipart batch that stopped at a failure (no continue-on-error) answers with that
    // request's status, so a client checking only the batch's status sees the failure.
    const last = results[results.length - 1];
    const status = !continueOnError && last && last.response.status >= 400 ? last.response.status : 200;
    return { status, headers: { ...headers, "Content-Type": multipart.contentType }, body: multipart.body };
  }

  private async runPart(ctx: RequestContext, part: BatchPart, created: Map<string, string>, changeSet: boolean): Promise<ODataResponse> {
    const headers: Record<string, string | string[] | undefined> = { ...part.headers, host: header(ctx.request, "host"), "x-forwarded-proto": header(ctx.request, "x-forwarded-proto") };
    if (!headers["prefer"] && part.method !== "GET") delete headers["prefer"];
    const resolved = resolveReferences(part, created);
    let url: string;
    try {
      url = partUrl(resolved.url, this.rootPath, serviceHosts(ctx.root, [header(ctx.request, "host"), header(ctx.request, "x-forwarded-host")]));
    } catch (e) {
      return this.errorResponse(e); // this part's answer, like any other refusal of one request
    }
    const body = resolved.body;
    // A part that names another caller is authenticated with the batch's token and its own impersonation headers.
    const impersonates = part.headers["mscrmcallerid"] !== undefined || part.headers["callerobjectid"] !== undefined;
    if (impersonates) headers["authorization"] = header(ctx.request, "authorization");
    const response = bodyText(await this.process({ method: part.method, url, headers, body, inBatch: { changeSet } }, impersonates ? undefined : ctx.caller));
    const location = response.headers["OData-EntityId"] ?? response.headers.Location;
    if (location && response.status < 300 && part.contentId !== undefined) created.set(part.contentId, location);
    return response;
  }

  // ---------------------------------------------------------------- operations

  private async invokeOperation(ctx: RequestContext, op: OperationDefinition, segment: PathSegment, id: string | undefined, entity?: EntityModel): Promise<ODataResponse> {
    if (op.kind === "action" && ctx.method !== "POST") throw methodNotAllowed(ctx.method, `the action '${op.name}'`, ["POST"]);
    if (op.kind === "function" && ctx.method !== "GET") throw methodNotAllowed(ctx.method, `the function '${op.name}'`, ["GET"]);
    if (op.kind === "action" && segment.args !== undefined && segment.args !== "") throw badRequest(`The action '${op.name}' takes its parameters in the request body`);
    parseQueryOptions(ctx.query, new Set());
    const parameters: Record<string, unknown> = op.kind === "action" ? (hasBody(ctx.request) ? this.readJsonBody(ctx) : {}) : {};
    if (op.kind === "function" && segment.args) throw notImplemented(`Parameters of the function '${op.name}' are not supported`);
    for (const key of Object.keys(parameters)) {
      if (!op.parameters.some((p) => p.name === key)) throw badRequest(`The operation '${op.name}' has no parameter '${key}'`);
    }
    for (const p of op.parameters) {
      const v = parameters[p.name];
      if (v === undefined || v === null) {
        if (!p.optional) throw badRequest(`The parameter '${p.name}' of '${op.name}' is required`);
        continue;
      }
      if (p.type.kind === "primitive") {
        const expected = p.type.type === "Edm.Boolean" ? "boolean" : /Int|Decimal|Double/.test(p.type.type) ? "number" : "string";
        if (typeof v !== expected) throw badRequest(`The parameter '${p.name}' of '${op.name}' must be ${p.type.type}`);
      }
    }
    const privileges: string[] = [];
    if (entity) privileges.push(this.priv("Read", entity));
    privileges.push(...(op.requiredPrivileges?.(ctx.model) ?? []));
    await this.require(ctx, privileges);
    if (op.changesSchema && ctx.request.inBatch?.changeSet) throw notImplemented(`The action '${op.name}' changes the schema and cannot run inside a change set; send it outside one`);
    let binding: { entity: EntityModel; id: string; row: Row } | undefined;
    if (entity && id) {
      const row = await this.options.providers.for(entity).retrieve(entity, id, [...entity.attributes.values()]);
      if (!row) throw notFound(`${entity.logicalName} With Id = ${id} Does Not Exist`);
      binding = { entity, id, row };
    }
    const result: OperationResult = await op.handler({ model: ctx.model, caller: ctx.caller, binding, parameters, serviceRoot: ctx.root });
    switch (result.kind) {
      case "none":
        return { status: 204, headers: { "OData-Version": "4.0" } };
      case "entity": {
        const target = this.options.metadata.model.entity(result.entity.logicalName) ?? result.entity;
        const serializer = new EntitySerializer(target, ctx.prefs);
        const select = bindSelect(target, undefined);
        const body = { "@odata.context": `${ctx.root}/$metadata#${target.entitySetName}/$entity`, ...serializer.serialize(result.row, select) };
        const headers: Record<string, string> = { "OData-EntityId": this.entityId(ctx, target, result.row[target.primaryId.logicalName] as string) };
        return this.json(200, body, headers);
      }
      case "complex":
        return this.json(200, { "@odata.context": `${ctx.root}/$metadata#Microsoft.Dynamics.CRM.${result.typeName}`, ...result.value });
      case "primitive":
        return this.json(200, { "@odata.context": `${ctx.root}/$metadata#Edm.String`, value: result.value });
    }
  }
}

class ChangeSetFailure extends Error {}

interface CreatedTree {
  entity: EntityModel;
  row: Row;
  children: Map<string, CreatedTree | CreatedTree[]>;
}

/**
 * Where an expansion is kept on its parent row: a single-valued one under JOINED_PREFIX + name (a row or
 * null, as a join leaves it), a collection under COLLECTION_PREFIX + name.
 */
const COLLECTION_PREFIX = "@expanded:";
interface Expansion {
  rows: Row[];
  count?: number;
  nextLink?: string;
}

/**
 * The first media type parameter this service cannot honour (OData: unknown or unsupported format
 * parameters are refused, not ignored); undefined when all can be.
 */
function unsupportedMediaParameter(params: readonly string[]): string | undefined {
  for (const p of params) {
    const eq = p.indexOf("=");
    const key = (eq < 0 ? p : p.slice(0, eq)).trim().toLowerCase();
    const value = (eq < 0 ? "" : p.slice(eq + 1)).trim().replace(/^"(.*)"$/, "$1").toLowerCase();
    if (key === "") continue;
    if (key === "odata.metadata" || key === "metadata") {
      if (value !== "minimal") return p;
    } else if (key === "ieee754compatible") {
      if (value !== "false") return p;
    } else if (key === "charset") {
      if (value !== "utf-8" && value !== "utf8") return p;
    } else if (key === "odata.streaming" || key === "streaming") {
      if (value !== "true" && value !== "false") return p;
    } else if (key !== "q") return p;
  }
  return undefined;
}

const IN_MEMORY_NESTED_OPTIONS = new Set(["$select", "$filter", "$orderby", "$top", "$skip"]);

/** A navigation of a metadata set ($expand=Attributes): the rows it leads to from a row. */
interface InMemoryNavigation {
  entity: EntityModel;
  privilege?: string;
  rowsOf(row: Row): Row[];
}

interface BoundInMemoryExpand {
  name: string;
  navigation: InMemoryNavigation;
  query: BoundQuery;
  complex: string[];
}

/** Rows serialized per chunk: each chunk's JSON objects die young instead of living until the page is written. */
const SERIALIZE_CHUNK = 256;

/** `{...head, "value": [rows], ...tail}` as JSON text in pieces, the rows serialized a chunk at a time (their objects die young). */
function* collectionJson(head: Record<string, unknown>, rows: readonly Row[], write: (row: Row) => Record<string, unknown>, tail: Record<string, unknown>): Generator<string> {
  const headText = JSON.stringify(head);
  yield `${headText.slice(0, -1)}${headText.length > 2 ? "," : ""}"value":[`;
  for (let i = 0; i < rows.length; i += SERIALIZE_CHUNK) {
    const chunk = rows.length <= SERIALIZE_CHUNK ? (rows as Row[]) : rows.slice(i, i + SERIALIZE_CHUNK);
    const text = JSON.stringify(chunk.map(write));
    yield i === 0 ? text.slice(1, -1) : `,${text.slice(1, -1)}`;
  }
  const tailText = JSON.stringify(tail);
  yield `]${tailText.length > 2 ? `,${tailText.slice(1)}` : "}"}`;
}

function inFilter(attr: AttributeModel, ids: string[]): BoundExpression {
  return { kind: "in", type: "Edm.Boolean", operand: { kind: "property", type: attr.edmType, attribute: attr, navigations: [] }, values: ids.map((v) => ({ kind: "constant", type: "Edm.Guid", value: v })) };
}

/** Limits a query to the rows related to some rows: a lookup `in` list, or the intersect table. */
function restrictToRelated(query: BoundQuery, nav: NavigationModel, ids: string[]): void {
  if (nav.intersect) {
    query.relatedTo = { navigation: nav, ids };
    return;
  }
  const condition = inFilter(nav.lookup!, ids);
  query.filter = query.filter ? { kind: "logical", type: "Edm.Boolean", op: "and", left: condition, right: query.filter } : condition;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** A body's bytes as text; bytes that are not UTF-8 are a 400, never silently replaced by U+FFFD. */
function utf8Text(bytes: Buffer): string {
  try {
    return UTF8.decode(bytes);
  } catch {
    throw badRequest("The request body is not valid UTF-8");
  }
}

/** An If-Match / If-None-Match value: `*`, or the versions its ETags name (a 400 for one this service never issued). */
function etagCondition(value: string, name: string): "*" | number[] {
  if (value.trim() === "*") return "*";
  return value.split(",").map((t) => {
    const v = versionFromEtag(t);
    if (v === null || v === undefined) throw badRequest(`The ${name} header '${value}' holds '${t.trim()}', which is not an ETag this service issued`);
    return v;
  });
}

function hasBody(req: ODataRequest): boolean {
  if (req.body === undefined) return false;
  if (typeof req.body === "string") return req.body.trim() !== "";
  if (Buffer.isBuffer(req.body)) return req.body.length > 0;
  return true;
}

/** Rows are read with their version so every entity carries its ETag. */
function withVersion(entity: EntityModel, select: AttributeModel[]): AttributeModel[] {
  const version = entity.attributes.get("versionnumber");
  return version && !select.includes(version) ? [...select, version] : select;
}
