// Verifying an artifact's signatures, offline: sigstore bundles stored as
// referrers (what `aegis sign` and `cosign sign --new-bundle-format` make,
// with a pinned key or keyless: a Fulcio certificate and a Rekor entry
// checked against the trusted root), and cosign's legacy `sha256-<hex>.sig`
// tag signatures (what `cosign sign --key` makes), so existing pipelines keep
// working. `verifyArtifact` is the one check the CLI, the assigner and the
// agent use; `explainArtifact` says what each signature found came to.
import { createHash, verify as verifySignature } from "node:crypto";
import { bundleFromJSON, isBundleWithDsseEnvelope, type BundleWithDsseEnvelope } from "@sigstore/bundle";
import type { X509Certificate } from "@sigstore/core";
import { toSignedEntity, toTrustMaterial, Verifier, VerificationError, type SignedEntity } from "@sigstore/verify";
import { AegisError } from "../errors.js";
import { quote } from "../util/index.js";
import { cancellable, checkDigest, isContentFault, isManifestType, isNotFound, MAX_MANIFEST_SIZE, parseManifest, readAll, referrersTag, RegistryError, type AbortOptions, type Descriptor, type Manifest, type ReadOnlyTarget } from "../registry/index.js";
import { CHECK_OF, SignatureError, type SignatureCheck, type SignatureErrorCode } from "./errors.js";
import { certificateIdentity, matchIdentity } from "./identity.js";
import { digestAlgorithm } from "./keys.js";
import { SIGSTORE_BUNDLE_TYPE } from "./sign.js";
import { checkStatement } from "./statement.js";
import { keyValidity, type SignatureRequirement, type TrustedKey, type TrustPolicy } from "./trust.js";
import { trustMaterialOf, type TrustedRootMaterial } from "./trusted-root.js";

export interface VerifiedSignature {
  /** The artifact (manifest) digest the signature covers. */
  digest: string;
  /** The signature manifest's digest. */
  signature: string;
  /** The signature manifest's descriptor, as the source listed (or tagged) it: what copying the signature with the artifact takes. */
  descriptor: Descriptor;
  format: "sigstore-bundle" | "cosign-legacy";
  key: { name: string; hint: string };
  /** The signature bytes, base64: the DSSE signature, or cosign's annotation. */
  value: string;
  /** "keyless" for a Fulcio certificate (then `key` names the identity policy and the certificate's SHA-256); absent means "key". */
  kind?: "key" | "keyless";
  /** The signer a keyless certificate names. */
  identity?: { issuer: string; subject: string };
}

/** What one signature found came to. */
export interface SignatureVerdict {
  /** The signature manifest's digest. */
  signature: string;
  format: VerifiedSignature["format"];
  kind: "key" | "keyless" | "unknown";
  accepted: boolean;
  /** The check that refused it. */
  check?: SignatureCheck;
  code?: SignatureErrorCode;
  /** Why it was accepted, or refused. */
  reason: string;
  verified?: VerifiedSignature;
}

export interface Explanation {
  digest: string;
  require: SignatureRequirement;
  verified: boolean;
  signatures: SignatureVerdict[];
  /** Why the artifact is refused (the error verifyArtifact throws). */
  error?: { code: SignatureErrorCode; check: SignatureCheck; message: string };
}

export interface VerifyOptions {
  /** The time keys must be valid at; default now (key-signed bundles carry no trusted timestamp). */
  at?: Date;
  /** Cancels every read of the check (a stopping agent). */
  signal?: AbortSignal;
}

/** Signatures are small; a larger layer is refused before it is read. */
export const MAX_SIGNATURE_SIZE = 1024 * 1024;

/** The sigstore bundle referrers of `subject` a check reads: the first MAX_SIGNATURES listed, each digest once. */
export async function listSignatures(source: ReadOnlyTarget, subject: Descriptor, options: AbortOptions = {}): Promise<Descriptor[]> {
  const listed = await source.referrers(subject, SIGSTORE_BUNDLE_TYPE, options);
  return [...new Map(listed.map((r) => [r.digest, r])).values()].slice(0, MAX_SIGNATURES);
}

