import type { EntityModel, Model } from "../metadata/model.js";
import type { Row } from "../providers/data-provider.js";

/** A parameter or return type: a primitive, an entity (by logical name) or a complex type by name. */
export type OperationType =
  | { kind: "primitive"; type: string; nullable?: boolean; collection?: boolean }
  | { kind: "entity"; entity: string; nullable?: boolean; collection?: boolean }
  | { kind: "complex"; name: string; nullable?: boolean; collection?: boolean };

export interface OperationParameter {
  name: string;
  type: OperationType;
  /** Required parameters must be in the body; optional ones may be left out. */
  optional?: boolean;
}

export interface ComplexTypeDefinition {
  name: string;
  properties: { name: string; type: string; nullable?: boolean }[];
}

/** What an operation handler gets: the caller, the bound row (for bound operations) and the parameters. */
export interface OperationContext<Caller = unknown> {
  model: Model;
  caller: Caller;
  /** The binding entity and the row's id, for bound operations. */
  binding?: { entity: EntityModel; id: string; row: Row };
  parameters: Record<string, unknown>;
  /** Base URL of the service root, for ids in answers. */
  serviceRoot: string;
}

export type OperationResult =
  | { kind: "none" }
  | { kind: "entity"; entity: EntityModel; row: Row }
  | { kind: "complex"; typeName: string; value: Record<string, unknown> }
  | { kind: "primitive"; value: unknown };

/**
 * An OData action or function, bound to an entity type or unbound. Integration authors register these
 * (Generate/refresh, Hire, WhoAmI...) without touching the OData layer.
 */
export interface OperationDefinition<Caller = unknown> {
  name: string;
  kind: "action" | "function";
  /** Logical name of the entity type it is bound to; unbound when absent. */
  boundTo?: string;
  parameters: OperationParameter[];
  returns?: OperationType;
  /** Privileges a caller needs beyond Read on the bound entity (checked before the handler runs). */
  requiredPrivileges?: (model: Model) => string[];
  /** Changes tables and metadata (Generate/refresh): it cannot join a change set's transaction. */
  changesSchema?: boolean;
  handler: (context: OperationContext<Caller>) => Promise<OperationResult>;
}

/**
 * Hooks on an entity's writes (as Dataverse plug-ins): refuse a write with an ODataError, or handle an
 * update entirely and return the resulting row.
 */
export interface EntityHooks {
  beforeCreate?(values: Row): Promise<void>;
  /** Returns the updated row when the hook performed the update itself. */
  update?(id: string, values: Row): Promise<Row | undefined>;
  beforeDelete?(id: string): Promise<void>;
}

export class OperationRegistry {
  readonly hooks = new Map<string, EntityHooks>();
  private readonly operations = new Map<string, OperationDefinition<any>>();
  readonly complexTypes = new Map<string, ComplexTypeDefinition>();

  private key(name: string, boundTo?: string) {
    return `${boundTo ?? ""}|${name}`;
  }
  register(op: OperationDefinition<any>): void {
    this.operations.set(this.key(op.name, op.boundTo), op);
  }
  registerComplexType(t: ComplexTypeDefinition): void {
    this.complexTypes.set(t.name, t);
  }
  find(name: string, boundTo?: string): OperationDefinition<any> | undefined {
    return this.operations.get(this.key(name, boundTo));
  }
  /** Operations that appear in $metadata: unbound ones, and bound ones whose entity exists. */
  visible(model: Model): OperationDefinition<any>[] {
    return [...this.operations.values()].filter((op) => !op.boundTo || model.entities.has(op.boundTo));
  }
}
