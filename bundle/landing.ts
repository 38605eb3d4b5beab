// Where a pull's files land: they are unpacked into a temp directory and moved
// into the output directory only once verified. Into a directory that does not
// exist yet, the temp directory itself, made beside it, is renamed into place
// (rename(2) of a directory is one step), so policy.json and program.o appear
// together or not at all. Into an existing directory, which may hold other
// files, each file is renamed in, one after the other: a pull killed between
// the two renames leaves one file of each version. Temp directories that
// killed pulls left (SIGKILL, a crash) are swept by the next pull into the
// same place once unchanged for an hour: a pull under way writes into its own
// as the bytes come.
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { InputError } from "../errors.js";
import { removeStaleTemps } from "../util/index.js";

/** A pull's temp directory: `.aegis-pull-*` inside an existing output directory, `.<output>.aegis-pull-*` beside a new one. */
const TEMP = ".aegis-pull-";

/** How long a temp directory must be unchanged to be taken for a killed pull's. */
const STALE_MS = 60 * 60 * 1000;

/**
 * Runs `unpack` into a fresh temp directory and, if it returns files, moves
 * them into `output` (made, with its parents, if missing). The temp
 * directory is gone afterwards, whatever happened.
 */
export async function land<T extends { files: string[] } | undefined>(output: string, unpack: (dir: string) => Promise<T>): Promise<T> {
  const parent = dirname(output);
  const beside = `.${basename(output)}${TEMP}`;
  const existing = await stat(output).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw err;
  });
  if (existing && !existing.isDirectory()) throw new InputError("INVALID_ARGUMENT", `${output} is not a directory`);
  if (existing) await removeStaleTemps(output, { match: (name) => name.startsWith(TEMP), olderThanMs: STALE_MS });
  else await mkdir(parent, { recursive: true });
  await removeStaleTemps(parent, { match: (name) => name.startsWith(beside), olderThanMs: STALE_MS });

  // Beside a new directory, made as mkdir makes one (its mode from the umask: it becomes the output directory).
  const temp = existing ? await mkdtemp(join(output, TEMP)) : join(parent, beside + randomBytes(6).toString("hex"));
  if (!existing) await mkdir(temp);
  try {
    const unpacked = await unpack(temp);
    if (!unpacked) return unpacked;
    if (existing) await moveFiles(temp, output, unpacked.files);
    else
      await rename(temp, output).catch(async (err: NodeJS.ErrnoException) => {
        // Made meanwhile, and not empty (another pull, or by hand): the files go in one by one.
        if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
        await moveFiles(temp, output, unpacked.files);
      });
    return unpacked;
  } finally {
    await rm(temp, { recursive: true, force: true });
  }
}

async function moveFiles(from: string, to: string, files: string[]): Promise<void> {
  for (const name of files) await rename(join(from, name), join(to, name));
}
