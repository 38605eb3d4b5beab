// `aegis inspect`. The registry code loads when the command runs (cli/main.ts).
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import { addRegistryOptions, repositoryOptions, type GlobalOptions } from "../options.js";
import { report } from "../output.js";

export function registerInspect(program: Command): void {
  addRegistryOptions(
    program
      .command("inspect")
      .description("show an artifact's manifest, layers, annotations and referrers (signatures)")
      .argument("<ref>", "host[:port]/repo[:tag|@digest] or oci:<dir>[:tag|@digest]")
      .option("--raw", "print the manifest's exact bytes"),
  ).action(async (refText: string, options: GlobalOptions & { raw?: boolean }) => {
    const { formatReference, MAX_MANIFEST_SIZE, openReference, parseManifest, readAll } = await import("../../registry/index.js");
    const { ref, target, selector } = openReference(refText, repositoryOptions(options));
    if (!selector) throw new InputError("INVALID_REFERENCE", `${refText} names no tag or digest`);
    const desc = await target.resolve(selector);
    const bytes = await readAll(await target.fetch(desc), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`);
    if (options.raw) {
      process.stdout.write(bytes);
      return;
    }
    const manifest = parseManifest(bytes, desc.mediaType);
    const referrers = await target.referrers(desc);
    const lines = [
      `reference:    ${formatReference(ref, desc.digest)}`,
      `digest:       ${desc.digest}`,
      `mediaType:    ${desc.mediaType} (${desc.size} bytes)`,
      `artifactType: ${manifest.artifactType ?? "-"}`,
      ...Object.entries(manifest.annotations ?? {}).map(([k, v]) => `annotation:   ${k}=${v}`),
      ...("layers" in manifest ? manifest.layers : manifest.manifests).map((d) => `content:      ${d.digest} ${d.mediaType} ${d.size} bytes`),
      ...referrers.map((r) => `referrer:     ${r.digest} ${r.artifactType ?? r.mediaType}`),
    ];
    report(options, lines.join("\n"), { reference: formatReference(ref, desc.digest), descriptor: desc, manifest, referrers });
  });
}
