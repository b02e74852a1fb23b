import type { IncomingMessage, ServerResponse } from "node:http";
import { badRequest, ODataError, ErrorCodes } from "../odata/errors.js";
import type { ODataProcessor, ODataRequest, ODataResponse } from "../odata/processor.js";

export type NodeRequestHandler = (req: IncomingMessage & { body?: unknown; originalUrl?: string }, res: ServerResponse, next?: (err?: unknown) => void) => void;

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  const tooLarge = () => new ODataError(413, ErrorCodes.badRequest, `The request body is larger than ${limit} bytes`);
  // Refused by its declared length before any of it is read; a body without one, as it arrives.
  if (Number(req.headers["content-length"]) > limit) throw tooLarge();
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

export function send(res: ServerResponse, response: ODataResponse): void {
  res.statusCode = response.status;
  for (const [k, v] of Object.entries(response.headers)) res.setHeader(k, v);
  if (response.chunks !== undefined) {
    void stream(res, response.chunks);
    return;
  }
  if (response.body !== undefined && response.status !== 204 && response.status !== 304) {
    // Encoded once: measuring the text and then writing it would walk a multi-megabyte page twice.
    const body = Buffer.from(response.body, "utf8");
    res.setHeader("Content-Length", body.length);
    res.end(body);
  } else res.end();
}

/** Writes a chunked body as it is produced, waiting when the client reads slower than it is written. */
async function stream(res: ServerResponse, chunks: Iterable<string>): Promise<void> {
  try {
    for (const chunk of chunks) {
      if (res.destroyed) return;
      if (!res.write(chunk)) await new Promise<void>((resolve) => {
        const done = () => {
          res.off("drain", done);
          res.off("close", done);
          resolve();
        };
        res.on("drain", done);
        res.on("close", done);
      });
    }
    res.end();
  } catch (e) {
    // The status line is gone: the only honest answer left is to cut the connection.
    res.destroy(e as Error);
  }
}

/**
 * A `(req, res, next)` handler for node:http, Express and Connect (and Fastify through `reply.raw`).
 * Requests outside the service root go to `next` when there is one, else get a 404 OData error.
 * A body an Express parser already read (`req.body`) is used as it is.
 */
export function createNodeHandler(processor: ODataProcessor, extraRoutes?: (req: ODataRequest) => Promise<ODataResponse | undefined>): NodeRequestHandler {
  return (req, res, next) => {
    const url = req.originalUrl ?? req.url ?? "/";
    void (async () => {
      let response: ODataResponse;
      try {
        const path = url.split("?")[0]!;
        const inRoot = path === processor.rootPath || path.startsWith(processor.rootPath + "/");
        const bodyAlreadyRead = req.body !== undefined && (typeof req.body !== "object" || req.body === null || Object.keys(req.body as object).length > 0 || req.readableEnded);
        // A request without Content-Length or Transfer-Encoding has no body (RFC 9112 §6.3): nothing to wait for.
        const hasBody = req.headers["content-length"] !== undefined ? req.headers["content-length"] !== "0" : req.headers["transfer-encoding"] !== undefined;
        const body = bodyAlreadyRead ? (req.body as ODataRequest["body"]) : hasBody ? await readBody(req, processor.maxBodyBytes) : undefined;
        const request: ODataRequest = { method: req.method ?? "GET", url, headers: req.headers, body: Buffer.isBuffer(body) && body.length === 0 ? undefined : body, remoteAddress: req.socket?.remoteAddress };
        const extra = extraRoutes ? await extraRoutes(request) : undefined;
        if (extra) response = extra;
        else if (!inRoot && next) {
          next();
          return;
        } else response = await processor.process(request);
      } catch (e) {
        response = processor.errorResponse(e instanceof SyntaxError ? badRequest(e.message) : e);
        // The rest of an over-long body is still on the wire: close the connection after the answer, or
        // the client's next request on it would be read from the middle of that body.
        if (response.status === 413) response = { ...response, headers: { ...response.headers, Connection: "close" } };
      }
      send(res, response);
    })().catch((e) => {
      if (next) next(e);
      else if (!res.headersSent) send(res, processor.errorResponse(e));
    });
  };
}