/**
 * The most signatures one check reads: sigstore bundle referrers (the first
 * listed, each digest once), and layers of a cosign .sig manifest. A source
 * that lists thousands must not make a check read thousands of bundles; an
 * artifact has one per signer and re-signing. The assigner serves as many.
 */
export const MAX_SIGNATURES = 16;
const COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json";
const COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature";

// A key-signed bundle is checked by its key alone: no log entry, SCT or timestamp (verifyBundleReferrer).
const EMPTY_TRUSTED_ROOT = {
  mediaType: "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
  tlogs: [],
  certificateAuthorities: [],
  ctlogs: [],
  timestampAuthorities: [],
};

/**
 * Verifies that `digest` in `source` carries signatures `trust` accepts (by
 * default one by a trusted key or a trusted keyless identity; `require`
 * can ask for a kind, or both). Returns the first that verifies; throws a
 * SignatureError saying why none did.
 */
export async function verifyArtifact(source: ReadOnlyTarget, digest: string, trust: TrustPolicy, options: VerifyOptions = {}): Promise<VerifiedSignature> {
  return (await verifySignatures(source, digest, trust, options)).at(-1)!;
}

/**
 * verifyArtifact's check, returning every signature the requirement rests
 * on: one, or a key and a keyless one for `require: both`. The agent copies
 * just these into its cache.
 */
export async function verifySignatures(source: ReadOnlyTarget, digest: string, trust: TrustPolicy, options: VerifyOptions = {}): Promise<VerifiedSignature[]> {
  const require = trust.require ?? "any";
  const enough = (verdicts: SignatureVerdict[]) => satisfying(require, verdicts) !== undefined;
  return decide(source, digest, require, await evaluate(source, digest, trust, options, enough));
}

/** Every signature of `digest` checked (none skipped once one verifies), each with its verdict, and the overall one. */
export async function explainArtifact(source: ReadOnlyTarget, digest: string, trust: TrustPolicy, options: VerifyOptions = {}): Promise<Explanation> {
  const require = trust.require ?? "any";
  const signatures = await evaluate(source, digest, trust, options, () => false);
  try {
    decide(source, digest, require, signatures);
    return { digest, require, verified: true, signatures };
  } catch (err) {
    if (!(err instanceof SignatureError)) throw err;
    return { digest, require, verified: false, signatures, error: { code: err.code, check: CHECK_OF[err.code], message: err.message } };
  }
}

/** The accepted signatures that meet `require` (a key one first for `both`), or undefined. */
function satisfying(require: SignatureRequirement, verdicts: SignatureVerdict[]): VerifiedSignature[] | undefined {
  const of = (kind: "key" | "keyless") => verdicts.find((v) => v.accepted && v.kind === kind)?.verified;
  const found = require === "key" || require === "keyless" ? [of(require)] : require === "both" ? [of("key"), of("keyless")] : [verdicts.find((v) => v.accepted)?.verified];
  return found.every((v) => v !== undefined) ? (found as VerifiedSignature[]) : undefined;
}

