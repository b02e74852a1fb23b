import { randomUUID } from "node:crypto";
import type { AttributeModel, EntityModel, NavigationModel } from "../metadata/model.js";
import type { DataProvider, ProviderCapabilities, RetrieveMultipleRequest, RetrieveMultipleResult, Row, WriteContext, WriteOutcome } from "../providers/data-provider.js";
import { contained, type SqlExecutor } from "./executor.js";
import { PARENT_COLUMN, SqlQueryCompiler, fromStore, joinedAlias, orderAlias, type SelectPlan } from "./sql-compiler.js";
import { JOINED_PREFIX } from "../odata/bound.js";

/** The built-in provider's id: rows in the SQL store (SQLite or PostgreSQL) the service opened. */
export const SQL_PROVIDER_ID = "b1f6a2b4-6a8c-4f4e-9a55-2c5a3d0e7f10";

const CAPABILITIES: ProviderCapabilities = {
  filter: true,
  navigationFilter: true,
  joins: true,
  orderBy: true,
  count: true,
  skip: true,
  create: true,
  update: true,
  delete: true,
  transactions: true,
};

/** A page's rows as arrays, and where each named column sits in them. */
interface PageArrays {
  raw: unknown[][];
  positions: ReadonlyMap<string, number>;
}

/** SQL of reads by key, per entity (dropped with the model that holds the entity) and column list. */
const retrieveSql = new WeakMap<EntityModel, Map<string, string>>();

/** Where auto-numbers come from; one row per numbered attribute, advanced inside the writing transaction. */
export const SEQUENCE_TABLE = "vep_sequence";

function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return err?.code === "23505" || err?.code === "SQLITE_CONSTRAINT_UNIQUE" || err?.code === "SQLITE_CONSTRAINT_PRIMARYKEY" || /UNIQUE constraint failed/.test(err?.message ?? "");
}

/** Serves entities whose rows live in tables of the SQL store, as parameterized SQL on the raw connection. */
export class SqlDataProvider implements DataProvider {
  readonly id = SQL_PROVIDER_ID;
  readonly name = "SQL store";

  constructor(readonly executor: SqlExecutor) {}

  capabilities(): ProviderCapabilities {
    return CAPABILITIES;
  }

  private q(id: string) {
    return this.executor.dialect.quote(id);
  }

  /** A stored value in its OData form; option values kept as source names become their numbers. */
  private fromColumn(a: AttributeModel, v: unknown): unknown {
    return a.externalValues && v !== null && v !== undefined ? (a.externalValues.fromSource.get(String(v)) ?? null) : fromStore(a, v);
  }

  /**
   * Turns a result array into a Row (and the rows joined into it). Made per query as one object literal
   * with constant names, so each row is built with its final shape instead of one computed key at a time.
   * Names come from validated metadata and are embedded as JSON string literals.
   */
  private rowReader(query: RetrieveMultipleRequest["query"], at: (name: string) => number): (raw: unknown[]) => Row {
    const lit = (s: string) => JSON.stringify(s);
    const converters: ((v: unknown) => unknown)[] = [];
    const value = (a: AttributeModel, index: number) => {
      const convert = this.converter(a);
      if (!convert) return `(r[${index}] ?? null)`;
      converters.push(convert);
      return `c[${converters.length - 1}](r[${index}])`;
    };
    const fields = query.select.map((a) => `${lit(a.logicalName)}: ${value(a, at(a.logicalName))}`);
    if (query.relatedTo) fields.push(`${lit(PARENT_COLUMN)}: String(r[${at(PARENT_COLUMN)}]).toLowerCase()`);
    for (const j of query.joins ?? []) {
      const id = at(joinedAlias(j.navigation.name, j.navigation.target.primaryId.logicalName));
      const related = j.select.map((a) => `${lit(a.logicalName)}: ${value(a, at(joinedAlias(j.navigation.name, a.logicalName)))}`);
      fields.push(`${lit(JOINED_PREFIX + j.navigation.name)}: r[${id}] === null || r[${id}] === undefined ? null : { ${related.join(", ")} }`);
    }
    return new Function("c", `return function readRow(r) { return { ${fields.join(", ")} }; };`)(converters) as (raw: unknown[]) => Row;
  }

  /** How a column's value becomes its OData value; undefined when it is the value itself (strings). */
  private converter(a: AttributeModel): ((v: unknown) => unknown) | undefined {
    if (a.externalValues) return (v) => this.fromColumn(a, v);
    if (a.edmType === "Edm.String") return undefined;
    return (v) => fromStore(a, v);
  }

