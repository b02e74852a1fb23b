import { openTestService } from "../helpers/stores.js";
import { entityDefinition, generateRows, ENTITY_SET, FilterGenerator } from "./generate.js";
import { Rng } from "./prng.js";
import { check, shrink } from "./harness.js";
import { render } from "./odata-expr.js";

const seeds = (process.env.SEEDS ?? "1").split(",").map(Number);
const out = new Map<string, { tags: string[]; sample: string }>();
for (const seed of seeds) {
  const rng = new Rng(seed);
  const rows = generateRows(rng, 150);
  const gen = new FilterGenerator(rng, rows);
  const filters = Array.from({ length: Number(process.env.N ?? 500) }, () => gen.filter());
  for (const kind of ["sqlite", "postgres"] as const) {
    const s = await openTestService(kind);
    await s.defineEntity(entityDefinition() as any);
    for (const r of rows) await s.request("POST", ENTITY_SET, { body: r.payload });
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const f of filters) {
      const fail = await check(s, f, rows, filters.indexOf(f) % 4 === 3 ? { pageSize: 1 + (filters.indexOf(f) % 13), orderBy: ["new_name", "new_qty desc", "new_at", "new_price desc,new_name"][filters.indexOf(f) % 4] } : {});
      if (!fail) continue;
      const sh = await shrink(s, fail, rows);
      const r = render(sh.filter);
      const key = r.filter + (r.aliases.length ? " &" + r.aliases.map(([n, t]) => `@${n}=${t}`).join("&") : "");
      const tag = `${kind}${sh.outcome.ok ? "" : " HTTP" + sh.outcome.status}`;
      let sample = "";
      if (sh.outcome.ok) {
        const a = new Set(sh.outcome.ids), x = new Set(sh.expected);
        const miss = sh.expected.filter((i) => !a.has(i)).slice(0, 1).map((i) => JSON.stringify(byId.get(i)!.model));
        const extra = sh.outcome.ids.filter((i) => !x.has(i)).slice(0, 1).map((i) => JSON.stringify(byId.get(i)!.model));
        sample = `missing ${miss} extra ${extra}`;
      } else sample = sh.outcome.message.slice(0, 100);
      const e = out.get(key) ?? { tags: [], sample };
      if (!e.tags.includes(tag)) e.tags.push(tag);
      out.set(key, e);
    }
    await s.dispose();
  }
}
for (const [k, v] of [...out].sort((a, b) => a[0].length - b[0].length)) console.log(v.tags.join("+").padEnd(28), k, process.env.V ? "\n      " + v.sample : "");
