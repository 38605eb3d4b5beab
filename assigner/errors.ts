// The server's side of the assigner's errors: any failure mapped to an
// AssignerError (its code and status table are in api/errors.ts). Every error
// answer is JSON {"error", "code", "detail"?}, `detail` the underlying code.
import { AegisError } from "../errors.js";
import { AssignerError } from "./api/index.js";
import { isNotFound, RegistryError } from "../registry/index.js";

/** The store (Redis) cannot answer: the API says 503 rather than hang or 500. */
export class StoreUnavailableError extends AssignerError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("UNAVAILABLE", message, options);
  }
}

/**
 * Any failure as the API's error: its code's status, or a 500 that reveals
 * nothing. `context` prefixes the message ("cannot read …").
 */
export function toAssignerError(err: unknown, context?: string): AssignerError {
  const withContext = (message: string) => (context ? `${context}: ${message}` : message);
  if (err instanceof AssignerError) return context ? new AssignerError(err.code, withContext(err.message), { cause: err }) : err;
  if (isNotFound(err)) return new AssignerError("NOT_FOUND", withContext((err as Error).message), { cause: err });
  // The registry failed us (unreachable, refused, or sent bytes that fail verification).
  if (err instanceof RegistryError) return new AssignerError("BAD_GATEWAY", withContext(err.message), { cause: err });
  if (err instanceof AegisError) return new AssignerError("BAD_REQUEST", withContext(err.message), { cause: err });
  // body-parser's errors carry a type: https://github.com/expressjs/body-parser#errors
  const parserError = err as { type?: string; message?: string };
  if (parserError.type === "entity.parse.failed") return new AssignerError("BAD_REQUEST", `malformed JSON body: ${parserError.message}`);
  if (parserError.type === "entity.too.large") return new AssignerError("PAYLOAD_TOO_LARGE", "request body is too large");
  if (parserError.type === "encoding.unsupported" || parserError.type === "charset.unsupported" || parserError.type === "entity.verify.failed") {
    return new AssignerError("UNSUPPORTED_MEDIA_TYPE", parserError.message ?? "unsupported request body");
  }
  if (parserError.type === "request.aborted" || parserError.type === "request.size.invalid") return new AssignerError("BAD_REQUEST", parserError.message ?? "bad request body");
  return new AssignerError("INTERNAL", "internal error", { cause: err });
}