  private toRow(attrs: readonly AttributeModel[], raw: Record<string, unknown>): Row {
    const row: Row = {};
    for (const a of attrs) row[a.logicalName] = this.fromColumn(a, raw[a.logicalName]);
    return row;
  }

  async retrieveMultiple(request: RetrieveMultipleRequest): Promise<RetrieveMultipleResult> {
    const { query, pageSize, after } = request;
    const plan = { query, limit: pageSize + 1, offset: after ? undefined : query.skip, after };
    // Rows come as arrays in the compiled column order; each becomes one Row, with no interim object.
    const { raw, positions } = (await this.readJsonRows(plan)) ?? (await this.readColumns(plan));
    const at = (name: string) => positions.get(name)!;
    const more = raw.length > pageSize;
    const page = more ? raw.slice(0, pageSize) : raw;
    const rows = page.map(this.rowReader(query, at));
    let next: unknown[] | undefined;
    if (more) {
      const last = page[page.length - 1]!;
      const order = SqlQueryCompiler.orderOf(query);
      next = order.map((_t, i) => normalizePosition(last[at(orderAlias(i))]));
    }
    return { rows, next };
  }

  /** A page as one JSON array per row (Dialect.jsonRow); undefined without them, or when a row holds a BLOB. */
  private async readJsonRows(plan: SelectPlan): Promise<PageArrays | undefined> {
    if (!this.executor.dialect.jsonRow) return undefined;
    const compiled = new SqlQueryCompiler(this.executor.dialect, plan.query.entity).compileSelect({ ...plan, jsonRows: true });
    const texts = await this.executor.queryArrays(compiled.sql, compiled.params);
    if (texts.some((r) => r[0] === null)) return undefined;
    return { raw: texts.map((r) => JSON.parse(r[0] as string) as unknown[]), positions: compiled.positions! };
  }

  /** A page column by column, as the driver hands the values over. */
  private async readColumns(plan: SelectPlan): Promise<PageArrays> {
    const compiled = new SqlQueryCompiler(this.executor.dialect, plan.query.entity).compileSelect(plan);
    return { raw: await this.executor.queryArrays(compiled.sql, compiled.params), positions: compiled.positions! };
  }

  async count(query: RetrieveMultipleRequest["query"]): Promise<number> {
    const { sql, params } = new SqlQueryCompiler(this.executor.dialect, query.entity).compileCount(query);
    const [row] = await this.executor.query<{ count: number | string }>(sql, params);
    return Number(row?.count ?? 0);
  }

  async retrieve(entity: EntityModel, id: string, select: readonly AttributeModel[]): Promise<Row | undefined> {
    // Reads by key are the hot path: their SQL is built once per entity and column list.
    let byColumns = retrieveSql.get(entity);
    if (!byColumns) retrieveSql.set(entity, (byColumns = new Map()));
    const key = select.map((a) => a.logicalName).join(",");
    let sql = byColumns.get(key);
    if (!sql) {
      const cols = select.map((a) => `${this.q(a.column)} AS ${this.q(a.logicalName)}`).join(", ");
      sql = `SELECT ${cols} FROM ${this.q(entity.table)} WHERE ${this.q(entity.primaryId.column)} = ${this.param(1, "Edm.Guid")}`;
      if (byColumns.size < 64) byColumns.set(key, sql);
    }
    const [raw] = await this.executor.query<Record<string, unknown>>(sql, [id]);
    return raw ? this.toRow(select, raw) : undefined;
  }

  private param(n: number, edmType: string): string {
    return this.executor.dialect.typedParam(this.executor.dialect.placeholder(n), edmType);
  }

  /** Option values of a virtual entity are stored as the source's own values (ExternalValue). */
  private toParam(attr: AttributeModel, value: unknown): unknown {
    if (attr.externalValues && value !== null && value !== undefined) return attr.externalValues.toSource.get(value as number) ?? value;
    return this.executor.dialect.toParam(value);
  }

