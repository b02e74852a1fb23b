import { AsyncLocalStorage } from "node:async_hooks";
import type { Database, Statement } from "better-sqlite3";
import { sqliteDialect } from "./dialect.js";
import { AsyncLock, type RunResult, type SqlExecutor } from "./executor.js";

const STATEMENT_CACHE_SIZE = 500;

/** Statements use numbered placeholders (?1, ?2…), which better-sqlite3 binds from an object keyed by number. */
function numbered(params: readonly unknown[]): Record<number, unknown> {
  const out: Record<number, unknown> = {};
  for (let i = 0; i < params.length; i++) out[i + 1] = params[i];
  return out;
}

/** better-sqlite3 is synchronous; statements are prepared once and cached by their SQL text. */
export class SqliteExecutor implements SqlExecutor {
  readonly dialect = sqliteDialect;
  readonly inTransaction = false;
  private readonly statements = new Map<string, Statement>();
  private readonly rawStatements = new Map<string, Statement>();
  /** Held by a transaction or a schema change; plain statements wait for it. */
  readonly lock = new AsyncLock();

  constructor(readonly db: Database) {}

  prepare(sql: string): Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      if (this.statements.size >= STATEMENT_CACHE_SIZE) this.statements.delete(this.statements.keys().next().value!);
      this.statements.set(sql, s);
    }
    return s;
  }

  /** Schema changes replace tables: statements prepared against the old ones must go. */
  clearStatements(): void {
    this.statements.clear();
    this.rawStatements.clear();
  }

  queryArraysNow(sql: string, params: readonly unknown[] = []): unknown[][] {
    let s = this.rawStatements.get(sql);
    if (!s) {
      s = this.db.prepare(sql).raw(true);
      if (this.rawStatements.size >= STATEMENT_CACHE_SIZE) this.rawStatements.delete(this.rawStatements.keys().next().value!);
      this.rawStatements.set(sql, s);
    }
    return s.all(numbered(params)) as unknown[][];
  }

  async queryArrays(sql: string, params: readonly unknown[] = []): Promise<unknown[][]> {
    if (this.lock.isHeld && !this.owned()) return this.lock.run(async () => this.queryArraysNow(sql, params));
    return this.queryArraysNow(sql, params);
  }

  queryNow<T>(sql: string, params: readonly unknown[] = []): T[] {
    const s = this.prepare(sql);
    const bound = numbered(params);
    return (s.reader ? s.all(bound) : (s.run(bound), [])) as T[];
  }

  executeNow(sql: string, params: readonly unknown[] = []): RunResult {
    const r = this.prepare(sql).run(numbered(params));
    return { changes: r.changes };
  }

  /** Inside a transaction's async context the connection is that transaction's: no waiting on its own lock. */
  private owned(): boolean {
    return transactionScope.getStore()?.owner === this;
  }

  async query<T>(sql: string, params: readonly unknown[] = []): Promise<T[]> {
    if (this.lock.isHeld && !this.owned()) return this.lock.run(async () => this.queryNow<T>(sql, params));
    return this.queryNow<T>(sql, params);
  }

  async execute(sql: string, params: readonly unknown[] = []): Promise<RunResult> {
    if (this.lock.isHeld && !this.owned()) return this.lock.run(async () => this.executeNow(sql, params));
    return this.executeNow(sql, params);
  }

  async transaction<T>(work: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    const current = transactionScope.getStore();
    if (current?.owner === this) return work(current); // nested: part of the enclosing transaction
    return this.lock.run(async () => {
      this.db.exec("BEGIN IMMEDIATE");
      const tx = new SqliteTransaction(this);
      try {
        const result = await transactionScope.run(tx, () => work(tx));
        this.db.exec("COMMIT");
        return result;
      } catch (e) {
        if (this.db.inTransaction) this.db.exec("ROLLBACK");
        throw e;
      }
    });
  }

  /** Runs work holding the connection (schema changes), unless the caller already holds it. */
  async exclusive<T>(work: () => Promise<T>): Promise<T> {
    if (this.owned()) return work();
    return this.lock.run(work);
  }
}

const transactionScope = new AsyncLocalStorage<SqliteTransaction>();

class SqliteTransaction implements SqlExecutor {
  readonly inTransaction = true;
  constructor(readonly owner: SqliteExecutor) {}
  get dialect() {
    return this.owner.dialect;
  }
  async query<T>(sql: string, params?: readonly unknown[]): Promise<T[]> {
    return this.owner.queryNow<T>(sql, params);
  }
  async execute(sql: string, params?: readonly unknown[]): Promise<RunResult> {
    return this.owner.executeNow(sql, params);
  }
  async queryArrays(sql: string, params?: readonly unknown[]): Promise<unknown[][]> {
    return this.owner.queryArraysNow(sql, params);
  }
  transaction<T>(work: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    return work(this);
  }
}
