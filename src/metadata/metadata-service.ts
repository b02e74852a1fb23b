import { DefinitionError } from "./schema-validation.js";
import type { Store } from "../store/store.js";
import { AsyncLock } from "../store/executor.js";
import { intersectTablesOf, tableOf } from "../store/entity-tables.js";
import { SQL_PROVIDER_ID } from "../store/sql-provider.js";
import { DEFINITION_TABLE_SPEC, MetadataRepository } from "./metadata-repository.js";
import { checkSchemaNames, Model, normalizeEntityDefinition, normalizeOptionSetDefinition, normalizeRelationshipDefinition } from "./model.js";
import type { EntityDefinition, OptionSetDefinition, RelationshipDefinition } from "./types.js";

/** Unbound functions every service has; an entity set may not take their names. */
const UNBOUND_FUNCTION_NAMES: ReadonlySet<string> = new Set(["WhoAmI"]);

export interface MetadataChange {
  entities?: EntityDefinition[];
  relationships?: RelationshipDefinition[];
  optionSets?: OptionSetDefinition[];
  removeEntities?: string[];
  removeRelationships?: string[];
}

/** True when the entity's rows are in a table of the store named after it (not in a source). */
export function hasOwnTable(def: EntityDefinition): boolean {
  return def.TableType !== "Virtual" && (def.DataProviderId === undefined || def.DataProviderId === SQL_PROVIDER_ID);
}

/**
 * Owns the model: validates, persists and applies definition changes all or nothing, creating and
 * altering tables to match. Readers take `model` once per request and keep a consistent view.
 */
export class MetadataService {
  private current: Model;
  private readonly lock = new AsyncLock();
  private readonly listeners = new Set<(model: Model) => void>();
  /** Entities the service itself defines (users, roles, the catalog): not to be redefined or removed by callers. */
  private readonly builtIn = new Set<string>();
  private readonly builtInRelationships = new Set<string>();
  readonly repository: MetadataRepository;

  private constructor(
    readonly store: Store,
    private readonly reservedSetNames: ReadonlySet<string>,
    model: Model,
  ) {
    this.repository = new MetadataRepository(store);
    this.current = model;
  }

  static async open(store: Store, reservedSetNames: ReadonlySet<string>): Promise<MetadataService> {
    await store.syncTables([DEFINITION_TABLE_SPEC]);
    const repo = new MetadataRepository(store);
    const stored = await repo.loadAll();
    const model = new Model(stored.entities, stored.relationships, stored.optionSets, reservedSetNames);
    const service = new MetadataService(store, reservedSetNames, model);
    await store.syncTables(service.tablesOf(model), "metadata");
    return service;
  }

  get model(): Model {
    return this.current;
  }

