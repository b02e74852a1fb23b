/**
 * A data provider that is not SQL-backed: the rows live in a JavaScript array (think of a REST API or a
 * file). It receives the bound query tree and evaluates it with the library's in-memory evaluator;
 * nothing in the OData layer knows about it.
 */
import { randomUUID } from "node:crypto";
import {
  queryInMemory,
  type AttributeModel,
  type DataProvider,
  type EntityModel,
  type ProviderCapabilities,
  type RetrieveMultipleRequest,
  type RetrieveMultipleResult,
  type Row,
  type VirtualEntityService,
  type WriteOutcome,
  type BoundQuery,
} from "../../src/index.js";

export const OFFICE_PROVIDER_ID = "7d3f0c1e-2b9a-4c55-8e61-4a2f6b9d0c11";

export class InMemoryOfficeProvider implements DataProvider {
  readonly id = OFFICE_PROVIDER_ID;
  readonly name = "In-memory offices";
  private readonly rows = new Map<string, Row>();

  constructor(seed: Row[] = []) {
    for (const r of seed) this.rows.set(r.new_officeid as string, { ...r, versionnumber: 1 });
  }

  capabilities(): ProviderCapabilities {
    // No joins here: filters across lookups are answered 501 by the OData layer.
    return { filter: true, navigationFilter: false, orderBy: true, count: true, skip: true, create: true, update: true, delete: true, transactions: false };
  }

  async retrieveMultiple({ query, pageSize, after }: RetrieveMultipleRequest): Promise<RetrieveMultipleResult> {
    const { rows, next } = queryInMemory([...this.rows.values()], query, pageSize, after);
    return { rows: rows.map((r) => pick(r, query.select)), next };
  }

  async count(query: BoundQuery): Promise<number> {
    return queryInMemory([...this.rows.values()], query, Number.MAX_SAFE_INTEGER).total;
  }

  async retrieve(_entity: EntityModel, id: string, select: readonly AttributeModel[]): Promise<Row | undefined> {
    const row = this.rows.get(id);
    return row ? pick(row, select) : undefined;
  }

  async create(entity: EntityModel, values: Row): Promise<WriteOutcome<Row>> {
    const id = (values[entity.primaryId.logicalName] as string) ?? randomUUID();
    if (this.rows.has(id)) return { status: "conflict", message: `An office with id ${id} already exists` };
    const now = new Date().toISOString();
    const row = { ...values, [entity.primaryId.logicalName]: id, createdon: now, modifiedon: now, versionnumber: 1 };
    this.rows.set(id, row);
    return { status: "ok", row };
  }

  async update(_entity: EntityModel, id: string, values: Row, expectedVersion?: number): Promise<WriteOutcome<Row>> {
    const row = this.rows.get(id);
    if (!row) return { status: "not-found" };
    if (expectedVersion !== undefined && row.versionnumber !== expectedVersion) return { status: "precondition-failed" };
    const next = { ...row, ...values, modifiedon: new Date().toISOString(), versionnumber: (row.versionnumber as number) + 1 };
    this.rows.set(id, next);
    return { status: "ok", row: next };
  }

  async delete(_entity: EntityModel, id: string, expectedVersion?: number): Promise<WriteOutcome<null>> {
    const row = this.rows.get(id);
    if (!row) return { status: "not-found" };
    if (expectedVersion !== undefined && row.versionnumber !== expectedVersion) return { status: "precondition-failed" };
    this.rows.delete(id);
    return { status: "ok", row: null };
  }

  async transaction<T>(work: (provider: DataProvider) => Promise<T>): Promise<T> {
    return work(this);
  }
}

function pick(row: Row, select: readonly AttributeModel[]): Row {
  const out: Row = {};
  for (const a of select) out[a.logicalName] = row[a.logicalName] ?? null;
  return out;
}

/** Registers the provider and a virtual entity served by it, without touching the OData layer. */
export async function installOffices(service: VirtualEntityService, seed: Row[] = []): Promise<InMemoryOfficeProvider> {
  const provider = new InMemoryOfficeProvider(seed);
  service.registerProvider(provider);
  await service.defineEntity({
    LogicalName: "new_office",
    DisplayName: "Office",
    TableType: "Virtual",
    ExternalName: "offices",
    DataProviderId: OFFICE_PROVIDER_ID,
    PrimaryNameAttribute: "new_name",
    Attributes: [
      { LogicalName: "new_name", AttributeType: "String", MaxLength: 100, RequiredLevel: "ApplicationRequired", ExternalName: "name" },
      { LogicalName: "new_city", AttributeType: "String", MaxLength: 100, ExternalName: "city" },
      { LogicalName: "new_desks", AttributeType: "Integer", MinValue: 0, ExternalName: "desks" },
    ],
  });
  return provider;
}