async function evaluate(from: ReadOnlyTarget, digest: string, trust: TrustPolicy, options: VerifyOptions, enough: (verdicts: SignatureVerdict[]) => boolean): Promise<SignatureVerdict[]> {
  const source = cancellable(from, options.signal);
  const subject = await source.resolve(checkDigest(digest));
  const at = options.at ?? new Date();
  const verdicts: SignatureVerdict[] = [];
  // One bad signature (malformed, hostile, or for something else) must not
  // hide a good one: every failure is recorded and the next is tried.
  const attempt = async (signature: string, format: VerifiedSignature["format"], check: (seen: { kind: SignatureVerdict["kind"] }) => Promise<VerifiedSignature>) => {
    const seen: { kind: SignatureVerdict["kind"] } = { kind: format === "cosign-legacy" ? "key" : "unknown" };
    try {
      const verified = await check(seen);
      const kind = verified.kind ?? "key";
      const by = verified.identity ? `identity "${verified.key.name}" (issuer ${verified.identity.issuer}, subject ${verified.identity.subject})` : `key "${verified.key.name}" (${verified.key.hint})`;
      verdicts.push({ signature, format, kind, accepted: true, reason: `signed by ${by}; the statement names ${subject.digest}`, verified });
    } catch (err) {
      options.signal?.throwIfAborted(); // cancelled: no verdict on this signature
      // A registry that cannot be read says nothing of the signature: the check fails with its code (TIMEOUT, UNREACHABLE…).
      if (err instanceof RegistryError && !isContentFault(err)) throw err;
      const error = err instanceof AegisError ? err : new SignatureError("INVALID_BUNDLE", `unreadable signature: ${(err as Error).message}`, { cause: err });
      const code = (error instanceof SignatureError ? error.code : "INVALID_BUNDLE") as SignatureErrorCode;
      verdicts.push({ signature, format, kind: seen.kind, accepted: false, check: CHECK_OF[code], code, reason: error.message });
    }
  };
  for (const referrer of await listSignatures(source, subject)) {
    await attempt(referrer.digest, "sigstore-bundle", (seen) => verifyBundleReferrer(source, subject, referrer, trust, at, seen));
    if (enough(verdicts)) return verdicts;
  }
  // The .sig tag's lookup is part of that signature's check: a tag that names no manifest (a hostile registry's HTML page) is its verdict, not the end of the check.
  const legacy = await findLegacySignature(source, subject).catch(async (err: unknown) => {
    await attempt(`${referrersTag(subject)}.sig`, "cosign-legacy", () => Promise.reject(err));
    return undefined;
  });
  if (legacy) await attempt(legacy.digest, "cosign-legacy", () => verifyLegacySignature(source, subject, legacy, trust, at));
  return verdicts;
}

/** The signatures that meet `require`, or the SignatureError saying why `verdicts` do not. */
function decide(source: ReadOnlyTarget, digest: string, require: SignatureRequirement, verdicts: SignatureVerdict[]): VerifiedSignature[] {
  const met = satisfying(require, verdicts);
  if (met) return met;
  if (verdicts.length === 0) {
    throw new SignatureError("NO_SIGNATURE", `${source.name}@${digest} has no signature (no sigstore bundle referrer, no cosign .sig tag)`);
  }
  const accepted = verdicts.filter((v) => v.accepted);
  if (accepted.length > 0) {
    const kinds = [...new Set(accepted.map((v) => v.kind))].join(" and ");
    const wanted = require === "both" ? "both a key and a keyless signature" : `a ${require} signature`;
    throw new SignatureError("REQUIREMENT_NOT_MET", `the trust policy requires ${wanted}; only ${kinds} signatures of ${digest} verify`);
  }
  if (verdicts.length === 1) {
    const { signature, code, reason } = verdicts[0]!;
    throw new SignatureError(code ?? "INVALID_SIGNATURE", `${reason} (signature ${signature})`);
  }
  const reasons = verdicts.map((v) => `${v.signature}: ${v.reason}`).join("; ");
  throw new SignatureError("NO_VALID_SIGNATURE", `none of the ${verdicts.length} signatures of ${digest} verifies: ${reasons}`);
}

/**
 * A signature manifest, which must hold small blobs only: none a manifest,
 * each within MAX_SIGNATURE_SIZE, MAX_SIGNATURES times that in all (a
 * cosign .sig manifest gains a small layer at each signing). The check reads
 * just the signature layers, but a signature that verifies is copied whole
 * (the agent's cache, copy -r): a genuine bundle in a manifest that also
 * lists a 10 GB layer would fill the disk with it.
 */
