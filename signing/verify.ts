// Verifying an artifact's signatures against pinned keys, offline: sigstore
// bundles stored as referrers (what `aegis sign` and `cosign sign
// --new-bundle-format` make), and cosign's legacy `sha256-<hex>.sig` tag
// signatures (what `cosign sign --key` makes), so existing pipelines keep working.
import { verify as verifySignature } from "node:crypto";
import { bundleFromJSON, isBundleWithDsseEnvelope, type BundleWithDsseEnvelope } from "@sigstore/bundle";
import { toSignedEntity, toTrustMaterial, Verifier, VerificationError } from "@sigstore/verify";
import { AegisError } from "../errors.js";
import { checkDigest, MAX_MANIFEST_SIZE, parseManifest, readAll, isNotFound, referrersTag, type Descriptor, type Manifest, type ReadOnlyTarget } from "../registry/index.js";
import { SignatureError } from "./errors.js";
import { digestAlgorithm } from "./keys.js";
import { SIGSTORE_BUNDLE_TYPE } from "./sign.js";
import { checkStatement } from "./statement.js";
import { keyValidity, type TrustedKey, type TrustPolicy } from "./trust.js";

export interface VerifiedSignature {
  /** The artifact (manifest) digest the signature covers. */
  digest: string;
  /** The signature manifest's digest. */
  signature: string;
  format: "sigstore-bundle" | "cosign-legacy";
  key: { name: string; hint: string };
  /** The signature bytes, base64: the DSSE signature, or cosign's annotation. */
  value: string;
}

export interface VerifyOptions {
  /** The time keys must be valid at; default now (key-signed bundles carry no trusted timestamp). */
  at?: Date;
}

/** Signatures are small; a larger layer is refused before it is read. */
const MAX_SIGNATURE_SIZE = 1024 * 1024;
const COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json";
const COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature";

// Key-based bundles have no transparency log entry, SCT or timestamp to check.
const EMPTY_TRUSTED_ROOT = {
  mediaType: "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
  tlogs: [],
  certificateAuthorities: [],
  ctlogs: [],
  timestampAuthorities: [],
};

/**
 * Verifies that `digest` in `source` carries at least one signature by a
 * trusted key. Returns the first that verifies; throws a SignatureError
 * saying why none did.
 */
export async function verifyArtifact(source: ReadOnlyTarget, digest: string, trust: TrustPolicy, options: VerifyOptions = {}): Promise<VerifiedSignature> {
  const subject = await source.resolve(checkDigest(digest));
  const at = options.at ?? new Date();
  const failures: { signature: string; error: AegisError }[] = [];
  // One bad signature (malformed, hostile, or for something else) must not
  // hide a good one: every failure is recorded and the next is tried.
  const attempt = async (signature: string, check: () => Promise<VerifiedSignature>) => {
    try {
      return await check();
    } catch (err) {
      const error = err instanceof AegisError ? err : new SignatureError("INVALID_BUNDLE", `unreadable signature: ${(err as Error).message}`, { cause: err });
      failures.push({ signature, error });
      return undefined;
    }
  };
  for (const referrer of await source.referrers(subject, SIGSTORE_BUNDLE_TYPE)) {
    const verified = await attempt(referrer.digest, () => verifyBundleReferrer(source, subject, referrer, trust, at));
    if (verified) return verified;
  }
  const legacy = await findLegacySignature(source, subject);
  if (legacy) {
    const verified = await attempt(legacy.digest, () => verifyLegacySignature(source, subject, legacy, trust, at));
    if (verified) return verified;
  }
  if (failures.length === 0) {
    throw new SignatureError("NO_SIGNATURE", `${source.name}@${digest} has no signature (no sigstore bundle referrer, no cosign .sig tag)`);
  }
  if (failures.length === 1) {
    const { signature, error } = failures[0]!;
    throw new SignatureError(error instanceof SignatureError ? error.code : "INVALID_SIGNATURE", `${error.message} (signature ${signature})`, { cause: error });
  }
  const reasons = failures.map((f) => `${f.signature}: ${f.error.message}`).join("; ");
  throw new SignatureError("NO_VALID_SIGNATURE", `none of the ${failures.length} signatures of ${digest} verifies: ${reasons}`);
}

