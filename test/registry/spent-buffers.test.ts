// Streamed blobs do not pile up their spent chunks (util/spent-buffers.ts):
// V8 alone would collect the Buffers only once ~32 MiB of them had gathered.
// Memory is measured as process.memoryUsage().arrayBuffers, not time.
import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { DigestingStream, VerifyingStream } from "../../registry/index.js";

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const COUNT = 1024; // 64 MiB

/** Fresh Buffers, as socket and file reads give, each dropped once passed on. */
function* chunks(): Generator<Buffer> {
  for (let i = 0; i < COUNT; i++) yield Buffer.alloc(CHUNK, i & 0xff);
}

/** Streams 64 MiB through `through`; the most ArrayBuffer memory ever held beyond the start. */
async function peakWhileStreaming(through: NodeJS.ReadWriteStream): Promise<number> {
  const start = process.memoryUsage().arrayBuffers;
  let peak = 0;
  const sink = new Writable({
    write(_chunk: Buffer, _encoding, callback) {
      peak = Math.max(peak, process.memoryUsage().arrayBuffers - start);
      callback();
    },
  });
  await pipeline(Readable.from(chunks()), through, sink);
  return peak;
}

describe("spent stream buffers", () => {
  const hash = createHash("sha256");
  for (const chunk of chunks()) hash.update(chunk);
  const desc = { mediaType: "application/octet-stream", digest: `sha256:${hash.digest("hex")}`, size: CHUNK * COUNT };

  it.each([
    ["VerifyingStream (every fetch and push)", () => new VerifyingStream(desc, "test")],
    ["DigestingStream (push reading a bundle file)", () => new DigestingStream()],
  ])("64 MiB through a %s: at most 16 MiB of Buffers held at once", async (_name, make) => {
    const peak = await peakWhileStreaming(make());
    expect(peak / MiB, `peak ArrayBuffer memory, MiB (V8 alone lets ~32 MiB gather)`).toBeLessThan(16);
  });
});
