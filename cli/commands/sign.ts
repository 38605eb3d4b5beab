// `aegis sign` and `aegis verify`. The registry, bundle and signing code load
// when a command runs (cli/aegis.ts).
import type { Command } from "commander";
import type { ReadOnlyTarget, Target } from "../../registry/index.js";
import type { KeySigner, VerifiedSignature } from "../../signing/index.js";
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

/** Verifies `digest` in `target` against the keys that --key/--trust pin (the `verify` command's check). */
export async function verifyPinned(target: ReadOnlyTarget, digest: string, options: TrustOptions): Promise<VerifiedSignature> {
  const { loadTrust, verifyArtifact } = await import("../../signing/index.js");
  return verifyArtifact(target, digest, await loadTrust([...(options.key ?? []), ...(options.trust ?? [])]));
}

/**
 * What `pull` and `copy` checked, for people and scripts: digests and sizes
 * always; the signature only when keys were pinned, and then it must verify
 * (a failure throws), before anything is written or reported.
 */
export async function checkSignatureIfPinned(target: ReadOnlyTarget, digest: string, options: TrustOptions) {
  if (!options.key?.length && !options.trust?.length) {
    return { summary: "digest and size verified; signature not checked (no --key/--trust)", verified: { digest: true, signature: null } };
  }
  const signature = await verifyPinned(target, digest, options);
  return {
    summary: `digest and size verified; signature verified (key ${signature.key.name})`,
    verified: { digest: true, signature: { key: signature.key.name, hint: signature.key.hint, format: signature.format, digest: signature.signature } },
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
        .description("verify that an artifact is signed by a trusted key (sigstore bundles and cosign .sig signatures)")
        .argument("<ref>", "host[:port]/repo[:tag|@digest] or oci:<dir>[:tag|@digest]"),
      "",
    ),
  ).action(async (refText: string, options: GlobalOptions & TrustOptions) => {
    const { formatReference, isDigest, openReference } = await import("../../registry/index.js");
    const { ref, target, selector } = openReference(refText, repositoryOptions(options));
    if (!selector) throw new InputError("INVALID_REFERENCE", `${refText} names no tag or digest`);
    const digest = isDigest(selector) ? selector : (await target.resolve(selector)).digest;
    const verified = await verifyPinned(target, digest, options);
    report(options, `verified ${digest}: signed by key "${verified.key.name}" (${verified.key.hint}), ${verified.format} ${verified.signature}`, {
      reference: formatReference(ref, digest),
      ...verified,
    });
  });
}
