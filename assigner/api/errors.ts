// The assigner's error codes, and the one table that maps them to HTTP
// statuses, as distribution keeps one table of error descriptors. The server
// answers every error as JSON {"error", "code", "detail"?}; the client turns
// that answer back into an AssignerError with the same code and detail.
import { AegisError } from "../../errors.js";

export const ERROR_STATUS = {
  BAD_REQUEST: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  /** A write with If-Match whose version is no longer the current one (GET /assignments again). */
  PRECONDITION_FAILED: 412,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  TOO_MANY_REQUESTS: 429,
  BAD_GATEWAY: 502,
  UNAVAILABLE: 503,
  INTERNAL: 500,
} as const;

export type AssignerErrorCode = keyof typeof ERROR_STATUS;

export function isAssignerErrorCode(code: unknown): code is AssignerErrorCode {
  return typeof code === "string" && Object.hasOwn(ERROR_STATUS, code);
}

export class AssignerError extends AegisError<AssignerErrorCode> {
  /**
   * The underlying failure's code (a registry's DIGEST_MISMATCH inside a
   * BAD_GATEWAY, say): given, or the first non-assigner code in the causes.
   */
  readonly detail: string | undefined;

  /** The HTTP status of the answer this error came from, when it came from one (not from the client's own checks). */
  readonly answered: number | undefined;

  constructor(code: AssignerErrorCode, message: string, options?: { cause?: unknown; detail?: string; answered?: number }) {
    super(code, message, options);
    this.detail = options?.detail ?? causeCode(options?.cause);
    this.answered = options?.answered;
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

function causeCode(cause: unknown): string | undefined {
  for (let current = cause, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    if (current instanceof AssignerError) {
      if (current.detail) return current.detail;
    } else if (current instanceof AegisError) {
      return current.code;
    }
  }
  return undefined;
}