async function readManifest(source: ReadOnlyTarget, desc: Descriptor): Promise<Manifest> {
  const doc = parseManifest(await readAll(await source.fetch(desc), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`), desc.mediaType);
  if ("manifests" in doc) throw new SignatureError("INVALID_BUNDLE", `signature ${desc.digest} is an index, not a manifest`);
  return doc;
}

async function readLayer(source: ReadOnlyTarget, layer: Descriptor): Promise<Buffer> {
  if (layer.size > MAX_SIGNATURE_SIZE) throw new SignatureError("INVALID_BUNDLE", `signature layer is ${layer.size} bytes, over ${MAX_SIGNATURE_SIZE}`);
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
  const named = hint ? trust.keys.filter((k) => k.hint === hint) : trust.keys;
  if (named.length === 0) throw new SignatureError("UNTRUSTED_KEY", `signed by a key that is not trusted (key hint ${hint})`);
  const valid = named.filter((k) => !keyValidity(k, at));
  if (valid.length === 0) throw new SignatureError("KEY_NOT_VALID", `${keyValidity(named[0]!, at)}; the signature cannot be trusted at ${at.toISOString()}`);
  return valid;
}

async function verifyBundleReferrer(source: ReadOnlyTarget, subject: Descriptor, referrer: Descriptor, trust: TrustPolicy, at: Date): Promise<VerifiedSignature> {
  const manifest = await readManifest(source, referrer);
  if (manifest.subject?.digest !== subject.digest) {
    throw new SignatureError("SUBJECT_MISMATCH", `signature manifest refers to ${manifest.subject?.digest ?? "nothing"}, not ${subject.digest}`);
  }
  const layer = manifest.layers.find((l) => l.mediaType === SIGSTORE_BUNDLE_TYPE);
  if (!layer) throw new SignatureError("INVALID_BUNDLE", `signature manifest has no ${SIGSTORE_BUNDLE_TYPE} layer`);
  const bundle = parseBundle(await readLayer(source, layer));
  const keyContent = bundle.verificationMaterial.content;
  const hint = keyContent.$case === "publicKey" ? keyContent.publicKey.hint : "";
  const entity = toSignedEntity(bundle);
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
    return { digest: subject.digest, signature: referrer.digest, format: "sigstore-bundle", key: { name: key.name, hint: key.hint }, value };
  }
  if (!hint) throw new SignatureError("UNTRUSTED_KEY", "signed by a key that is not trusted (the bundle names no key and no trusted key verifies it)", { cause: lastError });
  throw new SignatureError("INVALID_SIGNATURE", "signature does not verify: the signed payload was modified or the signature is corrupt", { cause: lastError });
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
  const layers = manifest.layers.filter((l) => l.mediaType === COSIGN_SIMPLESIGNING && l.annotations?.[COSIGN_SIGNATURE_ANNOTATION]);
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
      wrongSubject = new SignatureError("WRONG_PAYLOAD", `cosign payload type is "${doc?.critical?.type}", not "cosign container image signature"`);
      continue;
    }
    const signed = doc.critical.image?.["docker-manifest-digest"];
    if (signed !== subject.digest) {
      wrongSubject = new SignatureError("SUBJECT_MISMATCH", `cosign signature is for ${signed}, not ${subject.digest}`);
      continue;
    }
    return { digest: subject.digest, signature: sigManifest.digest, format: "cosign-legacy", key: { name: key.name, hint: key.hint }, value: signature.toString("base64") };
  }
  if (wrongSubject) throw wrongSubject;
  throw new SignatureError("UNTRUSTED_KEY", "cosign signature made by a key that is not trusted");
}
