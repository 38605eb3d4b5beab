// Content addressing: every byte read from any store passes through
// `verifyStream` or `verifyBytes` before it is trusted or written anywhere.
// https://github.com/opencontainers/image-spec/blob/main/descriptor.md#digests
import { createHash } from "node:crypto";
import { pipeline, Readable, Transform, type TransformCallback } from "node:stream";
import type { Descriptor } from "./oci.js";
import { RegistryError } from "./errors.js";
import { quote, streamed } from "../util/index.js";

const SHA256 = /^sha256:[a-f0-9]{64}$/;

export function isDigest(value: string): boolean {
  return SHA256.test(value);
}

/** Throws unless `digest` is a sha256 digest in canonical form. */
export function checkDigest(digest: string): string {
  if (!SHA256.test(digest)) {
    throw new RegistryError("UNSUPPORTED_DIGEST", `${quote(digest)} is not a sha256 digest (sha256:<64 hex>)`);
  }
  return digest;
}

export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

export function descriptorFor(mediaType: string, data: Uint8Array): Descriptor {
  return { mediaType, digest: sha256(data), size: data.byteLength };
}

function mismatch(desc: Descriptor, actual: string, where: string): RegistryError {
  return new RegistryError(
    "DIGEST_MISMATCH",
    `content from ${where} does not match its descriptor: expected ${desc.digest}, got ${actual}`,
  );
}

/** Checks a whole buffer against its descriptor; returns it for chaining. */
export function verifyBytes(desc: Descriptor, data: Uint8Array, where: string): Uint8Array {
  if (data.byteLength !== desc.size) {
    throw new RegistryError(
      "SIZE_MISMATCH",
      `content from ${where} is ${data.byteLength} bytes, descriptor ${desc.digest} says ${desc.size}`,
    );
  }
  const actual = sha256(data);
  if (actual !== desc.digest) throw mismatch(desc, actual, where);
  return data;
}

/**
 * A pass-through stream that fails, instead of ending, when the bytes seen
 * are more than `desc.size` or do not hash to `desc.digest`. It holds back
 * the last chunk until the digest checks out, so a consumer never receives
 * the whole of a mismatching blob: one that commits on a clean end (rename
 * a temp file, send the final PUT) or relays it with a Content-Length never
 * passes on unverified content as complete.
 */
export class VerifyingStream extends Transform {
  private readonly hash = createHash("sha256");
  private seen = 0;
  private held: Buffer | undefined;

  constructor(
    private readonly desc: Descriptor,
    private readonly where: string,
  ) {
    super();
    checkDigest(desc.digest);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.byteLength;
    if (this.seen > this.desc.size) {
      callback(new RegistryError("SIZE_MISMATCH", `content from ${this.where} is larger than ${this.desc.size} bytes (${this.desc.digest})`));
      return;
    }
    this.hash.update(chunk);
    // Every streamed blob passes one of these two streams: spent chunks are freed as it goes (util/spent-buffers.ts).
    streamed(chunk.byteLength);
    const previous = this.held;
    this.held = chunk;
    callback(null, previous);
  }

  override _flush(callback: TransformCallback): void {
    if (this.seen !== this.desc.size) {
      callback(new RegistryError("SIZE_MISMATCH", `content from ${this.where} is ${this.seen} bytes, descriptor ${this.desc.digest} says ${this.desc.size}`));
      return;
    }
    const actual = `sha256:${this.hash.digest("hex")}`;
    if (actual !== this.desc.digest) {
      callback(mismatch(this.desc, actual, this.where));
      return;
    }
    callback(null, this.held);
  }
}

/**
 * A pass-through stream that names what flows through it: once it has
 * ended, `described(mediaType)` is the descriptor of those bytes. For
 * content whose digest is learned by reading it (a bundle file to push).
 */
export class DigestingStream extends Transform {
  private readonly hash = createHash("sha256");
  private size = 0;
  private digest: string | undefined;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    streamed(chunk.byteLength);
    this.size += chunk.byteLength;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.digest = `sha256:${this.hash.digest("hex")}`;
    callback();
  }

  described(mediaType: string): Descriptor {
    if (this.digest === undefined) throw new RegistryError("SIZE_MISMATCH", "the content was not read to its end, so it has no digest yet");
    return { mediaType, digest: this.digest, size: this.size };
  }
}

/**
 * Pipes `source` through a verifier. `pipeline` carries an error on either
 * side to the other and keeps an error listener on both, so a consumer that
 * starts reading later still sees the error instead of an unhandled event.
 */
export function verifyStream(desc: Descriptor, source: Readable, where: string): Readable {
  return pipeline(source, new VerifyingStream(desc, where), () => {});
}

/**
 * A stream of bytes already held whole in memory (a manifest read and
 * verified earlier): readAll() takes them as they are. A manifest copied
 * within one registry is read from memory and written again at once, and
 * going through stream reads for it cost ~2 ms on the copy's critical path,
 * most of it compiling Node's stream code on its first use in a process.
 */
export class HeldBytes extends Readable {
  constructor(readonly bytes: Buffer) {
    super();
  }

  override _read(): void {
    this.push(this.bytes);
    this.push(null);
  }
}

/** Reads a whole stream into memory, refusing more than `limit` bytes. */
export async function readAll(stream: Readable, limit: number, what: string): Promise<Buffer> {
  // Untouched (not read, piped or flowing): its bytes are the whole stream. A copy, as the reads below make one.
  if (stream instanceof HeldBytes && !stream.readableDidRead && stream.readableFlowing === null && !stream.destroyed) {
    stream.destroy();
    if (stream.bytes.byteLength > limit) throw new RegistryError("SIZE_LIMIT", `${what} is larger than the ${limit}-byte limit`);
    return Buffer.from(stream.bytes);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    total += chunk.byteLength;
    if (total > limit) {
      stream.destroy();
      throw new RegistryError("SIZE_LIMIT", `${what} is larger than the ${limit}-byte limit`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
