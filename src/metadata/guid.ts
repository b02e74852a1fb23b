import { createHash } from "node:crypto";

const GUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether a string is a GUID in its canonical 8-4-4-4-12 form (any case). */
export function isGuid(value: string): boolean {
  return GUID.test(value);
}

/**
 * A GUID derived from a name (a name-based, version 5 style UUID): built-in rows, privileges and catalog
 * rows keep the same id across stores and restarts without storing a mapping.
 */
export function stableId(namespace: string, name: string): string {
  const h = createHash("sha1").update(`${namespace}:${name}`).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h.slice(16, 17), 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}
