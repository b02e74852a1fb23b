import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const TSX = join(process.cwd(), "node_modules", ".bin", "tsx");
const CLI = join(process.cwd(), "src", "cli", "main.ts");

describe("the vep CLI", () => {
  const dir = mkdtempSync(join(tmpdir(), "vep-cli-"));
  const database = join(dir, "store.sqlite");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("lists the catalog and generates by label, with progress", async () => {
    const listed = await run(TSX, [CLI, "catalog", "list", "--database", database]);
    expect(listed.stdout).toMatch(/LinkedIn exported candidate\s+HcmLinkedInExportedCandidateEntity\s+NotGenerated/);
    expect(listed.stdout).toMatch(/Worker\s+HcmWorkerEntity\s+NotGenerated/);
    const generated = await run(TSX, [CLI, "catalog", "generate", "--label", "Worker", "--database", database]);
    expect(generated.stdout).toMatch(/\[\d+\.\ds\] Mapping HcmWorkerEntity/);
    expect(generated.stdout).toMatch(/Entity set: mshr_hcmworkerentities/);
    expect((await run(TSX, [CLI, "catalog", "list", "--database", database])).stdout).toMatch(/Worker\s+HcmWorkerEntity\s+Generated/);
    expect(generated.stderr).not.toMatch(/failed|Error/);
    // The generated entity's six privileges were all written before the command ended.
    const { default: Database } = await import("better-sqlite3");
    const db = new Database(database, { readonly: true });
    try {
      expect((db.prepare(`SELECT count(*) AS n FROM privilege WHERE name LIKE 'prv%mshr_hcmworkerentity'`).get() as { n: number }).n).toBe(6);
    } finally {
      db.close();
    }
    await expect(run(TSX, [CLI, "catalog", "generate", "--label", "Nope", "--database", database])).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/No source labelled 'Nope'/) });
  }, 60_000);

  it("registers a client and prints its secret once, storing only a hash", async () => {
    const out = (await run(TSX, [CLI, "clients", "add", "--client-id", "ats-1", "--database", database])).stdout;
    const secret = /client_secret: (\S+)/.exec(out)![1]!;
    expect(secret.length).toBeGreaterThanOrEqual(32);
    expect(readFileSync(database).includes(Buffer.from(secret))).toBe(false);
    // Adding it again would silently replace its secret: refused unless asked for.
    await expect(run(TSX, [CLI, "clients", "add", "--client-id", "ats-1", "--database", database])).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/exists already; pass --rotate-secret/) });
    const rotated = (await run(TSX, [CLI, "clients", "add", "--client-id", "ats-1", "--rotate-secret", "--database", database])).stdout;
    expect(/client_secret: (\S+)/.exec(rotated)![1]).not.toBe(secret);
    await expect(run(TSX, [CLI, "clients", "add", "--client-id", "ats-unknown", "--rotate-secret", "--database", database])).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/No client 'ats-unknown'/) });
  }, 60_000);

  it("serves on the given port, prints the service root and stops on SIGTERM", async () => {
    const env = { ...process.env, VEP_ADMIN_CLIENT_ID: "ci-admin", VEP_ADMIN_CLIENT_SECRET: "a-long-enough-test-secret-0123456789" };
    const child = spawn(TSX, [CLI, "serve", "--port", "0", "--database", join(dir, "serve.sqlite")], { stdio: ["ignore", "pipe", "pipe"], env });
    let out = "";
    const root = await new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /OData service root: (\S+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once("exit", (code) => reject(new Error(`exited ${code}: ${out}`)));
    });
    const r = await fetch(`${root}$metadata`);
    expect(r.status).toBe(401); // secure by default
    // VEP_ADMIN_CLIENT_ID/SECRET registered an administrator at start; the secret is never printed.
    expect(out).not.toContain(env.VEP_ADMIN_CLIENT_SECRET);
    const token = await fetch(root.replace(/\/api\/data\/v9\.2\/$/, "/oauth2/token"), {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", client_id: env.VEP_ADMIN_CLIENT_ID, client_secret: env.VEP_ADMIN_CLIENT_SECRET }),
    });
    const { access_token } = (await token.json()) as { access_token: string };
    const candidates = await fetch(`${root}mshr_hcmlinkedinexportedcandidateentities/$count`, { headers: { Authorization: `Bearer ${access_token}` } });
    expect(await candidates.text()).toBe("3"); // the sample candidates of the first run
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(out).toMatch(/SIGTERM received/);
  }, 60_000);

  it("refuses a port that is not a decimal number from 0 to 65535", async () => {
    for (const port of ["", "0x10", "1.5", "70000", "-1"]) {
      await expect(run(TSX, [CLI, "serve", `--port=${port}`, "--database", ":memory:"]), JSON.stringify(port)).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/Invalid port/) });
    }
  }, 60_000);
});
