// `aegis push`. The registry, bundle and signing code load when the command runs (cli/aegis.ts).
import { readFile, stat } from "node:fs/promises";
import { Readable } from "node:stream";
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import { addRegistryOptions, repositoryOptions, type GlobalOptions } from "../options.js";
import { report } from "../output.js";
import { duringStep, startProgress } from "../progress.js";
import { loadSigner } from "./sign.js";

async function readBundleOrBuild(path: string, options: GlobalOptions) {
  const { buildBundle, decodeBundle } = await import("../../bundle/index.js");
  const info = await stat(path).catch((err: unknown) => {
    throw new InputError("FILE_NOT_FOUND", `${path}: no such file or directory`, { cause: err });
  });
  if (info.isDirectory()) return duringStep(`building ${path}`, options, () => buildBundle(path));
  const bytes = await readFile(path);
  const { policy } = await decodeBundle(Readable.from([bytes]), path);
  return { policy, bytes };
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
    const [{ pushBundle }, { formatReference, openReference }] = await Promise.all([import("../../bundle/index.js"), import("../../registry/index.js")]);
    const dst = openReference(refText, repositoryOptions(options));
    if (dst.ref.digest) throw new InputError("INVALID_REFERENCE", `push takes a tag, not a digest: the digest comes from the content`);
    // Load the key first: a bad key or passphrase fails before anything is pushed.
    const signer = options.signKey ? await loadSigner(options.signKey) : undefined;
    const { policy, bytes } = await readBundleOrBuild(path, options);
    const progress = startProgress(`pushing ${policy.name}`, options);
    const artifact = await pushBundle(bytes, policy, dst.target, dst.ref.tag, { onEvent: progress.onEvent });
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
    });
  });
}
