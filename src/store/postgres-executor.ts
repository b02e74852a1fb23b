import { AsyncLocalStorage } from "node:async_hooks";
import type { Pool, PoolClient } from "pg";
import { postgresDialect } from "./dialect.js";
import type { RunResult, SqlExecutor } from "./executor.js";

/** Runs on the pg pool that TypeORM opened, with its rows as plain objects. */
export class PostgresExecutor implements SqlExecutor {
  readonly dialect = postgresDialect;
  readonly inTransaction = false;
  constructor(readonly pool: Pool) {}

  /** Inside a transaction's async context, statements go to that transaction's connection. */
  private current(): PostgresTransaction | undefined {
    const tx = transactionScope.getStore();
    return tx?.owner === this ? tx : undefined;
  }

  async query<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    const tx = this.current();
    if (tx) return tx.query<T>(sql, params);
    const r = await this.pool.query(sql, params as unknown[]);
    return r.rows as T[];
  }
  async queryArrays(sql: string, params: readonly unknown[] = []): Promise<unknown[][]> {
    const tx = this.current();
    if (tx) return tx.queryArrays(sql, params);
    return (await this.pool.query({ text: sql, values: params as unknown[], rowMode: "array" })).rows as unknown[][];
  }
  async execute(sql: string, params: readonly unknown[] = []): Promise<RunResult> {
    const tx = this.current();
    if (tx) return tx.execute(sql, params);
    const r = await this.pool.query(sql, params as unknown[]);
    return { changes: r.rowCount ?? 0 };
  }
  async transaction<T>(work: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    const current = this.current();
    if (current) return work(current); // nested: part of the enclosing transaction
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      const tx = new PostgresTransaction(this, client);
      const result = await transactionScope.run(tx, () => work(tx));
      await client.query("COMMIT");
      return result;
    } catch (e) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }
}

const transactionScope = new AsyncLocalStorage<PostgresTransaction>();

class PostgresTransaction implements SqlExecutor {
  readonly dialect = postgresDialect;
  readonly inTransaction = true;
  constructor(
    readonly owner: PostgresExecutor,
    private readonly client: PoolClient,
  ) {}
  async query<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    return (await this.client.query(sql, params as unknown[])).rows as T[];
  }
  async execute(sql: string, params: readonly unknown[] = []): Promise<RunResult> {
    return { changes: (await this.client.query(sql, params as unknown[])).rowCount ?? 0 };
  }
  async queryArrays(sql: string, params: readonly unknown[] = []): Promise<unknown[][]> {
    return (await this.client.query({ text: sql, values: params as unknown[], rowMode: "array" })).rows as unknown[][];
  }
  transaction<T>(work: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    return work(this);
  }
}