  async create(entity: EntityModel, values: Row, context?: WriteContext): Promise<WriteOutcome<Row>> {
    return this.executor.transaction(async (tx) => {
      const now = new Date().toISOString();
      const by = context?.userId ?? null;
      const delegate = context?.delegateId ?? null;
      const row: Row = {
        ...values,
        createdon: now,
        modifiedon: now,
        versionnumber: 1,
        ...(entity.attributes.has("createdby") ? { createdby: by, modifiedby: by } : {}),
        ...(entity.attributes.has("createdonbehalfby") ? { createdonbehalfby: delegate, modifiedonbehalfby: delegate } : {}),
      };
      for (const a of entity.attributes.values()) {
        if (a.def.AutoNumberFormat && (row[a.logicalName] === undefined || row[a.logicalName] === null)) {
          row[a.logicalName] = await this.nextAutoNumber(tx, entity, a);
        }
      }
      const attrs = [...entity.attributes.values()].filter((a) => row[a.logicalName] !== undefined);
      const cols = attrs.map((a) => this.q(a.column)).join(", ");
      const params = attrs.map((a) => this.toParam(a, row[a.logicalName]));
      const placeholders = attrs.map((a, i) => this.param(i + 1, storedType(a))).join(", ");
      try {
        await contained(tx, () => tx.execute(`INSERT INTO ${this.q(entity.table)} (${cols}) VALUES (${placeholders})`, params));
      } catch (e) {
        if (isUniqueViolation(e)) return { status: "conflict", message: describeUnique(entity, e) };
        throw e;
      }
      const stored = await new SqlDataProvider(tx).retrieve(entity, row[entity.primaryId.logicalName] as string, [...entity.attributes.values()]);
      return { status: "ok", row: stored! };
    });
  }

  private async nextAutoNumber(tx: SqlExecutor, entity: EntityModel, attr: AttributeModel): Promise<string> {
    const name = `${entity.logicalName}.${attr.logicalName}`;
    const d = tx.dialect;
    const p = (n: number) => d.placeholder(n);
    // Create the counter if needed without racing a concurrent first create, then advance it under the row lock.
    await tx.execute(`INSERT INTO ${this.q(SEQUENCE_TABLE)} (${this.q("name")}, ${this.q("value")}) VALUES (${p(1)}, 0) ON CONFLICT (${this.q("name")}) DO NOTHING`, [name]);
    const updated = await tx.query<{ value: number }>(`UPDATE ${this.q(SEQUENCE_TABLE)} SET ${this.q("value")} = ${this.q("value")} + 1 WHERE ${this.q("name")} = ${p(1)} RETURNING ${this.q("value")}`, [name]);
    return formatAutoNumber(attr.def.AutoNumberFormat!, Number(updated[0]!.value));
  }

  async update(entity: EntityModel, id: string, values: Row, expectedVersion?: number, context?: WriteContext): Promise<WriteOutcome<Row>> {
    return this.executor.transaction(async (tx) => {
      if (entity.attributes.has("modifiedby")) values = { ...values, modifiedby: context?.userId ?? null };
      if (entity.attributes.has("modifiedonbehalfby")) values = { ...values, modifiedonbehalfby: context?.delegateId ?? null };
      const version = this.q(versionColumn(entity));
      const attrs = [...entity.attributes.values()].filter((a) => values[a.logicalName] !== undefined && !a.isPrimaryId && a.logicalName !== "versionnumber" && a.logicalName !== "modifiedon");
      const params: unknown[] = attrs.map((a) => this.toParam(a, values[a.logicalName]));
      const sets = attrs.map((a, i) => `${this.q(a.column)} = ${this.param(i + 1, storedType(a))}`);
      params.push(new Date().toISOString());
      sets.push(`${this.q(entity.attributes.get("modifiedon")?.column ?? "modifiedon")} = ${this.param(params.length, "Edm.DateTimeOffset")}`);
      sets.push(`${version} = ${version} + 1`);
      params.push(id);
      let where = `${this.q(entity.primaryId.column)} = ${this.param(params.length, "Edm.Guid")}`;
      if (expectedVersion !== undefined) {
        params.push(expectedVersion);
        where += ` AND ${version} = ${this.param(params.length, "Edm.Int64")}`;
      }
      let changes: number;
      try {
        ({ changes } = await contained(tx, () => tx.execute(`UPDATE ${this.q(entity.table)} SET ${sets.join(", ")} WHERE ${where}`, params)));
      } catch (e) {
        if (isUniqueViolation(e)) return { status: "conflict", message: describeUnique(entity, e) };
        throw e;
      }
      const reader = new SqlDataProvider(tx);
      if (changes === 0) {
        const exists = await reader.retrieve(entity, id, [entity.primaryId]);
        return { status: exists ? "precondition-failed" : "not-found" };
      }
      const stored = await reader.retrieve(entity, id, [...entity.attributes.values()]);
      return { status: "ok", row: stored! };
    });
  }

