// `aegis promote <digest> --from staging --to prod`: the same digest moves
// forward, never a rebuild. Environments are fleet files with
// `environment: <name>`; every policy of the --from files that pins the digest
// has its namesake in the --to files pinned to it too (in the --to entry's
// own repository: a mirror holds the same digest), editing the files in place.
import { InputError } from "../errors.js";
import { formatReference, isDigest } from "../registry/index.js";
import { fleetOf, readFleetFiles, rewriteRefs, type RefEdit } from "./file.js";

/**
 * Edits the --to files; returns each change (none when the digest is already
 * there). `check` runs on every new ref before any file is written: a
 * refusal (not a policy, not signed by a pinned key) leaves them as they were.
 */
export async function promote(paths: readonly string[], digestOrRef: string, from: string, to: string, check?: (ref: string) => Promise<void>): Promise<RefEdit[]> {
  const digest = digestOrRef.slice(digestOrRef.lastIndexOf("@") + 1);
  if (!isDigest(digest)) throw new InputError("INVALID_REFERENCE", `${digestOrRef} is not a digest (sha256:… or host/repo@sha256:…): promote moves a digest, never a tag`);
  if (from === to) throw new InputError("INVALID_ARGUMENT", `--from and --to are both ${from}`);
  const files = await readFleetFiles(paths);
  const source = fleetOf(files, paths, { environment: from });
  const target = fleetOf(files, paths, { environment: to });
  const moving = source.policies.filter((p) => p.digest === digest);
  if (moving.length === 0) throw new InputError("INVALID_ARGUMENT", `no policy of environment ${from} pins ${digest} (${source.files.map((f) => f.path).join(", ")})`);
  const changes: RefEdit[] = [];
  for (const p of moving) {
    const next = target.policies.find((q) => q.name === p.name);
    if (!next) throw new InputError("INVALID_ARGUMENT", `environment ${to} has no policy named "${p.name}" (${target.files.map((f) => f.path).join(", ")}): add it with its targets first`);
    const ref = formatReference({ ...next.reference, tag: undefined }, digest);
    if (next.ref !== ref) changes.push({ name: p.name, file: next.file, index: next.index, from: next.ref, to: ref });
  }
  if (check) for (const ref of new Set(changes.map((c) => c.to))) await check(ref);
  // Written over the --from and --to files as read: another environment's file may change meanwhile.
  await rewriteRefs([...source.files, ...target.files], changes);
  return changes;
}