async function readManifest(source: ReadOnlyTarget, desc: Descriptor): Promise<Manifest> {
  const doc = parseManifest(await readAll(await source.fetch(desc), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`), desc.mediaType);
  if ("manifests" in doc) throw new SignatureError("INVALID_BUNDLE", `signature ${desc.digest} is an index, not a manifest`);
  const blobs = [doc.config, ...doc.layers];
  const nested = blobs.find((b) => isManifestType(b.mediaType));
  const large = blobs.find((b) => b.size > MAX_SIGNATURE_SIZE);
  const total = blobs.reduce((sum, b) => sum + b.size, 0);
  const most = MAX_SIGNATURES * MAX_SIGNATURE_SIZE;
  const more = nested ? `a manifest (${nested.digest})` : large ? `a blob of ${large.size} bytes (at most ${MAX_SIGNATURE_SIZE})` : total > most ? `blobs of ${total} bytes in all (at most ${most})` : undefined;
  if (more) throw new SignatureError("INVALID_BUNDLE", `signature manifest ${desc.digest} holds more than a signature: ${more}`);
  return doc;
}

/** A layer of a manifest readManifest took: within MAX_SIGNATURE_SIZE. */
async function readLayer(source: ReadOnlyTarget, layer: Descriptor): Promise<Buffer> {
  return readAll(await source.fetch(layer), layer.size, `signature layer ${layer.digest}`);
}

function parseBundle(bytes: Buffer): BundleWithDsseEnvelope {
  let bundle;
  try {
    bundle = bundleFromJSON(JSON.parse(bytes.toString("utf8")));
  } catch (err) {
    throw new SignatureError("INVALID_BUNDLE", `not a valid sigstore bundle: ${(err as Error).message}`, { cause: err });
  }
  if (!isBundleWithDsseEnvelope(bundle)) throw new SignatureError("INVALID_BUNDLE", "sigstore bundle holds no DSSE envelope");
  return bundle;
}

/** The trusted keys a signature may be checked with: the one its hint names, or all when it names none. */
function candidateKeys(trust: TrustPolicy, hint: string, at: Date): TrustedKey[] {
  if (trust.keys.length === 0) throw new SignatureError("UNTRUSTED_KEY", "signed by a key, but the trust policy pins no keys (keyless identities only)");
  const named = hint ? trust.keys.filter((k) => k.hint === hint) : trust.keys;
  if (named.length === 0) throw new SignatureError("UNTRUSTED_KEY", `signed by a key that is not trusted (key hint ${quote(hint)})`);
  const valid = named.filter((k) => !keyValidity(k, at));
  if (valid.length === 0) throw new SignatureError("KEY_NOT_VALID", `${keyValidity(named[0]!, at)}; the signature cannot be trusted at ${at.toISOString()}`);
  return valid;
}

async function verifyBundleReferrer(source: ReadOnlyTarget, subject: Descriptor, referrer: Descriptor, trust: TrustPolicy, at: Date, seen: { kind: SignatureVerdict["kind"] }): Promise<VerifiedSignature> {
  const manifest = await readManifest(source, referrer);
  if (manifest.subject?.digest !== subject.digest) {
    throw new SignatureError("SUBJECT_MISMATCH", `signature manifest refers to ${manifest.subject?.digest ?? "nothing"}, not ${subject.digest}`);
  }
  const layer = manifest.layers.find((l) => l.mediaType === SIGSTORE_BUNDLE_TYPE);
  if (!layer) throw new SignatureError("INVALID_BUNDLE", `signature manifest has no ${SIGSTORE_BUNDLE_TYPE} layer`);
  const bundle = parseBundle(await readLayer(source, layer));
  const keyContent = bundle.verificationMaterial.content;
  seen.kind = keyContent.$case === "publicKey" ? "key" : "keyless";
  if (keyContent.$case !== "publicKey") return verifyKeyless(bundle, subject, referrer, trust);
  const hint = keyContent.publicKey.hint;
  // The pinned key alone decides: `cosign sign --key` also logs to Rekor by
  // default and puts the entry in the bundle, which the verifier would check
  // against the empty trusted root below, and refuse.
  const entity: SignedEntity = { ...toSignedEntity(bundle), tlogEntries: [], timestamps: [] };
  let lastError: unknown;
  for (const key of candidateKeys(trust, hint, at)) {
    const material = toTrustMaterial(EMPTY_TRUSTED_ROOT, () => ({ publicKey: key.publicKey, validFor: () => true }));
    try {
      new Verifier(material, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(entity);
    } catch (err) {
      if (!(err instanceof VerificationError)) throw err;
      lastError = err;
      continue;
    }
    // The envelope is authentic; now check it says what we install.
    const envelope = bundle.content.dsseEnvelope;
    checkStatement(envelope.payloadType, envelope.payload, subject.digest);
    const value = envelope.signatures[0]?.sig.toString("base64") ?? "";
    return { digest: subject.digest, signature: referrer.digest, descriptor: referrer, format: "sigstore-bundle", key: { name: key.name, hint: key.hint }, value, kind: "key" };
  }
  if (!hint) throw new SignatureError("UNTRUSTED_KEY", "signed by a key that is not trusted (the bundle names no key and no trusted key verifies it)", { cause: lastError });
  throw new SignatureError("INVALID_SIGNATURE", "signature does not verify: the signed payload was modified or the signature is corrupt", { cause: lastError });
}

/**
 * A keyless bundle: the certificate must chain to a CA of the trusted root
 * at the log entry's signed time, the entry's signed entry timestamp (and
 * inclusion proof, when present) must verify with a log key of the root,
 * the entry must be about this signature, the signature must verify with
 * the certificate's key; then its identity must match a policy, and the
 * statement name this digest. One log entry and one verified timestamp (the
 * entry's, or an RFC 3161 one the bundle carries) are required.
 */
function verifyKeyless(bundle: BundleWithDsseEnvelope, subject: Descriptor, referrer: Descriptor, trust: TrustPolicy): VerifiedSignature {
  const root = trust.trustedRoot;
  if (!root || !trust.identities?.length) {
    throw new SignatureError("KEYLESS_NOT_TRUSTED", "keyless signature (a Fulcio certificate), but the trust policy names no keyless identities and trusted root");
  }
  const entity = toSignedEntity(bundle);
  if (entity.key.$case !== "certificate") throw new SignatureError("INVALID_BUNDLE", "keyless bundle without a certificate");
  const cert = entity.key.certificate;
  if (bundle.verificationMaterial.tlogEntries.length === 0) {
    throw new SignatureError("NO_LOG_ENTRY", "keyless signature without a transparency log entry: its certificate's short validity cannot be checked");
  }
  try {
    new Verifier(trustMaterialOf(root), { tlogThreshold: 1, ctlogThreshold: root.ctlogs > 0 ? 1 : 0, timestampThreshold: 1 }).verify(entity);
  } catch (err) {
    throw keylessFailure(err, entity, cert, root);
  }
  const identity = certificateIdentity(cert);
  const policy = matchIdentity(trust.identities, identity);
  const envelope = bundle.content.dsseEnvelope;
  checkStatement(envelope.payloadType, envelope.payload, subject.digest);
  return {
    digest: subject.digest,
    signature: referrer.digest,
    descriptor: referrer,
    format: "sigstore-bundle",
    key: { name: policy.name, hint: createHash("sha256").update(cert.root.toDER()).digest("base64") },
    value: envelope.signatures[0]?.sig.toString("base64") ?? "",
    kind: "keyless",
    identity: { issuer: identity.issuer ?? "", subject: identity.subject ?? "" },
  };
}

/** Which check a keyless bundle failed, from @sigstore/verify's error, in words that name it. */
function keylessFailure(err: unknown, entity: SignedEntity, cert: X509Certificate, root: TrustedRootMaterial): SignatureError {
  if (!(err instanceof VerificationError)) return new SignatureError("INVALID_BUNDLE", `keyless bundle cannot be verified: ${(err as Error).message}`, { cause: err });
  const entry = entity.tlogEntries[0];
  const logTime = entry?.inclusionPromise && entry.integratedTime ? new Date(Number(entry.integratedTime) * 1000) : undefined;
  const when = logTime ? logTime.toISOString() : "the signed time";
  switch (err.code) {
    case "CERTIFICATE_ERROR":
      if (/SCT/.test(err.message)) return new SignatureError("MISSING_SCT", `certificate carries no SCT from a CT log of the trusted root ${root.source}: ${err.message}`, { cause: err });
      if (logTime && !cert.validForDate(logTime)) {
        return new SignatureError("CERTIFICATE_NOT_VALID", `certificate is valid from ${cert.notBefore.toISOString()} to ${cert.notAfter.toISOString()}, not at the log entry's signed time ${when}`, { cause: err });
      }
      return new SignatureError("UNTRUSTED_CHAIN", `certificate does not chain to a certificate authority of the trusted root ${root.source} valid at ${when}`, { cause: err });
    case "TLOG_INCLUSION_PROMISE_ERROR":
      return new SignatureError("LOG_ENTRY_UNTRUSTED", `the log entry's signed entry timestamp does not verify with a transparency log key of the trusted root ${root.source} (an unknown log, or a forged entry)`, { cause: err });
    case "TLOG_INCLUSION_PROOF_ERROR":
      return new SignatureError("INCLUSION_PROOF_INVALID", `the log entry's inclusion proof does not verify: ${err.message}`, { cause: err });
    case "TLOG_BODY_ERROR":
      return new SignatureError("LOG_ENTRY_MISMATCH", `the log entry is not about this signature: ${err.message}`, { cause: err });
    case "TLOG_ERROR":
    case "TLOG_MISSING_INCLUSION_ERROR":
      return new SignatureError("NO_LOG_ENTRY", `no verifiable transparency log entry: ${err.message}`, { cause: err });
    case "TIMESTAMP_ERROR":
      return new SignatureError("TIMESTAMP_INVALID", `no verified timestamp (a log entry with a signed entry timestamp, or an RFC 3161 timestamp of the root): ${err.message}`, { cause: err });
    case "SIGNATURE_ERROR":
      return new SignatureError("INVALID_SIGNATURE", "signature does not verify with the certificate's key: the signed payload was modified or the signature is corrupt", { cause: err });
    default:
      return new SignatureError("INVALID_SIGNATURE", `keyless signature refused: ${err.message}`, { cause: err });
  }
}

