import { resolveBodyReferences, structuralProblemOf } from "./json-text.js";
import { randomUUID } from "node:crypto";
import { badRequest, ErrorCodes, ODataError } from "./errors.js";
import type { ODataRequest, ODataResponse } from "./processor.js";

/** Dataverse's limit on the requests of one batch. */
export const MAX_BATCH_REQUESTS = 1000;

/** One request of a batch, parsed; `group` is its change set (atomicity group), if any. */
export interface BatchPart {
  id: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
  group?: string;
  dependsOn: string[];
  /** What `$<id>` references name: the Content-ID of a multipart part, the id of a JSON request. */
  contentId?: string;
}

export interface ParsedBatch {
  format: "multipart" | "json";
  parts: BatchPart[];
  boundary?: string;
}

function boundaryOf(contentType: string): string | undefined {
  const m = /boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  return m ? (m[1] ?? m[2]) : undefined;
}

/** Splits a multipart body on its boundary; refuses a body that does not end with the closing delimiter. */
function splitMultipart(body: string, boundary: string, what: string): string[] {
  const delimiter = `--${boundary}`;
  const lines = body.split(/\r?\n/);
  const parts: string[] = [];
  let current: string[] | undefined;
  let closed = false;
  for (const line of lines) {
    if (line.trimEnd() === delimiter) {
      if (current) parts.push(current.join("\r\n"));
      current = [];
      continue;
    }
    if (line.trimEnd() === `${delimiter}--`) {
      if (current) parts.push(current.join("\r\n"));
      closed = true;
      break;
    }
    current?.push(line);
  }
  if (!closed) throw badRequest(`The ${what} is malformed: the closing delimiter '--${boundary}--' is missing`);
  if (!parts.length) throw badRequest(`The ${what} holds no parts`);
  return parts;
}

/** Headers then the rest, separated by the first empty line. */
function headersAndBody(text: string): { headers: Record<string, string>; rest: string } {
  const lines = text.split(/\r\n/);
  const headers: Record<string, string> = {};
  let i = 0;
  while (i < lines.length && lines[i]!.trim() === "") i++;
  for (; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === "") {
      i++;
      break;
    }
    const colon = line.indexOf(":");
    if (colon <= 0) throw badRequest(`Malformed header line in a batch part: '${line.slice(0, 80)}'`);
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { headers, rest: lines.slice(i).join("\r\n") };
}

function parseHttpPart(text: string, index: number, group?: string): BatchPart {
  const outer = headersAndBody(text);
  const type = outer.headers["content-type"] ?? "";
  if (!/^application\/http/i.test(type)) throw badRequest(`Batch part ${index + 1} must have Content-Type application/http, not '${type}'`);
  const inner = outer.rest.replace(/^(\r\n)+/, "");
  const newline = inner.indexOf("\r\n");
  const requestLine = (newline < 0 ? inner : inner.slice(0, newline)).trim();
  const m = /^(GET|POST|PATCH|PUT|DELETE)\s+(\S+)(?:\s+HTTP\/1\.[01])?$/i.exec(requestLine);
  if (!m) throw badRequest(`Batch part ${index + 1} has a malformed request line: '${requestLine.slice(0, 100)}'`);
  const { headers, rest } = headersAndBody(newline < 0 ? "" : inner.slice(newline + 2));
  const body = rest.replace(/(\r\n)+$/, "");
  const contentId = outer.headers["content-id"] ?? headers["content-id"];
  return { id: contentId ?? String(index + 1), method: m[1]!.toUpperCase(), url: m[2]!, headers, body: body === "" ? undefined : body, group, dependsOn: [], contentId };
}

