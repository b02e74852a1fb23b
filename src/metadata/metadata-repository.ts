import type { Store } from "../store/store.js";
import type { TableSpec } from "../store/table-spec.js";
import type { SqlExecutor } from "../store/executor.js";
import type { EntityDefinition, OptionSetDefinition, RelationshipDefinition } from "./types.js";

export type DefinitionKind = "entity" | "relationship" | "optionset" | "source" | "catalog";

export const DEFINITION_TABLE = "vep_definition";

export const DEFINITION_TABLE_SPEC: TableSpec = {
  name: DEFINITION_TABLE,
  columns: [
    { name: "id", kind: "string", length: 200, nullable: false, primary: true },
    { name: "kind", kind: "string", length: 32, nullable: false, indexed: true },
    { name: "name", kind: "string", length: 160, nullable: false },
    { name: "body", kind: "text", nullable: false },
    { name: "modifiedon", kind: "datetime", nullable: false },
  ],
};

export interface StoredDefinitions {
  entities: EntityDefinition[];
  relationships: RelationshipDefinition[];
  optionSets: OptionSetDefinition[];
}

/** Definitions are JSON documents in a table of the store itself, so they survive restarts with the data. */
export class MetadataRepository {
  constructor(readonly store: Store) {}

  private q(s: string) {
    return this.store.dialect.quote(s);
  }
  private p(n: number) {
    return this.store.dialect.placeholder(n);
  }

  async list<T>(kind: DefinitionKind, executor: SqlExecutor = this.store.executor): Promise<T[]> {
    const rows = await executor.query<{ body: string }>(`SELECT ${this.q("body")} FROM ${this.q(DEFINITION_TABLE)} WHERE ${this.q("kind")} = ${this.p(1)} ORDER BY ${this.q("id")}`, [kind]);
    return rows.map((r) => JSON.parse(r.body) as T);
  }

  async loadAll(): Promise<StoredDefinitions> {
    return {
      entities: await this.list<EntityDefinition>("entity"),
      relationships: await this.list<RelationshipDefinition>("relationship"),
      optionSets: await this.list<OptionSetDefinition>("optionset"),
    };
  }

  async put(executor: SqlExecutor, kind: DefinitionKind, name: string, body: unknown): Promise<void> {
    const id = `${kind}:${name}`;
    const now = new Date().toISOString();
    const json = JSON.stringify(body);
    const t = this.q(DEFINITION_TABLE);
    const updated = await executor.execute(`UPDATE ${t} SET ${this.q("body")} = ${this.p(1)}, ${this.q("modifiedon")} = ${this.p(2)} WHERE ${this.q("id")} = ${this.p(3)}`, [json, now, id]);
    if (updated.changes === 0) {
      await executor.execute(
        `INSERT INTO ${t} (${this.q("id")}, ${this.q("kind")}, ${this.q("name")}, ${this.q("body")}, ${this.q("modifiedon")}) VALUES (${this.p(1)}, ${this.p(2)}, ${this.p(3)}, ${this.p(4)}, ${this.p(5)})`,
        [id, kind, name, json, now],
      );
    }
  }

  async remove(executor: SqlExecutor, kind: DefinitionKind, name: string): Promise<void> {
    await executor.execute(`DELETE FROM ${this.q(DEFINITION_TABLE)} WHERE ${this.q("id")} = ${this.p(1)}`, [`${kind}:${name}`]);
  }
}
