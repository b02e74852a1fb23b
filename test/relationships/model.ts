/**
 * The model the relationship suites share: account → contact → task (one-to-many twice), plus a
 * many-to-many contact ↔ tag, and a seeded generator of related rows.
 */
import { expect } from "vitest";
import type { EntityDefinition, RelationshipDefinition } from "../../src/metadata/types.js";
import type { openTestService } from "../helpers/stores.js";

export type Service = Awaited<ReturnType<typeof openTestService>>;
export type Response = Awaited<ReturnType<Service["request"]>>;

export const ROOT = "http://localhost/api/data/v9.2";
export const FORMATTED = "OData.Community.Display.V1.FormattedValue";
export const LOOKUP_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname";
export const ASSOCIATED_NAV = "Microsoft.Dynamics.CRM.associatednavigationproperty";
export const ALL_ANNOTATIONS = { Prefer: 'odata.include-annotations="*"' };

export const ENTITIES: EntityDefinition[] = [
  {
    LogicalName: "new_account",
    EntitySetName: "new_accounts",
    PrimaryNameAttribute: "new_name",
    Attributes: [
      { LogicalName: "new_name", AttributeType: "String", MaxLength: 100, RequiredLevel: "ApplicationRequired" },
      { LogicalName: "new_rank", AttributeType: "Integer" },
      { LogicalName: "new_code", AttributeType: "String", MaxLength: 20 },
    ],
    Keys: [{ LogicalName: "new_account_code_key", KeyAttributes: ["new_code"] }],
  },
  {
    LogicalName: "new_contact",
    EntitySetName: "new_contacts",
    PrimaryNameAttribute: "new_name",
    Attributes: [
      { LogicalName: "new_name", AttributeType: "String", MaxLength: 100, RequiredLevel: "ApplicationRequired" },
      { LogicalName: "new_age", AttributeType: "Integer", MinValue: 0, MaxValue: 150 },
      { LogicalName: "new_city", AttributeType: "String", MaxLength: 50 },
      { LogicalName: "new_active", AttributeType: "Boolean" },
      { LogicalName: "new_code", AttributeType: "String", MaxLength: 20 },
      { LogicalName: "new_accountref", AttributeType: "Lookup", Targets: ["new_account"] },
    ],
    Keys: [{ LogicalName: "new_contact_code_key", KeyAttributes: ["new_code"] }],
  },
  {
    LogicalName: "new_task",
    EntitySetName: "new_tasks",
    PrimaryNameAttribute: "new_name",
    Attributes: [
      { LogicalName: "new_name", AttributeType: "String", MaxLength: 100, RequiredLevel: "ApplicationRequired" },
      { LogicalName: "new_priority", AttributeType: "Integer", MinValue: 1, MaxValue: 5 },
      { LogicalName: "new_done", AttributeType: "Boolean" },
      { LogicalName: "new_contactref", AttributeType: "Lookup", Targets: ["new_contact"] },
    ],
  },
  {
    LogicalName: "new_tag",
    EntitySetName: "new_tags",
    PrimaryNameAttribute: "new_name",
    Attributes: [
      { LogicalName: "new_name", AttributeType: "String", MaxLength: 50, RequiredLevel: "ApplicationRequired" },
      { LogicalName: "new_weight", AttributeType: "Integer" },
    ],
  },
];

export const RELATIONSHIPS: RelationshipDefinition[] = [
  {
    SchemaName: "new_account_contacts",
    RelationshipType: "OneToManyRelationship",
    ReferencedEntity: "new_account",
    ReferencedAttribute: "new_accountid",
    ReferencingEntity: "new_contact",
    ReferencingAttribute: "new_accountref",
    ReferencedEntityNavigationPropertyName: "new_contacts",
    ReferencingEntityNavigationPropertyName: "new_accountref",
  },
  {
    SchemaName: "new_contact_tasks",
    RelationshipType: "OneToManyRelationship",
    ReferencedEntity: "new_contact",
    ReferencedAttribute: "new_contactid",
    ReferencingEntity: "new_task",
    ReferencingAttribute: "new_contactref",
    ReferencedEntityNavigationPropertyName: "new_tasks",
    ReferencingEntityNavigationPropertyName: "new_contactref",
  },
  {
    SchemaName: "new_contact_tag",
    RelationshipType: "ManyToManyRelationship",
    Entity1LogicalName: "new_contact",
    Entity2LogicalName: "new_tag",
    IntersectEntityName: "new_contact_tag",
    Entity1IntersectAttribute: "new_contactid",
    Entity2IntersectAttribute: "new_tagid",
    Entity1NavigationPropertyName: "new_tags",
    Entity2NavigationPropertyName: "new_contacts",
  },
];

export async function defineCrm(service: Service): Promise<void> {
  await service.define({ entities: ENTITIES, relationships: RELATIONSHIPS });
}

/** mulberry32: a small seeded PRNG, so every run (and both stores) see the same data and cases. */
export function prng(seed: number): { next(): number; int(lo: number, hi: number): number; pick<T>(list: readonly T[]): T; chance(p: number): boolean } {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (list) => list[Math.floor(next() * list.length)]!,
    chance: (p) => next() < p,
  };
}

/** The id in an OData-EntityId header `…/set(id)`. */
export function idFrom(response: Response, set: string): string {
  const entityId = response.headers["OData-EntityId"] ?? "";
  const m = new RegExp(`^${ROOT.replace(/[.]/g, "\\.")}/${set}\\(([0-9a-f-]{36})\\)$`).exec(entityId);
  expect(m, `OData-EntityId of ${response.status} ${response.body ?? ""}: '${entityId}'`).not.toBeNull();
  return m![1]!;
}

