// The assigner's errors, and the one table that maps their codes to HTTP
// statuses, as distribution keeps one table of error descriptors.
// Every error answer is JSON {"error": "...", "code": "..."}.
import { AegisError } from "../errors.js";

export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  BAD_GATEWAY: 502,
  UNAVAILABLE: 503,
  INTERNAL: 500,
} as const;

export type AssignerErrorCode = keyof typeof ERROR_STATUS;

export class AssignerError extends AegisError<AssignerErrorCode> {
  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

/** The store (Redis) cannot answer: the API says 503 rather than hang or 500. */
export class StoreUnavailableError extends AssignerError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("UNAVAILABLE", message, options);
  }
}
