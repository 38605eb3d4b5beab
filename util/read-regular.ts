// Reading a file someone else may have put there (an `oci:` path an
// assigner names, a fleet file given on the command line): only a regular
// file, and no more of it than a limit. A FIFO would block the open, or the
// read, for ever; a device such as /dev/zero never ends; opening some devices
// acts (a watchdog starts its timer); and a /proc file reports size 0 however
// much it holds. Errors carry Node's codes: ENOENT as the system says it,
// EINVAL for a path that is not a regular file, EFBIG past the limit.
import { constants } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";

function failure(code: "EINVAL" | "EFBIG", message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

/**
 * Opens `path` for reading if it is a regular file: it is looked at before
 * it is opened, and the file opened must be the one looked at (O_NONBLOCK
 * and O_NOCTTY make the open of a FIFO or a terminal swapped in meanwhile
 * harmless).
 */
export async function openRegular(path: string): Promise<FileHandle> {
  const seen = await stat(path);
  if (!seen.isFile()) throw failure("EINVAL", `${path} is not a regular file`);
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const opened = await handle.stat();
    if (!opened.isFile() || opened.dev !== seen.dev || opened.ino !== seen.ino) throw failure("EINVAL", `${path} changed while it was opened`);
  } catch (err) {
    await handle.close();
    throw err;
  }
  return handle;
}

/** The whole of the regular file `path`, refusing one of more than `limit` bytes, whatever size it reports. */
export async function readRegular(path: string, limit: number): Promise<Buffer> {
  const handle = await openRegular(path);
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const { bytesRead, buffer } = await handle.read({ buffer: Buffer.allocUnsafe(64 * 1024) });
      if (bytesRead === 0) return Buffer.concat(chunks, total);
      total += bytesRead;
      if (total > limit) throw failure("EFBIG", `${path} is larger than ${limit} bytes`);
      chunks.push(buffer.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
}
