// A write stream on a file that is open before the stream exists.
// fs.createWriteStream(path) opens its file itself, asynchronously: destroyed
// before that open completes (its source failed at once, an abort), it still
// creates the file afterwards, after the caller's cleanup removed what was
// there, and a temp file is left behind (seen under load in the layout
// conformance suite). With the file already open, the cleanup finds it.
import type { WriteStream } from "node:fs";
import { open } from "node:fs/promises";

export interface OpenWriteStreamOptions {
  /** open(2) flags as fs names them; default "w". */
  flags?: string;
  /** Mode of a created file; default 0o666 (less the umask). */
  mode?: number;
  highWaterMark?: number;
}

/** Opens `path`, then returns a stream writing it that closes the file when it ends or is destroyed. */
export async function openWriteStream(path: string, options: OpenWriteStreamOptions = {}): Promise<WriteStream> {
  const handle = await open(path, options.flags ?? "w", options.mode);
  return handle.createWriteStream({ highWaterMark: options.highWaterMark });
}
