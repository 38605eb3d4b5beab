// The end of a tar archive, which tar-stream's reader does not check: it ends
// quietly when its input stops at an entry boundary, so an archive cut there
// (a bundle, a capsule) would read as whole. A TarCounter counts the bytes
// on their way to the reader (refusing more than a limit), so a reader can
// ask, once every entry is read, whether the end-of-archive marker (two zero
// blocks) followed the last one. https://www.gnu.org/software/tar/manual/html_node/Standard.html
import { Transform, type TransformCallback } from "node:stream";

/** A tar block: headers and data are padded to it. */
export const TAR_BLOCK = 512;

/** Where an entry's padded data ends, from where its header put it (tar-stream's byteOffset) and its size. */
export function tarDataEnd(dataOffset: number, size: number): number {
  return dataOffset + Math.ceil(size / TAR_BLOCK) * TAR_BLOCK;
}

export class TarCounter extends Transform {
  bytes = 0;

  /** `tooLarge` gives the error for a stream of more than `limit` bytes. */
  constructor(
    private readonly limit = Infinity,
    private readonly tooLarge?: (limit: number) => Error,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.byteLength;
    if (this.bytes > this.limit) {
      callback(this.tooLarge?.(this.limit) ?? new Error(`more than ${this.limit} bytes`));
      return;
    }
    callback(null, chunk);
  }

  /** Whether the marker's two blocks came after entries that end at `entriesEnd`. */
  endsAfter(entriesEnd: number): boolean {
    return this.bytes >= entriesEnd + 2 * TAR_BLOCK;
  }
}
