/**
 * Benchmark: the same requests through the full OData stack and as hand-written SQL behind a bare
 * node:http handler on the same SQLite connection, in one run; prints requests/s and the ratios.
 *
 *   npm run bench              (100,000 rows, 3 s per case)
 *   BENCH_ROWS=20000 BENCH_SECONDS=1 npm run bench
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import { Worker } from "node:worker_threads";
import { createService } from "../src/index.js";
import { SqliteExecutor } from "../src/store/sqlite-executor.js";
import { SqlQueryCompiler } from "../src/store/sql-compiler.js";
import { ExpressionBinder, bindSelect } from "../src/odata/binder.js";
import { installLinkedInTalentHub } from "../src/linkedin/talent-hub.js";

const ROWS = Number(process.env.BENCH_ROWS ?? 100_000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
/** Each side of a comparison runs in this many alternating slices. */
const SLICES = Number(process.env.BENCH_SLICES ?? 3);

const LAST_NAMES = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson", "Clarke"];
const FIRST_NAMES = ["Ada", "Alan", "Grace", "Linus", "Barbara", "Edsger", "Donald", "Frances", "Ken", "Margaret"];

async function main() {
  const dir = mkdtempSync(join(tmpdir(), "vep-bench-"));
  // The benchmark measures the OData layer and the store; token checks are measured apart (see below).
  const service = await createService({ database: join(dir, "bench.sqlite"), security: "none" });
  try {
    await service.defineEntity({
      LogicalName: "bench_person",
      PrimaryNameAttribute: "bench_lastname",
      Attributes: [
        { LogicalName: "bench_firstname", AttributeType: "String", MaxLength: 100 },
        { LogicalName: "bench_lastname", AttributeType: "String", MaxLength: 100 },
        { LogicalName: "bench_email", AttributeType: "String", MaxLength: 320 },
        { LogicalName: "bench_age", AttributeType: "Integer" },
        { LogicalName: "bench_salary", AttributeType: "Decimal", Precision: 2 },
        { LogicalName: "bench_active", AttributeType: "Boolean" },
        { LogicalName: "bench_startdate", AttributeType: "DateTime", DateTimeBehavior: "DateOnly" },
        { LogicalName: "bench_city", AttributeType: "String", MaxLength: 100 },
      ],
    });
    // 12 columns: id, 8 fields, createdon, modifiedon, versionnumber.
    const ex = service.store.executor as SqliteExecutor;
    const ids: string[] = [];
    const insert = ex.db.prepare(
      `INSERT INTO bench_person (bench_personid, bench_firstname, bench_lastname, bench_email, bench_age, bench_salary, bench_active, bench_startdate, bench_city, createdon, modifiedon, versionnumber) VALUES (?,?,?,?,?,?,?,?,?,?,?,1)`,
    );
    const t0 = Date.now();
    ex.db.transaction(() => {
      for (let i = 0; i < ROWS; i++) {
        const id = randomUUID();
        ids.push(id);
        const last = LAST_NAMES[i % LAST_NAMES.length]! + String(i).padStart(6, "0");
        const now = new Date(Date.UTC(2020, 0, 1) + i * 60000).toISOString();
        insert.run(id, FIRST_NAMES[i % FIRST_NAMES.length], last, `p${i}@example.com`, 18 + (i % 60), 30000 + (i % 1000) * 10.5, i % 2, `20${10 + (i % 15)}-0${1 + (i % 9)}-1${i % 9}`, `City${i % 50}`, now, now);
      }
    })();
    console.log(`Loaded ${ROWS} rows of a 12-column entity in ${Date.now() - t0} ms`);

    // Candidates with their workers, for the $expand case.
    await installLinkedInTalentHub(service, { generate: true });
    const CANDIDATES = Number(process.env.BENCH_CANDIDATES ?? 5000);
    ex.db.transaction(() => {
      const w = ex.db.prepare(`INSERT INTO "HcmWorkerEntity" ("Id","PersonnelNumber","FirstName","LastName","Email","RecVersion") VALUES (?,?,?,?,?,1)`);
      const c = ex.db.prepare(`INSERT INTO "HcmLinkedInExportedCandidateEntity" ("Id","CandidateId","FirstName","LastName","Email","StartDate","JobTitle","Location","HireStatus","WorkerId","RecVersion") VALUES (?,?,?,?,?,?,?,?,?,?,1)`);
      for (let i = 0; i < CANDIDATES; i++) {
        const worker = randomUUID();
        w.run(worker, String(i).padStart(6, "0"), FIRST_NAMES[i % FIRST_NAMES.length], LAST_NAMES[i % LAST_NAMES.length], `w${i}@example.com`);
        c.run(randomUUID(), `ATS-${i}`, FIRST_NAMES[i % FIRST_NAMES.length], LAST_NAMES[i % LAST_NAMES.length], `c${i}@example.com`, "2027-01-04", "Engineer", "London", "Hired", worker);
      }
    })();

    const odata = await service.listen(0);
    const bare = createServer((req, res) => bareHandler(ex, req, res));
    await new Promise<void>((r) => bare.listen(0, "127.0.0.1", () => r()));
    const barePort = (bare.address() as { port: number }).port;
    const odataBase = odata.url.replace(/\/$/, "");

    // A deep page: the position after row 50,000 in last-name order, as a nextLink carries it.
    const deep = ex.db.prepare(`SELECT bench_lastname AS n, bench_personid AS id FROM bench_person ORDER BY bench_lastname, bench_personid LIMIT 1 OFFSET ?`).get(Math.floor(ROWS / 2)) as { n: string; id: string };
    const token = Buffer.from(JSON.stringify({ p: [deep.n, deep.id], n: 0 })).toString("base64url");

    const cases = [
      { name: "read by key", odata: (i: number) => `${odataBase}/bench_persons(${ids[i % ids.length]})`, bare: (i: number) => `/key?id=${ids[i % ids.length]}` },
      { name: "startswith + orderby, $top=50", odata: () => `${odataBase}/bench_persons?$filter=startswith(bench_lastname,'Wil')&$orderby=bench_lastname&$top=50`, bare: () => `/startswith?prefix=Wil` },
      { name: "$count with filter", odata: () => `${odataBase}/bench_persons/$count?$filter=bench_age gt 50`, bare: () => `/count?age=50` },
      { name: "deep page (nextLink)", odata: () => `${odataBase}/bench_persons?$orderby=bench_lastname&$skiptoken=${token}`, bare: () => `/deep?name=${encodeURIComponent(deep.n)}&id=${deep.id}`, headers: { Prefer: "odata.maxpagesize=50" } },
    ];

    // The plan of the startswith query, as the OData layer compiles it: it must be an index range.
    const entity = service.model.entity("bench_person")!;
    const binder = new ExpressionBinder(entity);
    const compiled = new SqlQueryCompiler(ex.dialect, entity).compileSelect({
      query: { entity, filter: binder.bindFilter("startswith(bench_lastname,'Wil')"), orderBy: new ExpressionBinder(entity, new Map(), "$orderby").bindOrderBy("bench_lastname"), select: bindSelect(entity, undefined), count: false, expand: [] },
      limit: 51,
    });
    const plan = ex.db.prepare(`EXPLAIN QUERY PLAN ${compiled.sql}`).all(Object.fromEntries(compiled.params.map((v, i) => [i + 1, v]))) as { detail: string }[];
    console.log(`startswith plan: ${plan.map((p) => p.detail).join(" | ")}`);

    // $expand: a 5,000-row page of candidates with their worker against the same page alone.
    const page = `${odataBase}/mshr_hcmlinkedinexportedcandidateentities?$select=mshr_firstname,mshr_lastname,mshr_email&$top=5000`;
    const expanded = `${page}&$expand=mshr_fk_worker_id($select=mshr_personnelnumber,mshr_firstname,mshr_lastname)`;
    const statements = async (url: string) => {
      const objects = ex.queryNow.bind(ex);
      const arrays = ex.queryArraysNow.bind(ex);
      let n = 0;
      ex.queryNow = ((sql: string, params?: readonly unknown[]) => (n++, objects(sql, params))) as typeof ex.queryNow;
      ex.queryArraysNow = ((sql: string, params?: readonly unknown[]) => (n++, arrays(sql, params))) as typeof ex.queryArraysNow;
      try {
        const r = await fetch(url);
        await r.arrayBuffer();
      } finally {
        ex.queryNow = objects;
        ex.queryArraysNow = arrays;
      }
      return n;
    };
    console.log(`SQL statements per request: page ${await statements(page)}, page with $expand ${await statements(expanded)}`);

    console.log(`\n${SECONDS}s per side of each case in ${SLICES} alternating slices, ${CONCURRENCY} connections, clients in worker threads\n`);
    console.log(`${"case".padEnd(32)} ${"OData req/s".padStart(12)} ${"bare req/s".padStart(12)} ${"ratio".padStart(7)}`);
    for (const c of cases) {
      const urlsOData = Array.from({ length: 1000 }, (_, i) => c.odata(i * 7919));
      const urlsBare = Array.from({ length: 1000 }, (_, i) => `http://127.0.0.1:${barePort}${c.bare(i * 7919)}`);
      const r = await compare({ urls: urlsOData, headers: c.headers }, { urls: urlsBare });
      if (r.errors) console.log(`  (errors: ${r.errors})`);
      console.log(`${c.name.padEnd(32)} ${r.a.toFixed(0).padStart(12)} ${r.b.toFixed(0).padStart(12)} ${(r.a / r.b).toFixed(2).padStart(7)}`);
    }
    const e = await compare({ urls: [expanded] }, { urls: [page] });
    console.log(`${"5000 candidates, $expand worker".padEnd(32)} ${e.a.toFixed(1).padStart(12)} ${e.b.toFixed(1).padStart(12)} ${(e.a / e.b).toFixed(2).padStart(7)}   (expanded against the plain page; target ≥ 0.50; the expansion itself: ${(e.b / e.a - 1).toFixed(2)}× the plain page)`);
    // The same two requests without a socket: what the OData layer and the store cost, alternated request by
    // request so a slow spell of the machine weighs on both.
    const inProcess = await alternateInProcess(service, [page, expanded].map((u) => u.slice(odataBase.length + 1)));
    console.log(`${"  the same, in process".padEnd(32)} ${(1000 / inProcess[1]!).toFixed(1).padStart(12)} ${(1000 / inProcess[0]!).toFixed(1).padStart(12)} ${(inProcess[0]! / inProcess[1]!).toFixed(2).padStart(7)}   (no socket: the library's own cost, ${inProcess[1]!.toFixed(1)} against ${inProcess[0]!.toFixed(1)} ms a request)`);
    // The floor the store and HTTP set: the same two pages written by hand on the bare handler.
    const floor = await compare({ urls: [`http://127.0.0.1:${barePort}/candidates-expanded`] }, { urls: [`http://127.0.0.1:${barePort}/candidates`] });
    console.log(`${"  the same pages, bare".padEnd(32)} ${floor.a.toFixed(1).padStart(12)} ${floor.b.toFixed(1).padStart(12)} ${(floor.a / floor.b).toFixed(2).padStart(7)}   (hand-written SQL and JSON: what expanding costs without the OData layer)`);
    await odata.close();
    await new Promise<void>((r) => bare.close(() => r()));
  } finally {
    await service.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The same reads as hand-written SQL on the same connection, serialized as plain JSON. */
function bareHandler(ex: SqliteExecutor, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url!, "http://x");
  const q = (name: string) => url.searchParams.get(name)!;
  let body: string;
  switch (url.pathname) {
    case "/key":
      body = JSON.stringify(ex.prepare(`SELECT * FROM bench_person WHERE bench_personid = ?`).get(q("id")));
      break;
    case "/startswith":
      body = JSON.stringify({ value: ex.prepare(`SELECT * FROM bench_person WHERE bench_lastname GLOB ? ORDER BY bench_lastname LIMIT 50`).all(q("prefix") + "*") });
      break;
    case "/count":
      body = String((ex.prepare(`SELECT COUNT(*) AS c FROM bench_person WHERE bench_age > ?`).get(Number(q("age"))) as { c: number }).c);
      break;
    case "/deep":
      body = JSON.stringify({
        value: ex.prepare(`SELECT * FROM bench_person WHERE (bench_lastname, bench_personid) > (?, ?) ORDER BY bench_lastname, bench_personid LIMIT 50`).all(q("name"), q("id")),
      });
      break;
    case "/candidates":
    case "/candidates-expanded": {
      // The $expand case by hand: the same page and JSON shape, one statement, no OData layer.
      const expand = url.pathname === "/candidates-expanded";
      const rows = ex
        .prepare(
          expand
            ? `SELECT c."Id", c."FirstName", c."LastName", c."Email", c."RecVersion", w."Id", w."PersonnelNumber", w."FirstName", w."LastName", w."RecVersion" FROM "HcmLinkedInExportedCandidateEntity" c LEFT JOIN "HcmWorkerEntity" w ON w."Id" = c."WorkerId" ORDER BY c."Id" LIMIT 5000`
            : `SELECT c."Id", c."FirstName", c."LastName", c."Email", c."RecVersion" FROM "HcmLinkedInExportedCandidateEntity" c ORDER BY c."Id" LIMIT 5000`,
        )
        .raw(true)
        .all() as unknown[][];
      body = JSON.stringify({
        value: rows.map((r) => {
          const row: Record<string, unknown> = { "@odata.etag": `W/"${r[4]}"`, mshr_hcmlinkedinexportedcandidateentityid: r[0], mshr_firstname: r[1], mshr_lastname: r[2], mshr_email: r[3] };
          if (expand) row.mshr_fk_worker_id = r[5] === null ? null : { "@odata.etag": `W/"${r[9]}"`, mshr_hcmworkerentityid: r[5], mshr_personnelnumber: r[6], mshr_firstname: r[7], mshr_lastname: r[8] };
          return row;
        }),
      });
      break;
    }
    default:
      res.statusCode = 404;
      res.end();
      return;
  }
  res.setHeader("Content-Type", "application/json");
  res.end(body);
}

/** Mean milliseconds per request of each URL, sent in turn one request at a time, through `service.request`. */
async function alternateInProcess(service: Awaited<ReturnType<typeof createService>>, urls: string[]): Promise<number[]> {
  const total = urls.map(() => 0);
  const rounds = Math.max(20, Math.round(SECONDS * 20));
  for (let round = -5; round < rounds; round++) {
    for (let i = 0; i < urls.length; i++) {
      const t = performance.now();
      const r = await service.request("GET", urls[i]!);
      if (r.status !== 200) throw new Error(`${urls[i]}: ${r.status} ${r.body}`);
      if (round >= 0) total[i]! += performance.now() - t;
    }
  }
  return total.map((t) => t / rounds);
}

/**
 * A load client in a worker thread: CONCURRENCY keep-alive connections cycling through its URLs. It stays
 * alive between runs, so its connections stay warm; only requests that finish inside a run count.
 */
const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const http = require("node:http");
const agent = new http.Agent({ keepAlive: true, maxSockets: workerData.concurrency });
const { urls, headers, concurrency } = workerData;
let i = 0;
function one() {
  return new Promise((resolve) => {
    const req = http.get(urls[i++ % urls.length], { agent, headers }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode < 400));
    });
    req.on("error", () => resolve(false));
  });
}
parentPort.on("message", async (m) => {
  if (m.close) { agent.destroy(); process.exit(0); }
  // The window opens once every connection has completed a request (the pipeline is full) and closes
  // at the deadline; only completions inside it count, so neither filling nor draining skews the rate.
  let done = 0, errors = 0, completed = 0, opened;
  const end = performance.now() + m.seconds * 1000;
  async function loop() {
    while (performance.now() < end) {
      const ok = await one();
      const now = performance.now();
      if (now > end) break;
      if (opened === undefined) {
        if (++completed === concurrency) opened = now;
        continue;
      }
      if (ok) done++; else errors++;
    }
  }
  await Promise.all(Array.from({ length: concurrency }, loop));
  parentPort.postMessage({ done, errors, seconds: opened === undefined ? 0 : (end - opened) / 1000 });
});
`;

interface Loader {
  /** Requests completed in the measured window, and that window's length. */
  run(seconds: number): Promise<{ done: number; errors: number; seconds: number }>;
  close(): Promise<void>;
}

function loader(urls: string[], headers?: Record<string, string>): Loader {
  const worker = new Worker(WORKER, { eval: true, workerData: { urls, headers: headers ?? {}, concurrency: CONCURRENCY } });
  return {
    run: (seconds) =>
      new Promise((resolve, reject) => {
        worker.once("message", resolve);
        worker.once("error", reject);
        worker.postMessage({ seconds });
      }),
    close: async () => {
      worker.postMessage({ close: true });
      await new Promise((r) => worker.once("exit", r));
    },
  };
}

/**
 * Requests/s of two request streams measured in alternating slices (SLICES of each within SECONDS per side),
 * so that a slower or faster spell of a shared machine weighs on both sides alike, not on one.
 */
async function compare(a: { urls: string[]; headers?: Record<string, string> }, b: { urls: string[]; headers?: Record<string, string> }): Promise<{ a: number; b: number; errors: number }> {
  const [la, lb] = [loader(a.urls, a.headers), loader(b.urls, b.headers)];
  try {
    await la.run(0.3); // warm-up
    await lb.run(0.3);
    const slice = SECONDS / SLICES;
    const done = { a: 0, b: 0 };
    const seconds = { a: 0, b: 0 };
    let errors = 0;
    for (let i = 0; i < SLICES; i++) {
      for (const [side, l] of [["a", la], ["b", lb]] as const) {
        const r = await l.run(slice);
        done[side] += r.done;
        seconds[side] += r.seconds;
        errors += r.errors;
      }
    }
    return { a: done.a / seconds.a, b: done.b / seconds.b, errors };
  } finally {
    await Promise.all([la.close(), lb.close()]);
  }
}

/**
 * The $expand case again on PostgreSQL (when one answers at VEP_BENCH_POSTGRES or 127.0.0.1:5432), in a
 * schema of its own that is dropped afterwards: same page, same data shape.
 */
async function expandOnPostgres(): Promise<void> {
  const url = process.env.VEP_BENCH_POSTGRES ?? "postgres://postgres@127.0.0.1:5432/test";
  const schema = `vep_bench_${process.pid}`;
  const pg = (await import("pg")).default;
  const admin = new pg.Client({ connectionString: url });
  try {
    await admin.connect();
  } catch {
    console.log("\n(PostgreSQL not reachable: its $expand case is skipped)");
    return;
  }
  const service = await createService({ database: `${url}?schema=${schema}`, security: "none" });
  try {
    await installLinkedInTalentHub(service, { generate: true });
    const CANDIDATES = Number(process.env.BENCH_CANDIDATES ?? 5000);
    await admin.query(`SET search_path = ${schema}`);
    await admin.query(`INSERT INTO "HcmWorkerEntity" ("Id","PersonnelNumber","FirstName","LastName","Email","RecVersion") SELECT md5(i::text || 'w')::uuid, lpad(i::text, 6, '0'), 'Ada', 'Lovelace', 'w' || i || '@example.com', 1 FROM generate_series(1, ${CANDIDATES}) i`);
    await admin.query(`INSERT INTO "HcmLinkedInExportedCandidateEntity" ("Id","CandidateId","FirstName","LastName","Email","StartDate","JobTitle","Location","HireStatus","WorkerId","RecVersion") SELECT md5(i::text || 'c')::uuid, 'ATS-' || i, 'Ada', 'Lovelace', 'c' || i || '@example.com', DATE '2027-01-04', 'Engineer', 'London', 'Hired', md5(i::text || 'w')::uuid, 1 FROM generate_series(1, ${CANDIDATES}) i`);
    await admin.query(`ANALYZE`);
    const listening = await service.listen(0);
    const base = listening.url.replace(/\/$/, "");
    const page = `${base}/mshr_hcmlinkedinexportedcandidateentities?$select=mshr_firstname,mshr_lastname,mshr_email&$top=5000`;
    const expanded = `${page}&$expand=mshr_fk_worker_id($select=mshr_personnelnumber,mshr_firstname,mshr_lastname)`;
    const e = await compare({ urls: [expanded] }, { urls: [page] });
    console.log(`${"PostgreSQL: $expand worker".padEnd(32)} ${e.a.toFixed(1).padStart(12)} ${e.b.toFixed(1).padStart(12)} ${(e.a / e.b).toFixed(2).padStart(7)}   (expanded against the plain page; target ≥ 0.50; the expansion itself: ${(e.b / e.a - 1).toFixed(2)}× the plain page)`);
    await listening.close();
  } finally {
    await service.close();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  }
}

main()
  .then(() => (process.env.BENCH_SKIP_POSTGRES ? undefined : expandOnPostgres()))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
