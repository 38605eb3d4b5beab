// `aegis sign`, `aegis verify` (`--explain`: every signature's verdict and
// the check that refused it) and `aegis trust push` (a Sigstore trusted root
// as a signed, versioned OCI artifact, signing/trust-root.ts). The registry,
// bundle and signing code load when a command runs (cli/main.ts).
import type { Command } from "commander";
import type { ReadOnlyTarget, Target } from "../../registry/index.js";
import type { Explanation, KeySigner, TrustPolicy, VerifiedSignature } from "../../signing/index.js";
import { InputError } from "../../errors.js";
import { addRegistryOptions, addTrustOptions, repositoryOptions, type GlobalOptions, type TrustOptions } from "../options.js";
import { report } from "../output.js";

/** Loads a private key, decrypting it with AEGIS_KEY_PASSPHRASE when it is encrypted. */
export async function loadSigner(path: string): Promise<KeySigner> {
  const { KeySigner, loadPrivateKey } = await import("../../signing/index.js");
  return new KeySigner(await loadPrivateKey(path, process.env.AEGIS_KEY_PASSPHRASE));
}

/** Signs the policy artifact `selector` names in `target`; a tag is resolved to its digest first. */
export async function signReference(target: Target, selector: string, signer: KeySigner, name: string) {
  const [{ readPolicyManifest }, { signArtifact }] = await Promise.all([import("../../bundle/index.js"), import("../../signing/index.js")]);
  const subject = await target.resolve(selector);
  // Read (and so verify) what is about to be signed, and refuse anything but a policy.
  await readPolicyManifest(target, subject);
  return { subject, signed: await signArtifact(target, subject, signer, name) };
}

/** Whether --key or --trust pin a trust the digests must meet. */
export function pinsTrust(options: TrustOptions): boolean {
  return (options.key ?? []).length + (options.trust ?? []).length > 0;
}

/** The trust --key/--trust give; a trust file's `trustedRoot` may be a registry reference by digest. */
export async function loadTrustOptions(options: TrustOptions & GlobalOptions): Promise<TrustPolicy> {
  const { loadTrust, trustedRootFetcher } = await import("../../signing/index.js");
  return loadTrust([...(options.key ?? []), ...(options.trust ?? [])], { fetchTrustedRoot: trustedRootFetcher(repositoryOptions(options)) });
}

/** Verifies `digest` in `target` against what --key/--trust pin (the `verify` command's check). */
export async function verifyPinned(target: ReadOnlyTarget, digest: string, options: TrustOptions & GlobalOptions): Promise<VerifiedSignature> {
  const { verifyArtifact } = await import("../../signing/index.js");
  return verifyArtifact(target, digest, await loadTrustOptions(options));
}

/** What a signature was signed by, in words. */
function signedBy(signature: VerifiedSignature): string {
  return signature.identity ? `keyless identity "${signature.key.name}" (${signature.identity.subject})` : `key ${signature.key.name}`;
}

/** `verify --explain` for people: one line per signature, then the verdict. */
function explanationText(ref: string, explained: Explanation): string {
  const lines = [`${ref} (require: ${explained.require})`];
  if (explained.signatures.length === 0) lines.push("  no signature found (no sigstore bundle referrer, no cosign .sig tag)");
  for (const s of explained.signatures) {
    const verdict = s.accepted ? "accepted" : "refused ";
    const check = s.accepted ? "" : `${s.check}: `;
    lines.push(`  ${verdict}  ${s.kind.padEnd(7)}  ${check}${s.reason}${s.code ? ` [${s.code}]` : ""}  (${s.format} ${s.signature})`);
  }
  lines.push(explained.verified ? "verified" : `refused (${explained.error?.check}: ${explained.error?.code})`);
  return lines.join("\n");
}

/**
 * What `pull` and `copy` checked, for people and scripts: digests and sizes
 * always; the signature only when keys were pinned, and then it must verify
 * (a failure throws), before anything is written or reported.
 */
export async function checkSignatureIfPinned(target: ReadOnlyTarget, digest: string, options: TrustOptions & GlobalOptions) {
  if (!pinsTrust(options)) {
    return { summary: "digest and size verified; signature not checked (no --key/--trust)", verified: { digest: true, signature: null } };
  }
  const signature = await verifyPinned(target, digest, options);
  return {
    summary: `digest and size verified; signature verified (${signedBy(signature)})`,
    verified: {
      digest: true,
      signature: { key: signature.key.name, hint: signature.key.hint, format: signature.format, digest: signature.signature, ...(signature.identity ? { identity: signature.identity } : {}) },
    },
  };
}

