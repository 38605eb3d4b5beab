// What a verifier trusts: pinned public keys, each optionally limited to a
// validity window, and keyless identities (a CI's OIDC identity in a Fulcio
// certificate logged in Rekor) checked against a Sigstore trusted root.
// Given as key files (`--key a.pub --key b.pub`, or comma-separated in
// AEGIS_TRUST) or a trust file:
//
//   keys:
//     - name: ci-2026
//       key: ci-2026.pub            # a path relative to this file, or inline PEM
//       validFrom: 2026-01-01T00:00:00Z
//       validUntil: 2027-01-01T00:00:00Z
//   identities:                     # keyless: exact values, or ^…$ regular expressions
//     - name: release
//       issuer: https://token.actions.githubusercontent.com
//       subject: "^https://github.com/acme/policies/.github/workflows/release.yml@refs/tags/v.*$"
//       repository: https://github.com/acme/policies          # optional
//       workflowRef: "^refs/tags/v.*$"                          # optional
//   trustedRoot: trusted_root.json  # a path, or host/repo@sha256:… (an `aegis trust push` artifact)
//   require: any                    # any | key | keyless | both
import { readFile } from "node:fs/promises";
import { basename, dirname, resolve } from "node:path";
import type { KeyObject } from "node:crypto";
import { parse } from "yaml";
import { z } from "zod";
import { keyHint, loadPublicKey, parsePublicKey } from "./keys.js";
import { SignatureError } from "./errors.js";
import { matcher, type IdentityPolicy } from "./identity.js";
import { loadTrustedRootFile, type TrustedRootMaterial } from "./trusted-root.js";

export interface TrustedKey {
  name: string;
  publicKey: KeyObject;
  hint: string;
  validFrom?: Date;
  validUntil?: Date;
}

/** Which kinds of signature must verify: one of either (the default), a key's, a keyless one, or one of each. */
export type SignatureRequirement = "any" | "key" | "keyless" | "both";

export interface TrustPolicy {
  keys: TrustedKey[];
  /** Keyless signers accepted (with `trustedRoot`). */
  identities?: IdentityPolicy[];
  trustedRoot?: TrustedRootMaterial;
  require?: SignatureRequirement;
}

/** Fetches a trusted root an OCI reference by digest names (trust-root.ts; kept out of here so key-only trust loads no registry client). */
export type TrustedRootFetcher = (reference: string) => Promise<TrustedRootMaterial>;

