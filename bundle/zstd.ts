// Zstandard for bundles through zstd-napi, which streams: decompression
// stops as soon as the output passes a cap, so a small "zip bomb" layer
// cannot fill memory.
import { pipeline, type Readable } from "node:stream";
import { compress as zstdCompress, DecompressStream } from "zstd-napi";
import { AegisError } from "../errors.js";
import { BundleError } from "./errors.js";

/** A fixed level: the same input always gives the same bytes (for one zstd version). */
const LEVEL = 19;

export function compress(data: Uint8Array): Buffer {
  return zstdCompress(data, { compressionLevel: LEVEL });
}

/** Decompresses a stream into memory, failing once more than `limit` bytes come out. */
export async function decompress(source: Readable, limit: number): Promise<Buffer> {
  const inflater = pipeline(source, new DecompressStream(), () => {});
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of inflater as AsyncIterable<Buffer>) {
      total += chunk.byteLength;
      if (total > limit) throw new BundleError("BUNDLE_TOO_LARGE", `bundle decompresses to more than the ${limit}-byte limit`);
      chunks.push(chunk);
    }
  } catch (err) {
    source.destroy();
    inflater.destroy();
    // The source's own failures (DIGEST_MISMATCH as it streams, an abort) are not bad zstd.
    if (err instanceof AegisError || (err as Error).name === "AbortError") throw err;
    throw new BundleError("INVALID_BUNDLE", `bundle is not valid zstd: ${(err as Error).message}`, { cause: err });
  }
  return Buffer.concat(chunks, total);
}
