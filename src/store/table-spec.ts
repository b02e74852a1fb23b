/** A store table described independently of entities, so sources and entities share one DDL path. */
export type ColumnKind = "string" | "text" | "int" | "bigint" | "decimal" | "double" | "boolean" | "date" | "datetime" | "uuid";

export interface ColumnSpec {
  name: string;
  kind: ColumnKind;
  length?: number;
  /** decimal: total digits and digits after the point */
  precision?: number;
  scale?: number;
  nullable: boolean;
  primary?: boolean;
  unique?: boolean;
  indexed?: boolean;
}

export interface TableSpec {
  name: string;
  columns: ColumnSpec[];
  /** Unique multi-column indexes (alternate keys). */
  uniques?: { name: string; columns: string[] }[];
}
