import { badRequest } from "./errors.js";
import { parseKeySyntax, type SyntaxNode } from "./syntax.js";

export interface PathSegment {
  /** The name before any parentheses (an entity set, property, navigation, operation or `$count`...). */
  name: string;
  /** The text inside the parentheses (key predicate or function parameters), if any. */
  args?: string;
}

/** Splits the path below the service root into decoded segments with their parenthesized parts. */
export function parseResourcePath(path: string): PathSegment[] {
  if (path === "" || path === "/") return [];
  const segments: PathSegment[] = [];
  for (const raw of path.replace(/^\/+/, "").replace(/\/+$/, "").split("/")) {
    let text: string;
    try {
      text = decodeURIComponent(raw);
    } catch {
      throw badRequest(`The path segment '${raw}' is not correctly percent-encoded`);
    }
    const m = /^([^()]+)(?:\((.*)\))?$/s.exec(text);
    if (!m) throw badRequest(`The path segment '${text}' is malformed`);
    segments.push({ name: m[1]!, args: m[2] });
  }
  return segments;
}

export interface KeyPart {
  name?: string;
  value: Extract<SyntaxNode, { kind: "literal" }>;
}

/** Parses a key predicate; every value must be a literal. */
export function parseKey(args: string): KeyPart[] {
  return parseKeySyntax(args).map((p) => {
    if (p.value.kind !== "literal") throw badRequest(`The key '(${args})' must hold literal values`);
    // A null never identifies one record (every row without a value would match).
    if (p.value.type === "null") throw badRequest(`The key value${p.name ? ` of '${p.name}'` : ""} in '(${args})' must not be null`);
    return { name: p.name, value: p.value };
  });
}
