// `aegis copy`. The registry code loads when the command runs (cli/main.ts).
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import type { CopyEvent } from "../../registry/index.js";
import { addRegistryOptions, addTrustOptions, repositoryOptions, type GlobalOptions, type TrustOptions } from "../options.js";
import { report } from "../output.js";
import { movingBytes } from "../../util/jit.js";
import { interruptibly } from "../interrupt.js";
import { startProgress } from "../progress.js";
import { checkSignatureIfPinned } from "./sign.js";

export function registerCopy(program: Command): void {
  addRegistryOptions(
    addTrustOptions(
      program
        .command("copy")
        .description("copy an artifact between registries and OCI layouts; digests never change (and the signature is checked at the source, given --key/--trust)")
        .argument("<src>", "host[:port]/repo[:tag|@digest] or oci:<dir>[:tag|@digest]")
        .argument("<dst>", "host[:port]/repo[:tag] or oci:<dir>[:tag]; without a tag, the source's tag is used")
        .option("-r, --recursive", "also copy referrers (signatures), so they verify at the destination"),
      ": the source must be signed by one, or nothing is copied",
    ),
  ).action(async (srcText: string, dstText: string, options: GlobalOptions & TrustOptions & { recursive?: boolean }) => {
    const { copy, formatReference, openReference } = await import("../../registry/index.js");
    const src = openReference(srcText, repositoryOptions(options));
    const dst = openReference(dstText, repositoryOptions(options));
    if (!src.selector) throw new InputError("INVALID_REFERENCE", `${srcText} names no tag or digest`);
    // The source's tag is resolved once; the signature is checked for that digest, and that digest is copied.
    const { digest } = await src.target.resolve(src.selector);
    const checked = await checkSignatureIfPinned(src.target, digest, options);
    const progress = startProgress("copying", options);
    // TurboFan goes off when the first blob starts to stream (util/jit.ts), not before: a copy within one
    // registry mounts its blobs and moves only manifests, and is then spared loading node:v8 (~0.3 ms).
    const onEvent = (event: CopyEvent) => {
      if (event.kind === "start") movingBytes();
      progress.onEvent?.(event);
    };
    // Ctrl-C from here undoes what was written (until here nothing is).
    const root = await interruptibly((signal) =>
      copy(src.target, digest, dst.target, dst.selector ?? src.ref.tag, { referrers: options.recursive ?? false, onEvent, signal }),
    );
    progress.finish();
    report(options, `${root.digest} → ${formatReference(dst.ref, root.digest)} (${checked.summary})`, {
      source: formatReference(src.ref, root.digest),
      destination: formatReference(dst.ref, root.digest),
      digest: root.digest,
      referrers: options.recursive ?? false,
      verified: checked.verified,
    });
  });
}
