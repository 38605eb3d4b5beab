// Keyless identities: what a Fulcio certificate says about who signed (the
// SAN, the OIDC issuer, the source repository and ref CI providers put in
// Fulcio's extensions) and the trust file's identity policies it must match.
// A policy value is exact, or a regular expression when written `^…$`
// (always matched against the whole value).
// https://github.com/sigstore/fulcio/blob/main/docs/oid-info.md
import type { X509Certificate } from "@sigstore/core";
import { SignatureError } from "./errors.js";

export const FULCIO_OID = {
  IssuerV1: "1.3.6.1.4.1.57264.1.1",
  IssuerV2: "1.3.6.1.4.1.57264.1.8",
  GithubWorkflowRepository: "1.3.6.1.4.1.57264.1.5",
  GithubWorkflowRef: "1.3.6.1.4.1.57264.1.6",
  SourceRepositoryUri: "1.3.6.1.4.1.57264.1.12",
  SourceRepositoryRef: "1.3.6.1.4.1.57264.1.14",
} as const;

/** Who a certificate says signed. */
export interface CertificateIdentity {
  issuer?: string;
  subject?: string;
  repository?: string;
  workflowRef?: string;
}

/** A value to match: exact, or an anchored regular expression. */
export interface Matcher {
  text: string;
  regex?: RegExp;
}

export interface IdentityPolicy {
  name: string;
  issuer: Matcher;
  subject: Matcher;
  repository?: Matcher;
  workflowRef?: Matcher;
}

/** `^…$` is a regular expression (compiled whole-value), anything else an exact value. */
export function matcher(text: string, where: string): Matcher {
  if (!(text.startsWith("^") && text.endsWith("$"))) return { text };
  try {
    return { text, regex: new RegExp(`^(?:${text.slice(1, -1)})$`, "u") };
  } catch (err) {
    throw new SignatureError("KEY_ERROR", `${where}: "${text}" is not a valid regular expression: ${(err as Error).message}`, { cause: err });
  }
}

function matches(m: Matcher, value: string | undefined): boolean {
  if (value === undefined) return false;
  return m.regex ? m.regex.test(value) : m.text === value;
}

/** A Fulcio extension's text: DER UTF8String (the v2 extensions) or raw bytes (the v1 ones). */
function extensionText(cert: X509Certificate, oid: string, der: boolean): string | undefined {
  const ext = cert.extension(oid);
  if (!ext) return undefined;
  if (!der) return ext.value.toString("utf8");
  const inner = ext.valueObj.subs[0];
  return (inner ? inner.value : ext.value).toString("utf8");
}

export function certificateIdentity(cert: X509Certificate): CertificateIdentity {
  const identity: CertificateIdentity = {};
  const issuer = extensionText(cert, FULCIO_OID.IssuerV2, true) ?? extensionText(cert, FULCIO_OID.IssuerV1, false);
  const repository =
    extensionText(cert, FULCIO_OID.SourceRepositoryUri, true) ??
    ((legacy) => (legacy ? `https://github.com/${legacy}` : undefined))(extensionText(cert, FULCIO_OID.GithubWorkflowRepository, false));
  const workflowRef = extensionText(cert, FULCIO_OID.SourceRepositoryRef, true) ?? extensionText(cert, FULCIO_OID.GithubWorkflowRef, false);
  if (issuer !== undefined) identity.issuer = issuer;
  if (cert.subjectAltName !== undefined) identity.subject = cert.subjectAltName;
  if (repository !== undefined) identity.repository = repository;
  if (workflowRef !== undefined) identity.workflowRef = workflowRef;
  return identity;
}

/** Why `identity` does not satisfy `policy` (the first field that differs), or undefined when it does. */
function identityMismatch(policy: IdentityPolicy, identity: CertificateIdentity): string | undefined {
  for (const field of ["issuer", "subject", "repository", "workflowRef"] as const) {
    const m = policy[field];
    if (m && !matches(m, identity[field])) return `${field} ${JSON.stringify(identity[field] ?? null)} ${m.regex ? "does not match" : "is not"} ${JSON.stringify(m.text)}`;
  }
  return undefined;
}

/** The policy `identity` satisfies; a SignatureError (IDENTITY_MISMATCH) naming each policy's failed field when none does. */
export function matchIdentity(policies: readonly IdentityPolicy[], identity: CertificateIdentity): IdentityPolicy {
  const reasons: string[] = [];
  for (const policy of policies) {
    const why = identityMismatch(policy, identity);
    if (!why) return policy;
    reasons.push(`${policy.name}: ${why}`);
  }
  throw new SignatureError("IDENTITY_MISMATCH", `certificate identity (issuer ${identity.issuer ?? "none"}, subject ${identity.subject ?? "none"}) matches no trusted identity: ${reasons.join("; ")}`);
}
