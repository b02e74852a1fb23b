/**
 * Running filters through the OData layer and comparing their results with the reference evaluator.
 */
import { json, openTestService } from "../helpers/stores.js";
import { type Expr, type Rendered, booleanSubtrees, render, selects } from "./odata-expr.js";
import { ENTITY_SET, KEY, type GeneratedRow } from "./generate.js";

export type Service = Awaited<ReturnType<typeof openTestService>>;

export type QueryOutcome = { ok: true; ids: string[] } | { ok: false; status: number; message: string };

/** How a filter is requested: in one page (the default), or in small pages, optionally ordered. */
export interface Paging {
  pageSize?: number;
  orderBy?: string;
  /** Encode spaces as `+` (as HTML forms do) rather than `%20`. */
  plusSpaces?: boolean;
}

/** The request URL of a rendered filter: `$filter`, `$select` of the key, `$orderby`, and its parameter aliases. */
export function filterUrl(rendered: Rendered, paging: Paging = {}, entitySet = ENTITY_SET): string {
  // encodeURIComponent writes a literal '+' as %2B, so a '+' left in the query can only mean a space.
  const encode = (text: string) => (paging.plusSpaces ? encodeURIComponent(text).replaceAll("%20", "+") : encodeURIComponent(text));
  let url = `${entitySet}?$filter=${encode(rendered.filter)}&$select=${KEY}`;
  if (paging.orderBy) url += `&$orderby=${encode(paging.orderBy)}`;
  for (const [name, text] of rendered.aliases) url += `&@${name}=${encode(text)}`;
  return url;
}

/** Runs a filter, following @odata.nextLink page after page; the ids come back sorted (duplicates kept). */
export async function runFilter(service: Service, rendered: Rendered, paging: Paging = {}, entitySet = ENTITY_SET): Promise<QueryOutcome> {
  const headers = { Prefer: `odata.maxpagesize=${paging.pageSize ?? 5000}` };
  let url: string | undefined = filterUrl(rendered, paging, entitySet);
  const ids: string[] = [];
  for (let page = 0; url !== undefined; page++) {
    if (page > 1000) throw new Error(`more than 1000 pages for ${rendered.filter}`);
    const r = await service.request("GET", url, { headers });
    if (r.status !== 200) {
      let message = r.body ?? "";
      try {
        message = json(r).error?.message ?? message;
      } catch {
        // keep the raw body
      }
      return { ok: false, status: r.status, message: page ? `page ${page + 1}: ${message}` : message };
    }
    const body = json<{ value: Record<string, unknown>[]; "@odata.nextLink"?: string }>(r);
    ids.push(...body.value.map((v) => String(v[KEY]).toLowerCase()));
    const next = body["@odata.nextLink"];
    // The link is absolute; the service takes the path under its root.
    url = next === undefined ? undefined : next.slice(next.lastIndexOf(`/${entitySet}?`) + 1);
  }
  return { ok: true, ids: ids.sort() };
}

export function expectedIds(filter: Expr, rows: readonly GeneratedRow[]): string[] {
  return rows
    .filter((r) => selects(filter, r.model))
    .map((r) => r.id)
    .sort();
}

export interface Failure {
  filter: Expr;
  paging: Paging;
  rendered: Rendered;
  outcome: QueryOutcome;
  expected: string[];
}

export function sameIds(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function check(service: Service, filter: Expr, rows: readonly GeneratedRow[], paging: Paging = {}): Promise<Failure | undefined> {
  const rendered = render(filter);
  const expected = expectedIds(filter, rows);
  const outcome = await runFilter(service, rendered, paging);
  if (outcome.ok && sameIds(outcome.ids, expected)) return undefined;
  return { filter, paging, rendered, outcome, expected };
}

/** The smallest Boolean sub-expression of a failing filter that fails too (the filter itself at worst). */
export async function shrink(service: Service, failure: Failure, rows: readonly GeneratedRow[]): Promise<Failure> {
  const candidates = booleanSubtrees(failure.filter)
    .map((e) => ({ e, text: render(e).filter }))
    .sort((a, b) => a.text.length - b.text.length);
  for (const { e } of candidates) {
    if (e === failure.filter) break;
    const f = await check(service, e, rows, failure.paging);
    // Keep the same kind of failure: a wrong row set for a wrong row set, an error for an error.
    if (f && f.outcome.ok === failure.outcome.ok) return f;
  }
  return failure;
}

function urlOf(rendered: Rendered, paging: Paging): string {
  const order = paging.orderBy ? `&$orderby=${paging.orderBy}` : "";
  const pages = (paging.pageSize ? ` (Prefer: odata.maxpagesize=${paging.pageSize})` : "") + (paging.plusSpaces ? " (spaces sent as '+')" : "");
  return `$filter=${rendered.filter}${rendered.aliases.map(([n, t]) => `&@${n}=${t}`).join("")}${order}${pages}`;
}

export function describeFailure(store: string, f: Failure, rows: readonly GeneratedRow[], shrunk?: Failure): string {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const lines: string[] = [];
  lines.push(`[${store}] ${urlOf(f.rendered, f.paging)}`);
  const detail = (g: Failure, indent: string) => {
    if (!g.outcome.ok) {
      lines.push(`${indent}HTTP ${g.outcome.status}: ${g.outcome.message}`);
      return;
    }
    const actual = new Set(g.outcome.ids);
    const expected = new Set(g.expected);
    const missing = g.expected.filter((id) => !actual.has(id));
    const extra = g.outcome.ids.filter((id) => !expected.has(id));
    const repeated = g.outcome.ids.filter((id, i, all) => i > 0 && all[i - 1] === id);
    lines.push(`${indent}expected ${g.expected.length} rows, got ${g.outcome.ids.length}: ${missing.length} missing, ${extra.length} unexpected`);
    const show = (label: string, ids: string[]) => {
      for (const id of ids.slice(0, 3)) {
        const row = byId.get(id);
        lines.push(`${indent}  ${label} ${row ? `${row.label} ${JSON.stringify(row.model)}` : id}`);
      }
      if (ids.length > 3) lines.push(`${indent}  … and ${ids.length - 3} more`);
    };
    show("missing", missing);
    show("unexpected", extra);
    show("returned twice", repeated);
  };
  detail(f, "  ");
  if (shrunk && shrunk !== f) {
    lines.push(`  smallest failing part: ${urlOf(shrunk.rendered, shrunk.paging)}`);
    detail(shrunk, "    ");
  }
  return lines.join("\n");
}
