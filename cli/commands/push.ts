// `aegis push`. The registry, bundle and signing code load when the command runs (cli/aegis.ts).
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { pipeline, Readable } from "node:stream";
import { finished } from "node:stream/promises";
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import type { CopyOptions, Descriptor, Target } from "../../registry/index.js";
import { addRegistryOptions, repositoryOptions, type GlobalOptions } from "../options.js";
import { report, warn } from "../output.js";
import { duringStep, startProgress } from "../progress.js";
import { loadSigner } from "./sign.js";

/**
 * A policy directory is built here, in memory. A bundle file is read once,
 * to check it decodes, learn its policy (the only part held in memory) and
 * its digest, and stays on disk. Only the modules each case needs are loaded:
 * a file needs neither the policy compiler nor the YAML loader.
 */
async function readBundleOrBuild(path: string, options: GlobalOptions) {
  const info = await stat(path).catch((err: unknown) => {
    throw new InputError("FILE_NOT_FOUND", `${path}: no such file or directory`, { cause: err });
  });
  if (info.isDirectory()) {
    const { buildBundle } = await import("../../bundle/build.js");
    return duringStep(`building ${path}`, options, () => buildBundle(path));
  }
  const [{ readBundlePolicy }, { DigestingStream, MediaType }] = await Promise.all([import("../../bundle/read.js"), import("../../registry/index.js")]);
  const digesting = new DigestingStream();
  const policy = await readBundlePolicy(pipeline(createReadStream(path), digesting, () => {}), path);
  // The digest covers every byte, also those after what the decoder needed.
  if (!digesting.readableEnded) await finished(digesting.resume());
  return { policy, file: { path, ...digesting.described(MediaType.PolicyLayer) } };
}

/**
 * Pushes what readBundleOrBuild gave. A file's bytes stream from disk into
 * the upload, which verifies them against the digest read before, so memory
 * stays bounded whatever its size.
 */
async function pushRead(read: Awaited<ReturnType<typeof readBundleOrBuild>>, dst: Target, tag: string | undefined, options: CopyOptions) {
  if ("bytes" in read) return (await import("../../bundle/transfer.js")).pushBundle(read.bytes, read.policy, dst, tag, options);
  const [{ packArtifactFor }, registry] = await Promise.all([import("../../bundle/artifact.js"), import("../../registry/index.js")]);
  const { path } = read.file;
  const artifact = packArtifactFor(read.file, read.policy);
  const staging = new registry.MemoryTarget("bundle");
  const config: Descriptor = { mediaType: registry.EMPTY_CONFIG.mediaType, digest: registry.EMPTY_CONFIG.digest, size: registry.EMPTY_CONFIG.size };
  await staging.push(config, Readable.from([Buffer.from("{}")]));
  staging.link(artifact.layer, () => createReadStream(path));
  await staging.push(artifact.manifest, Readable.from([artifact.manifestBytes]));
  await registry.copy(staging, artifact.manifest.digest, dst, tag, options);
  return artifact;
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
    const read = await readBundleOrBuild(path, options);
    const { policy } = read;
    const warnings = "warnings" in read ? read.warnings : [];
    warn(warnings);
    const progress = startProgress(`pushing ${policy.name}`, options);
    const artifact = await pushRead(read, dst.target, dst.ref.tag, { onEvent: progress.onEvent });
    progress.finish();
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