export function registerSign(program: Command): void {
  addRegistryOptions(
    program
      .command("sign")
      .description("sign an artifact with a key; the signature (a sigstore bundle) is stored as an OCI referrer")
      .argument("<ref>", "host[:port]/repo@sha256:… (a tag is resolved, and the signed digest printed) or oci:<dir>…")
      .requiredOption("--key <file>", "private key from `aegis keygen` (AEGIS_KEY_PASSPHRASE if encrypted)"),
  ).action(async (refText: string, options: GlobalOptions & { key: string }) => {
    const { formatReference, isDigest, openReference } = await import("../../registry/index.js");
    const { ref, target, selector } = openReference(refText, repositoryOptions(options));
    if (!selector) throw new InputError("INVALID_REFERENCE", `${refText} names no tag or digest`);
    const signer = await loadSigner(options.key);
    const { subject, signed } = await signReference(target, selector, signer, formatReference({ ...ref, tag: undefined, digest: undefined }));
    const resolved = isDigest(selector) ? "" : ` (tag ${selector} resolved to ${subject.digest})`;
    report(options, `signed ${subject.digest}${resolved} with key ${signed.hint}; signature ${signed.referrer.digest}`, {
      reference: formatReference(ref, subject.digest),
      digest: subject.digest,
      signature: signed.referrer.digest,
      hint: signed.hint,
    });
  });

  addRegistryOptions(
    addTrustOptions(
      program
        .command("verify")
        .description("verify that an artifact is signed by a trusted key or keyless identity (sigstore bundles and cosign .sig signatures), offline")
        .argument("<ref>", "host[:port]/repo[:tag|@digest] or oci:<dir>[:tag|@digest]")
        .option("--explain", "check every signature and print why each was accepted or which check refused it (key, chain, log, identity, subject)"),
      "",
    ),
  ).action(async (refText: string, options: GlobalOptions & TrustOptions & { explain?: boolean }) => {
    const { formatReference, isDigest, openReference } = await import("../../registry/index.js");
    const { ref, target, selector } = openReference(refText, repositoryOptions(options));
    if (!selector) throw new InputError("INVALID_REFERENCE", `${refText} names no tag or digest`);
    const digest = isDigest(selector) ? selector : (await target.resolve(selector)).digest;
    const reference = formatReference(ref, digest);
    if (options.explain) {
      const { explainArtifact, SignatureError } = await import("../../signing/index.js");
      const explained = await explainArtifact(target, digest, await loadTrustOptions(options));
      report(options, explanationText(reference, explained), { reference, ...explained });
      if (explained.error) throw new SignatureError(explained.error.code, explained.error.message);
      return;
    }
    const verified = await verifyPinned(target, digest, options);
    const by = verified.identity ? `keyless identity "${verified.key.name}" (issuer ${verified.identity.issuer}, subject ${verified.identity.subject})` : `key "${verified.key.name}" (${verified.key.hint})`;
    report(options, `verified ${digest}: signed by ${by}, ${verified.format} ${verified.signature}`, { reference, ...verified });
  });
}

export function registerTrust(program: Command): void {
  const trust = program.command("trust").description("the Sigstore trusted root, shipped to hosts as a signed OCI artifact");
  addRegistryOptions(
    trust
      .command("push")
      .description(`store trusted_root.json (Fulcio CAs, Rekor, CT and timestamp keys) as a versioned OCI artifact signed by an operator key; agents follow it with --trust-root-ref`)
      .argument("<trusted_root.json>", "the Sigstore trusted root (as `cosign trusted-root create` or the Sigstore TUF repository has it)")
      .argument("<ref>", "host[:port]/repo[:tag] or oci:<dir>[:tag]")
      .requiredOption("--key <file>", "the operator's private key (AEGIS_KEY_PASSPHRASE if encrypted); agents pin its public key with --trust-root-key")
      .option("--policy <trust.yaml>", "a trust file whose keys, identities and `require` travel with the root (its keys are inlined)")
      .option("--root-version <n>", "the root's version: agents refuse one lower than they hold (default: now, in seconds since the epoch)"),
  ).action(async (rootPath: string, refText: string, options: GlobalOptions & { key: string; policy?: string; rootVersion?: string }) => {
    const [{ readFile }, { dirname, resolve }, { formatReference, openReference, isDigest }, { pushTrustRoot, loadPublicKey, readTrustDocument }] = await Promise.all([
      import("node:fs/promises"),
      import("node:path"),
      import("../../registry/index.js"),
      import("../../signing/index.js"),
    ]);
    const version = options.rootVersion === undefined ? undefined : Number(options.rootVersion);
    if (version !== undefined && !(Number.isSafeInteger(version) && version >= 0)) throw new InputError("INVALID_ARGUMENT", `--root-version ${options.rootVersion}: expected a non-negative integer`);
    const { ref, target, selector } = openReference(refText, repositoryOptions(options));
    if (selector && isDigest(selector)) throw new InputError("INVALID_REFERENCE", `${refText}: push to a repository or a tag, not a digest`);
    const rootBytes = await readFile(rootPath).catch((err: unknown) => {
      throw new InputError("FILE_NOT_FOUND", `${rootPath}: cannot read: ${(err as Error).message}`, { cause: err });
    });
    let policy: Record<string, unknown> | undefined;
    if (options.policy) {
      const doc = (await readTrustDocument(options.policy)) as { keys?: { key: string }[]; trustedRoot?: unknown } | null;
      // Keys travel inline (PEM): paths are resolved here, on the operator's machine.
      const keys = await Promise.all(
        (doc?.keys ?? []).map(async (k) => ({ ...k, key: k.key.includes("-----BEGIN") ? k.key : ((await loadPublicKey(resolve(dirname(options.policy!), k.key))).export({ type: "spki", format: "pem" }) as string) })),
      );
      policy = { ...doc, keys, trustedRoot: undefined };
    }
    const pushed = await pushTrustRoot(target, rootBytes, { signer: await loadSigner(options.key), ...(version !== undefined ? { version } : {}), ...(policy ? { policy } : {}), ...(selector ? { tag: selector } : {}) });
    const reference = formatReference({ ...ref, tag: undefined, digest: undefined }, pushed.manifest.digest);
    report(options, `pushed trust root version ${pushed.version}: ${reference} (signature ${pushed.signature.digest})`, {
      reference,
      digest: pushed.manifest.digest,
      version: pushed.version,
      signature: pushed.signature.digest,
    });
  });
}
