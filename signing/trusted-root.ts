// The Sigstore trusted root (trusted_root.json: Fulcio CAs, Rekor and CT log
// keys, timestamp authorities, each with a validity window) that keyless
// signatures are verified against offline, read from a file or from an OCI
// artifact pinned by digest (what `aegis trust push` stores, see trust-root.ts).
// https://github.com/sigstore/protobuf-specs/blob/main/protos/sigstore_trustroot.proto
import { readFile } from "node:fs/promises";
import { TrustedRoot } from "@sigstore/protobuf-specs";
import { toTrustMaterial, type TrustMaterial } from "@sigstore/verify";
import { SignatureError } from "./errors.js";

export const TRUSTED_ROOT_MEDIA_TYPE = "application/vnd.dev.sigstore.trustedroot+json;version=0.1";
/** trusted_root.json files are a few kilobytes; anything past this is refused unread. */
export const MAX_TRUSTED_ROOT_SIZE = 1024 * 1024;

export interface TrustedRootMaterial {
  /** Where it came from (a path, or a reference by digest), for messages. */
  source: string;
  /** The parsed protobuf message @sigstore/verify takes. */
  root: TrustedRoot;
  /** Number of CT logs: when the root lists any, a certificate must carry an SCT from one. */
  ctlogs: number;
}

/** Each parsed root's trust material (certificates and keys parsed once, when the root is read). */
const materials = new WeakMap<TrustedRootMaterial, TrustMaterial>();

/** Parses and checks trusted_root.json bytes. */
export function parseTrustedRoot(bytes: Buffer, source: string): TrustedRootMaterial {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    throw new SignatureError("TRUST_ROOT_INVALID", `${source}: trusted root is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const obj = doc as Record<string, unknown> | null;
  if (!obj || typeof obj !== "object" || typeof obj.mediaType !== "string" || !obj.mediaType.startsWith("application/vnd.dev.sigstore.trustedroot+json")) {
    throw new SignatureError("TRUST_ROOT_INVALID", `${source}: not a Sigstore trusted root (mediaType must be application/vnd.dev.sigstore.trustedroot+json;version=…)`);
  }
  let root: TrustedRoot;
  let material: TrustMaterial;
  try {
    root = TrustedRoot.fromJSON(doc);
    // Building the trust material parses every certificate and key: a broken one fails here, not at verification.
    material = buildMaterial(root);
  } catch (err) {
    throw new SignatureError("TRUST_ROOT_INVALID", `${source}: invalid trusted root: ${(err as Error).message}`, { cause: err });
  }
  if (root.certificateAuthorities.length === 0) throw new SignatureError("TRUST_ROOT_INVALID", `${source}: the trusted root lists no certificate authority`);
  if (root.tlogs.length === 0) throw new SignatureError("TRUST_ROOT_INVALID", `${source}: the trusted root lists no transparency log`);
  const parsed = { source, root, ctlogs: root.ctlogs.length };
  materials.set(parsed, material);
  return parsed;
}

export async function loadTrustedRootFile(path: string): Promise<TrustedRootMaterial> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new SignatureError("TRUST_ROOT_INVALID", `${path}: cannot read trusted root: ${(err as Error).message}`, { cause: err });
  }
  if (bytes.length > MAX_TRUSTED_ROOT_SIZE) throw new SignatureError("TRUST_ROOT_INVALID", `${path}: ${bytes.length} bytes, over ${MAX_TRUSTED_ROOT_SIZE}`);
  return parseTrustedRoot(bytes, path);
}

/** The trust material of a root (built once, when parseTrustedRoot reads it). */
export function trustMaterialOf(root: TrustedRootMaterial): TrustMaterial {
  let material = materials.get(root);
  if (!material) materials.set(root, (material = buildMaterial(root.root)));
  return material;
}

/** Keyless bundles name no pinned key. */
function buildMaterial(root: TrustedRoot): TrustMaterial {
  return toTrustMaterial(root, () => {
    throw new SignatureError("UNTRUSTED_KEY", "a keyless trust root holds no pinned keys");
  });
}
