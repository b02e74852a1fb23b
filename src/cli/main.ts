#!/usr/bin/env node
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { createService, type VirtualEntityService } from "../service.js";
import { installLinkedInTalentHub, seedSampleCandidates } from "../linkedin/talent-hub.js";
import { SYSTEM_ADMINISTRATOR_ROLE_ID } from "../security/security-model.js";

const USAGE = `vep — Dataverse-style virtual entity provider

Usage:
  vep serve [--port 5555] [--host 127.0.0.1] [--database ./data/vep.sqlite]
      Serves the OData Web API with the LinkedIn Talent Hub entities generated.
  vep clients add --client-id <id> [--name <name>] [--role <role name>]… [--rotate-secret] [--database …]
      Registers a client of POST /oauth2/token and its application user; prints the secret once.
  vep catalog list [--database …]
      Lists the sources that can become virtual entities.
  vep catalog generate --label "LinkedIn exported candidate" [--database …]
      Runs Generate/refresh on the source with that label.

Environment: PORT, HOST, VEP_DATABASE (an SQLite file, :memory:, or postgres://…),
VEP_ADMIN_CLIENT_ID and VEP_ADMIN_CLIENT_SECRET (an administrator client registered at start).
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
  const portText = values.port ?? process.env.PORT ?? "5555";
  // Decimal digits only: Number() would take "" as 0 (a random port) and "0x10" as 16.
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port <= 65535)) throw new Error(`Invalid port '${portText}': a number from 0 to 65535`);
  const host = values.host ?? process.env.HOST ?? "127.0.0.1";
  const database = databaseOf(values.database);
  const adminId = process.env.VEP_ADMIN_CLIENT_ID;
  const adminSecret = process.env.VEP_ADMIN_CLIENT_SECRET;
  if (!!adminId !== !!adminSecret) throw new Error("Set both VEP_ADMIN_CLIENT_ID and VEP_ADMIN_CLIENT_SECRET, or neither");
  const service = await createService({ database, adminClient: adminId && adminSecret ? { clientId: adminId, secret: adminSecret } : undefined });
  await installLinkedInTalentHub(service, { generate: true, onProgress: (s) => console.log(`  ${s}`) });
  await firstRunAdmin(service, database);
  const seeded = await seedSampleCandidates(service);
  if (seeded) console.log(`  Exported ${seeded} sample candidates`);
  const listening = await service.listen(port, host);
  console.log(`Store: ${service.store.description}`);
  console.log(`OData service root: ${listening.url}`);
  console.log(`Candidates: ${listening.url}mshr_hcmlinkedinexportedcandidateentities`);
  console.log(`Tokens: POST ${listening.url.replace(/\/api\/data\/v9\.2\/$/, "")}/oauth2/token (grant_type=client_credentials)`);
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

/**
 * On a store with no client yet, registers an administrator client so the service can be used at once.
 * Its secret goes to a file only the current user can read, never to the console.
 */
async function firstRunAdmin(service: VirtualEntityService, database: string): Promise<void> {
  if (!service.security || (await service.security.hasClients())) return;
  const file = /^postgres/.test(database) || database === ":memory:" ? join(process.cwd(), "data", "admin-client.json") : join(dirname(database.replace(/^sqlite:/, "")), "admin-client.json");
  mkdirSync(dirname(file), { recursive: true });
  const client = await service.security.addClient("vep-admin", { name: "Administrator (first run)", roles: [SYSTEM_ADMINISTRATOR_ROLE_ID] });
  await service.security.mapApplication(client.clientId, client.userId, "Administrator");
  writeFileSync(file, JSON.stringify({ client_id: client.clientId, client_secret: client.secret }, null, 2) + "\n", { mode: 0o600 });
  console.log(`  Registered the administrator client 'vep-admin'; its secret is in ${file} (readable by you only)`);
}

async function clients(args: string[]): Promise<void> {
  const [sub, ...rest] = args;
  if (sub !== "add") throw new Error(`Unknown clients command '${sub ?? ""}'\n${USAGE}`);
  const { values } = parseArgs({ args: rest, options: { database: { type: "string" }, "client-id": { type: "string" }, name: { type: "string" }, role: { type: "string", multiple: true }, "rotate-secret": { type: "boolean" } } });
  const clientId = values["client-id"];
  if (!clientId) throw new Error("clients add needs --client-id");
  await withService(databaseOf(values.database), async (service) => {
    const security = service.security!;
    const exists = await security.hasClient(clientId);
    if (exists && !values["rotate-secret"]) throw new Error(`The client '${clientId}' exists already; pass --rotate-secret to give it a new secret (its current one stops working)`);
    if (!exists && values["rotate-secret"]) throw new Error(`No client '${clientId}' to rotate the secret of; leave out --rotate-secret to add it`);
    const roleIds: string[] = [];
    for (const name of values.role ?? []) {
      const id = await security.roleIdByName(name);
      if (!id) throw new Error(`No role named '${name}'`);
      roleIds.push(id);
    }
    const client = await security.addClient(clientId, { name: values.name, roles: roleIds });
    console.log(`client_id:     ${client.clientId}`);
    console.log(`client_secret: ${client.secret}`);
    console.log(`user id:       ${client.userId}`);
    console.log("The secret is shown once and stored only as a hash.");
  });
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
    case "clients":
      return clients(rest);
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
