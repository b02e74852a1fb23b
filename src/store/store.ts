import { DataSource, EntitySchema, type EntitySchemaColumnOptions } from "typeorm";
import type { Pool } from "pg";
import type { Database } from "better-sqlite3";
import type { Dialect, DialectName } from "./dialect.js";
import { AsyncLock, type SqlExecutor } from "./executor.js";
import { SqliteExecutor } from "./sqlite-executor.js";
import { PostgresExecutor } from "./postgres-executor.js";
import type { ColumnSpec, TableSpec } from "./table-spec.js";

export interface StoreOptions {
  /**
   * Where the data lives: an SQLite file path (or `sqlite:<path>`), `:memory:`, or a PostgreSQL URL
   * (`postgres://…`; add `?schema=<name>` to keep the tables in a schema of their own).
   */
  database?: string;
  /** Log every SQL statement TypeORM runs (schema changes). */
  logging?: boolean;
}

/** The opened store: a TypeORM data source for schema work and a raw executor for queries. */
export class Store {
  private readonly schemaLock = new AsyncLock();
  private readonly tables = new Map<string, TableSpec>();
  /** Who asked for each table: the metadata (entities, links) or the service itself. */
  private readonly owners = new Map<string, "metadata" | "service">();

  private constructor(
    readonly dataSource: DataSource,
    readonly executor: SqlExecutor,
    readonly description: string,
    readonly pgSchema?: string,
  ) {}

  get dialect(): Dialect {
    return this.executor.dialect;
  }
  get kind(): DialectName {
    return this.executor.dialect.name;
  }