  async delete(entity: EntityModel, id: string, expectedVersion?: number): Promise<WriteOutcome<null>> {
    return this.executor.transaction(async (tx) => {
      const params: unknown[] = [id];
      let where = `${this.q(entity.primaryId.column)} = ${this.param(1, "Edm.Guid")}`;
      if (expectedVersion !== undefined) {
        params.push(expectedVersion);
        where += ` AND ${this.q(versionColumn(entity))} = ${this.param(2, "Edm.Int64")}`;
      }
      const { changes } = await tx.execute(`DELETE FROM ${this.q(entity.table)} WHERE ${where}`, params);
      if (changes === 0) {
        const exists = await new SqlDataProvider(tx).retrieve(entity, id, [entity.primaryId]);
        return { status: exists ? "precondition-failed" : "not-found" };
      }
      return { status: "ok", row: null };
    });
  }

  async associate(nav: NavigationModel, sourceId: string, targetId: string): Promise<"created" | "exists"> {
    const i = nav.intersect!;
    const d = this.executor.dialect;
    const p = (n: number) => d.typedParam(d.placeholder(n), "Edm.Guid");
    try {
      await this.executor.transaction((tx) =>
        contained(tx, () => tx.execute(`INSERT INTO ${this.q(i.table)} (${this.q(`${i.table}id`)}, ${this.q(i.sourceColumn)}, ${this.q(i.targetColumn)}) VALUES (${p(1)}, ${p(2)}, ${p(3)})`, [randomUUID(), sourceId, targetId])),
      );
      return "created";
    } catch (e) {
      if (isUniqueViolation(e)) return "exists";
      throw e;
    }
  }

  async disassociate(nav: NavigationModel, sourceId: string, targetId: string): Promise<boolean> {
    const i = nav.intersect!;
    const d = this.executor.dialect;
    const p = (n: number) => d.typedParam(d.placeholder(n), "Edm.Guid");
    const r = await this.executor.execute(`DELETE FROM ${this.q(i.table)} WHERE ${this.q(i.sourceColumn)} = ${p(1)} AND ${this.q(i.targetColumn)} = ${p(2)}`, [sourceId, targetId]);
    return r.changes > 0;
  }

  transaction<T>(work: (provider: DataProvider) => Promise<T>): Promise<T> {
    if (this.executor.inTransaction) return work(this);
    return this.executor.transaction((tx) => work(new SqlDataProvider(tx)));
  }
}

/** The type of the stored value: option values kept as source names are strings. */
function storedType(a: AttributeModel): string {
  return a.externalValues ? "Edm.String" : a.edmType;
}

function versionColumn(entity: EntityModel): string {
  return entity.attributes.get("versionnumber")?.column ?? "versionnumber";
}

function normalizePosition(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (v instanceof Date) return v.toISOString();
  return v ?? null;
}

/** `HR{SEQNUM:6}` with 42 gives `HR000042`. */
export function formatAutoNumber(format: string, value: number): string {
  return format.replace(/\{SEQNUM:(\d{1,2})\}/, (_m, digits: string) => String(value).padStart(Number(digits), "0"));
}

function describeUnique(entity: EntityModel, e: unknown): string {
  // PostgreSQL names the key in `detail` (Key ("CandidateId")=(…)); SQLite in the message (table.column).
  const err = e as { message?: string; detail?: string; constraint?: string };
  const message = `${err.message ?? ""} ${err.detail ?? ""} ${err.constraint ?? ""}`;
  const attr = [...entity.attributes.values()].find((a) => message.includes(`.${a.column}`) || message.includes(`(${a.column})`) || message.includes(`"${a.column}"`));
  if (attr?.isPrimaryId) return `A record with the same ${attr.logicalName} already exists in ${entity.logicalName}`;
  const key = entity.keys.find((k) => k.attributes.some((a) => message.includes(a.column)));
  if (key) return `A record with the same value of the key '${key.logicalName}' (${key.attributes.map((a) => a.logicalName).join(", ")}) already exists in ${entity.logicalName}`;
  if (attr) return `A record with the same value of '${attr.logicalName}' already exists in ${entity.logicalName}`;
  return `The record duplicates one that already exists in ${entity.logicalName}`;
}
