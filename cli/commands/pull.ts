// `aegis pull`. The registry and bundle code load when the command runs (cli/main.ts).
import { access, constants, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import type { Command } from "commander";
import { InputError } from "../../errors.js";
import { env, userCache } from "../env.js";
import { addRegistryOptions, addTrustOptions, repositoryOptions, type GlobalOptions, type TrustOptions } from "../options.js";
import { plainError, report, warn } from "../output.js";
import { movingBytes } from "../../util/jit.js";
import { interruptibly } from "../interrupt.js";
import { startProgress } from "../progress.js";
import { checkSignatureIfPinned } from "./sign.js";

/** Pulled content is kept, verified, in an OCI layout so repeated pulls fetch nothing. */
export function cacheDir(): string {
  return env("AEGIS_CACHE_DIR") ?? userCache("oci");
}

/**
 * The pull cache's folder, made if missing. The default one (under the
 * user's home) only saves fetching again, so where it cannot be made or
 * written (a service user whose home is /nonexistent) the pull goes through
 * a temp folder, removed after, with a warning; one AEGIS_CACHE_DIR names
 * was asked for, and fails the pull, named.
 */
async function openCache(): Promise<{ dir: string; release: () => Promise<void> }> {
  const dir = cacheDir();
  const problem = await mkdir(dir, { recursive: true })
    .then(() => access(dir, constants.W_OK | constants.X_OK))
    .then(() => undefined, (err: unknown) => err);
  if (problem === undefined) return { dir, release: async () => undefined };
  // The system error names the folder.
  if (env("AEGIS_CACHE_DIR")) throw new InputError("INVALID_ARGUMENT", "cannot use the pull cache AEGIS_CACHE_DIR names", { cause: problem });
  warn([`cannot use the pull cache (${plainError(problem)}): pulling through a temp folder instead; set AEGIS_CACHE_DIR to keep pulled layers`]);
  const { makeTempDir } = await import("../../util/index.js");
  return makeTempDir(tmpdir(), "aegis-pull-cache-");
}

export function registerPull(program: Command): void {
  addRegistryOptions(
    addTrustOptions(
      program
        .command("pull")
        .description("pull a policy artifact, verify its digests (and its signature, given --key/--trust) and write its files (policy.json, program.o) to a directory")
        .argument("<ref>", "host[:port]/repo[:tag|@digest] or oci:<dir>[:tag|@digest]")
        .requiredOption("-o, --output <dir>", "directory to write the bundle's files into (made if missing, both files appearing together; in an existing one they replace their namesakes one by one, other files stay)"),
      ": the artifact must be signed by one, or nothing is written",
    ),
  ).action(async (refText: string, options: GlobalOptions & TrustOptions & { output: string }) => {
    const { formatReference, OciLayoutTarget, openReference } = await import("../../registry/index.js");
    const src = openReference(refText, repositoryOptions(options));
    if (!src.selector) throw new InputError("INVALID_REFERENCE", `${refText} names no tag or digest`);
    // The tag is resolved once; the signature is checked for that digest, and that digest is pulled.
    // The bundle code (transfer.js alone: pulling needs neither the policy compiler nor the YAML loader) loads while the registry answers.
    const resolved = src.target.resolve(src.selector);
    resolved.catch(() => {}); // awaited below, after the import
    // Once the request is written: setImmediate runs after the event loop's I/O phase, where the socket connects and sends it.
    await new Promise((resolve) => setImmediate(resolve));
    const { pullBundle, PRELOAD_BELOW } = await import("../../bundle/transfer.js");
    const { digest } = await resolved;
    const checked = await checkSignatureIfPinned(src.target, digest, options);
    const progress = startProgress("pulling", options);
    // TurboFan goes off for a large layer (util/jit.ts), fetched or read from the pull cache. A smaller one keeps
    // it, so the policy checks' code, which loads as its layer starts to download (bundle/transfer.ts), compiles
    // from the compile cache, made under the flags the process started with (a layer of 1 MiB or more still
    // sets --expose-gc as it streams, util/spent-buffers.ts, by when that code has usually loaded): a 1 MiB pull
    // took ~14 ms less, and peaks ~4 MiB higher (~59 MiB) for what TurboFan compiles meanwhile.
    const onLayer = (layer: { size: number }) => {
      if (layer.size >= PRELOAD_BELOW) movingBytes();
    };
    // Streamed into a temp dir and moved into place once verified (bundle/landing.ts);
    // Ctrl-C from here undoes what was written (until here nothing is).
    const cache = await openCache();
    const pulled = await interruptibly((signal) => pullBundle(src.target, digest, new OciLayoutTarget(cache.dir), options.output, { onEvent: progress.onEvent, onLayer, signal })).finally(cache.release);
    progress.finish();
    const { policy } = pulled;
    report(options, `pulled ${policy.name} ${policy.version} ${pulled.manifest.digest} → ${options.output} (${checked.summary})`, {
      reference: formatReference(src.ref, pulled.manifest.digest),
      digest: pulled.manifest.digest,
      checksum: pulled.layer.digest,
      name: policy.name,
      version: policy.version,
      output: options.output,
      files: pulled.files,
      cached: pulled.cached,
      verified: checked.verified,
    });
  });
}