export async function create(service: Service, set: string, body: Record<string, unknown>): Promise<string> {
  const r = await service.request("POST", set, { body });
  expect(r.status, r.body).toBe(204);
  return idFrom(r, set);
}

/** GET expecting 200, as parsed JSON. */
export async function getJson(service: Service, url: string, headers: Record<string, string> = {}): Promise<any> {
  const r = await service.request("GET", url, { headers });
  expect(r.status, `GET ${url}: ${r.body}`).toBe(200);
  return JSON.parse(r.body!);
}

export async function count(service: Service, set: string): Promise<number> {
  const r = await service.request("GET", `${set}/$count`);
  expect(r.status, r.body).toBe(200);
  return Number(r.body);
}

/** The counts of every set of the model, to prove that a failed write left nothing behind. */
export async function counts(service: Service): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const set of ["new_accounts", "new_contacts", "new_tasks", "new_tags"]) out[set] = await count(service, set);
  const links = await service.store.executor.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${service.store.executor.dialect.quote("new_contact_tag")}`);
  out.new_contact_tag = Number(links[0]!.n);
  return out;
}

export interface Generated {
  accounts: { id: string; name: string }[];
  contacts: { id: string; name: string; account: string | null }[];
  tasks: { id: string; name: string; contact: string | null }[];
  tags: { id: string; name: string }[];
  /** contact id → tag ids */
  links: Map<string, Set<string>>;
}

const WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"];
export const CITIES = ["Oslo", "Lima", "Perth", "Quito", "Riga"];

/**
 * Seeded related data: some accounts without contacts, contacts and tasks with null lookups, duplicate
 * names and null values so orders have ties and filters meet nulls.
 */
export async function generate(service: Service, seed: number, sizes = { accounts: 12, contacts: 45, tasks: 110, tags: 8 }): Promise<Generated> {
  const rnd = prng(seed);
  const g: Generated = { accounts: [], contacts: [], tasks: [], tags: [], links: new Map() };
  for (let i = 0; i < sizes.accounts; i++) {
    const name = `${rnd.pick(WORDS)} ${rnd.pick(WORDS)} ltd`;
    g.accounts.push({ id: await create(service, "new_accounts", { new_name: name, new_rank: rnd.chance(0.2) ? null : rnd.int(1, 5), new_code: `A-${i}` }), name });
  }
  for (let i = 0; i < sizes.tags; i++) {
    const name = `${rnd.pick(WORDS)}-tag`;
    g.tags.push({ id: await create(service, "new_tags", { new_name: name, new_weight: rnd.chance(0.15) ? null : rnd.int(0, 9) }), name });
  }
  for (let i = 0; i < sizes.contacts; i++) {
    // Account 0 never has contacts; about one contact in ten has no account.
    const account = rnd.chance(0.1) ? null : g.accounts[rnd.int(1, g.accounts.length - 1)]!.id;
    const name = `${rnd.pick(WORDS)} ${rnd.pick(WORDS)}`;
    const body: Record<string, unknown> = {
      new_name: name,
      new_age: rnd.chance(0.15) ? null : rnd.int(18, 70),
      new_city: rnd.chance(0.2) ? null : rnd.pick(CITIES),
      new_active: rnd.chance(0.5),
      new_code: `C-${i}`,
    };
    if (account) body["new_accountref@odata.bind"] = `/new_accounts(${account})`;
    const id = await create(service, "new_contacts", body);
    g.contacts.push({ id, name, account });
    const tags = new Set<string>();
    const n = rnd.int(0, 4);
    for (let k = 0; k < n; k++) tags.add(rnd.pick(g.tags).id);
    for (const t of tags) {
      const r = await service.request("POST", `new_contacts(${id})/new_tags/$ref`, { body: { "@odata.id": `${ROOT}/new_tags(${t})` } });
      expect(r.status, r.body).toBe(204);
    }
    g.links.set(id, tags);
  }
  for (let i = 0; i < sizes.tasks; i++) {
    const contact = rnd.chance(0.1) ? null : rnd.pick(g.contacts).id;
    const name = `${rnd.pick(WORDS)} task`;
    const body: Record<string, unknown> = { new_name: name, new_priority: rnd.chance(0.15) ? null : rnd.int(1, 5), new_done: rnd.chance(0.4) };
    if (contact) body["new_contactref@odata.bind"] = `/new_contacts(${contact})`;
    g.tasks.push({ id: await create(service, "new_tasks", body), name, contact });
  }
  return g;
}

/** Tag ids linked to a contact, and contact ids linked to a tag, from the generated links. */
export function tagsOf(g: Generated, contact: string): string[] {
  return [...(g.links.get(contact) ?? [])];
}
export function contactsOf(g: Generated, tag: string): string[] {
  return [...g.links].filter(([, tags]) => tags.has(tag)).map(([c]) => c);
}

/** Follows @odata.nextLink (absolute URLs) and returns every page. */
export async function allPages(service: Service, url: string, headers: Record<string, string> = {}): Promise<any[]> {
  const pages: any[] = [];
  let next: string | undefined = url;
  while (next) {
    const r = await service.request("GET", next.startsWith("http") ? new URL(next).pathname + new URL(next).search : next, { headers });
    expect(r.status, `${next}: ${r.body}`).toBe(200);
    const body = JSON.parse(r.body!);
    pages.push(body);
    next = body["@odata.nextLink"];
    expect(pages.length, "too many pages").toBeLessThan(100);
  }
  return pages;
}
