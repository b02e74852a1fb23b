/**
 * $batch as Dataverse clients send it: multipart/mixed with change sets (CRLF, `--batch_<id>`,
 * `Content-Type: application/http`, `Content-ID`), and OData 4.01 JSON batches with atomicity groups and
 * dependsOn. Change sets are atomic; `$n` references resolve; malformed batches run nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { json, openTestService, STORE_KINDS, type StoreKind } from "../helpers/stores.js";
import { createService } from "../../src/index.js";
import { counts, create, defineCrm, getJson, ROOT, type Response, type Service } from "../relationships/model.js";

const CRLF = "\r\n";
const PATH = "/api/data/v9.2";
const MISSING = "00000000-0000-0000-0000-0000000000ff";

// ------------------------------------------------------------------ building multipart batches

interface Req {
  method: string;
  url: string;
  body?: unknown;
  contentId?: string;
  headers?: Record<string, string>;
}
interface ChangeSet {
  changeset: Req[];
  boundary?: string;
}

function requestPart(req: Req): string[] {
  const lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"];
  if (req.contentId) lines.push(`Content-ID: ${req.contentId}`);
  // the request line's URL is percent-encoded, as an HTTP client sends it
  lines.push("", `${req.method} ${req.url.replace(/ /g, "%20")} HTTP/1.1`);
  const headers: Record<string, string> = { ...req.headers };
  if (req.body !== undefined) headers["Content-Type"] ??= "application/json; type=entry";
  if (req.method === "GET") headers.Accept ??= "application/json";
  for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
  lines.push("");
  if (req.body !== undefined) lines.push(typeof req.body === "string" ? req.body : JSON.stringify(req.body));
  return lines;
}

let boundaries = 0;
/** A multipart/mixed $batch body exactly as Dataverse clients write it (CRLF everywhere). */
function multipart(items: (Req | ChangeSet)[], boundary = `batch_${++boundaries}AAA`): { contentType: string; body: string } {
  const lines: string[] = [];
  for (const item of items) {
    lines.push(`--${boundary}`);
    if ("changeset" in item) {
      const cs = item.boundary ?? `changeset_${++boundaries}BBB`;
      lines.push(`Content-Type: multipart/mixed; boundary=${cs}`, "");
      for (const req of item.changeset) lines.push(`--${cs}`, ...requestPart(req));
      lines.push(`--${cs}--`, "");
    } else lines.push(...requestPart(item));
  }
  lines.push(`--${boundary}--`, "");
  return { contentType: `multipart/mixed; boundary=${boundary}`, body: lines.join(CRLF) };
}

// ------------------------------------------------------------------ reading multipart answers (independently of the library)

interface PartAnswer {
  status: number;
  statusText: string;
  headers: Record<string, string>;
  body: string;
  contentId?: string;
  /** index of the change set the answer is in, if any */
  changeset?: number;
}

function headerBlock(text: string): { headers: Record<string, string>; rest: string } {
  const end = text.indexOf(CRLF + CRLF);
  const head = end < 0 ? text : text.slice(0, end);
  const headers: Record<string, string> = {};
  for (const line of head.split(CRLF)) {
    if (!line) continue;
    const i = line.indexOf(":");
    expect(i, `header line '${line}'`).toBeGreaterThan(0);
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { headers, rest: end < 0 ? "" : text.slice(end + 4) };
}

function boundaryOf(contentType: string): string {
  const m = /boundary=("?)([^";]+)\1/i.exec(contentType);
  expect(m, contentType).not.toBeNull();
  return m![2]!;
}

function splitParts(body: string, boundary: string): string[] {
  const delimiter = `${CRLF}--${boundary}`;
  const text = CRLF + body;
  const close = text.indexOf(`${delimiter}--`);
  expect(close, `closing delimiter --${boundary}-- in ${body.slice(0, 300)}`).toBeGreaterThanOrEqual(0);
  const chunks = text.slice(0, close).split(delimiter).slice(1);
  // each chunk starts with the CRLF ending the delimiter line
  return chunks.map((c) => {
    expect(c.startsWith(CRLF), `part after --${boundary}`).toBe(true);
    return c.slice(2);
  });
}

function parseMultipart(response: Response): PartAnswer[] {
  expect([200, 400, 403, 404, 409, 412, 424, 501], response.body).toContain(response.status);
  const contentType = response.headers["Content-Type"]!;
  expect(contentType).toMatch(/^multipart\/mixed;\s*boundary=/);
  const body = response.body!;
  expect(/[^\r]\n/.test(body), "every line of the answer ends with CRLF").toBe(false);
  const out: PartAnswer[] = [];
  let changesets = 0;
  const walk = (text: string, boundary: string, changeset?: number) => {
    for (const part of splitParts(text, boundary)) {
      const { headers, rest } = headerBlock(part);
      if (/^multipart\/mixed/i.test(headers["content-type"] ?? "")) {
        walk(rest, boundaryOf(headers["content-type"]!), changesets++);
        continue;
      }
      expect(headers["content-type"]).toMatch(/^application\/http/);
      expect(headers["content-transfer-encoding"]).toBe("binary");
      const newline = rest.indexOf(CRLF);
      const statusLine = rest.slice(0, newline);
      const m = /^HTTP\/1\.1 (\d{3})(?: (.*))?$/.exec(statusLine);
      expect(m, `status line '${statusLine}'`).not.toBeNull();
      const inner = headerBlock(rest.slice(newline + 2));
      out.push({ status: Number(m![1]), statusText: m![2] ?? "", headers: inner.headers, body: inner.rest.replace(/(\r\n)+$/, ""), contentId: headers["content-id"], changeset });
    }
  };
  walk(body, boundaryOf(contentType));
  // As Dataverse: a batch that stopped at a failure (no continue-on-error) answers with that request's
  // status; otherwise with 200.
  const last = out[out.length - 1];
  const stopped = !/odata\.continue-on-error/.test(response.headers["Preference-Applied"] ?? "") && last !== undefined && last.status >= 400;
  expect(response.status, "status of the batch").toBe(stopped ? last!.status : 200);
  return out;
}

