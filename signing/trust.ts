// Which keys a verifier trusts: pinned public keys, each optionally limited
// to a validity window. Given as key files (`--key a.pub --key b.pub`, or
// comma-separated in AEGIS_TRUST) or a trust file:
//
//   keys:
//     - name: ci-2026
//       key: ci-2026.pub            # a path relative to this file, or inline PEM
//       validFrom: 2026-01-01T00:00:00Z
//       validUntil: 2027-01-01T00:00:00Z
import { readFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import type { KeyObject } from "node:crypto";
import { parse } from "yaml";
import { z } from "zod";
import { keyHint, loadPublicKey, parsePublicKey } from "./keys.js";
import { SignatureError } from "./errors.js";

export interface TrustedKey {
  name: string;
  publicKey: KeyObject;
  hint: string;
  validFrom?: Date;
  validUntil?: Date;
}

export interface TrustPolicy {
  keys: TrustedKey[];
}

export function trustedKey(name: string, publicKey: KeyObject, window: { validFrom?: Date; validUntil?: Date } = {}): TrustedKey {
  return { name, publicKey, hint: keyHint(publicKey), ...window };
}

/** Whether `key` may be used at `at`; the reason when not. */
export function keyValidity(key: TrustedKey, at: Date): string | undefined {
  if (key.validFrom && at < key.validFrom) return `key "${key.name}" is not valid before ${key.validFrom.toISOString()}`;
  if (key.validUntil && at > key.validUntil) return `key "${key.name}" expired at ${key.validUntil.toISOString()}`;
  return undefined;
}

const date = z.union([z.string(), z.date()]).transform((value, ctx) => {
  const parsed = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(parsed.getTime())) {
    ctx.addIssue({ code: "custom", message: `"${String(value)}" is not an ISO 8601 date` });
    return z.NEVER;
  }
  return parsed;
});

const trustFileSchema = z.strictObject({
  keys: z
    .array(z.strictObject({ name: z.string().min(1), key: z.string().min(1), validFrom: date.optional(), validUntil: date.optional() }))
    .min(1, "a trust file needs at least one key"),
});

export async function loadTrustFile(path: string): Promise<TrustPolicy> {
  let doc: unknown;
  try {
    doc = parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new SignatureError("KEY_ERROR", `${path}: cannot read trust file: ${(err as Error).message}`, { cause: err });
  }
  const result = trustFileSchema.safeParse(doc);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new SignatureError("KEY_ERROR", `${path}: ${issue.path.join(".")}: ${issue.message}`);
  }
  const keys = await Promise.all(
    result.data.keys.map(async (entry) => {
      const publicKey = entry.key.includes("-----BEGIN")
        ? parsePublicKey(entry.key, `${path}: ${entry.name}`)
        : await loadPublicKey(resolve(dirname(path), entry.key));
      return trustedKey(entry.name, publicKey, { validFrom: entry.validFrom, validUntil: entry.validUntil });
    }),
  );
  return { keys };
}

/**
 * Resolves the trust options of a command: public key files, and/or one
 * trust file (.yaml, .yml or .json). Each entry of `specs` may itself be a
 * comma-separated list, as AEGIS_TRUST is.
 */
export async function loadTrust(specs: string[]): Promise<TrustPolicy> {
  const paths = specs.flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  if (paths.length === 0) throw new SignatureError("KEY_ERROR", "no trusted keys given: pass --key <file.pub> or --trust <file>");
  const keys: TrustedKey[] = [];
  for (const path of paths) {
    if (/\.(ya?ml|json)$/.test(path)) keys.push(...(await loadTrustFile(path)).keys);
    else keys.push(trustedKey(basename(path), await loadPublicKey(path)));
  }
  return { keys };
}
