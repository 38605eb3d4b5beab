// `aegis mirror export` and `aegis mirror import`: signed artifacts into an
// air-gapped site as one capsule (mirror/). The registry, signing and mirror
// code load when a command runs (cli/main.ts).
import type { Command } from "commander";
import type { CapsuleSource } from "../../mirror/index.js";
import type { RepositoryOptions } from "../../registry/index.js";
import { InputError } from "../../errors.js";
import { addRegistryOptions, addTrustOptions, collect, repositoryOptions, type GlobalOptions, type TrustOptions } from "../options.js";
import { report } from "../output.js";
import { oneLine } from "../../util/index.js";
import { movingBytes } from "../../util/jit.js";
import { interruptibly } from "../interrupt.js";
import { startProgress } from "../progress.js";
import { loadTrustOptions, pinsTrust } from "./sign.js";

/**
 * The artifacts a capsule holds, from references by digest. A tag is refused
 * with the digest it resolves to now: a capsule carries exactly what was named.
 */
export async function capsuleSources(refs: string[], options: RepositoryOptions): Promise<CapsuleSource[]> {
  const { formatReference, openReference } = await import("../../registry/index.js");
  const sources: CapsuleSource[] = [];
  for (const text of refs) {
    const { ref, target } = openReference(text, options);
    if (!ref.digest) {
      const hint = ref.tag ? await target.resolve(ref.tag).then((d) => ` (${ref.tag} currently resolves to ${formatReference(ref, d.digest)})`, () => "") : "";
      throw new InputError("INVALID_REFERENCE", `"${text}" has no digest: mirror export takes host/repo@sha256:…${hint}`);
    }
    sources.push({ target, digest: ref.digest, reference: formatReference(ref, ref.digest) });
  }
  return sources;
}

export function registerMirror(program: Command): void {
  const mirror = program
    .command("mirror")
    .description("carry signed artifacts into an air-gapped site: export them with their signatures to one capsule (an OCI layout tar), import it there");

  addRegistryOptions(
    addTrustOptions(
      mirror
        .command("export")
        .description("write artifacts, by digest, with their signatures (sigstore bundle referrers) and what they reference, to a capsule")
        .argument("[ref...]", "host[:port]/repo@sha256:… or oci:<dir>@sha256:… (a tag is refused, with the digest it resolves to)")
        // Repeatable, not variadic: `--from <fleet...>` took the references after it for fleet files.
        .option("--from <fleet>", "also every digest this fleet file (or directory of them) names, all environments (repeatable)", collect)
        .requiredOption("-o, --output <file>", "the capsule to write (replaced only once complete)"),
      ": given one, each artifact must be signed by one, or nothing is written (checked again at import)",
    ),
  ).action(async (refs: string[], options: GlobalOptions & TrustOptions & { output: string; from?: string[] }) => {
    // tar's "-" is stdout; a capsule is replaced only once complete, so it is a file (not a file named "-").
    if (options.output === "-") throw new InputError("INVALID_ARGUMENT", "-o -: a capsule is written to a file, not to stdout");
    const { writeCapsule } = await import("../../mirror/index.js");
    // The fleet files' refs as written: a tag among them is refused like one given here.
    const fleetRefs = options.from ? (await (await import("../../fleet/index.js")).loadFleetFiles(options.from)).policies.map((p) => p.ref) : [];
    const all = [...new Set([...refs, ...fleetRefs])];
    if (all.length === 0) throw new InputError("INVALID_ARGUMENT", "mirror export: name at least one reference, or fleet files with --from");
    const sources = await capsuleSources(all, repositoryOptions(options));
    // Finding an unsigned artifact here is cheaper than at the site, after carrying the capsule there: checked in the capsule as written.
    const trust = pinsTrust(options) ? await loadTrustOptions(options) : undefined;
    movingBytes();
    const progress = startProgress("exporting", options);
    const written = await interruptibly((signal) => writeCapsule(sources, options.output, { ...(trust ? { trust } : {}), onEvent: progress.onEvent, signal }));
    progress.finish();
    const artifacts = written.artifacts.map((a) => ({ digest: a.desc.digest, mediaType: a.desc.mediaType, size: a.desc.size, source: a.source, signatures: a.signatures }));
    const signatures = artifacts.reduce((sum, a) => sum + (a.signatures ?? 0), 0);
    report(options, `wrote ${options.output}: ${artifacts.length} artifact(s) with ${signatures} signature(s), ${written.blobs} blobs, ${written.bytes} bytes`, {
      output: options.output,
      artifacts,
      blobs: written.blobs,
      bytes: written.bytes,
    });
  });

  addRegistryOptions(
    addTrustOptions(
      mirror
        .command("import")
        .description("check a capsule (every digest, every signature with the pinned keys), then push its artifacts and their verified signatures; a capsule that does not verify pushes nothing")
        .argument("<capsule>", "the capsule from `aegis mirror export`")
        .argument("<dst>", "host[:port]/repo or oci:<dir> (no tag: artifacts keep their digests)")
        .option("--work-dir <dir>", "where the capsule is unpacked while it is checked (default: the system's temp directory); what a killed import left there, unchanged for an hour, is removed"),
      ": each artifact must carry a signature by one, or nothing is imported",
    ),
  ).action(async (capsule: string, dstText: string, options: GlobalOptions & TrustOptions & { workDir?: string }) => {
    const [{ formatReference, openReference }, { importCapsule }] = await Promise.all([import("../../registry/index.js"), import("../../mirror/index.js")]);
    const dst = openReference(dstText, repositoryOptions(options));
    if (dst.selector) throw new InputError("INVALID_REFERENCE", `${dstText}: give a repository without a tag or digest (artifacts keep their digests)`);
    const trust = await loadTrustOptions(options);
    movingBytes();
    const reading = startProgress("checking capsule", options);
    const pushing = startProgress("pushing", options);
    let read = false;
    const readDone = () => {
      if (!read) reading.finish();
      read = true;
    };
    const imported = await interruptibly((signal) =>
      importCapsule(capsule, dst.target, trust, {
        workDir: options.workDir,
        signal,
        onRead: reading.onEvent,
        onPush: (event) => {
          readDone();
          pushing.onEvent?.(event);
        },
      }),
    );
    readDone();
    pushing.finish();
    const artifacts = imported.map((a) => ({ reference: formatReference(dst.ref, a.digest), ...a }));
    const lines = artifacts.map((a) => {
      const keys = [...new Set(a.signatures.map((s) => s.key))].join(", ");
      // A reason may quote the capsule's unsigned text: on this artifact's line, whatever it holds.
      const skipped = a.skipped.length > 0 ? `; ${a.skipped.length} referrer(s) not imported: ${a.skipped.map((s) => `${s.digest} ${oneLine(s.reason)}`).join("; ")}` : "";
      return `imported ${a.digest} → ${a.reference} (digests verified; ${a.signatures.length} signature(s) verified, key ${keys}${skipped})`;
    });
    report(options, lines.join("\n"), { capsule, destination: formatReference(dst.ref), artifacts });
  });
}
