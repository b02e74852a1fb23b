import { badRequest } from "./errors.js";
import { isGuid } from "../metadata/guid.js";
import type { PagePosition } from "../providers/data-provider.js";

/** What a nextLink carries: where the page ended and how many rows were returned so far (for $top). */
export interface PagingState {
  position: PagePosition;
  returned: number;
}

export function encodeSkipToken(state: PagingState): string {
  return Buffer.from(JSON.stringify({ p: state.position, n: state.returned }), "utf8").toString("base64url");
}


/** Whether a position value can stand for a value of the order term's type (tokens come from clients). */
function fits(value: unknown, type: string): boolean {
  if (value === null) return true;
  switch (type) {
    case "Edm.String":
      return typeof value === "string" && !value.includes("\u0000");
    case "Edm.Guid":
      return typeof value === "string" && isGuid(value);
    case "Edm.Date":
      if (typeof value !== "string" || !/^\d{4}-\d{2}-\d{2}$/.test(value)) return false;
      // A real calendar day: 2024-02-30 and 2024-99-99 are not.
      return !Number.isNaN(Date.parse(`${value}T00:00:00Z`)) && new Date(`${value}T00:00:00Z`).toISOString().slice(0, 10) === value;
    case "Edm.DateTimeOffset":
      // A date and time as a store keeps it (ISO 8601, or with a space as SQLite sources often write it).
      return typeof value === "string" && /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$/.test(value) && !Number.isNaN(Date.parse(value.replace(" ", "T")));
    case "Edm.Boolean":
      return typeof value === "boolean" || value === 0 || value === 1;
    case "Edm.Int32":
    case "Edm.Int64":
      // Integer order terms are computed in 64 bits (an Int32 term like `x mul 1000000000` exceeds Int32).
      return typeof value === "number" && Number.isInteger(value) && Math.abs(value) <= 9223372036854775807;
    default:
      return typeof value === "number" && Number.isFinite(value);
  }
}

export function decodeSkipToken(token: string, types: readonly string[]): PagingState {
  const expectedLength = types.length;
  let parsed: { p?: unknown; n?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw badRequest("The $skiptoken is not valid: use the @odata.nextLink the service returned");
  }
  const ok =
    parsed && Array.isArray(parsed.p) && parsed.p.length === expectedLength && typeof parsed.n === "number" && Number.isInteger(parsed.n) && parsed.n >= 0 &&
    parsed.p.every((v, i) => fits(v, types[i]!));
  if (!ok) throw badRequest("The $skiptoken does not belong to this query: use the @odata.nextLink the service returned");
  return { position: parsed.p as PagePosition, returned: parsed.n as number };
}
