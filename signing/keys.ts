// Signing keys: ECDSA P-256 (the default, as cosign's) or Ed25519, stored as
// PKCS#8 PEM (optionally passphrase-encrypted) with an SPKI PEM public key.
// A key's hint is base64(sha256(SPKI DER)), the `publicKey.hint` of a
// sigstore bundle that names which pinned key verifies it.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { lstat, open, readFile, rm } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { describeError } from "../errors.js";
import { syncDir } from "../util/index.js";
import { SignatureError } from "./errors.js";

export type KeyAlgorithm = "ecdsa-p256" | "ed25519";

export interface KeyPairPem {
  privateKey: string;
  publicKey: string;
}

export function generateKeyPair(algorithm: KeyAlgorithm = "ecdsa-p256", passphrase?: string): KeyPairPem {
  const { privateKey, publicKey } =
    algorithm === "ed25519" ? generateKeyPairSync("ed25519") : generateKeyPairSync("ec", { namedCurve: "prime256v1" });
  return {
    privateKey: privateKey
      .export(passphrase ? { type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase } : { type: "pkcs8", format: "pem" })
      .toString(),
    publicKey: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

/**
 * Writes `<prefix>.key` (mode 0600) and `<prefix>.pub`, refusing to overwrite
 * either: both are written and synced, or neither is left (an existing
 * `.pub`, a full disk: what this call made is removed), so a failed keygen
 * never leaves half a pair that the next one refuses to overwrite.
 */
export async function writeKeyPair(prefix: string, pair: KeyPairPem): Promise<{ privateKeyPath: string; publicKeyPath: string }> {
  const privateKeyPath = `${prefix}.key`;
  const publicKeyPath = `${prefix}.pub`;
  const files = [
    { path: privateKeyPath, data: pair.privateKey, mode: 0o600 },
    { path: publicKeyPath, data: pair.publicKey, mode: 0o644 },
  ];
  // Both names first: an existing .pub costs no .key written and removed again.
  for (const { path } of files) {
    if (await lstat(path).then(() => true, () => false)) throw new SignatureError("KEY_ERROR", `cannot write ${path}: file exists`);
  }
  const made: string[] = [];
  for (const { path, data, mode } of files) {
    try {
      // "wx": a file made meanwhile is not overwritten either.
      const handle = await open(path, "wx", mode);
      made.push(path);
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (err) {
      await Promise.allSettled(made.map((done) => rm(done, { force: true })));
      const why = (err as NodeJS.ErrnoException).code === "EEXIST" ? "file exists" : describeError(err);
      throw new SignatureError("KEY_ERROR", `cannot write ${path}: ${why} (no key pair written)`, { cause: err });
    }
  }
  await syncDir(dirname(resolve(privateKeyPath)));
  return { privateKeyPath, publicKeyPath };
}

async function readKeyFile(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new SignatureError("KEY_ERROR", `${path}: cannot read key file`, { cause: err });
  }
}

function checkAlgorithm(key: KeyObject, source: string): KeyObject {
  const ok = key.asymmetricKeyType === "ed25519" || (key.asymmetricKeyType === "ec" && key.asymmetricKeyDetails?.namedCurve === "prime256v1");
  if (!ok) throw new SignatureError("KEY_ERROR", `${source}: unsupported key type (need ECDSA P-256 or Ed25519)`);
  return key;
}

export async function loadPrivateKey(path: string, passphrase?: string): Promise<KeyObject> {
  const pem = await readKeyFile(path);
  try {
    return checkAlgorithm(createPrivateKey({ key: pem, format: "pem", ...(passphrase ? { passphrase } : {}) }), path);
  } catch (err) {
    if (err instanceof SignatureError) throw err;
    const encrypted = pem.includes("ENCRYPTED");
    const why = encrypted ? (passphrase ? "wrong passphrase" : "the key is encrypted: set AEGIS_KEY_PASSPHRASE") : "not a PKCS#8 PEM private key";
    throw new SignatureError("KEY_ERROR", `${path}: ${why}`, { cause: err });
  }
}

export function parsePublicKey(pem: string, source: string): KeyObject {
  try {
    return checkAlgorithm(createPublicKey({ key: pem, format: "pem" }), source);
  } catch (err) {
    if (err instanceof SignatureError) throw err;
    throw new SignatureError("KEY_ERROR", `${source}: not a PEM public key`, { cause: err });
  }
}

export async function loadPublicKey(path: string): Promise<KeyObject> {
  return parsePublicKey(await readKeyFile(path), path);
}

export function keyHint(publicKey: KeyObject): string {
  return createHash("sha256").update(publicKey.export({ type: "spki", format: "der" })).digest("base64");
}

/** The algorithm argument node:crypto's sign/verify take: SHA-256 for ECDSA, none for Ed25519. */
export function digestAlgorithm(key: KeyObject): string | null {
  return key.asymmetricKeyType === "ed25519" ? null : "sha256";
}
