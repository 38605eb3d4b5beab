// `aegis copy`. The registry code loads when the command runs (cli/aegis.ts).
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import { addRegistryOptions, repositoryOptions, type GlobalOptions } from "../options.js";
import { progressBar, report } from "../output.js";

export function registerCopy(program: Command): void {
  addRegistryOptions(
    program
      .command("copy")
      .description("copy an artifact between registries and OCI layouts; digests never change")
      .argument("<src>", "host[:port]/repo[:tag|@digest] or oci:<dir>[:tag|@digest]")
      .argument("<dst>", "host[:port]/repo[:tag] or oci:<dir>[:tag]; without a tag, the source's tag is used")
      .option("-r, --recursive", "also copy referrers (signatures), so they verify at the destination"),
  ).action(async (srcText: string, dstText: string, options: GlobalOptions & { recursive?: boolean }) => {
    const { copy, formatReference, openReference } = await import("../../registry/index.js");
    const src = openReference(srcText, repositoryOptions(options));
    const dst = openReference(dstText, repositoryOptions(options));
    if (!src.selector) throw new InputError("INVALID_REFERENCE", `${srcText} names no tag or digest`);
    const progress = progressBar("copying", options);
    const root = await copy(src.target, src.selector, dst.target, dst.selector ?? src.ref.tag, {
      referrers: options.recursive ?? false,
      onEvent: progress.onEvent,
    });
    progress.finish();
    report(options, `${root.digest} → ${formatReference(dst.ref, root.digest)}`, {
      source: formatReference(src.ref, root.digest),
      destination: formatReference(dst.ref, root.digest),
      digest: root.digest,
      referrers: options.recursive ?? false,
    });
  });
}
