import { createHash } from "node:crypto";

/**
 * A GUID derived from a name (a name-based, version 5 style UUID): built-in rows, privileges and catalog
 * rows keep the same id across stores and restarts without storing a mapping.
 */
export function stableId(namespace: string, name: string): string {
  const h = createHash("sha1").update(`${namespace}:${name}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h.slice(16, 17), 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
