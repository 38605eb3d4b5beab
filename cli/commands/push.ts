// `aegis push`. The registry, bundle and signing code load when the command runs (cli/main.ts).
import { stat } from "node:fs/promises";
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import type { Ingester, Target } from "../../registry/index.js";
import { addRegistryOptions, repositoryOptions, type GlobalOptions } from "../options.js";
import { report, warn } from "../output.js";
import { movingBytes } from "../../util/jit.js";
import { interruptibly } from "../interrupt.js";
import { duringStep, startProgress } from "../progress.js";
import { loadSigner } from "./sign.js";

/**
 * A policy directory is built here, in memory, and pushed from there. A
 * bundle file is read once (bundle/transfer.ts pushBundleFile): its bytes
 * stream from disk both into the bundle reader, which checks it and learns
 * its policy (the only part held in memory), and into the upload, which
 * hashes them; the layer is committed under the digest learned only once
 * the bundle proved valid, so a bad file stores nothing. Memory stays
 * bounded whatever its size. Only the modules each case needs are loaded: a
 * file needs neither the policy compiler nor the YAML loader.
 */
async function buildOrReadAndPush(path: string, dst: Target & Ingester, tag: string | undefined, options: GlobalOptions) {
  const info = await stat(path).catch((err: unknown) => {
    throw new InputError("FILE_NOT_FOUND", `${path}: no such file or directory`, { cause: err });
  });
  if (info.isDirectory()) {
    const [{ buildBundle }, { pushBundle }] = await Promise.all([import("../../bundle/build.js"), import("../../bundle/transfer.js")]);
    const { policy, bytes, warnings } = await duringStep(`building ${path}`, options, () => buildBundle(path));
    warn(warnings);
    const progress = startProgress(`pushing ${policy.name}`, options);
    const artifact = await interruptibly((signal) => pushBundle(bytes, policy, dst, tag, { onEvent: progress.onEvent, signal }));
    progress.finish();
    return { policy, artifact, warnings };
  }
  // Its size is read up front (the upload declares it): a pipe or a device has none to give.
  if (!info.isFile()) throw new InputError("INVALID_ARGUMENT", `${path} is neither a bundle file nor a policy directory`);
  const { pushBundleFile } = await import("../../bundle/transfer.js");
  movingBytes();
  const progress = startProgress(`pushing ${path}`, options);
  const { policy, artifact } = await interruptibly((signal) => pushBundleFile(path, dst, tag, { onProgress: progress.onProgress, signal }));
  progress.finish();
  return { policy, artifact, warnings: [] };
}

export function registerPush(program: Command): void {
  addRegistryOptions(
    program
      .command("push")
      .description("push a bundle (or build and push a policy directory) as an OCI artifact; prints its digest")
      .argument("<bundle|dir>", "a bundle from `aegis policy build`, or a policy directory")
      .argument("<ref>", "destination: host[:port]/repo[:tag] or oci:<dir>[:tag]")
      .option("--sign-key <file>", "also sign the pushed digest with this private key"),
  ).action(async (path: string, refText: string, options: GlobalOptions & { signKey?: string }) => {
    const { formatReference, openReference } = await import("../../registry/index.js");
    const dst = openReference(refText, repositoryOptions(options));
    if (dst.ref.digest) throw new InputError("INVALID_REFERENCE", `push takes a tag, not a digest: the digest comes from the content`);
    // Load the key first: a bad key or passphrase fails before anything is pushed.
    const signer = options.signKey ? await loadSigner(options.signKey) : undefined;
    const { policy, artifact, warnings } = await buildOrReadAndPush(path, dst.target, dst.ref.tag, options);
    const digest = artifact.manifest.digest;
    const reference = formatReference(dst.ref, digest);
    const signed = signer ? await (await import("../../signing/index.js")).signArtifact(dst.target, artifact.manifest, signer, formatReference({ ...dst.ref, tag: undefined })) : undefined;
    report(options, digest, {
      reference,
      digest,
      tag: dst.ref.tag ?? null,
      mediaType: artifact.manifest.mediaType,
      size: artifact.manifest.size,
      checksum: artifact.layer.digest,
      name: policy.name,
      version: policy.version,
      signature: signed?.referrer.digest ?? null,
      warnings,
    });
  });
}