  static async open(options: StoreOptions = {}): Promise<Store> {
    const database = options.database ?? ":memory:";
    if (/^postgres(ql)?:\/\//.test(database)) return Store.openPostgres(database, options);
    const file = database.replace(/^sqlite:/, "");
    const ds = new DataSource({ type: "better-sqlite3", database: file, entities: [], logging: options.logging ?? false });
    await ds.initialize();
    const db = (ds.driver as unknown as { databaseConnection: Database }).databaseConnection;
    if (file !== ":memory:") db.pragma("journal_mode = WAL");
    db.pragma("busy_timeout = 5000");
    // Reads by key jump around the file: a 64 MiB page cache and memory-mapped reads keep them off syscalls.
    db.pragma("cache_size = -65536");
    if (file !== ":memory:") db.pragma("mmap_size = 268435456");
    return new Store(ds, new SqliteExecutor(db), file === ":memory:" ? "SQLite (in memory)" : `SQLite ${file}`);
  }

  private static async openPostgres(url: string, options: StoreOptions): Promise<Store> {
    const parsed = new URL(url);
    const schema = parsed.searchParams.get("schema") ?? undefined;
    parsed.searchParams.delete("schema");
    if (schema && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) throw new Error(`Invalid PostgreSQL schema name '${schema}'`);
    const pg = await import("pg");
    const types = pg.default.types;
    // Dates and times stay strings in the OData formats; int8 and numeric become numbers.
    const parsers: Record<number, (v: string) => unknown> = {
      1082: (v) => v,
      1184: (v) => postgresTimestampToIso(v),
      1114: (v) => postgresTimestampToIso(v),
      20: (v) => Number(v),
      1700: (v) => Number(v),
    };
    const extra = {
      types: { getTypeParser: (oid: number, format?: "text" | "binary") => parsers[oid] ?? types.getTypeParser(oid, format) },
      options: schema ? `-c search_path=${schema} -c timezone=UTC` : "-c timezone=UTC",
    };
    if (schema) {
      const client = new pg.default.Client({ connectionString: parsed.toString() });
      await client.connect();
      try {
        await client.query(`CREATE SCHEMA IF NOT EXISTS "${schema}"`);
      } finally {
        await client.end();
      }
    }
    const ds = new DataSource({ type: "postgres", url: parsed.toString(), schema, entities: [], extra, logging: options.logging ?? false });
    await ds.initialize();
    const pool = (ds.driver as unknown as { master: Pool }).master;
    parsed.password = parsed.password ? "***" : "";
    return new Store(ds, new PostgresExecutor(pool), `PostgreSQL ${parsed.toString()}${schema ? ` (schema ${schema})` : ""}`, schema);
  }

  /** Runs work with no other statement on the store (SQLite) or no other schema change (PostgreSQL). */
  async exclusive<T>(work: () => Promise<T>): Promise<T> {
    return this.schemaLock.run(async () => {
      if (this.executor instanceof SqliteExecutor) {
        const ex = this.executor;
        return ex.exclusive(async () => {
          try {
            return await work();
          } finally {
            ex.clearStatements();
          }
        });
      }
      return work();
    });
  }

  /**
   * Creates or alters the given tables to match their specs through TypeORM's schema builder
   * (EntitySchemas built at run time). Columns are added without losing rows; tables not named are untouched.
   */
  async syncTables(specs: readonly TableSpec[], owner: "metadata" | "service" = "service"): Promise<void> {
    await this.exclusive(async () => {
      for (const spec of specs) if (!this.owners.has(spec.name) || owner === "service") this.owners.set(spec.name, owner);
      // The specs become the store's only once their tables match them: a failed change leaves the store
      // as it was, so the next change does not trip over this one.
      const before = new Map(this.tables);
      try {
        for (const spec of specs) this.tables.set(spec.name, spec);
        if (this.kind === "postgres") await this.widenPostgresColumns(specs);
        await this.applySchemas();
        await this.dataSource.synchronize(false);
      } catch (e) {
        this.tables.clear();
        for (const [name, spec] of before) this.tables.set(name, spec);
        // Columns already altered go back to what the restored specs say, or the next change would find them
        // different and have TypeORM drop and re-add them, values and all.
        if (this.kind === "postgres") {
          const restored = specs.map((s) => before.get(s.name)).filter((s): s is TableSpec => s !== undefined);
          await this.widenPostgresColumns(restored).catch((undo) => console.error("[virtual-entity-provider] could not undo column changes:", undo));
        }
        await this.applySchemas();
        throw e;
      }
    });
  }

  /** Names (lower case) of the tables this store manages: entities' and its own. */
  tableNames(): Set<string> {
    return new Set([...this.tables.keys()].map((n) => n.toLowerCase()));
  }

  /**
   * Names (lower case) of the tables kept for the service itself (definitions, sequences, security, catalog
   * sources), as opposed to the tables of the metadata (entities, many-to-many links), which a later
   * definition may take over once nothing in the model uses them.
   */
  internalTableNames(): Set<string> {
    return new Set([...this.tables.keys()].filter((n) => this.owners.get(n) !== "metadata").map((n) => n.toLowerCase()));
  }

  private async applySchemas(): Promise<void> {
    this.dataSource.setOptions({ entities: [...this.tables.values()].map((t) => this.entitySchemaOf(t)) });
    await (this.dataSource as unknown as { buildMetadatas(): Promise<void> }).buildMetadatas();
  }

  async dropTable(name: string): Promise<void> {
    await this.exclusive(async () => {
      this.tables.delete(name);
      const qr = this.dataSource.createQueryRunner();
      try {
        await qr.dropTable(this.pgSchema ? `${this.pgSchema}.${name}` : name, true);
      } finally {
        await qr.release();
      }
      await this.applySchemas();
    });
  }

  /**
   * TypeORM changes a PostgreSQL column's type or length by dropping and re-adding it, which loses its
   * values. Alter those columns in place first so the schema builder finds nothing to change.
   */
  private async widenPostgresColumns(specs: readonly TableSpec[]): Promise<void> {
    const alters: { sql: string; table: string; column: string; type: string }[] = [];
    for (const spec of specs) {
      const existing = await this.executor.query<{ column_name: string; data_type: string; character_maximum_length: number | null; numeric_precision: number | null; numeric_scale: number | null }>(
        `SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1`,
        [spec.name],
      );
      const byName = new Map(existing.map((c) => [c.column_name, c]));
      for (const col of spec.columns) {
        const cur = byName.get(col.name);
        if (!cur) continue;
        const want = postgresType(col);
        const same =
          cur.data_type === want.dataType &&
          (want.length === undefined || cur.character_maximum_length === want.length) &&
          (want.precision === undefined || (cur.numeric_precision === want.precision && cur.numeric_scale === want.scale));
        if (same) continue;
        const q = (s: string) => `"${s.replaceAll('"', '""')}"`;
        // Text to text without an explicit cast: an explicit ::varchar(n) cuts longer values silently,
        // the implicit one refuses them. Other changes cast, and fail on a value that does not convert.
        const textToText = (cur.data_type === "character varying" || cur.data_type === "text") && (col.kind === "string" || col.kind === "text");
        alters.push({ sql: `ALTER TABLE ${q(spec.name)} ALTER COLUMN ${q(col.name)} TYPE ${want.sql}${textToText ? "" : ` USING ${q(col.name)}::${want.sql}`}`, table: spec.name, column: col.name, type: want.sql });
      }
    }
    if (!alters.length) return;
    // All or none: a change refused on one column leaves every other column as it was.
    await this.executor.transaction(async (tx) => {
      for (const a of alters) {
        try {
          await tx.execute(a.sql);
        } catch (e) {
          throw new Error(`Column ${a.table}.${a.column} cannot become ${a.type}: ${(e as Error).message}; nothing was changed`);
        }
      }
    });
  }

  private entitySchemaOf(spec: TableSpec): EntitySchema {
    const columns: Record<string, EntitySchemaColumnOptions> = {};
    const pg = this.kind === "postgres";
    for (const c of spec.columns) columns[c.name] = columnOptions(c, pg);
    // A plain index also holds the primary key, so ordering by the column then the key (how pages are
    // ordered) and resuming after a position are both index ranges.
    const primary = spec.columns.find((c) => c.primary)?.name;
    const indices = spec.columns
      .filter((c) => (c.indexed || c.unique) && !c.primary)
      .map((c) => {
        const columns = c.unique || !primary ? [c.name] : [c.name, primary];
        return { name: indexName(spec.name, columns, c.unique ? "uq" : "ix"), columns, unique: !!c.unique };
      });
    for (const u of spec.uniques ?? []) indices.push({ name: indexName(spec.name, u.columns, "ak"), columns: u.columns, unique: true });
    // SQLite: rows clustered by their GUID key (no separate rowid), so a read by key is one b-tree search.
    return new EntitySchema({ name: spec.name, tableName: spec.name, columns, indices, withoutRowid: !pg });
  }

  async close(): Promise<void> {
    if (this.dataSource.isInitialized) await this.dataSource.destroy();
  }
}

function indexName(table: string, columns: string[], kind: string): string {
  const raw = `${kind}_${table}_${columns.join("_")}`.toLowerCase();
  if (raw.length <= 60) return raw;
  let h = 0;
  for (const ch of raw) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `${raw.slice(0, 50)}_${h.toString(36)}`;
}

function postgresType(c: ColumnSpec): { dataType: string; sql: string; length?: number; precision?: number; scale?: number } {
  switch (c.kind) {
    case "string":
      return { dataType: "character varying", sql: `varchar(${c.length ?? 255}) COLLATE "C"`, length: c.length ?? 255 };
    case "text":
      return { dataType: "text", sql: `text COLLATE "C"` };
    case "int":
      return { dataType: "integer", sql: "integer" };
    case "bigint":
      return { dataType: "bigint", sql: "bigint" };
    case "decimal":
      return { dataType: "numeric", sql: `numeric(${c.precision},${c.scale})`, precision: c.precision, scale: c.scale };
    case "double":
      return { dataType: "double precision", sql: "double precision" };
    case "boolean":
      return { dataType: "boolean", sql: "boolean" };
    case "date":
      return { dataType: "date", sql: "date" };
    case "datetime":
      return { dataType: "timestamp with time zone", sql: "timestamptz(3)" };
    case "uuid":
      return { dataType: "uuid", sql: "uuid" };
  }
}

function columnOptions(c: ColumnSpec, pg: boolean): EntitySchemaColumnOptions {
  const base = { name: c.name, nullable: c.nullable, primary: c.primary ?? false };
  switch (c.kind) {
    case "string":
      return { ...base, type: "varchar", length: c.length, ...(pg ? { collation: "C" } : {}) };
    case "text":
      return { ...base, type: "text", ...(pg ? { collation: "C" } : {}) };
    case "int":
      return { ...base, type: "integer" };
    case "bigint":
      return { ...base, type: "bigint" };
    case "decimal":
      return { ...base, type: pg ? "numeric" : "decimal", precision: c.precision, scale: c.scale };
    case "double":
      return { ...base, type: "double precision" };
    case "boolean":
      return { ...base, type: "boolean" };
    case "date":
      return { ...base, type: "date" };
    case "datetime":
      return pg ? { ...base, type: "timestamptz", precision: 3 } : { ...base, type: "datetime" };
    case "uuid":
      return pg ? { ...base, type: "uuid" } : { ...base, type: "varchar", length: 36 };
  }
}

/**
 * A PostgreSQL timestamp text (`0001-01-01 00:00:00+00`, with the session in UTC) as ISO 8601 UTC. Not
 * through the Date parser: it reads years 0-99 as 1900-1999 or 2000-2049.
 */
export function postgresTimestampToIso(text: string): string {
  const m = /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(\.\d+)?(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?$/.exec(text);
  if (!m) return text; // infinity, -infinity
  const [, y, mo, d, h, mi, sec, frac, sign, oh, om, os, bc] = m;
  const date = new Date(0);
  date.setUTCFullYear(bc ? 1 - Number(y) : Number(y), Number(mo) - 1, Number(d));
  date.setUTCHours(Number(h), Number(mi), Number(sec), frac ? Number(frac.slice(1, 4).padEnd(3, "0")) : 0);
  const offset = sign ? (sign === "-" ? -1 : 1) * (Number(oh) * 3600 + Number(om ?? 0) * 60 + Number(os ?? 0)) * 1000 : 0;
  return new Date(date.getTime() - offset).toISOString();
}