/** Parses a `multipart/mixed` batch (change sets as nested `multipart/mixed`) or an OData 4.01 JSON batch. */
export function parseBatch(contentType: string, body: string): ParsedBatch {
  const type = contentType.toLowerCase();
  if (type.startsWith("multipart/mixed")) {
    const boundary = boundaryOf(contentType);
    if (!boundary) throw badRequest("The $batch Content-Type multipart/mixed needs a boundary parameter");
    const parts: BatchPart[] = [];
    for (const raw of splitMultipart(body, boundary, "$batch body")) {
      const { headers, rest } = headersAndBody(raw);
      const partType = headers["content-type"] ?? "";
      if (/^multipart\/mixed/i.test(partType)) {
        const inner = boundaryOf(partType);
        if (!inner) throw badRequest("A change set's Content-Type multipart/mixed needs a boundary parameter");
        const group = `changeset:${inner}`;
        for (const p of splitMultipart(rest, inner, `change set '${inner}'`)) {
          const part = parseHttpPart(p, parts.length, group);
          if (part.method === "GET") throw badRequest(`Batch part ${parts.length + 1}: a change set may not hold GET requests`);
          parts.push(part);
        }
      } else parts.push(parseHttpPart(raw, parts.length));
      if (parts.length > MAX_BATCH_REQUESTS) throw badRequest(`A batch may hold at most ${MAX_BATCH_REQUESTS} requests`);
    }
    // A Content-ID names one request of its change set (OData 4.0 scopes references to the change set):
    // the same id twice in one change set would make a $<id> reference ambiguous.
    const seen = new Set<string>();
    for (const [i, p] of parts.entries()) {
      if (p.contentId === undefined) continue;
      const key = `${p.group ?? ""}\u0000${p.contentId}`;
      if (seen.has(key)) throw badRequest(`Batch part ${i + 1}: the Content-ID '${p.contentId}' is used twice in one ${p.group ? "change set" : "batch"}; a $${p.contentId} reference would be ambiguous`);
      seen.add(key);
    }
    return { format: "multipart", parts, boundary };
  }
  if (type.startsWith("application/json")) {
    let doc: unknown;
    try {
      doc = JSON.parse(body);
    } catch (e) {
      throw badRequest(`The JSON batch is not valid JSON: ${(e as Error).message}`);
    }
    const problem = structuralProblemOf(body, "JSON batch");
    if (problem) throw badRequest(problem);
    const requests = (doc as { requests?: unknown })?.requests;
    if (!Array.isArray(requests)) throw badRequest("A JSON batch is an object with a 'requests' array");
    if (requests.length === 0) throw badRequest("A JSON batch needs at least one request");
    if (requests.length > MAX_BATCH_REQUESTS) throw badRequest(`A batch may hold at most ${MAX_BATCH_REQUESTS} requests`);
    const ids = new Set<string>();
    const parts: BatchPart[] = [];
    let lastGroup: string | undefined;
    const closedGroups = new Set<string>();
    for (const [i, r] of requests.entries()) {
      const req = r as Record<string, unknown>;
      const where = `requests[${i}]`;
      if (!req || typeof req !== "object") throw badRequest(`${where} must be an object`);
      if (typeof req.id !== "string" || req.id === "") throw badRequest(`${where}.id must be a non-empty string`);
      if (ids.has(req.id)) throw badRequest(`${where}.id '${req.id}' is used twice`);
      if (typeof req.method !== "string" || !/^(GET|POST|PATCH|PUT|DELETE)$/i.test(req.method)) throw badRequest(`${where}.method must be GET, POST, PATCH, PUT or DELETE`);
      if (typeof req.url !== "string" || req.url === "") throw badRequest(`${where}.url must be a string`);
      if (req.atomicityGroup !== undefined && (typeof req.atomicityGroup !== "string" || req.atomicityGroup === "")) throw badRequest(`${where}.atomicityGroup must be a non-empty string`);
      const group = req.atomicityGroup as string | undefined;
      if (group !== undefined && /^GET$/i.test(req.method)) throw badRequest(`${where}: an atomicity group may not hold GET requests (as a change set may not)`);
      if (group !== lastGroup) {
        if (lastGroup !== undefined) closedGroups.add(lastGroup);
        if (group !== undefined && closedGroups.has(group)) throw badRequest(`${where}: the requests of atomicity group '${group}' must be adjacent`);
      }
      lastGroup = group;
      const dependsOn = req.dependsOn === undefined ? [] : req.dependsOn;
      if (!Array.isArray(dependsOn) || dependsOn.some((d) => typeof d !== "string" || (!ids.has(d) && !parts.some((p) => p.group === `group:${d}`)))) {
        throw badRequest(`${where}.dependsOn must list ids of earlier requests or atomicity groups`);
      }
      const headers: Record<string, string> = {};
      if (req.headers !== undefined) {
        if (!req.headers || typeof req.headers !== "object") throw badRequest(`${where}.headers must be an object`);
        for (const [k, v] of Object.entries(req.headers as Record<string, unknown>)) headers[k.toLowerCase()] = String(v);
      }
      let bodyText: string | undefined;
      if (req.body !== undefined && req.body !== null) {
        bodyText = typeof req.body === "string" ? req.body : JSON.stringify(req.body);
        headers["content-type"] ??= "application/json";
      }
      ids.add(req.id);
      parts.push({ id: req.id, method: req.method.toUpperCase(), url: req.url, headers, body: bodyText, group: group ? `group:${group}` : undefined, dependsOn: dependsOn as string[], contentId: req.id });
    }
    return { format: "json", parts };
  }
  throw new ODataError(415, ErrorCodes.unsupportedMediaType, `A $batch body must be multipart/mixed or application/json, not '${contentType}'`);
}

