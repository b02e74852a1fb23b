import type { AttributeModel, EntityModel, NavigationModel } from "../metadata/model.js";
import type { BoundExpression, BoundQuery, FunctionName } from "../odata/bound.js";
import { visitExpression } from "../odata/bound.js";

/** A row in OData JSON form, keyed by attribute logical name. */
export type Row = Record<string, unknown>;

/** The order values of the last row of a page; the next page starts after it. */
export type PagePosition = unknown[];

export interface RetrieveMultipleRequest {
  query: BoundQuery;
  /** The most rows to return. */
  pageSize: number;
  /** Start after this position (server-driven paging); $skip applies only without it. */
  after?: PagePosition;
}

export interface RetrieveMultipleResult {
  rows: Row[];
  /** Set when more rows follow: where the next page starts. */
  next?: PagePosition;
}

/** Who a write is recorded as (createdby/modifiedby): the caller, or the user an application is mapped to. */
export interface WriteContext {
  userId?: string;
  /** The user who really acts when the write is made on behalf of `userId` (createdonbehalfby/modifiedonbehalfby). */
  delegateId?: string;
}

export type WriteOutcome<T> = { status: "ok"; row: T } | { status: "not-found" } | { status: "precondition-failed" } | { status: "conflict"; message: string };

/** What a provider can do; the OData layer answers 501 for the rest before calling it. */
export interface ProviderCapabilities {
  filter: boolean;
  /** Functions a provider can evaluate in $filter; undefined means all. */
  functions?: ReadonlySet<FunctionName>;
  /** Filters across lookups (`nav/field`). */
  navigationFilter: boolean;
  /**
   * Reads the single-valued navigations of `BoundQuery.joins` with the page itself, each row carrying the
   * related row (or null) under `JOINED_PREFIX + navigation name`. Without it they are fetched apart.
   */
  joins?: boolean;
  orderBy: boolean;
  count: boolean;
  skip: boolean;
  create: boolean;
  update: boolean;
  delete: boolean;
  /** Several writes in one all-or-nothing unit. */
  transactions: boolean;
}

/**
 * Dataverse's entity data provider: where a (virtual) entity's rows live. It receives bound query trees,
 * never query strings, and maps them onto its store; the OData layer never sees how.
 */
export interface DataProvider {
  /** The DataProviderId entities reference. */
  readonly id: string;
  readonly name: string;
  capabilities(entity: EntityModel): ProviderCapabilities;
  retrieveMultiple(request: RetrieveMultipleRequest): Promise<RetrieveMultipleResult>;
  count(query: BoundQuery): Promise<number>;
  retrieve(entity: EntityModel, id: string, select: readonly AttributeModel[]): Promise<Row | undefined>;
  /** Creates a row from the given values (primary key included) and returns it as stored. */
  create(entity: EntityModel, values: Row, context?: WriteContext): Promise<WriteOutcome<Row>>;
  /** Updates the given attributes; with `expectedVersion`, only if the row still has that version. */
  update(entity: EntityModel, id: string, values: Row, expectedVersion?: number, context?: WriteContext): Promise<WriteOutcome<Row>>;
  delete(entity: EntityModel, id: string, expectedVersion?: number): Promise<WriteOutcome<null>>;
  /** Runs work against a provider bound to one transaction. */
  transaction<T>(work: (provider: DataProvider) => Promise<T>): Promise<T>;
  /** Many-to-many links (`POST …/nav/$ref`); absent when the provider has none. */
  associate?(navigation: NavigationModel, sourceId: string, targetId: string): Promise<"created" | "exists">;
  disassociate?(navigation: NavigationModel, sourceId: string, targetId: string): Promise<boolean>;
}

/** The first construct of a query the provider cannot answer, described for a 501; undefined if none. */
export function unsupportedConstruct(caps: ProviderCapabilities, query: BoundQuery): string | undefined {
  if (query.filter) {
    if (!caps.filter) return "$filter";
    let problem: string | undefined;
    visitExpression(query.filter, (e: BoundExpression) => {
      if (problem) return;
      if (e.kind === "call" && caps.functions && !caps.functions.has(e.name)) problem = `the function '${e.name}' in $filter`;
      if (e.kind === "property" && e.navigations.length && !caps.navigationFilter) problem = `filters across lookups ('${e.navigations.map((n) => n.name).join("/")}')`;
    });
    if (problem) return problem;
  }
  if (query.relatedTo?.navigation.intersect && !caps.navigationFilter) return "many-to-many navigation";
  if (query.orderBy.length && !caps.orderBy) return "$orderby";
  if (query.skip && !caps.skip) return "$skip";
  if (query.count && !caps.count) return "$count";
  return undefined;
}
