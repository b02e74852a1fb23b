import { connect, type AddressInfo } from "node:net";
import { createServer, type Server } from "node:http";
import express from "express";
import Fastify from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createService, type VirtualEntityService } from "../../src/index.js";

/** The request handler plugs into node:http, Express (also after a JSON body parser) and Fastify. */
describe("the request handler in node:http, Express and Fastify", () => {
  let service: VirtualEntityService;
  const servers: Server[] = [];
  let closeFastify: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    service = await createService({ database: ":memory:", security: "none" });
    await service.defineEntity({ LogicalName: "new_note", PrimaryNameAttribute: "new_title", Attributes: [{ LogicalName: "new_title", AttributeType: "String", MaxLength: 100 }] });
  });
  afterAll(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
    await closeFastify?.();
    await service.close();
  });

  const listen = async (server: Server) => {
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  };

  async function roundTrip(base: string) {
    const created = await fetch(`${base}/api/data/v9.2/new_notes`, { method: "POST", headers: { "Content-Type": "application/json", Prefer: "return=representation" }, body: JSON.stringify({ new_title: `via ${base}` }) });
    expect(created.status).toBe(201);
    const note = (await created.json()) as { new_noteid: string };
    expect(created.headers.get("odata-entityid")).toBe(`${base}/api/data/v9.2/new_notes(${note.new_noteid})`);
    const read = await fetch(`${base}/api/data/v9.2/new_notes(${note.new_noteid})?$select=new_title`);
    expect(read.headers.get("odata-version")).toBe("4.0");
    expect(((await read.json()) as { new_title: string }).new_title).toBe(`via ${base}`);
    const bad = await fetch(`${base}/api/data/v9.2/new_notes?$filter=nope eq 1`);
    expect(bad.status).toBe(400);
  }

  it("works as a node:http handler", async () => {
    await roundTrip(await listen(createServer(service.handler)));
  });

  it("works as Express middleware, after express.json(), passing other routes on", async () => {
    const app = express();
    app.use(express.json());
    app.get("/health", (_req, res) => {
      res.send("ok");
    });
    app.use(service.handler);
    const base = await listen(createServer(app));
    await roundTrip(base);
    expect(await (await fetch(`${base}/health`)).text()).toBe("ok");
  });

  it("answers an over-long body with 413 and closes the connection, so no later request is read from the rest of that body", async () => {
    const base = await listen(createServer(service.handler));
    const { port } = new URL(base);
    const socket = connect(Number(port), "127.0.0.1");
    let text = "";
    socket.on("data", (d) => (text += d.toString("latin1")));
    const closed = new Promise<void>((r) => socket.on("close", () => r()));
    // Declares 20 MB (over the 16 MB limit) and sends a little of it, then what looks like a second request.
    socket.write("POST /api/data/v9.2/new_notes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 20000000\r\n\r\n{\"new_title\":\"");
    socket.write("x".repeat(1000) + "\r\n\r\nGET /api/data/v9.2/new_notes HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    await closed;
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    expect(text).toMatch(/\r\nConnection: close\r\n/i);
    expect(text.match(/HTTP\/1\.1 /g)).toHaveLength(1);
    // The next connection is served normally.
    expect((await fetch(`${base}/api/data/v9.2/new_notes?$top=1`)).status).toBe(200);
  });

  it("streams a large page in chunks, complete and valid even to a client that reads slowly", async () => {
    const base = await listen(createServer(service.handler));
    const entity = service.model.entity("new_note")!;
    const db = (service.store.executor as unknown as { db: { prepare(sql: string): { run(...a: unknown[]): unknown }; transaction(f: () => void): () => void } }).db;
    const title = entity.attributes.get("new_title")!.column;
    const insert = db.prepare(`INSERT INTO "${entity.table}" ("${entity.primaryId.column}", "${title}", "${entity.attributes.get("versionnumber")!.column}") VALUES (?, ?, 1)`);
    db.transaction(() => {
      for (let i = 0; i < 3000; i++) insert.run(`00000000-0000-4000-8000-${String(i).padStart(12, "0")}`, `note ${i} ${"x".repeat(200)}`);
    })();
    const { request } = await import("node:http");
    const { status, headers, text } = await new Promise<{ status: number; headers: Record<string, unknown>; text: string }>((resolve, reject) => {
      request(`${base}/api/data/v9.2/new_notes?$select=new_title`, (res) => {
        const parts: Buffer[] = [];
        // Read a piece at a time with pauses, so the server meets backpressure.
        res.on("data", (chunk: Buffer) => {
          parts.push(chunk);
          res.pause();
          setTimeout(() => res.resume(), 1);
        });
        res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(parts).toString("utf8") }));
        res.on("error", reject);
      })
        .on("error", reject)
        .end();
    });
    expect(status).toBe(200);
    expect(headers["transfer-encoding"]).toBe("chunked");
    const body = JSON.parse(text) as { value: { new_title: string }[] };
    const streamed = body.value.filter((n) => n.new_title.startsWith("note "));
    expect(streamed).toHaveLength(3000);
    expect(new Set(streamed.map((n) => n.new_title)).size).toBe(3000);
  });

  it("works in Fastify through the raw request and reply", async () => {
    const app = Fastify();
    app.removeAllContentTypeParsers();
    app.addContentTypeParser("*", (_req, _payload, done) => done(null, undefined));
    app.all("/api/data/v9.2/*", (request, reply) => {
      reply.hijack();
      service.handler(request.raw, reply.raw);
    });
    await app.listen({ port: 0, host: "127.0.0.1" });
    closeFastify = () => app.close();
    await roundTrip(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
  });
});
