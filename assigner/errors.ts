// The server's side of the assigner's errors: any failure mapped to an
// AssignerError (its code and status table are in api/errors.ts). Every error
// answer is JSON {"error", "code", "detail"?}, `detail` the underlying code.
import { InputError } from "../errors.js";
import { BundleError } from "../bundle/index.js";
import { AssignerError, ERROR_STATUS, type AssignerErrorCode } from "./api/index.js";
import { isNotFound, RegistryError } from "../registry/index.js";

/** The store (Redis) cannot answer: the API says 503 rather than hang or 500. */
export class StoreUnavailableError extends AssignerError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("UNAVAILABLE", message, options);
  }
}

/** The code of a 4xx status, from the one table (BAD_REQUEST for one it lacks). */
function clientErrorCode(status: number): AssignerErrorCode {
  const code = (Object.keys(ERROR_STATUS) as AssignerErrorCode[]).find((c) => ERROR_STATUS[c] === status);
  return code ?? "BAD_REQUEST";
}

/**
 * Any failure as the API's error: its code's status, or a 500 that reveals
 * nothing. `context` prefixes the message ("cannot read …"). By class: the
 * caller's bad input (InputError) is a 400; bytes a registry gave that are
 * not what they should be (BundleError) and registry failures are a 502, with
 * the underlying code in `detail`. Code that reads bytes the caller handed
 * over (an upload) wraps their BundleError as a 400 itself.
 */
export function toAssignerError(err: unknown, context?: string): AssignerError {
  const withContext = (message: string) => (context ? `${context}: ${message}` : message);
  if (err instanceof AssignerError) return context ? new AssignerError(err.code, withContext(err.message), { cause: err }) : err;
  if (isNotFound(err)) return new AssignerError("NOT_FOUND", withContext((err as Error).message), { cause: err });
  // The registry failed us (unreachable, refused, or sent bytes that fail verification or are no bundle).
  if (err instanceof RegistryError || err instanceof BundleError) return new AssignerError("BAD_GATEWAY", withContext(err.message), { cause: err });
  if (err instanceof InputError) return new AssignerError("BAD_REQUEST", withContext(err.message), { cause: err });
  // Express's own: the router's undecodable path parameter (/artifacts/%ZZ) is a URIError.
  if (err instanceof URIError) return new AssignerError("BAD_REQUEST", "malformed URL: invalid percent-encoding");
  const clientError = err as { code?: unknown; message?: string; status?: unknown; statusCode?: unknown; expose?: unknown };
  // The client went away in the middle of its request: nobody reads the answer.
  if (clientError.code === "ECONNRESET" || clientError.code === "ERR_STREAM_PREMATURE_CLOSE") return new AssignerError("BAD_REQUEST", "request aborted");
  // Any other client error Express or its parts raise (http-errors: status and statusCode, expose).
  const status = typeof clientError.status === "number" ? clientError.status : clientError.statusCode;
  if (typeof status === "number" && status >= 400 && status < 500) {
    const code = clientErrorCode(status);
    const message = clientError.expose === true && typeof clientError.message === "string" ? clientError.message : code.toLowerCase().replace(/_/g, " ");
    return new AssignerError(code, message);
  }
  return new AssignerError("INTERNAL", "internal error", { cause: err });
}
