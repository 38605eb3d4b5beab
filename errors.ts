// One error hierarchy for the whole project, after sigstore-js's BaseError:
// every error carries a stable string code that scripts and HTTP mappings
// can switch on, and the underlying error as `cause` (as nats.js does).

export class AegisError<C extends string = string> extends Error {
  readonly code: C;

  constructor(code: C, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Input the user gave us is wrong: a file, a field, a flag, a reference. */
export type InputErrorCode =
  | "INVALID_POLICY"
  | "INVALID_REFERENCE"
  | "INVALID_ARGUMENT"
  | "FILE_NOT_FOUND";

export class InputError extends AegisError<InputErrorCode> {}

/** The code to report for any failure: the first stable code in the cause chain. */
export function errorCode(err: unknown): string {
  for (let current = err, depth = 0; current instanceof Error && depth < 5; current = current.cause, depth++) {
    if (current instanceof AegisError) return current.code;
  }
  return "INTERNAL";
}

/** The message of an error, with its causes, on one line. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    const message = current instanceof Error ? current.message : String(current);
    if (message && !parts.some((p) => p.includes(message))) parts.push(message);
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(": ");
}
