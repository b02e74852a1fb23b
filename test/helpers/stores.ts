import { randomBytes } from "node:crypto";
import pg from "pg";
import { createService, type ServiceOptions, type VirtualEntityService } from "../../src/index.js";

/** The PostgreSQL server the tests use (the machine's, as `.ci/run` starts it). */
export const POSTGRES_URL = process.env.VEP_TEST_POSTGRES ?? "postgres://postgres@127.0.0.1:5432/test";

export type StoreKind = "sqlite" | "postgres";
export const STORE_KINDS: StoreKind[] = ["sqlite", "postgres"];

/** A database URL of its own for one test file: `:memory:` or a fresh PostgreSQL schema. */
export function databaseFor(kind: StoreKind): { database: string; drop(): Promise<void> } {
  if (kind === "sqlite") return { database: ":memory:", drop: async () => {} };
  const schema = `vep_test_${randomBytes(6).toString("hex")}`;
  return {
    database: `${POSTGRES_URL}?schema=${schema}`,
    drop: async () => {
      const client = new pg.Client({ connectionString: POSTGRES_URL });
      await client.connect();
      try {
        await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await client.end();
      }
    },
  };
}

/** Opens a service on a fresh store of the given kind; `close` also drops the PostgreSQL schema. */
export async function openTestService(kind: StoreKind, options: ServiceOptions = {}): Promise<VirtualEntityService & { dispose(): Promise<void> }> {
  const db = databaseFor(kind);
  // Security is tested on its own; the other suites run with it off unless they pass a policy.
  const service = await createService({ security: "none", ...options, database: db.database });
  return Object.assign(service, {
    dispose: async () => {
      await service.close();
      await db.drop();
    },
  });
}

/** Parses a JSON response body. */
export function json<T = any>(response: { body?: string }): T {
  return JSON.parse(response.body ?? "null") as T;
}
