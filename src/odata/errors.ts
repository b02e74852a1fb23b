/** An error that becomes an OData JSON error body `{"error":{"code","message"}}` with its HTTP status. */
const MAX_MESSAGE = 2000;

export class ODataError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    // Messages quote the request (names, literals); a hostile one must not come back whole.
    super(message.length > MAX_MESSAGE ? `${message.slice(0, MAX_MESSAGE)}… (message cut at ${MAX_MESSAGE} characters)` : message);
    this.name = "ODataError";
  }

  toJSON() {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Dataverse uses hexadecimal error codes; these are the ones clients match on, plus readable names. */
export const ErrorCodes = {
  badRequest: "0x80060888",
  syntax: "0x80060888",
  notFound: "0x80040217",
  notImplemented: "0x8006088a",
  methodNotAllowed: "0x80060889",
  notAcceptable: "0x80060886",
  unsupportedMediaType: "0x80060887",
  preconditionFailed: "0x80060882",
  duplicate: "0x80040237",
  validation: "0x80040203",
  forbidden: "0x80040220",
  unauthorized: "0x80040223",
  internal: "0x80040216",
  tooManyRequests: "0x80072322",
  conflict: "0x80040237",
} as const;

export const badRequest = (message: string) => new ODataError(400, ErrorCodes.badRequest, message);
export const notFound = (message: string) => new ODataError(404, ErrorCodes.notFound, message);
export const notImplemented = (message: string) => new ODataError(501, ErrorCodes.notImplemented, message);
export const methodNotAllowed = (method: string, what: string, allowed: string[]) =>
  new ODataError(405, ErrorCodes.methodNotAllowed, `The HTTP method '${method}' is not allowed on ${what}; allowed: ${allowed.join(", ")}`, { Allow: allowed.join(", ") });
export const preconditionFailed = (message: string) => new ODataError(412, ErrorCodes.preconditionFailed, message);
export const validationError = (message: string) => new ODataError(400, ErrorCodes.validation, message);
export const forbidden = (message: string) => new ODataError(403, ErrorCodes.forbidden, message);
