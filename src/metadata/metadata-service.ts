import type { Store } from "../store/store.js";
import { AsyncLock } from "../store/executor.js";
import { intersectTablesOf, tableOf } from "../store/entity-tables.js";
import { SQL_PROVIDER_ID } from "../store/sql-provider.js";
import { DEFINITION_TABLE_SPEC, MetadataRepository } from "./metadata-repository.js";
import { Model, normalizeEntityDefinition, normalizeOptionSetDefinition, normalizeRelationshipDefinition } from "./model.js";
import type { EntityDefinition, OptionSetDefinition, RelationshipDefinition } from "./types.js";

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
    await store.syncTables(service.tablesOf(model));
    return service;
  }

  get model(): Model {
    return this.current;
  }

  onChange(listener: (model: Model) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private tablesOf(model: Model) {
    return [...[...model.entities.values()].filter((e) => hasOwnTable(e.def)).map(tableOf), ...intersectTablesOf(model)];
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
  apply(change: MetadataChange): Promise<Model> {
    return this.lock.run(async () => {
      const old = this.current;
      const entities = new Map([...old.entities.values()].map((e) => [e.logicalName, e.def]));
      const relationships = new Map(old.relationships);
      const optionSets = new Map(old.optionSets);
      for (const name of change.removeEntities ?? []) entities.delete(name);
      for (const name of change.removeRelationships ?? []) relationships.delete(name);
      for (const o of change.optionSets ?? []) optionSets.set(o.Name, normalizeOptionSetDefinition(o, optionSets.get(o.Name)));
      for (const e of change.entities ?? []) entities.set(e.LogicalName, normalizeEntityDefinition(e, entities.get(e.LogicalName)));
      for (const r of change.relationships ?? []) relationships.set(r.SchemaName, normalizeRelationshipDefinition(r, relationships.get(r.SchemaName)));
      const next = new Model([...entities.values()], [...relationships.values()], [...optionSets.values()], this.reservedSetNames);

      const before = new Map(this.tablesOf(old).map((t) => [t.name, JSON.stringify(t)]));
      const changedTables = this.tablesOf(next).filter((t) => before.get(t.name) !== JSON.stringify(t));
      if (changedTables.length) await this.store.syncTables(changedTables);
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
