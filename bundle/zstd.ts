// Zstandard for bundles through zstd-napi. Decompression is an async
// generator over zstd's streaming call, so it produces one output buffer at a
// time and only as fast as the consumer takes them (a stream Transform would
// push all of a chunk's output at once: a small "zip bomb" chunk could fill
// memory before any cap saw it). The window a frame may ask for is bounded
// too. Both go to zstd-napi's native binding directly, through require: its
// JavaScript wrapper adds nothing used here, and an ES module import of
// CommonJS loads and runs Node's CommonJS export scanner, a few ms of every
// `aegis pull` (issue 10). https://facebook.github.io/zstd/zstd_manual.html#Chapter9
import { createRequire } from "node:module";
import { BundleError } from "./errors.js";

const binding = createRequire(import.meta.url)("zstd-napi/binding.js") as typeof import("zstd-napi/binding.js");

/**
 * A fixed level, so the same input always gives the same bytes (for one zstd
 * version). Level 3 (zstd's default) compresses a 100,000-rule policy.json in
 * about 0.02 s to 5% more than level 19 does in 5 s.
 */
const LEVEL = 3;

/** 2^23 = 8 MiB, the most any level up to 19 uses; a frame asking for more is refused. */
const WINDOW_LOG_MAX = 23;

/**
 * Most frames in one bundle. A bundle is one frame (compress below, the
 * zstd CLI, also with -T); pzstd cuts one per few MiB. Each costs
 * a native call whatever its size: a layer of 13-byte empty frames took
 * ~1.7 s of CPU per 4 MiB, ~27 s at the bundle cap.
 */
const MAX_FRAMES = 4096;

/** One zstd frame of `data` (ZSTD_compress2 at LEVEL, content size in the frame header). */
export function compress(data: Uint8Array): Buffer {
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, LEVEL);
  const out = Buffer.allocUnsafe(binding.compressBound(data.length));
  const length = cctx.compress2(out, data);
  // Copied out: the bound is about the input's size, and a bundle is kept for a while.
  return Buffer.from(out.subarray(0, length));
}

function invalid(why: string, cause?: unknown): BundleError {
  return new BundleError("INVALID_BUNDLE", `bundle is not valid zstd: ${why}`, { cause });
}

/** Decompresses `source` (one or more zstd frames) as it is iterated. */
export async function* inflate(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const dctx = new binding.DCtx();
  dctx.setParameter(binding.DParameter.windowLogMax, WINDOW_LOG_MAX);
  const outSize = binding.dStreamOutSize();
  let inFrame = false;
  let frames = 0;
  // A new buffer only once the last one was handed on: input that yields nothing (empty frames) allocated one per call.
  let output = Buffer.allocUnsafe(outSize);
  for await (const chunk of source) {
    let input = chunk;
    for (;;) {
      let left: number, produced: number, consumed: number;
      try {
        [left, produced, consumed] = dctx.decompressStream(output, input);
      } catch (err) {
        throw invalid((err as Error).message, err);
      }
      // 0 left: a frame ended.
      if (left === 0 && ++frames > MAX_FRAMES) throw invalid(`more than ${MAX_FRAMES} frames`);
      if (produced > 0) {
        yield output.subarray(0, produced);
        output = Buffer.allocUnsafe(outSize);
      }
      input = input.subarray(consumed);
      // Done with this chunk once it is all consumed and zstd has nothing more to flush.
      if (input.length === 0 && (produced < output.length || left === 0)) {
        inFrame = left !== 0;
        break;
      }
    }
  }
  if (inFrame) throw invalid("the data ends in the middle of a frame");
}