async function findLegacySignature(source: ReadOnlyTarget, subject: Descriptor): Promise<Descriptor | undefined> {
  try {
    return await source.resolve(`${referrersTag(subject)}.sig`);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

interface SimpleSigning {
  critical?: { image?: { "docker-manifest-digest"?: string }; type?: string };
}

/**
 * cosign's legacy format: each layer is a "simple signing" JSON payload,
 * its signature (base64, over the layer's exact bytes) in an annotation.
 * https://github.com/sigstore/cosign/blob/main/specs/SIGNATURE_SPEC.md
 */
async function verifyLegacySignature(source: ReadOnlyTarget, subject: Descriptor, sigManifest: Descriptor, trust: TrustPolicy, at: Date): Promise<VerifiedSignature> {
  const manifest = await readManifest(source, sigManifest);
  const layers = manifest.layers.filter((l) => l.mediaType === COSIGN_SIMPLESIGNING && l.annotations?.[COSIGN_SIGNATURE_ANNOTATION]).slice(0, MAX_SIGNATURES);
  if (layers.length === 0) throw new SignatureError("INVALID_BUNDLE", "cosign .sig manifest has no signed simple-signing layer");
  const keys = candidateKeys(trust, "", at);
  // A layer that verifies but is about another image (copied from its .sig)
  // must not hide a later layer that is about this one.
  let wrongSubject: SignatureError | undefined;
  for (const layer of layers) {
    const payload = await readLayer(source, layer);
    const signature = Buffer.from(layer.annotations![COSIGN_SIGNATURE_ANNOTATION]!, "base64");
    const key = keys.find((k) => verifySignature(digestAlgorithm(k.publicKey), payload, k.publicKey, signature));
    if (!key) continue;
    let doc: SimpleSigning | null = null;
    try {
      doc = JSON.parse(payload.toString("utf8")) as SimpleSigning | null;
    } catch {
      // Reported below as a payload of the wrong type.
    }
    if (doc?.critical?.type !== "cosign container image signature") {
      wrongSubject = new SignatureError("WRONG_PAYLOAD", `cosign payload type is ${quote(doc?.critical?.type)}, not "cosign container image signature"`);
      continue;
    }
    const signed = doc.critical.image?.["docker-manifest-digest"];
    if (signed !== subject.digest) {
      wrongSubject = new SignatureError("SUBJECT_MISMATCH", `cosign signature is for ${quote(signed)}, not ${subject.digest}`);
      continue;
    }
    return { digest: subject.digest, signature: sigManifest.digest, descriptor: sigManifest, format: "cosign-legacy", key: { name: key.name, hint: key.hint }, value: signature.toString("base64"), kind: "key" };
  }
  if (wrongSubject) throw wrongSubject;
  throw new SignatureError("UNTRUSTED_KEY", "cosign signature made by a key that is not trusted");
}
