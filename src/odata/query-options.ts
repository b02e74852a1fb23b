import { badRequest, notImplemented } from "./errors.js";

/** The system query options of one request, still as text, plus the parameter aliases. */
export interface QueryOptions {
  filter?: string;
  select?: string;
  orderby?: string;
  top?: number;
  skip?: number;
  count?: boolean;
  expand?: string;
  skiptoken?: string;
  format?: string;
  /** `$id` of `DELETE …/$ref?$id=…` */
  id?: string;
  aliases: Map<string, string>;
}

const SUPPORTED = new Set(["$filter", "$select", "$orderby", "$top", "$skip", "$count", "$expand", "$skiptoken", "$format", "$id"]);
const UNSUPPORTED = new Set(["$apply", "$compute", "$search", "$levels", "$index", "$schemaversion", "$deltatoken"]);

/** Percent-decodes a query component; `+` is a space, as HTML forms and URLSearchParams send it. */
export function decodeComponent(raw: string, what: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, " "));
  } catch {
    throw badRequest(`The query option ${what} is not correctly percent-encoded`);
  }
}

function parseNonNegativeInteger(name: string, value: string): number {
  if (!/^\d{1,9}$/.test(value.trim())) throw badRequest(`The value of ${name} must be a non-negative integer below 1,000,000,000, not '${value}'`);
  return Number(value.trim());
}

/**
 * Parses a raw (still encoded) query string. Unknown `$` options are a 400 and known but unsupported
 * ones a 501: an option is never dropped silently. Option names are matched case-insensitively (4.01).
 */
const COLLECTION_OPTIONS: ReadonlySet<string> = new Set([...SUPPORTED].filter((o) => o !== "$id"));

export function parseQueryOptions(rawQuery: string, allowed: ReadonlySet<string> = COLLECTION_OPTIONS): QueryOptions {
  const options: QueryOptions = { aliases: new Map() };
  const seen = new Set<string>();
  if (!rawQuery) return options;
  for (const part of rawQuery.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const rawName = eq < 0 ? part : part.slice(0, eq);
    const name = decodeComponent(rawName, rawName);
    const value = eq < 0 ? "" : decodeComponent(part.slice(eq + 1), name);
    if (name.startsWith("@")) {
      if (options.aliases.has(name.slice(1))) throw badRequest(`The parameter alias '${name}' is given more than once`);
      options.aliases.set(name.slice(1), value);
      continue;
    }
    const key = (name.startsWith("$") ? name : "$" + name).toLowerCase();
    if (!name.startsWith("$") && !SUPPORTED.has(key) && !UNSUPPORTED.has(key)) {
      throw badRequest(`The query parameter '${name}' is not supported; system query options start with '$'`);
    }
    if (UNSUPPORTED.has(key)) throw notImplemented(`The query option ${key} is not supported`);
    if (!SUPPORTED.has(key)) throw badRequest(`The query option '${name}' is not a valid OData system query option`);
    if (!allowed.has(key)) throw badRequest(`The query option ${key} is not allowed on this resource`);
    if (seen.has(key)) throw badRequest(`The query option ${key} is given more than once`);
    seen.add(key);
    switch (key) {
      case "$filter":
        options.filter = value;
        break;
      case "$select":
        options.select = value;
        break;
      case "$orderby":
        options.orderby = value;
        break;
      case "$expand":
        options.expand = value;
        break;
      case "$top":
        options.top = parseNonNegativeInteger("$top", value);
        break;
      case "$skip":
        options.skip = parseNonNegativeInteger("$skip", value);
        break;
      case "$count":
        if (value !== "true" && value !== "false") throw badRequest(`The value of $count must be true or false, not '${value}'`);
        options.count = value === "true";
        break;
      case "$skiptoken":
        options.skiptoken = value;
        break;
      case "$format":
        options.format = value;
        break;
      case "$id":
        options.id = value;
        break;
    }
  }
  return options;
}

export interface Preferences {
  maxPageSize?: number;
  returnRepresentation?: boolean;
  returnMinimal?: boolean;
  /** Annotation patterns from odata.include-annotations (`*`, `OData.Community.Display.V1.FormattedValue`, `Microsoft.Dynamics.CRM.*`). */
  includeAnnotations: string[];
  continueOnError?: boolean;
}

/** Parses every Prefer header (several preferences may share one header, or come in several). */
export function parsePrefer(headers: string | string[] | undefined): Preferences {
  const prefs: Preferences = { includeAnnotations: [] };
  const values = headers === undefined ? [] : Array.isArray(headers) ? headers : [headers];
  for (const header of values) {
    for (const item of splitOutsideQuotes(header, ",")) {
      const [rawKey, ...rest] = item.split("=");
      const key = rawKey!.trim().toLowerCase();
      const value = rest.join("=").trim().replace(/^"(.*)"$/, "$1");
      if (key === "odata.maxpagesize" || key === "maxpagesize") {
        if (!/^\d{1,9}$/.test(value) || Number(value) < 1) throw badRequest(`The preference odata.maxpagesize must be a positive integer, not '${value}'`);
        prefs.maxPageSize = Number(value);
      } else if (key === "return") {
        // Values a service does not know are ignored (RFC 7240); Preference-Applied then does not list them.
        if (value === "representation") prefs.returnRepresentation = true;
        else if (value === "minimal") prefs.returnMinimal = true;
      } else if (key === "odata.include-annotations" || key === "include-annotations") {
        prefs.includeAnnotations.push(...value.split(",").map((s) => s.trim()).filter(Boolean));
      } else if (key === "odata.continue-on-error" || key === "continue-on-error") {
        prefs.continueOnError = value === "" || value === "true";
      } else if (key === "odata.track-changes" || key === "track-changes") {
        // Dataverse answers it with a delta link that clients then depend on: refused rather than ignored.
        throw notImplemented("Change tracking (Prefer: odata.track-changes) is not supported by this service");
      }
      // Other preferences (respond-async, wait...) are hints a service may ignore (RFC 7240).
    }
  }
  return prefs;
}

function splitOutsideQuotes(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (const c of s) {
    if (c === '"') quoted = !quoted;
    if (c === sep && !quoted) {
      if (cur.trim()) out.push(cur.trim());
      cur = "";
    } else cur += c;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

/** Whether an annotation term is asked for by odata.include-annotations patterns (with `-term` exclusions). */
export function annotationRequested(prefs: Preferences, term: string): boolean {
  let included = false;
  for (const p of prefs.includeAnnotations) {
    const exclude = p.startsWith("-");
    const pattern = exclude ? p.slice(1) : p;
    const match = pattern === "*" || pattern === term || (pattern.endsWith(".*") && term.startsWith(pattern.slice(0, -1)));
    if (match) {
      if (exclude) return false;
      included = true;
    }
  }
  return included;
}
