#!/usr/bin/env node
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { createService, type VirtualEntityService } from "../service.js";
import { installLinkedInTalentHub, seedSampleCandidates } from "../linkedin/talent-hub.js";

const USAGE = `vep — Dataverse-style virtual entity provider

Usage:
  vep serve [--port 5555] [--host 127.0.0.1] [--database ./data/vep.sqlite]
      Serves the OData Web API with the LinkedIn Talent Hub entities generated.
  vep catalog list [--database …]
      Lists the sources that can become virtual entities.
  vep catalog generate --label "LinkedIn exported candidate" [--database …]
      Runs Generate/refresh on the source with that label.

Environment: PORT, HOST, VEP_DATABASE (an SQLite file, :memory:, or postgres://…).
`;

const DEFAULT_DATABASE = "./data/vep.sqlite";

function databaseOf(flag: string | undefined): string {
  const db = flag ?? process.env.VEP_DATABASE ?? DEFAULT_DATABASE;
  if (!/^postgres(ql)?:\/\//.test(db) && db !== ":memory:") mkdirSync(dirname(db.replace(/^sqlite:/, "")), { recursive: true });
  return db;
}

async function withService<T>(database: string, work: (s: VirtualEntityService) => Promise<T>): Promise<T> {
  const service = await createService({ database });
  try {
    await installLinkedInTalentHub(service);
    return await work(service);
  } finally {
    await service.close();
  }
}

async function serve(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { port: { type: "string" }, host: { type: "string" }, database: { type: "string" } } });
  const port = Number(values.port ?? process.env.PORT ?? 5555);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`Invalid port '${values.port ?? process.env.PORT}'`);
  const host = values.host ?? process.env.HOST ?? "127.0.0.1";
  const database = databaseOf(values.database);
  const service = await createService({ database });
  await installLinkedInTalentHub(service, { generate: true, onProgress: (s) => console.log(`  ${s}`) });
  const seeded = await seedSampleCandidates(service);
  if (seeded) console.log(`  Exported ${seeded} sample candidates`);
  const listening = await service.listen(port, host);
  console.log(`Store: ${service.store.description}`);
  console.log(`OData service root: ${listening.url}`);
  console.log(`Candidates: ${listening.url}mshr_hcmlinkedinexportedcandidateentities`);
  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal} received, stopping…`);
    await listening.close();
    await service.close();
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

async function catalog(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  const { values } = parseArgs({ args: rest, options: { database: { type: "string" }, label: { type: "string" } } });
  const database = databaseOf(values.database);
  await withService(database, async (service) => {
    if (sub === "list") {
      for (const s of service.catalog.listSources()) {
        const row = await service.catalog.catalogRow(s.PhysicalName);
        console.log(`${s.Label.padEnd(32)} ${s.PhysicalName.padEnd(40)} ${String(row?.status ?? "").padEnd(14)} ${row?.statusmessage ?? ""}`);
      }
      return;
    }
    if (sub === "generate") {
      if (!values.label) throw new Error("catalog generate needs --label");
      const source = service.catalog.byLabel(values.label);
      if (!source) throw new Error(`No source labelled '${values.label}'; see 'vep catalog list'`);
      const started = Date.now();
      const result = await service.catalog.generateOrRefresh(source.PhysicalName, (step) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${step}`));
      console.log(`Entity set: ${result.entitySetName}${result.alsoRegenerated.length ? ` (also regenerated ${result.alsoRegenerated.join(", ")})` : ""}`);
      return;
    }
    throw new Error(`Unknown catalog command '${sub ?? ""}'\n${USAGE}`);
  });
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return serve(rest);
    case "catalog":
      return catalog(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return;
    default:
      throw new Error(`Unknown command '${command}'\n${USAGE}`);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  console.error(`vep: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
