import { DECIMAL_TOTAL_DIGITS, type AttributeModel, type EntityModel, type Model } from "../metadata/model.js";
import type { ColumnKind, ColumnSpec, TableSpec } from "./table-spec.js";

function kindOf(a: AttributeModel): ColumnKind {
  switch (a.type) {
    case "String":
      return "string";
    case "Memo":
      return "text";
    case "Integer":
    case "Picklist":
      return "int";
    case "BigInt":
      return "bigint";
    case "Decimal":
    case "Money":
      return "decimal";
    case "Double":
      return "double";
    case "Boolean":
      return "boolean";
    case "DateTime":
      return a.def.DateTimeBehavior === "DateOnly" ? "date" : "datetime";
    case "Uniqueidentifier":
    case "Lookup":
      return "uuid";
  }
}

export function columnOf(a: AttributeModel): ColumnSpec {
  return {
    name: a.column,
    kind: kindOf(a),
    length: a.type === "String" ? a.def.MaxLength : undefined,
    precision: a.type === "Decimal" || a.type === "Money" ? DECIMAL_TOTAL_DIGITS : undefined,
    scale: a.type === "Decimal" || a.type === "Money" ? a.def.Precision : undefined,
    nullable: !a.isPrimaryId,
    primary: a.isPrimaryId,
    unique: a.def.IsUnique === true && !a.isPrimaryId,
    indexed: a.isIndexed,
  };
}

/** The table holding a standard entity's rows, derived from its metadata. */
export function tableOf(entity: EntityModel): TableSpec {
  return {
    name: entity.table,
    columns: [...entity.attributes.values()].map(columnOf),
    uniques: entity.keys.map((k) => ({ name: k.logicalName, columns: k.attributes.map((a) => a.column) })),
  };
}

/** Intersect tables of the model's many-to-many relationships. */
export function intersectTablesOf(model: Model): TableSpec[] {
  const specs: TableSpec[] = [];
  for (const r of model.relationships.values()) {
    if (r.RelationshipType !== "ManyToManyRelationship") continue;
    specs.push({
      name: r.IntersectEntityName,
      columns: [
        { name: `${r.IntersectEntityName}id`, kind: "uuid", nullable: false, primary: true },
        { name: r.Entity1IntersectAttribute, kind: "uuid", nullable: false, indexed: true },
        { name: r.Entity2IntersectAttribute, kind: "uuid", nullable: false, indexed: true },
      ],
      uniques: [{ name: "pair", columns: [r.Entity1IntersectAttribute, r.Entity2IntersectAttribute] }],
    });
  }
  return specs;
}