export interface LoadTrustOptions {
  /** Needed when a trust file's `trustedRoot` is a registry reference. */
  fetchTrustedRoot?: TrustedRootFetcher;
  /** Identities without a `trustedRoot` are fine: the caller supplies one (an agent following a trust root). */
  rootSupplied?: boolean;
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

const requirement = z.enum(["any", "key", "keyless", "both"]);

const trustFileSchema = z.strictObject({
  keys: z.array(z.strictObject({ name: z.string().min(1), key: z.string().min(1), validFrom: date.optional(), validUntil: date.optional() })).default([]),
  identities: z
    .array(
      z.strictObject({
        name: z.string().min(1).optional(),
        issuer: z.string().min(1),
        subject: z.string().min(1),
        repository: z.string().min(1).optional(),
        workflowRef: z.string().min(1).optional(),
      }),
    )
    .default([]),
  trustedRoot: z.string().min(1).optional(),
  require: requirement.default("any"),
});

function invalid(source: string, message: string): SignatureError {
  return new SignatureError("KEY_ERROR", `${source}: ${message}`);
}

/**
 * A trust policy from a parsed trust file. `baseDir` resolves relative key
 * and root paths; `root` is the trusted root when the document comes with
 * its own (a trust-root artifact) instead of naming one.
 */
export async function trustFromDocument(doc: unknown, source: string, baseDir: string, options: LoadTrustOptions & { root?: TrustedRootMaterial } = {}): Promise<TrustPolicy> {
  const result = trustFileSchema.safeParse(doc);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw invalid(source, `${issue.path.join(".")}: ${issue.message}`);
  }
  const file = result.data;
  if (file.keys.length === 0 && file.identities.length === 0) throw invalid(source, "a trust file needs at least one key or identity");
  const keys = await Promise.all(
    file.keys.map(async (entry) => {
      const publicKey = entry.key.includes("-----BEGIN") ? parsePublicKey(entry.key, `${source}: ${entry.name}`) : await loadPublicKey(resolve(baseDir, entry.key));
      return trustedKey(entry.name, publicKey, { validFrom: entry.validFrom, validUntil: entry.validUntil });
    }),
  );
  const identities = file.identities.map((entry, i) => {
    const where = `${source}: identities.${i}`;
    const policy: IdentityPolicy = { name: entry.name ?? `${entry.issuer} ${entry.subject}`, issuer: matcher(entry.issuer, where), subject: matcher(entry.subject, where) };
    if (entry.repository) policy.repository = matcher(entry.repository, where);
    if (entry.workflowRef) policy.workflowRef = matcher(entry.workflowRef, where);
    return policy;
  });
  let trustedRoot = options.root;
  if (file.trustedRoot && !trustedRoot) {
    if (/@sha256:[0-9a-f]{64}$/.test(file.trustedRoot)) {
      if (!options.fetchTrustedRoot) throw invalid(source, `trustedRoot ${file.trustedRoot} is a registry reference, which this command cannot fetch`);
      trustedRoot = await options.fetchTrustedRoot(file.trustedRoot);
    } else if (/[:@]/.test(file.trustedRoot)) {
      throw invalid(source, `trustedRoot ${file.trustedRoot}: a registry reference must name a digest (…@sha256:…), never a tag`);
    } else {
      trustedRoot = await loadTrustedRootFile(resolve(baseDir, file.trustedRoot));
    }
  }
  if (identities.length > 0 && !trustedRoot && !options.rootSupplied) throw invalid(source, "identities need a trustedRoot (the Fulcio CAs and Rekor keys to verify keyless signatures with)");
  if ((file.require === "key" || file.require === "both") && keys.length === 0) throw invalid(source, `require: ${file.require} needs at least one key`);
  if ((file.require === "keyless" || file.require === "both") && identities.length === 0) throw invalid(source, `require: ${file.require} needs at least one identity`);
  return { keys, ...(identities.length > 0 ? { identities } : {}), ...(trustedRoot ? { trustedRoot } : {}), require: file.require };
}

/** A trust file's YAML as written, not yet checked (trustFromDocument checks it). */
export async function readTrustDocument(path: string): Promise<unknown> {
  try {
    return parse(await readFile(path, "utf8")) as unknown;
  } catch (err) {
    throw new SignatureError("KEY_ERROR", `${path}: cannot read trust file: ${(err as Error).message}`, { cause: err });
  }
}

export async function loadTrustFile(path: string, options: LoadTrustOptions = {}): Promise<TrustPolicy> {
  return trustFromDocument(await readTrustDocument(path), path, dirname(path), options);
}

/**
 * Two policies as one: the keys and identities of both; the first's root
 * unless it has none; the stricter requirement.
 */
export function mergeTrust(a: TrustPolicy, b: TrustPolicy): TrustPolicy {
  const identities = [...(a.identities ?? []), ...(b.identities ?? [])];
  const trustedRoot = a.trustedRoot ?? b.trustedRoot;
  const requires = new Set([a.require ?? "any", b.require ?? "any"]);
  requires.delete("any");
  const require: SignatureRequirement = requires.size === 0 ? "any" : requires.size === 1 ? [...requires][0]! : "both";
  return { keys: [...a.keys, ...b.keys], ...(identities.length > 0 ? { identities } : {}), ...(trustedRoot ? { trustedRoot } : {}), require };
}

/**
 * Resolves the trust options of a command: public key files, and/or one
 * trust file (.yaml, .yml or .json). Each entry of `specs` may itself be a
 * comma-separated list, as AEGIS_TRUST is.
 */
export async function loadTrust(specs: string[], options: LoadTrustOptions = {}): Promise<TrustPolicy> {
  const paths = specs.flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  if (paths.length === 0) throw new SignatureError("KEY_ERROR", "no trusted keys given: pass --key <file.pub> or --trust <file>");
  let policy: TrustPolicy = { keys: [] };
  for (const path of paths) {
    policy = mergeTrust(policy, /\.(ya?ml|json)$/.test(path) ? await loadTrustFile(path, options) : { keys: [trustedKey(basename(path), await loadPublicKey(path))] });
  }
  return policy;
}