const idOf = (entityId: string | undefined) => /\(([0-9a-f-]{36})\)$/.exec(entityId ?? "")?.[1];

describe.each(STORE_KINDS)("$batch (%s)", (kind: StoreKind) => {
  let service: Service;

  beforeAll(async () => {
    service = await openTestService(kind);
    await defineCrm(service);
  });
  afterAll(async () => {
    await service?.dispose();
  });

  function postMultipart(items: (Req | ChangeSet)[], headers: Record<string, string> = {}): Promise<Response> {
    const { contentType, body } = multipart(items);
    return service.request("POST", "$batch", { headers: { "Content-Type": contentType, Accept: "application/json", "OData-Version": "4.0", "OData-MaxVersion": "4.0", ...headers }, body });
  }
  function postRaw(contentType: string, body: string, headers: Record<string, string> = {}): Promise<Response> {
    return service.request("POST", "$batch", { headers: { "Content-Type": contentType, ...headers }, body });
  }
  function postJson(requests: unknown[], headers: Record<string, string> = {}): Promise<Response> {
    return service.request("POST", "$batch", { headers: { "Content-Type": "application/json", Accept: "application/json", ...headers }, body: JSON.stringify({ requests }) });
  }
  const get = (url: string, headers?: Record<string, string>) => getJson(service, url, headers);
  const nameOf = (set: string, id: string) => get(`${set}(${id})?$select=new_name`).then((r) => r.new_name);

  // ---------------------------------------------------------------- multipart/mixed

  describe("multipart/mixed", () => {
    it("runs a Dataverse-style batch: change set with Content-ID references, relative, absolute-path and absolute URLs", async () => {
      const before = await counts(service);
      const r = await postMultipart([
        { method: "GET", url: "new_accounts/$count" },
        {
          changeset: [
            { method: "POST", url: `${PATH}/new_accounts`, contentId: "1", body: { new_name: "Batch Account", new_code: "B-1" } },
            { method: "POST", url: `http://localhost${PATH}/new_contacts`, contentId: "2", body: { new_name: "Batch Contact", "new_accountref@odata.bind": "$1" } },
            { method: "POST", url: "new_tags", contentId: "3", body: { new_name: "batch-tag" } },
            { method: "POST", url: "$2/new_tags/$ref", contentId: "4", body: { "@odata.id": "$3" } },
            { method: "POST", url: "new_tasks", contentId: "5", body: { new_name: "Batch Task", "new_contactref@odata.bind": "$2" } },
            { method: "PATCH", url: "$1", contentId: "6", body: { new_rank: 3 } },
          ],
        },
        { method: "GET", url: `${PATH}/new_accounts?$select=new_name,new_rank&$filter=new_code eq 'B-1'&$expand=new_contacts($select=new_name;$expand=new_tags($select=new_name),new_tasks($select=new_name))` },
      ]);
      expect(r.headers["OData-Version"]).toBe("4.0");
      const parts = parseMultipart(r);
      expect(parts.map((p) => p.status)).toEqual([200, 204, 204, 204, 204, 204, 204, 200]);
      expect(parts[0]!.body).toBe(String(before.new_accounts));
      expect(parts.slice(1, 7).map((p) => p.contentId)).toEqual(["1", "2", "3", "4", "5", "6"]);
      expect(parts.slice(1, 7).every((p) => p.changeset === 0)).toBe(true);
      expect(parts[0]!.changeset).toBeUndefined();
      expect(parts[1]!.statusText).toBe("No Content");
      const account = idOf(parts[1]!.headers["odata-entityid"]);
      const contact = idOf(parts[2]!.headers["odata-entityid"]);
      const tag = idOf(parts[3]!.headers["odata-entityid"]);
      expect(parts[1]!.headers["odata-entityid"]).toBe(`${ROOT}/new_accounts(${account})`);
      expect(parts[2]!.headers["odata-entityid"]).toBe(`${ROOT}/new_contacts(${contact})`);
      expect(parts[6]!.headers["odata-entityid"]).toBe(`${ROOT}/new_accounts(${account})`);
      // the last GET sees what the change set wrote
      const seen = JSON.parse(parts[7]!.body);
      expect(seen.value).toHaveLength(1);
      expect(seen.value[0]).toMatchObject({ new_accountid: account, new_name: "Batch Account", new_rank: 3 });
      expect(seen.value[0].new_contacts).toHaveLength(1);
      expect(seen.value[0].new_contacts[0]).toMatchObject({ new_contactid: contact, new_name: "Batch Contact" });
      expect(seen.value[0].new_contacts[0].new_tags.map((t: any) => t.new_tagid)).toEqual([tag]);
      expect(seen.value[0].new_contacts[0].new_tasks.map((t: any) => t.new_name)).toEqual(["Batch Task"]);
      const after = await counts(service);
      expect(after).toEqual({ ...before, new_accounts: before.new_accounts! + 1, new_contacts: before.new_contacts! + 1, new_tags: before.new_tags! + 1, new_tasks: before.new_tasks! + 1, new_contact_tag: before.new_contact_tag! + 1 });
    });

    it("a $n reference names a Content-ID: a part without one cannot be referenced by its position", async () => {
      const before = await counts(service);
      const parts = parseMultipart(
        await postMultipart(
          [
            { method: "POST", url: "new_accounts", body: { new_name: "No Content-ID" } },
            { changeset: [{ method: "POST", url: "new_contacts", contentId: "7", body: { new_name: "Bound to $1?", "new_accountref@odata.bind": "$1" } }] },
          ],
          { Prefer: "odata.continue-on-error" },
        ),
      );
      expect(parts[0]!.status).toBe(204);
      const contact = parts.find((p) => p.contentId === "7")!;
      expect(contact.status, "POST with an unresolvable $1 reference").toBeGreaterThanOrEqual(400);
      expect((await counts(service)).new_contacts).toBe(before.new_contacts);
    });

    it("resolves $n only in a part's URL and in entity references, never inside other values", async () => {
      const parts = parseMultipart(
        await postMultipart([
          {
            changeset: [
              { method: "POST", url: "new_accounts", contentId: "1", body: { new_name: "Desk $1", new_code: "REF-1" } },
              { method: "POST", url: "new_contacts", contentId: "2", body: { new_name: "costs $1/2 ('$1')", "new_accountref@odata.bind": "$1" } },
            ],
          },
          { method: "GET", url: "new_accounts?$filter=new_name eq 'Desk $1'&$select=new_name" },
        ]),
      );
      expect(parts.map((p) => p.status)).toEqual([204, 204, 200]);
      const account = idOf(parts[0]!.headers["odata-entityid"])!;
      const contact = idOf(parts[1]!.headers["odata-entityid"])!;
      expect(await nameOf("new_accounts", account)).toBe("Desk $1");
      const saved = await get(`new_contacts(${contact})?$select=new_name,_new_accountref_value`);
      expect(saved).toMatchObject({ new_name: "costs $1/2 ('$1')", _new_accountref_value: account });
      // A query literal is data too.
      expect(JSON.parse(parts[2]!.body).value.map((a: { new_name: string }) => a.new_name)).toEqual(["Desk $1"]);
    });

    it("a part whose absolute URL names another host is refused (400 in its part), not served", async () => {
      const before = await counts(service);
      const parts = parseMultipart(await postMultipart([{ method: "POST", url: `http://elsewhere.example${PATH}/new_tags`, body: { new_name: "foreign" } }], { Prefer: "odata.continue-on-error" }));
      expect(parts[0]!.status).toBe(400);
      expect(JSON.parse(parts[0]!.body).error.message).toMatch(/another host/);
      expect(await counts(service)).toEqual(before);
    });

    it("takes absolute part URLs naming the service as the client sees it: a default port, X-Forwarded-Host", async () => {
      const cases: [Record<string, string>, string][] = [
        [{ Host: "localhost:80" }, `http://localhost${PATH}/new_tags`],
        [{ Host: "internal:8080", "X-Forwarded-Host": "public.example", "X-Forwarded-Proto": "https" }, `https://public.example${PATH}/new_tags`],
      ];
      for (const [headers, url] of cases) {
        const parts = parseMultipart(await postMultipart([{ method: "GET", url: `${url}?$top=1` }], headers));
        expect(parts[0]!.status, `${url}: ${parts[0]!.body}`).toBe(200);
      }
    });

    it("resolves $1 when the service builds its URLs from a configured baseUrl", async () => {
      if (kind !== "sqlite") return;
      const own = await createService({ database: ":memory:", security: "none", baseUrl: "https://crm.example.com" });
      try {
        await defineCrm(Object.assign(own, { dispose: () => own.close() }));
        const { contentType, body } = multipart([{ changeset: [{ method: "POST", url: "new_accounts", contentId: "1", body: { new_name: "Via baseUrl" } }, { method: "PATCH", url: "$1", contentId: "2", body: { new_rank: 2 } }] }]);
        const r = await own.request("POST", "$batch", { headers: { "Content-Type": contentType }, body });
        expect(parseMultipart(r).map((p) => p.status), r.body).toEqual([204, 204]);
      } finally {
        await own.close();
      }
    });

    it("a Content-ID may be used again in another change set, where $n names that change set's request", async () => {
      const parts = parseMultipart(
        await postMultipart([
          { changeset: [{ method: "POST", url: "new_accounts", contentId: "1", body: { new_name: "First set" } }, { method: "PATCH", url: "$1", contentId: "2", body: { new_rank: 1 } }] },
          { changeset: [{ method: "POST", url: "new_accounts", contentId: "1", body: { new_name: "Second set" } }, { method: "PATCH", url: "$1", contentId: "2", body: { new_rank: 2 } }] },
        ]),
      );
      expect(parts.map((p) => p.status)).toEqual([204, 204, 204, 204]);
      expect(await get(`new_accounts(${idOf(parts[2]!.headers["odata-entityid"])})?$select=new_name,new_rank`)).toMatchObject({ new_name: "Second set", new_rank: 2 });
      expect(await get(`new_accounts(${idOf(parts[0]!.headers["odata-entityid"])})?$select=new_name,new_rank`)).toMatchObject({ new_name: "First set", new_rank: 1 });
    });

    it("a batch body that is not UTF-8 is a 400 and runs nothing", async () => {
      const before = await counts(service);
      const { contentType, body } = multipart([{ method: "POST", url: "new_tags", body: { new_name: "caf\u00e9" } }]);
      const bytes = Buffer.from(body.replace("caf\u00e9", "caf\u0000"), "utf8");
      bytes[bytes.indexOf(0)] = 0xe9;
      const r = await service.request("POST", "$batch", { headers: { "Content-Type": contentType }, body: bytes });
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toMatch(/UTF-8/);
      expect(await counts(service)).toEqual(before);
    });

    it("answers Prefer: return=representation inside a part with the entity", async () => {
      const parts = parseMultipart(await postMultipart([{ changeset: [{ method: "POST", url: "new_tags", contentId: "1", body: { new_name: "represented" }, headers: { Prefer: "return=representation" } }] }]));
      expect(parts).toHaveLength(1);
      expect(parts[0]!.status).toBe(201);
      expect(parts[0]!.headers["content-type"]).toMatch(/^application\/json/);
      expect(JSON.parse(parts[0]!.body)).toMatchObject({ new_name: "represented" });
    });

    it("a change set whose 3rd of 3 requests fails leaves the store unchanged and names the failing request and why", async () => {
      const before = await counts(service);
      const r = await postMultipart([
        {
          changeset: [
            { method: "POST", url: "new_accounts", contentId: "1", body: { new_name: "Rolled back", new_code: "RB-1" } },
            { method: "POST", url: "new_contacts", contentId: "2", body: { new_name: "Rolled back too", "new_accountref@odata.bind": "$1" } },
            { method: "POST", url: "new_tasks", contentId: "3", body: { new_name: "Bad", new_priority: 99, "new_contactref@odata.bind": "$2" } },
          ],
        },
      ]);
      const parts = parseMultipart(r);
      const failure = parts.find((p) => p.status >= 400);
      expect(failure, r.body).toBeDefined();
      expect(failure!.status).toBe(400);
      expect(failure!.contentId).toBe("3");
      expect(JSON.parse(failure!.body).error.message).toContain("new_priority");
      expect(parts.filter((p) => p.status < 300), "no request of the failed change set reports success").toEqual([]);
      expect(await counts(service)).toEqual(before);
      expect((await get("new_accounts?$filter=new_code eq 'RB-1'")).value).toEqual([]);
    });

    it("a change set failing on a duplicate key, on a missing row or on a $ref also rolls back everything", async () => {
      await create(service, "new_accounts", { new_name: "Taken", new_code: "TAKEN-1" });
      for (const failing of [
        { method: "POST", url: "new_accounts", contentId: "3", body: { new_name: "Dup", new_code: "TAKEN-1" } },
        { method: "PATCH", url: `new_accounts(${MISSING})`, contentId: "3", body: { new_rank: 1 }, headers: { "If-Match": "*" } },
        { method: "POST", url: "$2/new_tags/$ref", contentId: "3", body: { "@odata.id": `${ROOT}/new_tags(${MISSING})` } },
        { method: "DELETE", url: `new_tags(${MISSING})`, contentId: "3" },
      ] as Req[]) {
        const before = await counts(service);
        const parts = parseMultipart(
          await postMultipart([
            {
              changeset: [
                { method: "POST", url: "new_accounts", contentId: "1", body: { new_name: "Should vanish" } },
                { method: "POST", url: "new_contacts", contentId: "2", body: { new_name: "Should vanish", "new_accountref@odata.bind": "$1" } },
                failing,
              ],
            },
          ]),
        );
        expect(parts.filter((p) => p.status < 300), `${failing.method} ${failing.url}`).toEqual([]);
        const failure = parts.find((p) => p.status >= 400)!;
        expect(failure.contentId).toBe("3");
        expect(failure.status).toBeLessThan(500);
        expect(await counts(service), `${failing.method} ${failing.url}`).toEqual(before);
      }
    });

    it("change sets are independent: an earlier one stays committed when a later one fails, and processing stops there", async () => {
      const before = await counts(service);
      const parts = parseMultipart(
        await postMultipart([
          { changeset: [{ method: "POST", url: "new_tags", contentId: "1", body: { new_name: "cs-first" } }, { method: "PATCH", url: "$1", contentId: "2", body: { new_weight: 7 } }] },
          { changeset: [{ method: "POST", url: "new_tags", contentId: "3", body: { new_name: "cs-second" } }, { method: "POST", url: "new_tags", contentId: "4", body: { new_name: "cs-second", new_weight: "x" } }] },
          { changeset: [{ method: "POST", url: "new_tags", contentId: "5", body: { new_name: "cs-third" } }] },
          { method: "POST", url: "new_tags", body: { new_name: "cs-after" } },
        ]),
      );
      expect(parts.map((p) => [p.contentId, p.status])).toEqual([
        ["1", 204],
        ["2", 204],
        ["4", 400],
      ]);
      expect(parts[0]!.changeset).not.toBe(parts[2]!.changeset);
      expect((await counts(service)).new_tags).toBe(before.new_tags! + 1);
      expect((await get("new_tags?$select=new_name,new_weight&$filter=startswith(new_name,'cs-')")).value.map((t: any) => [t.new_name, t.new_weight])).toEqual([["cs-first", 7]]);
    });

    it("requests outside change sets run in order and processing stops at the first failure", async () => {
      const before = await counts(service);
      let r: Response;
      const parts = parseMultipart(
        (r = await postMultipart([
          { method: "POST", url: "new_tags", body: { new_name: "stop-1" } },
          { method: "POST", url: "new_tags", body: { new_weight: 1 } },
          { method: "POST", url: "new_tags", body: { new_name: "stop-3" } },
          { changeset: [{ method: "POST", url: "new_tags", contentId: "9", body: { new_name: "stop-4" } }] },
        ])),
      );
      expect(parts.map((p) => p.status)).toEqual([204, 400]);
      expect(JSON.parse(parts[1]!.body).error.message).toContain("new_name");
      expect(r.status, "the batch answers with the status of the request it stopped at").toBe(400);
      expect((await counts(service)).new_tags).toBe(before.new_tags! + 1);
      expect((await get("new_tags?$filter=startswith(new_name,'stop-')")).value.map((t: any) => t.new_name)).toEqual(["stop-1"]);
    });

    it("with Prefer: odata.continue-on-error every request runs and the preference is applied", async () => {
      const before = await counts(service);
      const r = await postMultipart(
        [
          { method: "POST", url: "new_tags", body: { new_name: "coe-1" } },
          { method: "POST", url: "new_tags", body: { new_weight: 1 } },
          { changeset: [{ method: "POST", url: "new_tags", contentId: "1", body: { new_name: "coe-cs" } }, { method: "POST", url: "new_nope", contentId: "2", body: {} }] },
          { method: "GET", url: `new_tags(${MISSING})` },
          { method: "POST", url: "new_tags", body: { new_name: "coe-3" } },
        ],
        { Prefer: "odata.continue-on-error" },
      );
      expect(r.headers["Preference-Applied"]).toContain("odata.continue-on-error");
      const parts = parseMultipart(r);
      const outside = parts.filter((p) => p.changeset === undefined);
      expect(outside.map((p) => p.status)).toEqual([204, 400, 404, 204]);
      const cs = parts.filter((p) => p.changeset !== undefined || p.contentId === "2");
      expect(cs.some((p) => p.status === 404 && p.contentId === "2")).toBe(true);
      expect(cs.filter((p) => p.status < 300)).toEqual([]);
      expect((await counts(service)).new_tags).toBe(before.new_tags! + 2);
      expect((await get("new_tags?$filter=startswith(new_name,'coe-')&$orderby=new_name")).value.map((t: any) => t.new_name)).toEqual(["coe-1", "coe-3"]);
    });

    it("each request of a batch is validated like a lone one: its own 4xx in its part", async () => {
      const a = await create(service, "new_accounts", { new_name: "Validated" });
      const parts = parseMultipart(
        await postMultipart(
          [
            { method: "POST", url: "new_contacts", body: { new_name: "x", new_age: "old" } },
            { method: "POST", url: "new_contacts", body: { new_name: "x", "new_accountref@odata.bind": `/new_accounts(${MISSING})` } },
            { method: "POST", url: "new_contacts", body: "{not json" },
            { method: "PATCH", url: `new_accounts(${a})`, body: { new_nope: 1 } },
            { method: "GET", url: "new_accounts?$filter=new_nope eq 1" },
            { method: "GET", url: "new_accounts?$expand=new_bogus" },
            { method: "DELETE", url: "new_accounts" },
            { method: "POST", url: "$batch", body: {} },
            { method: "GET", url: `new_accounts(${a})?$select=new_name` },
          ],
          { Prefer: "odata.continue-on-error" },
        ),
      );
      expect(parts.map((p) => p.status)).toEqual([400, 400, 400, 400, 400, 400, 405, 400, 200]);
      const messages = parts.slice(0, 6).map((p) => JSON.parse(p.body).error.message as string);
      expect(messages[0]).toContain("new_age");
      expect(messages[1]).toContain("new_accountref");
      expect(messages[1]).toContain(MISSING);
      expect(messages[3]).toContain("new_nope");
      expect(messages[4]).toContain("new_nope");
      expect(messages[5]).toContain("new_bogus");
      expect(JSON.parse(parts[8]!.body).new_name).toBe("Validated");
    });

    it("GET inside a change set is a 400 and nothing runs", async () => {
      const before = await counts(service);
      const r = await postMultipart([{ method: "POST", url: "new_tags", body: { new_name: "never" } }, { changeset: [{ method: "POST", url: "new_tags", contentId: "1", body: { new_name: "never" } }, { method: "GET", url: "new_tags", contentId: "2" }] }]);
      expect(r.status, r.body).toBe(400);
      expect(json(r).error.message).toMatch(/GET/);
      expect(await counts(service)).toEqual(before);
    });

    it("more than 1000 requests is a 400 and nothing runs; 1000 are accepted", async () => {
      const before = await counts(service);
      const tooMany = Array.from({ length: 1001 }, (_, i): Req => ({ method: "POST", url: "new_tags", body: { new_name: `limit-${i}` } }));
      const r = await postMultipart(tooMany);
      expect(r.status, r.body?.slice(0, 300)).toBe(400);
      expect(json(r).error.message).toContain("1000");
      // also when the requests are spread over change sets
      const spread = await postMultipart([{ changeset: tooMany.slice(0, 600).map((q, i) => ({ ...q, contentId: String(i + 1) })) }, ...tooMany.slice(600)]);
      expect(spread.status, spread.body?.slice(0, 300)).toBe(400);
      expect(await counts(service)).toEqual(before);
      const ok = parseMultipart(await postMultipart(Array.from({ length: 1000 }, (): Req => ({ method: "GET", url: "new_tags/$count" }))));
      expect(ok).toHaveLength(1000);
      expect(ok.every((p) => p.status === 200)).toBe(true);
    });

    it("a malformed batch is a 400 and runs nothing", async () => {
      const before = await counts(service);
      const good = multipart([{ method: "POST", url: "new_tags", body: { new_name: "malformed" } }, { changeset: [{ method: "POST", url: "new_tags", contentId: "1", body: { new_name: "malformed" } }] }], "batch_X1");
      const twice = multipart([{ changeset: [{ method: "POST", url: "new_tags", contentId: "1", body: { new_name: "malformed" } }, { method: "POST", url: "new_tags", contentId: "1", body: { new_name: "malformed" } }] }]);
      const cases: [string, string, string][] = [
        ["boundary of the header differs from the body's", "multipart/mixed; boundary=batch_OTHER", good.body],
        ["no boundary parameter", "multipart/mixed", good.body],
        ["missing closing delimiter", good.contentType, good.body.replace("--batch_X1--\r\n", "")],
        ["missing closing delimiter of a change set", good.contentType, good.body.replace(/--changeset_\w+--\r\n/, "")],
        ["bad request line (unknown method)", good.contentType, good.body.replace("POST new_tags HTTP/1.1", "FETCH new_tags HTTP/1.1")],
        ["bad request line (no URL)", good.contentType, good.body.replace("POST new_tags HTTP/1.1", "POST")],
        ["bad request line (garbage)", good.contentType, good.body.replace("POST new_tags HTTP/1.1", "this is not a request line")],
        ["a part that is not application/http", good.contentType, good.body.replace("Content-Type: application/http", "Content-Type: text/plain")],
        ["a malformed header line", good.contentType, good.body.replace("Content-Transfer-Encoding: binary", "Content-Transfer-Encoding binary")],
        ["an empty body", good.contentType, ""],
        ["no parts at all", good.contentType, "--batch_X1--\r\n"],
        ["a Content-ID used twice in one change set", twice.contentType, twice.body],
      ];
      for (const [what, contentType, body] of cases) {
        const r = await postRaw(contentType, body);
        expect(r.status, `${what}: ${r.body}`).toBe(400);
        expect(json(r).error.message, what).toBeTruthy();
      }
      // the well-formed batch itself runs (the cases above are only wrong where they say)
      const ok = parseMultipart(await postRaw(good.contentType, good.body.replace(/malformed/g, "wellformed")));
      expect(ok.map((p) => p.status)).toEqual([204, 204]);
      expect((await counts(service)).new_tags).toBe(before.new_tags! + 2);
      expect((await get("new_tags?$filter=new_name eq 'malformed'")).value).toEqual([]);
    });

    it("a $batch that is not multipart/mixed or JSON is refused, and $batch only takes POST", async () => {
      const r = await postRaw("text/plain", "hello");
      expect(r.status).toBe(415);
      const g = await service.request("GET", "$batch");
      expect(g.status).toBe(405);
    });
  });

  // ---------------------------------------------------------------- OData 4.01 JSON batches

  describe("JSON batch", () => {
    it("resolves $id only in URLs and entity references, and refuses a batch naming a property twice", async () => {
      const r = await postJson([
        { id: "acc", method: "POST", url: "new_accounts", body: { new_name: "Ask for '$acc'", new_code: "REF-J" }, atomicityGroup: "g" },
        { id: "con", method: "POST", url: "new_contacts", body: { new_name: "$acc", "new_accountref@odata.bind": "$acc" }, atomicityGroup: "g", dependsOn: ["acc"] },
      ]);
      expect(r.status, r.body).toBe(200);
      const [acc, con] = json(r).responses;
      expect([acc.status, con.status]).toEqual([204, 204]);
      const account = idOf(acc.headers["OData-EntityId"])!;
      expect(await nameOf("new_accounts", account)).toBe("Ask for '$acc'");
      expect(await get(`new_contacts(${idOf(con.headers["OData-EntityId"])})?$select=new_name,_new_accountref_value`)).toMatchObject({ new_name: "$acc", _new_accountref_value: account });
      const before = await counts(service);
      const twice = await service.request("POST", "$batch", {
        headers: { "Content-Type": "application/json" },
        body: '{"requests":[{"id":"1","method":"POST","url":"new_tags","body":{"new_name":"kept?"}}],"requests":[]}',
      });
      expect(twice.status, twice.body).toBe(400);
      expect(json(twice).error.message).toMatch(/'requests' appears more than once/);
      expect(await counts(service)).toEqual(before);
    });

    it("runs requests and atomicity groups with $id references, answering each by id", async () => {
      const before = await counts(service);
      const r = await postJson([
        { id: "a", method: "POST", url: "new_accounts", headers: { "content-type": "application/json" }, body: { new_name: "Json Account", new_code: "J-1" }, atomicityGroup: "g1" },
        { id: "c", method: "POST", url: `${PATH}/new_contacts`, body: { new_name: "Json Contact", "new_accountref@odata.bind": "$a" }, atomicityGroup: "g1", dependsOn: ["a"] },
        { id: "t", method: "POST", url: `http://localhost${PATH}/new_tags`, body: { new_name: "json-tag" }, atomicityGroup: "g1" },
        { id: "link", method: "POST", url: "$c/new_tags/$ref", body: { "@odata.id": "$t" }, dependsOn: ["g1"] },
        { id: "read", method: "GET", url: "$a?$select=new_name&$expand=new_contacts($select=new_name;$expand=new_tags($select=new_name))", dependsOn: ["link"] },
      ]);
      expect(r.status, r.body).toBe(200);
      expect(r.headers["Content-Type"]).toMatch(/^application\/json/);
      const { responses } = json(r);
      expect(responses.map((x: any) => [x.id, x.status])).toEqual([
        ["a", 204],
        ["c", 204],
        ["t", 204],
        ["link", 204],
        ["read", 200],
      ]);
      expect(responses.slice(0, 3).map((x: any) => x.atomicityGroup)).toEqual(["g1", "g1", "g1"]);
      const account = idOf(responses[0].headers["OData-EntityId"]);
      expect(responses[0].headers["OData-EntityId"]).toBe(`${ROOT}/new_accounts(${account})`);
      expect(responses[4].body).toMatchObject({ new_accountid: account, new_name: "Json Account" });
      expect(responses[4].body.new_contacts[0].new_name).toBe("Json Contact");
      expect(responses[4].body.new_contacts[0].new_tags.map((t: any) => t.new_name)).toEqual(["json-tag"]);
      expect(await counts(service)).toEqual({ ...before, new_accounts: before.new_accounts! + 1, new_contacts: before.new_contacts! + 1, new_tags: before.new_tags! + 1, new_contact_tag: before.new_contact_tag! + 1 });
    });

    it("a failed atomicity group is rolled back as a whole; a request depending on it is answered 424", async () => {
      const before = await counts(service);
      const r = await postJson(
        [
          { id: "1", method: "POST", url: "new_accounts", body: { new_name: "Group account" }, atomicityGroup: "g" },
          { id: "2", method: "POST", url: "new_contacts", body: { new_name: "Group contact", "new_accountref@odata.bind": "$1" }, atomicityGroup: "g" },
          { id: "3", method: "POST", url: "new_tasks", body: { new_name: "Bad task", new_priority: 0, "new_contactref@odata.bind": "$2" }, atomicityGroup: "g" },
          { id: "4", method: "POST", url: "new_tags", body: { new_name: "depends on g" }, dependsOn: ["g"] },
          { id: "5", method: "POST", url: "new_tags", body: { new_name: "depends on 2" }, dependsOn: ["2"] },
          { id: "6", method: "POST", url: "new_tags", body: { new_name: "independent" } },
        ],
        { Prefer: "odata.continue-on-error" },
      );
      expect(r.status, r.body).toBe(200);
      const byId = new Map<string, any>(json(r).responses.map((x: any) => [x.id, x]));
      expect(byId.get("3").status).toBe(400);
      expect(byId.get("3").body.error.message).toContain("new_priority");
      for (const id of ["1", "2"]) {
        const x = byId.get(id);
        // rolled back: whatever it reports, it is not a success
        if (x) expect(x.status, JSON.stringify(x)).toBeGreaterThanOrEqual(400);
      }
      expect(byId.get("4").status).toBe(424);
      expect(byId.get("5").status).toBe(424);
      expect(byId.get("6").status).toBe(204);
      expect(await counts(service)).toEqual({ ...before, new_tags: before.new_tags! + 1 });
    });

    it("concurrent atomicity groups upserting the same new alternate key all succeed and leave one row (as lone upserts do)", async () => {
      const before = await counts(service);
      const batches = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          postJson([
            { id: "1", method: "PATCH", url: "new_contacts(new_code='BATCH-RACE')", body: { new_name: `racer ${i}` }, atomicityGroup: "g" },
            { id: "2", method: "POST", url: "new_tags", body: { new_name: `race-tag-${i}` }, atomicityGroup: "g" },
          ]),
        ),
      );
      for (const r of batches) {
        expect(r.status, r.body).toBe(200);
        for (const x of json(r).responses) expect(x.status, JSON.stringify(x)).toBeLessThan(300);
      }
      const after = await counts(service);
      expect(after.new_contacts).toBe(before.new_contacts! + 1);
      expect(after.new_tags).toBe(before.new_tags! + 8);
    });

    it("a request answered like a lone one inside an atomicity group (re-linking a linked pair) does not break the group", async () => {
      const c = await create(service, "new_contacts", { new_name: "Linked twice" });
      const t = await create(service, "new_tags", { new_name: "linked-twice" });
      const lone = await service.request("POST", `new_contacts(${c})/new_tags/$ref`, { body: { "@odata.id": `${ROOT}/new_tags(${t})` } });
      expect(lone.status, lone.body).toBe(204);
      const again = await service.request("POST", `new_contacts(${c})/new_tags/$ref`, { body: { "@odata.id": `${ROOT}/new_tags(${t})` } });
      const before = await counts(service);
      const r = await postJson([
        { id: "1", method: "POST", url: `new_contacts(${c})/new_tags/$ref`, body: { "@odata.id": `${ROOT}/new_tags(${t})` }, atomicityGroup: "g" },
        { id: "2", method: "POST", url: "new_tags", body: { new_name: "after relink" }, atomicityGroup: "g" },
      ]);
      const responses = json(r).responses as any[];
      expect(responses[0].status, JSON.stringify(responses[0])).toBe(again.status);
      expect(responses.find((x) => x.id === "2")?.status, JSON.stringify(responses)).toBe(204);
      expect((await counts(service)).new_tags).toBe(before.new_tags! + 1);
      // and the same in a multipart change set
      const parts = parseMultipart(
        await postMultipart([
          {
            changeset: [
              { method: "POST", url: `new_contacts(${c})/new_tags/$ref`, contentId: "1", body: { "@odata.id": `${ROOT}/new_tags(${t})` } },
              { method: "POST", url: "new_tags", contentId: "2", body: { new_name: "after relink 2" } },
            ],
          },
        ]),
      );
      expect(parts.map((p) => p.status)).toEqual([again.status, 204]);
    });

    it("a deep insert inside an atomicity group is rolled back with the group", async () => {
      const before = await counts(service);
      const r = await postJson(
        [
          { id: "1", method: "POST", url: "new_accounts", body: { new_name: "Deep in group", new_contacts: [{ new_name: "Deep contact", new_tasks: [{ new_name: "Deep task" }], new_tags: [{ new_name: "deep-tag" }] }] }, atomicityGroup: "g" },
          { id: "2", method: "POST", url: "new_tasks", body: { new_name: "Bad", new_priority: 6 }, atomicityGroup: "g" },
        ],
        { Prefer: "odata.continue-on-error" },
      );
      const byId = new Map<string, any>(json(r).responses.map((x: any) => [x.id, x]));
      expect(byId.get("2").status).toBe(400);
      expect(byId.get("1")?.status ?? 424).toBeGreaterThanOrEqual(400);
      expect(await counts(service)).toEqual(before);
    });

    it("without continue-on-error processing stops after the first failure", async () => {
      const before = await counts(service);
      const r = await postJson([
        { id: "1", method: "POST", url: "new_tags", body: { new_name: "first" } },
        { id: "2", method: "POST", url: "new_tags", body: { new_name: "in group" }, atomicityGroup: "g" },
        { id: "3", method: "POST", url: "new_tags", body: { new_weight: "heavy" }, atomicityGroup: "g" },
        { id: "4", method: "POST", url: "new_tags", body: { new_name: "after" } },
      ]);
      const responses = json(r).responses as any[];
      expect(responses.find((x) => x.id === "1").status).toBe(204);
      expect(responses.find((x) => x.id === "3").status).toBe(400);
      expect(responses.find((x) => x.id === "4")).toBeUndefined();
      expect((await counts(service)).new_tags).toBe(before.new_tags! + 1);
    });

    it("validates each request like a lone one", async () => {
      const r = await postJson(
        [
          { id: "1", method: "POST", url: "new_contacts", body: { new_name: "x", new_age: 500 } },
          { id: "2", method: "GET", url: "new_contacts?$expand=new_bogus" },
          { id: "3", method: "GET", url: "new_nope" },
          { id: "4", method: "GET", url: "new_tags?$top=1&$select=new_name" },
        ],
        { Prefer: "odata.continue-on-error" },
      );
      const responses = json(r).responses as any[];
      expect(responses.map((x) => x.status)).toEqual([400, 400, 404, 200]);
      expect(responses[0].body.error.message).toContain("new_age");
      expect(responses[1].body.error.message).toContain("new_bogus");
      expect(responses[3].body.value).toHaveLength(1);
    });

    it("more than 1000 requests is a 400 and nothing runs", async () => {
      const before = await counts(service);
      const r = await postJson(Array.from({ length: 1001 }, (_, i) => ({ id: String(i), method: "POST", url: "new_tags", body: { new_name: `json-limit-${i}` } })));
      expect(r.status, r.body?.slice(0, 300)).toBe(400);
      expect(json(r).error.message).toContain("1000");
      expect(await counts(service)).toEqual(before);
    });

    it("a malformed JSON batch is a 400 and runs nothing", async () => {
      const before = await counts(service);
      const post = { method: "POST", url: "new_tags", body: { new_name: "never-json" } };
      const cases: [string, string][] = [
        ["not JSON", '{"requests": ['],
        ["no requests array", JSON.stringify({ request: [] })],
        ["a request without id", JSON.stringify({ requests: [{ ...post, id: "1" }, { method: "GET", url: "new_tags" }] })],
        ["a duplicate id", JSON.stringify({ requests: [{ ...post, id: "1" }, { ...post, id: "1" }] })],
        ["an unknown method", JSON.stringify({ requests: [{ ...post, id: "1" }, { id: "2", method: "FETCH", url: "new_tags" }] })],
        ["no url", JSON.stringify({ requests: [{ ...post, id: "1" }, { id: "2", method: "GET" }] })],
        ["dependsOn a later request", JSON.stringify({ requests: [{ ...post, id: "1", dependsOn: ["2"] }, { ...post, id: "2" }] })],
        ["dependsOn an unknown id", JSON.stringify({ requests: [{ ...post, id: "1" }, { ...post, id: "2", dependsOn: ["zzz"] }] })],
        ["an atomicity group split in two", JSON.stringify({ requests: [{ ...post, id: "1", atomicityGroup: "g" }, { ...post, id: "2" }, { ...post, id: "3", atomicityGroup: "g" }] })],
        ["a GET inside an atomicity group (as inside a change set)", JSON.stringify({ requests: [{ ...post, id: "1", atomicityGroup: "g" }, { id: "2", method: "GET", url: "new_tags", atomicityGroup: "g" }] })],
        ["an empty atomicity group name", JSON.stringify({ requests: [{ ...post, id: "1", atomicityGroup: "" }] })],
        ["no requests at all (as an empty multipart batch)", JSON.stringify({ requests: [] })],
      ];
      for (const [what, body] of cases) {
        const r = await postRaw("application/json", body);
        expect(r.status, `${what}: ${r.body}`).toBe(400);
      }
      expect(await counts(service)).toEqual(before);
    });
  });
});
