// The signed payload: an in-toto Statement v1 naming the manifest digest,
// with cosign's signing predicate type, as `cosign sign --new-bundle-format`
// writes it. https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
import { quote } from "../util/index.js";
import { SignatureError } from "./errors.js";

export const IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json";
export const STATEMENT_TYPE = "https://in-toto.io/Statement/v1";
export const COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1";

interface Statement {
  _type: string;
  subject: { name?: string; digest: Record<string, string> }[];
  predicateType: string;
  predicate?: unknown;
}

export function signingStatement(digest: string, name: string): Buffer {
  const statement: Statement = {
    _type: STATEMENT_TYPE,
    subject: [{ name, digest: { sha256: digest.slice("sha256:".length) } }],
    predicateType: COSIGN_SIGN_PREDICATE,
    predicate: {},
  };
  return Buffer.from(JSON.stringify(statement));
}

/** Checks a verified DSSE payload says what we need: this digest, signed for installation. */
export function checkStatement(payloadType: string, payload: Buffer, digest: string): void {
  if (payloadType !== IN_TOTO_PAYLOAD_TYPE) {
    throw new SignatureError("WRONG_PAYLOAD", `signed payload type is ${quote(payloadType)}, expected ${IN_TOTO_PAYLOAD_TYPE}`);
  }
  let statement: Statement;
  try {
    statement = JSON.parse(payload.toString("utf8")) as Statement;
  } catch (err) {
    throw new SignatureError("WRONG_PAYLOAD", "signed payload is not JSON", { cause: err });
  }
  if (typeof statement !== "object" || statement === null) throw new SignatureError("WRONG_PAYLOAD", "signed payload is not a JSON object");
  if (statement._type !== STATEMENT_TYPE) throw new SignatureError("WRONG_PAYLOAD", `signed payload is not an in-toto Statement v1 (_type ${quote(statement._type)})`);
  if (statement.predicateType !== COSIGN_SIGN_PREDICATE) {
    throw new SignatureError("WRONG_PAYLOAD", `signed predicate type is ${quote(statement.predicateType)}, expected ${COSIGN_SIGN_PREDICATE}`);
  }
  const hex = digest.slice("sha256:".length);
  const subjects = Array.isArray(statement.subject) ? statement.subject : [];
  // Entries as signed, whatever their shape: null, say.
  if (!subjects.some((s) => s?.digest?.sha256 === hex)) {
    const named = subjects.map((s) => `sha256:${s?.digest?.sha256 ?? "?"}`).join(", ") || "nothing";
    throw new SignatureError("SUBJECT_MISMATCH", `signature is for ${quote(named)}, not ${digest}`);
  }
}
