import type { ODataRequest, ODataResponse } from "../odata/processor.js";
import type { SecurityService } from "../security/security-service.js";

export const TOKEN_PATH = "/oauth2/token";

function reply(status: number, body: Record<string, unknown>, headers: Record<string, string> = {}): ODataResponse {
  return { status, headers: { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store", Pragma: "no-cache", ...headers }, body: JSON.stringify(body) };
}

/**
 * The built-in OAuth 2.0 token endpoint: client-credentials grant with form-encoded `client_id` and
 * `client_secret` (or HTTP Basic). Errors follow RFC 6749; secrets never appear in answers or logs.
 */
export function tokenRoute(security: SecurityService) {
  return async (req: ODataRequest): Promise<ODataResponse | undefined> => {
    const path = req.url.split("?")[0];
    if (path !== TOKEN_PATH) return undefined;
    if (req.method.toUpperCase() !== "POST") return reply(405, { error: "invalid_request", error_description: "Use POST" }, { Allow: "POST" });
    const contentType = String(req.headers["content-type"] ?? "").toLowerCase();
    if (!contentType.startsWith("application/x-www-form-urlencoded")) {
      return reply(400, { error: "invalid_request", error_description: "The body must be application/x-www-form-urlencoded" });
    }
    const text = req.body === undefined ? "" : typeof req.body === "string" ? req.body : Buffer.isBuffer(req.body) ? req.body.toString("utf8") : new URLSearchParams(req.body as Record<string, string>).toString();
    const form = new URLSearchParams(text);
    let clientId = form.get("client_id") ?? undefined;
    let clientSecret = form.get("client_secret") ?? undefined;
    const auth = String(req.headers["authorization"] ?? "");
    if (auth.toLowerCase().startsWith("basic ")) {
      const decoded = Buffer.from(auth.slice(6).trim(), "base64").toString("utf8");
      const i = decoded.indexOf(":");
      if (i > 0) {
        try {
          clientId = decodeURIComponent(decoded.slice(0, i));
          clientSecret = decodeURIComponent(decoded.slice(i + 1));
        } catch {
          return reply(400, { error: "invalid_request", error_description: "The Basic credentials are not valid percent-encoding (RFC 6749, 2.3.1)" });
        }
      }
    }
    const grant = form.get("grant_type");
    if (grant !== "client_credentials") return reply(400, { error: "unsupported_grant_type", error_description: "Only grant_type=client_credentials is supported" });
    if (!clientId || !clientSecret) return reply(400, { error: "invalid_request", error_description: "client_id and client_secret are required" });
    const result = await security.issueToken(clientId, clientSecret, req.remoteAddress);
    return reply(result.status, result.body, result.headers);
  };
}