export interface BatchResult {
  part: BatchPart;
  response: ODataResponse;
}

/**
 * Replaces a `$<id>` reference to an earlier request of the batch by the URL of the entity it created,
 * where OData allows one: as the first segment of a part's URL, and as an entity reference in its body
 * (`…@odata.bind`, `@odata.id`). Nowhere else: a value such as "Desk $1" is data.
 */
export function resolveReferences(part: { url: string; body?: string }, created: ReadonlyMap<string, string>): { url: string; body?: string } {
  const url = part.url.replace(/^\$([A-Za-z0-9_.-]+)(?=[/?]|$)/, (whole, id: string) => created.get(id) ?? whole);
  return { url, body: part.body === undefined ? undefined : resolveBodyReferences(part.body, (id) => created.get(id)) };
}

/**
 * Normalizes a part's URL (absolute, absolute path, or relative to the service root) to a path and query.
 * An absolute URL must name one of this service's hosts (`hosts`, lower case, as URL.host writes them): a
 * batch is not a way to reach another service.
 */
export function partUrl(url: string, rootPath: string, hosts: readonly string[] | undefined): string {
  if (/^https?:\/\//i.test(url)) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw badRequest(`The batch request URL '${url}' is not a valid URL`);
    }
    if (hosts !== undefined && !hosts.includes(u.host.toLowerCase())) throw badRequest(`The batch request URL '${url}' names another host than this service (${hosts[0]})`);
    return u.pathname + u.search;
  }
  if (url.startsWith("/")) return url;
  return `${rootPath}/${url}`;
}

const STATUS_TEXT: Record<number, string> = { 200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict", 412: "Precondition Failed", 415: "Unsupported Media Type", 424: "Failed Dependency", 429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented" };

function httpPart(r: BatchResult): string {
  const lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"];
  if (r.part.contentId) lines.push(`Content-ID: ${r.part.contentId}`);
  lines.push("", `HTTP/1.1 ${r.response.status} ${STATUS_TEXT[r.response.status] ?? ""}`.trimEnd());
  for (const [k, v] of Object.entries(r.response.headers)) lines.push(`${k}: ${v}`);
  lines.push("");
  if (r.response.body !== undefined && r.response.status !== 204) lines.push(r.response.body);
  return lines.join("\r\n");
}

/** Writes the multipart answer: change sets in nested `multipart/mixed` parts, in order. */
export function multipartResponse(results: BatchResult[]): { contentType: string; body: string } {
  const boundary = `batchresponse_${randomUUID()}`;
  const out: string[] = [];
  let i = 0;
  while (i < results.length) {
    const group = results[i]!.part.group;
    if (!group) {
      out.push(`--${boundary}`, httpPart(results[i]!));
      i++;
      continue;
    }
    const inner = `changesetresponse_${randomUUID()}`;
    out.push(`--${boundary}`, `Content-Type: multipart/mixed; boundary=${inner}`, "");
    while (i < results.length && results[i]!.part.group === group) {
      out.push(`--${inner}`, httpPart(results[i]!));
      i++;
    }
    out.push(`--${inner}--`);
  }
  out.push(`--${boundary}--`, "");
  return { contentType: `multipart/mixed; boundary=${boundary}`, body: out.join("\r\n") };
}

export function jsonResponse(results: BatchResult[]): string {
  return JSON.stringify({
    responses: results.map((r) => {
      let body: unknown;
      if (r.response.body !== undefined && r.response.status !== 204) {
        const isJson = /json/i.test(r.response.headers["Content-Type"] ?? "");
        body = isJson ? JSON.parse(r.response.body) : r.response.body;
      }
      return {
        id: r.part.id,
        ...(r.part.group ? { atomicityGroup: r.part.group.replace(/^group:/, "") } : {}),
        status: r.response.status,
        headers: r.response.headers,
        ...(body !== undefined ? { body } : {}),
      };
    }),
  });
}

export type { ODataRequest };

/** The hosts a batch's absolute part URLs may name: the service root's, and the request's Host and X-Forwarded-Host, default ports or not. */
export function serviceHosts(root: string, headers: readonly (string | undefined)[]): string[] {
  const hosts = new Set<string>();
  const add = (u: string) => {
    try {
      hosts.add(new URL(u).host.toLowerCase());
    } catch {
      // not a host: nothing to allow
    }
  };
  add(root);
  for (const h of headers) {
    for (const one of (h ?? "").split(",").map((x) => x.trim()).filter(Boolean)) {
      add(`http://${one}`);
      add(`https://${one}`);
    }
  }
  return [...hosts];
}
