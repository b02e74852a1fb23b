import { badRequest } from "./errors.js";
import type { PagePosition } from "../providers/data-provider.js";

/** What a nextLink carries: where the page ended and how many rows were returned so far (for $top). */
export interface PagingState {
  position: PagePosition;
  returned: number;
}

export function encodeSkipToken(state: PagingState): string {
  return Buffer.from(JSON.stringify({ p: state.position, n: state.returned }), "utf8").toString("base64url");
}

export function decodeSkipToken(token: string, expectedLength: number): PagingState {
  let parsed: { p?: unknown; n?: unknown };
  try {
    parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw badRequest("The $skiptoken is not valid: use the @odata.nextLink the service returned");
  }
  const ok =
    parsed && Array.isArray(parsed.p) && parsed.p.length === expectedLength && typeof parsed.n === "number" && Number.isInteger(parsed.n) && parsed.n >= 0 &&
    parsed.p.every((v) => v === null || ["string", "number", "boolean"].includes(typeof v));
  if (!ok) throw badRequest("The $skiptoken does not belong to this query: use the @odata.nextLink the service returned");
  return { position: parsed.p as PagePosition, returned: parsed.n as number };
}
