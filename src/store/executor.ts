import type { Dialect } from "./dialect.js";

export interface RunResult {
  changes: number;
}

/**
 * Runs parameterized SQL straight on the driver's connection: no ORM hydration on the hot path.
 * A transaction gets its own executor; statements outside it never see its uncommitted rows.
 */
export interface SqlExecutor {
  readonly dialect: Dialect;
  query<T = Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<T[]>;
  /** The same, with each row as an array of column values: no object per row to build and throw away. */
  queryArrays(sql: string, params?: readonly unknown[]): Promise<unknown[][]>;
  execute(sql: string, params?: readonly unknown[]): Promise<RunResult>;
  transaction<T>(work: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** True inside a transaction. */
  readonly inTransaction: boolean;
}

/** A FIFO mutex: SQLite has one connection, so a transaction must own it until it ends. */
export class AsyncLock {
  private tail: Promise<void> = Promise.resolve();
  private held = false;
  get isHeld(): boolean {
    return this.held;
  }
  async acquire(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((r) => (release = r));
    const previous = this.tail;
    this.tail = previous.then(() => next);
    await previous;
    this.held = true;
    return () => {
      this.held = false;
      release();
    };
  }
  async run<T>(work: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await work();
    } finally {
      release();
    }
  }
}

/**
 * Runs one statement so that its failure (a unique violation the caller handles) leaves the enclosing
 * transaction usable: PostgreSQL aborts a transaction on any error unless a savepoint contains it.
 */
export async function contained<T>(executor: SqlExecutor, work: () => Promise<T>): Promise<T> {
  if (executor.dialect.name !== "postgres" || !executor.inTransaction) return work();
  await executor.execute("SAVEPOINT vep_statement");
  try {
    const result = await work();
    await executor.execute("RELEASE SAVEPOINT vep_statement");
    return result;
  } catch (e) {
    await executor.execute("ROLLBACK TO SAVEPOINT vep_statement");
    await executor.execute("RELEASE SAVEPOINT vep_statement");
    throw e;
  }
}

/**
 * What a store error says about the request's own values, when it is about them: PostgreSQL's data
 * exceptions (SQLSTATE class 22: numeric overflow, a date out of range, division by zero, a value too long)
 * and SQLite's limits on pattern and value sizes. Undefined for anything else, which stays a server error.
 */
export function inputErrorOf(e: unknown): string | undefined {
  const err = e as { code?: unknown; message?: unknown; severity?: unknown; routine?: unknown; name?: unknown };
  const message = typeof err?.message === "string" ? err.message : "";
  // Only errors the drivers raise: PostgreSQL's carry a severity and the server routine, SQLite's are SqliteErrors.
  const fromPostgres = typeof err?.severity === "string" && typeof err?.routine === "string";
  const fromSqlite = err?.name === "SqliteError";
  if (fromPostgres && typeof err.code === "string" && /^22[0-9A-Z]{3}$/.test(err.code) && message) return `The store cannot evaluate a value of the request: ${message}`;
  if (fromSqlite && /LIKE or GLOB pattern too complex/.test(message)) return "A string in the request's $filter is too long to match (contains, startswith and endswith patterns are limited to 50,000 bytes)";
  if (fromSqlite && err.code === "SQLITE_TOOBIG") return "A value of the request is larger than the store accepts";
  return undefined;
}
