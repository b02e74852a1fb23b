import Ajv, { type ErrorObject, type ValidateFunction } from "ajv";
import addFormats from "ajv-formats";
import labelSchema from "../../schemas/label.schema.json";
import optionSetSchema from "../../schemas/optionset-definition.schema.json";
import attributeSchema from "../../schemas/attribute-definition.schema.json";
import entitySchema from "../../schemas/entity-definition.schema.json";
import relationshipSchema from "../../schemas/relationship-definition.schema.json";
import type { EntityDefinition, OptionSetDefinition, RelationshipDefinition } from "./types.js";

/** Raised when a definition breaks its JSON Schema or the model's rules; names the JSON path and the rule. */
export class DefinitionError extends Error {
  constructor(
    message: string,
    readonly path: string = "",
    readonly rule: string = "",
  ) {
    super(message);
    this.name = "DefinitionError";
  }
}

/** One ajv instance for every metadata schema, compiled once per process. */
export function createSchemaAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true });
  addFormats(ajv);
  for (const schema of [labelSchema, optionSetSchema, attributeSchema, entitySchema, relationshipSchema]) ajv.addSchema(schema);
  return ajv;
}

let compiled: { entity: ValidateFunction; relationship: ValidateFunction; optionSet: ValidateFunction } | undefined;
function validators() {
  if (!compiled) {
    const ajv = createSchemaAjv();
    compiled = {
      entity: ajv.getSchema(entitySchema.$id)!,
      relationship: ajv.getSchema(relationshipSchema.$id)!,
      optionSet: ajv.getSchema(optionSetSchema.$id)!,
    };
  }
  return compiled;
}

/** The most specific error: the deepest path, preferring concrete rules over the oneOf/if wrappers. */
function describe(kind: string, errors: ErrorObject[] | null | undefined, root: unknown): DefinitionError {
  const list = errors ?? [];
  const wrappers = new Set(["oneOf", "anyOf", "if", "not", "allOf"]);
  const ranked = [...list].sort((a, b) => {
    const wa = wrappers.has(a.keyword) ? 1 : 0;
    const wb = wrappers.has(b.keyword) ? 1 : 0;
    if (wa !== wb) return wa - wb;
    return b.instancePath.length - a.instancePath.length;
  });
  const e = ranked[0];
  if (!e) return new DefinitionError(`Invalid ${kind} definition`);
  const path = "$" + e.instancePath.replace(/\/(\d+)/g, "[$1]").replace(/\//g, ".");
  let detail = e.message ?? e.keyword;
  if (e.keyword === "additionalProperties") detail = `has unknown property '${(e.params as { additionalProperty: string }).additionalProperty}'`;
  if (e.keyword === "enum") detail += `: ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`;
  const where = describeSubject(root, e.instancePath);
  return new DefinitionError(`Invalid ${kind} definition${where}: ${path} ${detail} (rule '${e.keyword}' at ${e.schemaPath})`, path, e.keyword);
}

/** Names the attribute or entity an error is about, so the message is readable without the JSON. */
function describeSubject(root: unknown, instancePath: string): string {
  const parts = instancePath.split("/").filter(Boolean);
  let node: any = root;
  const names: string[] = [];
  if (node && typeof node === "object" && typeof node.LogicalName === "string") names.push(node.LogicalName);
  for (const p of parts) {
    node = node?.[p];
    if (node && typeof node === "object" && !Array.isArray(node) && typeof node.LogicalName === "string") names.push(node.LogicalName);
  }
  return names.length ? ` '${names.join(".")}'` : "";
}

export function validateEntityDefinition(def: unknown): asserts def is EntityDefinition {
  const v = validators().entity;
  if (!v(def)) throw describe("entity", v.errors, def);
}

export function validateRelationshipDefinition(def: unknown): asserts def is RelationshipDefinition {
  const v = validators().relationship;
  if (!v(def)) throw describe("relationship", v.errors, def);
}

export function validateOptionSetDefinition(def: unknown): asserts def is OptionSetDefinition {
  const v = validators().optionSet;
  if (!v(def)) throw describe("option set", v.errors, def);
}
