/**
 * Differential test of the $filter translation: for hundreds of random, well-typed filters over rows
 * full of nulls, ties and awkward strings, the rows the service returns (from SQLite and from
 * PostgreSQL) must be exactly the rows the reference evaluator of odata-expr.ts selects.
 *
 * The run is reproducible: the seed is printed, and `VEP_DIFF_SEED=<seed>` replays it.
 * `VEP_DIFF_FILTERS=<n>` changes the number of filters (500 by default).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { json, openTestService, STORE_KINDS, type StoreKind } from "../helpers/stores.js";
import { Rng, runSeed } from "./prng.js";
import { DATA_PROPERTIES, ENTITY_SET, KEY, FilterGenerator, entityDefinition, generateRows, PROPERTY_TYPES } from "./generate.js";
import { instantOf, render } from "./odata-expr.js";
import { type Failure, type Paging, type Service, check, describeFailure, expectedIds, shrink } from "./harness.js";

const SEED = runSeed();
const ROW_COUNT = 150;
const FILTER_COUNT = Number(process.env.VEP_DIFF_FILTERS) > 0 ? Number(process.env.VEP_DIFF_FILTERS) : 500;
/** Failures shrunk and printed in full; the rest are only counted. */
const REPORTED = 12;

const rng = new Rng(SEED);
const rows = generateRows(rng, ROW_COUNT);
const generator = new FilterGenerator(rng, rows);
const filters = Array.from({ length: FILTER_COUNT }, () => generator.filter());
/**
 * One filter in four is read in small pages (following @odata.nextLink), half of those with an
 * $orderby over nullable, tied values: the pages together must hold the same rows, each once.
 * Some requests encode spaces as '+', as HTML forms do.
 */
const ORDERINGS = ["new_name", "new_qty desc", "new_at", "new_price desc,new_name", "new_day desc", "new_flag,new_kind desc", "new_ratio", "new_code desc,new_big"];
const pagingRng = new Rng(SEED ^ 0x5eed);
const pagings: Paging[] = filters.map((_, i) => ({
  ...(i % 4 === 3 ? { pageSize: pagingRng.int(1, 13), orderBy: pagingRng.chance(0.5) ? pagingRng.pick(ORDERINGS) : undefined } : {}),
  plusSpaces: pagingRng.chance(0.3),
}));

console.log(`[differential] seed ${SEED}: ${ROW_COUNT} rows, ${FILTER_COUNT} filters (VEP_DIFF_SEED=${SEED} reproduces this run)`);

describe("the generated filters", () => {
  it("split the rows: most select some but not all of them", () => {
    let partial = 0;
    for (const f of filters) {
      const n = expectedIds(f, rows).length;
      if (n > 0 && n < rows.length) partial++;
    }
    console.log(`[differential] ${partial} of ${filters.length} filters select a proper, non-empty subset of the rows`);
    expect(partial / filters.length).toBeGreaterThan(0.5);
  });
});

describe.each(STORE_KINDS)("$filter differential on %s", (kind: StoreKind) => {
  let service: Service;

  beforeAll(async () => {
    service = await openTestService(kind);
    await service.defineEntity(entityDefinition() as Parameters<Service["defineEntity"]>[0]);
    for (const row of rows) {
      const r = await service.request("POST", ENTITY_SET, { body: row.payload });
      if (r.status !== 204 && r.status !== 201) throw new Error(`[${kind}] creating ${row.label} ${JSON.stringify(row.payload)}: HTTP ${r.status} ${r.body}`);
    }
  });

  afterAll(async () => {
    await service?.dispose();
  });

  it("stores every generated row as written", async () => {
    const r = await service.request("GET", `${ENTITY_SET}?$select=${DATA_PROPERTIES.join(",")}`, { headers: { Prefer: "odata.maxpagesize=5000" } });
    expect(r.status).toBe(200);
    const stored = new Map(json<{ value: Record<string, unknown>[] }>(r).value.map((v) => [String(v[KEY]), v]));
    const problems: string[] = [];
    for (const row of rows) {
      const got = stored.get(row.id);
      if (!got) {
        problems.push(`${row.label}: missing`);
        continue;
      }
      for (const p of DATA_PROPERTIES) {
        const want = row.model[p];
        let have = got[p];
        if (PROPERTY_TYPES[p] === "Edm.DateTimeOffset" && typeof have === "string" && typeof want === "string") {
          if (instantOf(have) === instantOf(want)) have = want;
        }
        if (have !== want) problems.push(`${row.label}.${p}: wrote ${JSON.stringify(row.payload[p])}, read ${JSON.stringify(got[p])}`);
      }
    }
    expect(problems, problems.join("\n")).toEqual([]);
  });

  it(`returns exactly the rows the reference evaluator selects (seed ${SEED})`, async () => {
    const failures: Failure[] = [];
    for (const [i, filter] of filters.entries()) {
      const f = await check(service, filter, rows, pagings[i]);
      if (f) failures.push(f);
    }
    if (failures.length === 0) return;
    const reports: string[] = [];
    for (const f of failures.slice(0, REPORTED)) reports.push(describeFailure(kind, f, rows, await shrink(service, f, rows)));
    const errors = failures.filter((f) => !f.outcome.ok).length;
    const summary =
      `${failures.length} of ${filters.length} filters disagree with the reference evaluator on ${kind} ` +
      `(${errors} answered with an error; seed ${SEED}, reproduce with VEP_DIFF_SEED=${SEED}):\n\n${reports.join("\n\n")}` +
      (failures.length > REPORTED ? `\n\n… and ${failures.length - REPORTED} more:\n${failures.slice(REPORTED).map((f) => `  ${render(f.filter).filter}`).join("\n")}` : "");
    expect.fail(summary);
  }, 180_000);
});