  onChange(listener: (model: Model) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * A table belongs to one entity: a new or changed entity with a table of its own may not take another
   * entity's table or one the store keeps for itself (definitions, sequences, role privileges, sources).
   */
  private checkTables(next: Model, change: MetadataChange): void {
    const owners = new Map<string, string>();
    for (const e of next.entities.values()) {
      if (!hasOwnTable(e.def)) continue;
      const table = e.table.toLowerCase();
      const other = owners.get(table);
      if (other) throw new DefinitionError(`The entities '${other}' and '${e.logicalName}' would share the table '${e.table}'`);
      owners.set(table, e.logicalName);
    }
    const internal = this.store.internalTableNames();
    // Many-to-many links are tables of their own: not an entity's, not another relationship's.
    const links = new Map<string, string>();
    for (const r of next.relationships.values()) {
      if (r.RelationshipType !== "ManyToManyRelationship") continue;
      const table = r.IntersectEntityName.toLowerCase();
      const owner = owners.get(table);
      if (owner) throw new DefinitionError(`The relationship '${r.SchemaName}' cannot use the table '${r.IntersectEntityName}': it is the table of the entity '${owner}'`);
      const shared = links.get(table);
      if (shared) throw new DefinitionError(`The relationships '${shared}' and '${r.SchemaName}' would share the intersect table '${r.IntersectEntityName}'`);
      links.set(table, r.SchemaName);
    }
    for (const def of change.entities ?? []) {
      const e = next.entities.get(def.LogicalName);
      if (!e || !hasOwnTable(e.def)) continue;
      if (internal.has(e.table.toLowerCase())) throw new DefinitionError(`The entity '${e.logicalName}' cannot use the table '${e.table}': the store keeps it for something else`);
    }
    for (const r of change.relationships ?? []) {
      if (r.RelationshipType === "ManyToManyRelationship" && internal.has(r.IntersectEntityName.toLowerCase())) {
        throw new DefinitionError(`The relationship '${r.SchemaName}' cannot use the table '${r.IntersectEntityName}': the store keeps it for something else`);
      }
    }
  }

  /**
   * Rules over a definition and the rest of the model, for the entities a change makes or alters (or whose
   * global option set it alters): set names that are not the service's functions, choice defaults that are
   * options of their set.
   */
  private checkChangedEntities(next: Model, change: MetadataChange): void {
    const changedSets = new Set((change.optionSets ?? []).map((o) => o.Name));
    for (const e of next.entities.values()) {
      const changed = (change.entities ?? []).some((d) => d.LogicalName === e.logicalName);
      const usesChangedSet = [...e.attributes.values()].some((a) => a.def.GlobalOptionSetName !== undefined && changedSets.has(a.def.GlobalOptionSetName));
      if (!changed && !usesChangedSet) continue;
      const def = e.def;
      // Function names of the service are not entity set names (WhoAmI), for definitions made or changed now.
      if (changed && UNBOUND_FUNCTION_NAMES.has(e.entitySetName)) throw new DefinitionError(`Invalid entity definition '${def.LogicalName}': EntitySetName '${e.entitySetName}' is the name of a function of the service`, "$.EntitySetName", "reserved");
      // A choice's default is one of its options, the global option set's too (also when that set changes).
      for (const a of e.attributes.values()) {
        if (a.type === "Picklist" && a.def.DefaultValue !== undefined && a.options && !a.options.has(a.def.DefaultValue as number)) {
          throw new DefinitionError(`Invalid entity definition '${def.LogicalName}.${a.logicalName}': DefaultValue ${JSON.stringify(a.def.DefaultValue)} is not one of the option values`, "$.Attributes.DefaultValue", "type");
        }
      }
    }
  }

  /**
   * A changed attribute must still describe its stored values: as in Dataverse, an attribute keeps its type,
   * and a smaller MaxLength or Precision is refused while stored values exceed it (SQLite would keep them,
   * PostgreSQL refuse or cut them).
   */
  private async checkStoredValues(old: Model, next: Model, change: MetadataChange): Promise<void> {
    const q = (s: string) => this.store.dialect.quote(s);
    for (const def of change.entities ?? []) {
      const before = old.entities.get(def.LogicalName);
      const after = next.entities.get(def.LogicalName);
      if (!before || !after || !hasOwnTable(after.def)) continue;
      for (const a of after.attributes.values()) {
        const was = before.attributes.get(a.logicalName);
        if (!was || was.column !== a.column) continue;
        const fail = (message: string) => {
          throw new DefinitionError(`Invalid entity definition '${def.LogicalName}.${a.logicalName}': ${message}`, "$.Attributes", "stored-values");
        };
        if (was.type !== a.type) fail(`an attribute keeps its type (${was.type}); define a new attribute for ${a.type} values`);
        const count = async (condition: string) => {
          const rows = await this.store.executor.query<{ n: number | string }>(`SELECT count(*) AS ${q("n")} FROM ${q(after.table)} WHERE ${condition}`);
          return Number(rows[0]?.n ?? 0);
        };
        const col = q(a.column);
        const [oldLength, newLength] = [was.def.MaxLength, a.def.MaxLength];
        if (newLength !== undefined && (oldLength === undefined || newLength < oldLength)) {
          const n = await count(`length(${col}) > ${Number(newLength)}`);
          if (n) fail(`MaxLength ${newLength} is less than ${n} stored value(s) hold`);
        }
        const [oldPrecision, newPrecision] = [was.def.Precision, a.def.Precision];
        if (newPrecision !== undefined && (a.type === "Decimal" || a.type === "Money") && (oldPrecision === undefined || newPrecision < oldPrecision)) {
          const n = await count(`${col} IS NOT NULL AND round(${col}, ${Number(newPrecision)}) <> ${col}`);
          if (n) fail(`Precision ${newPrecision} has fewer decimals than ${n} stored value(s) hold`);
        }
      }
    }
  }

  private tablesOf(model: Model) {
    return [...[...model.entities.values()].filter((e) => hasOwnTable(e.def)).map(tableOf), ...intersectTablesOf(model)];
  }

  /** Marks entities and relationships as the service's own: only `apply(…, { builtIn: true })` may change them. */
  reserveBuiltIn(logicalNames: readonly string[], relationshipNames: readonly string[] = []): void {
    for (const n of logicalNames) this.builtIn.add(n);
    for (const n of relationshipNames) this.builtInRelationships.add(n);
  }

  defineEntity(def: EntityDefinition): Promise<Model> {
    return this.apply({ entities: [def] });
  }
  defineRelationship(def: RelationshipDefinition): Promise<Model> {
    return this.apply({ relationships: [def] });
  }
  defineOptionSet(def: OptionSetDefinition): Promise<Model> {
    return this.apply({ optionSets: [def] });
  }

  /**
   * Applies a set of changes as one: every definition is validated and the whole model cross-checked
   * before anything is written; tables are changed, then the definitions saved. On failure nothing stays.
   */
  apply(change: MetadataChange, options: { builtIn?: boolean } = {}): Promise<Model> {
    return this.lock.run(async () => {
      const old = this.current;
      if (!options.builtIn) {
        for (const name of [...(change.entities ?? []).map((e) => e.LogicalName), ...(change.removeEntities ?? [])]) {
          if (this.builtIn.has(name)) throw new DefinitionError(`'${name}' is a built-in entity of the service: it cannot be redefined or removed`);
        }
        for (const name of [...(change.relationships ?? []).map((r) => r.SchemaName), ...(change.removeRelationships ?? [])]) {
          if (this.builtInRelationships.has(name)) throw new DefinitionError(`'${name}' is a built-in relationship of the service: it cannot be redefined or removed`);
        }
      }
      const entities = new Map([...old.entities.values()].map((e) => [e.logicalName, e.def]));
      const relationships = new Map(old.relationships);
      const optionSets = new Map(old.optionSets);
      for (const name of change.removeEntities ?? []) entities.delete(name);
      for (const name of change.removeRelationships ?? []) relationships.delete(name);
      for (const o of change.optionSets ?? []) optionSets.set(o.Name, normalizeOptionSetDefinition(o, optionSets.get(o.Name)));
      for (const e of change.entities ?? []) entities.set(e.LogicalName, normalizeEntityDefinition(e, entities.get(e.LogicalName)));
      for (const r of change.relationships ?? []) relationships.set(r.SchemaName, normalizeRelationshipDefinition(r, relationships.get(r.SchemaName)));
      const next = new Model([...entities.values()], [...relationships.values()], [...optionSets.values()], this.reservedSetNames);

      checkSchemaNames(next, old);
      this.checkTables(next, change);
      this.checkChangedEntities(next, change);
      await this.checkStoredValues(old, next, change);
      const before = new Map(this.tablesOf(old).map((t) => [t.name, JSON.stringify(t)]));
      const changedTables = this.tablesOf(next).filter((t) => before.get(t.name) !== JSON.stringify(t));
      if (changedTables.length) await this.store.syncTables(changedTables, "metadata");
      const removedOwnTables = (change.removeEntities ?? []).map((n) => old.entities.get(n)).filter((e) => e && hasOwnTable(e.def));
      await this.store.executor.transaction(async (tx) => {
        for (const o of change.optionSets ?? []) await this.repository.put(tx, "optionset", o.Name, next.optionSets.get(o.Name));
        for (const e of change.entities ?? []) await this.repository.put(tx, "entity", e.LogicalName, next.entities.get(e.LogicalName)!.def);
        for (const r of change.relationships ?? []) await this.repository.put(tx, "relationship", r.SchemaName, next.relationships.get(r.SchemaName));
        for (const n of change.removeEntities ?? []) await this.repository.remove(tx, "entity", n);
        for (const n of change.removeRelationships ?? []) await this.repository.remove(tx, "relationship", n);
      });
      for (const e of removedOwnTables) await this.store.dropTable(e!.table);
      this.current = next;
      for (const l of this.listeners) l(next);
      return next;
    });
  }
}
