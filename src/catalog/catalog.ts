import { DefinitionError } from "../metadata/schema-validation.js";
import { stableId } from "../metadata/guid.js";
import type { MetadataService } from "../metadata/metadata-service.js";
import { normalizeEntityDefinition, type EntityModel } from "../metadata/model.js";
import type { EntityDefinition, RelationshipDefinition } from "../metadata/types.js";
import { badRequest, notFound, ODataError, ErrorCodes } from "../odata/errors.js";
import type { OperationDefinition } from "../odata/operations.js";
import type { Row } from "../providers/data-provider.js";
import { privilegeName } from "../security/access.js";
import { AsyncLock } from "../store/executor.js";
import type { SqlDataProvider } from "../store/sql-provider.js";
import type { Store } from "../store/store.js";
import { describeChanges, generateEntity, logicalNameOf, sourceTableOf } from "./generator.js";
import { validateSourceDefinition, type SourceDefinition } from "./source-definition.js";

export const CATALOG_ENTITY = "virtualentitycatalog";

/** The catalog as an entity of the service itself, so it is listed, filtered and secured like any other. */
export const CATALOG_ENTITY_DEFINITION: EntityDefinition = {
  LogicalName: CATALOG_ENTITY,
  EntitySetName: "virtualentitycatalogs",
  DisplayName: "Available Virtual Entity",
  DisplayCollectionName: "Available Virtual Entities",
  Description: "Sources of the store that can be generated as virtual entities (Generate/refresh).",
  PrimaryNameAttribute: "label",
  OwnershipType: "OrganizationOwned",
  Attributes: [
    { LogicalName: "label", AttributeType: "String", MaxLength: 200, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Label" },
    { LogicalName: "physicalname", AttributeType: "String", MaxLength: 100, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Physical name", IsIndexed: true },
    { LogicalName: "logicalname", AttributeType: "String", MaxLength: 100, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Logical name" },
    { LogicalName: "isgenerated", AttributeType: "Boolean", IsValidForCreate: false, DisplayName: "Is generated" },
    { LogicalName: "lastgeneratedon", AttributeType: "DateTime", DateTimeBehavior: "TimeZoneIndependent", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Last generated on" },
    { LogicalName: "lastrefreshedon", AttributeType: "DateTime", DateTimeBehavior: "TimeZoneIndependent", IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Last refreshed on" },
    { LogicalName: "status", AttributeType: "String", MaxLength: 50, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Status" },
    { LogicalName: "statusmessage", AttributeType: "Memo", MaxLength: 8000, IsValidForCreate: false, IsValidForUpdate: false, DisplayName: "Status message" },
  ],
  Keys: [{ LogicalName: "virtualentitycatalog_physicalname", KeyAttributes: ["physicalname"] }],
};

export type CatalogStatus = "NotGenerated" | "Generated" | "Refreshed" | "SourceChanged" | "Failed";

export interface GenerationResult {
  logicalName: string;
  entitySetName: string;
  changes: string[];
  /** Other entities regenerated because they gained a lookup to this one. */
  alsoRegenerated: string[];
}

/** A stable id for a source's catalog row, so it survives restarts and re-registration. */
const catalogIdOf = (physicalName: string) => stableId("catalog", physicalName.toLowerCase());

/**
 * The virtual entity catalog: the store's sources (data entities), each of which can be generated as a
 * virtual entity and refreshed when the source changes, all or nothing, as Human Resources does.
 */
export class VirtualEntityCatalog {
  private readonly sources = new Map<string, SourceDefinition>();
  private readonly lock = new AsyncLock();

  private constructor(
    readonly store: Store,
    readonly metadata: MetadataService,
    readonly provider: SqlDataProvider,
  ) {}

  static async open(store: Store, metadata: MetadataService, provider: SqlDataProvider): Promise<VirtualEntityCatalog> {
    const catalog = new VirtualEntityCatalog(store, metadata, provider);
    if (!metadata.model.entities.has(CATALOG_ENTITY)) await metadata.apply({ entities: [CATALOG_ENTITY_DEFINITION] }, { builtIn: true });
    metadata.reserveBuiltIn([CATALOG_ENTITY]);
    for (const s of await metadata.repository.list<SourceDefinition>("source")) catalog.sources.set(s.PhysicalName.toLowerCase(), s);
    if (catalog.sources.size) await store.syncTables([...catalog.sources.values()].map(sourceTableOf));
    return catalog;
  }

  private get catalogEntity(): EntityModel {
    return this.metadata.model.entity(CATALOG_ENTITY)!;
  }

  listSources(): SourceDefinition[] {
    return [...this.sources.values()];
  }

  source(physicalName: string): SourceDefinition | undefined {
    return this.sources.get(physicalName.toLowerCase());
  }

  /**
   * Registers or changes a source: its table is created or altered (rows kept), its definition saved,
   * and its catalog row added. A generated entity keeps serving its old shape until it is refreshed.
   */
  async registerSource(def: SourceDefinition): Promise<void> {
    validateSourceDefinition(def); // a rejected promise, like every other refusal, not a synchronous throw
    return this.lock.run(async () => {
      const previous = this.source(def.PhysicalName);
      if (previous && JSON.stringify(previous) === JSON.stringify(def)) return;
      // Sources are known by name whatever its case; the table keeps the spelling it was made with.
      if (previous && previous.PhysicalName !== def.PhysicalName) {
        throw new DefinitionError(`The source '${def.PhysicalName}' is registered as '${previous.PhysicalName}'; a source cannot be renamed by changing the case of its name`, "$.PhysicalName", "unique");
      }
      // Labels name sources in the catalog and the CLI (catalog generate --label): one source per label.
      const sameLabel = [...this.sources.values()].find((other) => other.PhysicalName.toLowerCase() !== def.PhysicalName.toLowerCase() && other.Label.toLowerCase() === def.Label.toLowerCase());
      if (sameLabel) throw new DefinitionError(`The label '${def.Label}' is already the label of the source '${sameLabel.PhysicalName}'`, "$.Label", "unique");
      // A new source's table must be new: not an entity's, not one the store keeps for itself.
      if (!previous && this.store.tableNames().has(def.PhysicalName.toLowerCase())) {
        throw new DefinitionError(`The source '${def.PhysicalName}' cannot be registered: the store already has a table of that name`, "$.PhysicalName", "unique");
      }
      await this.store.syncTables([this.transitionalTable(def, previous)]);
      await this.store.executor.transaction((tx) => this.metadata.repository.put(tx, "source", def.PhysicalName, def));
      this.sources.set(def.PhysicalName.toLowerCase(), def);
      const row = await this.catalogRow(def.PhysicalName);
      if (!row) {
        await this.writeRow(def.PhysicalName, { label: def.Label, physicalname: def.PhysicalName, logicalname: logicalNameOf(def.PhysicalName), isgenerated: false, status: "NotGenerated", statusmessage: null }, true);
      } else {
        const changed = row.isgenerated === true;
        await this.writeRow(def.PhysicalName, { label: def.Label, ...(changed ? { status: "SourceChanged", statusmessage: "The source changed since the virtual entity was generated; run Generate/refresh to update it." } : {}) });
      }
    });
  }

  /**
   * The source's new table, keeping the columns its generated entity still reads: a removed field's
   * column goes at the next Generate/refresh, so the entity keeps answering until then.
   */
  private transitionalTable(def: SourceDefinition, previous: SourceDefinition | undefined) {
    const table = sourceTableOf(def);
    const entity = this.metadata.model.entity(logicalNameOf(def.PhysicalName));
    if (!previous || !entity) return table;
    const used = new Set([...entity.attributes.values()].map((a) => a.column.toLowerCase()));
    const names = new Set(table.columns.map((c) => c.name.toLowerCase()));
    for (const c of sourceTableOf(previous).columns) {
      if (!names.has(c.name.toLowerCase()) && used.has(c.name.toLowerCase())) table.columns.push({ ...c, nullable: true, unique: false });
    }
    return table;
  }

  async catalogRow(physicalName: string): Promise<Row | undefined> {
    const entity = this.catalogEntity;
    return this.provider.retrieve(entity, catalogIdOf(physicalName), [...entity.attributes.values()]);
  }

  async catalogRowById(id: string): Promise<Row | undefined> {
    const entity = this.catalogEntity;
    return this.provider.retrieve(entity, id, [...entity.attributes.values()]);
  }

  private async writeRow(physicalName: string, values: Row, create = false): Promise<Row> {
    const entity = this.catalogEntity;
    const id = catalogIdOf(physicalName);
    const outcome = create ? await this.provider.create(entity, { ...values, [entity.primaryId.logicalName]: id }) : await this.provider.update(entity, id, values);
    if (outcome.status !== "ok") throw new Error(`Could not write the catalog row of ${physicalName}: ${outcome.status}`);
    return outcome.row;
  }

  private isGenerated(physicalName: string): boolean {
    return this.metadata.model.entities.has(logicalNameOf(physicalName));
  }

  /**
   * Generate/refresh: builds the virtual entity from its source, with lookups to generated targets, and
   * regenerates generated sources that relate to it so both sides get the relationship. All or nothing:
   * a failure leaves the model as it was and records the reason on the catalog row.
   */
  generateOrRefresh(physicalName: string, onProgress?: (step: string) => void): Promise<GenerationResult> {
    return this.lock.run(async () => {
      const source = this.source(physicalName);
      if (!source) throw notFound(`No source named '${physicalName}' is in the catalog`);
      const step = (s: string) => onProgress?.(s);
      try {
        step(`Mapping ${source.PhysicalName}`);
        const willBeGenerated = (name: string) => name.toLowerCase() === source.PhysicalName.toLowerCase() || this.isGenerated(name);
        const main = generateEntity(source, willBeGenerated);
        const dependents = this.listSources().filter(
          (s) => s !== source && this.isGenerated(s.PhysicalName) && (s.Relations ?? []).some((r) => r.Target.toLowerCase() === source.PhysicalName.toLowerCase()),
        );
        const generated = [main, ...dependents.map((d) => generateEntity(d, willBeGenerated))];
        const model = this.metadata.model;
        const entities = generated.map((g) => g.entity);
        const relationships: RelationshipDefinition[] = generated.flatMap((g) => g.relationships);
        const keep = new Set(relationships.map((r) => r.SchemaName));
        const touched = new Set(entities.map((e) => e.LogicalName));
        const removeRelationships = [...model.relationships.values()]
          .filter((r) => r.RelationshipType === "OneToManyRelationship" && touched.has(r.ReferencingEntity) && r.SchemaName.startsWith(r.ReferencingEntity + "_fk_") && !keep.has(r.SchemaName))
          .map((r) => r.SchemaName);
        const before = model.entity(main.entity.LogicalName)?.def;
        const changes = describeChanges(before, normalizeEntityDefinition(main.entity, before));
        const dependentChanges = dependents.map((d, i) => {
          const old = model.entity(logicalNameOf(d.PhysicalName))?.def;
          return describeChanges(old, normalizeEntityDefinition(generated[i + 1]!.entity, old));
        });
        step(`Applying ${entities.length} entit${entities.length === 1 ? "y" : "ies"} and ${relationships.length} relationship(s)`);
        await this.metadata.apply({ entities, relationships, removeRelationships });
        // Columns of removed fields go now that no entity reads them.
        await this.store.syncTables([source, ...dependents].map(sourceTableOf));
        const now = new Date().toISOString();
        for (const [i, d] of dependents.entries()) {
          const list = dependentChanges[i]!;
          await this.writeRow(d.PhysicalName, { lastrefreshedon: now, status: "Refreshed", statusmessage: `Refreshed with ${source.Label}: ${list.length ? list.join("; ") : "no changes"}` });
        }
        const refreshed = before !== undefined;
        const message = refreshed ? (changes.length ? `Refreshed: ${changes.join("; ")}` : "Refreshed: no changes") : changes.join("; ");
        await this.writeRow(source.PhysicalName, {
          isgenerated: true,
          ...(refreshed ? { lastrefreshedon: now } : { lastgeneratedon: now }),
          status: refreshed ? "Refreshed" : "Generated",
          statusmessage: message,
        });
        step(message);
        return { logicalName: main.entity.LogicalName, entitySetName: main.entity.EntitySetName!, changes, alsoRegenerated: dependents.map((d) => logicalNameOf(d.PhysicalName)) };
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        await this.writeRow(source.PhysicalName, { status: "Failed", statusmessage: `Generate/refresh failed: ${message}` }).catch(() => undefined);
        if (e instanceof ODataError) throw e;
        throw new ODataError(400, ErrorCodes.validation, `Generate/refresh of '${source.Label}' failed; nothing was changed: ${message}`);
      }
    });
  }

  /** Finds a source by its catalog label (case-insensitive), as the Virtual entities tab filters. */
  byLabel(label: string): SourceDefinition | undefined {
    return this.listSources().find((s) => s.Label.toLowerCase() === label.toLowerCase());
  }

  /** The bound action `Microsoft.Dynamics.CRM.GenerateOrRefresh` on a catalog row. */
  generateAction(): OperationDefinition {
    return {
      name: "GenerateOrRefresh",
      kind: "action",
      boundTo: CATALOG_ENTITY,
      parameters: [],
      returns: { kind: "entity", entity: CATALOG_ENTITY },
      requiredPrivileges: () => [privilegeName("Write", CATALOG_ENTITY)],
      changesSchema: true,
      handler: async ({ binding }) => {
        const physicalName = binding!.row.physicalname as string;
        await this.generateOrRefresh(physicalName);
        return { kind: "entity", entity: this.catalogEntity, row: (await this.catalogRow(physicalName))! };
      },
    };
  }

  /** PATCH of `isgenerated` to true runs Generate/refresh; to false is refused (entities are not dropped here). */
  async onCatalogUpdate(id: string, values: Row): Promise<Row | undefined> {
    if (!("isgenerated" in values)) return undefined;
    const row = await this.catalogRowById(id);
    if (!row) return undefined;
    if (values.isgenerated !== true) throw badRequest("Setting isgenerated to false is not supported: a generated virtual entity stays until it is removed");
    await this.generateOrRefresh(row.physicalname as string);
    return (await this.catalogRowById(id))!;
  }
}
