// Bundles' tar, through tar-stream (it streams both ways and lets every
// header field be set). The writer fixes every field that could vary (mtime,
// owner, names, mode, device numbers), so the same files give the same bytes;
// the reader streams and accepts only what the writer makes: regular files
// with plain relative names, each behind one plain ustar header (no pax or GNU
// extension headers), within caps, ended by the end-of-archive marker.
// https://pubs.opengroup.org/onlinepubs/9699919799/utilities/pax.html#tag_20_92_13_06
import { pipeline } from "node:stream";
import { extract, pack, type Header } from "tar-stream";
import { InputError } from "../errors.js";
import { byCodeUnit, TAR_BLOCK as BLOCK, TarCounter, tarDataEnd } from "../util/index.js";
import { BundleError, type BundleErrorCode } from "./errors.js";

export interface TarEntry {
  name: string;
  data: Uint8Array;
}

export interface TarLimits {
  maxEntries: number;
  maxEntrySize: number;
  maxTotalSize: number;
}

export const BUNDLE_LIMITS: TarLimits = {
  maxEntries: 64,
  maxEntrySize: 64 * 1024 * 1024,
  maxTotalSize: 64 * 1024 * 1024,
};

/** Checks a member name: relative, no "..", no empty parts, ASCII, one ustar name field. */
export function checkEntryName(name: string): string {
  if (!/^[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/.test(name) || name.split("/").some((p) => p === "." || p === "..")) {
    throw new InputError("INVALID_ARGUMENT", `bundle entry "${name}" is not a plain relative path`);
  }
  if (name.length > 100) throw new InputError("INVALID_ARGUMENT", `bundle entry "${name}" is longer than 100 characters`);
  return name;
}

/** Every header field, fixed: only the name and the size come from the entry. */
function header(entry: TarEntry): Header {
  return {
    name: checkEntryName(entry.name),
    size: entry.data.byteLength,
    mode: 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    mtime: new Date(0),
    type: "file",
    linkname: "",
    devmajor: 0,
    devminor: 0,
  };
}

/** Writes entries sorted by name with mtime 0, uid/gid 0, no owner names, mode 0644. */
export async function writeTar(entries: readonly TarEntry[]): Promise<Buffer> {
  const sorted = [...entries].sort((a, b) => byCodeUnit(a.name, b.name));
  sorted.forEach((entry, i) => {
    if (i > 0 && sorted[i - 1]!.name === entry.name) throw new InputError("INVALID_ARGUMENT", `bundle entry "${entry.name}" appears twice`);
  });
  const packer = pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const chunk of packer as AsyncIterable<Buffer>) chunks.push(chunk);
  })();
  for (const entry of sorted) {
    await new Promise<void>((resolve, reject) => packer.entry(header(entry), Buffer.from(entry.data.buffer, entry.data.byteOffset, entry.data.byteLength), (err) => (err ? reject(err) : resolve())));
  }
  packer.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** What tar-stream's extract sets beyond its typed Headers: the applied pax records and where the data starts. */
type ReadHeader = Header & { byteOffset?: number };

function bad(why: string, code: BundleErrorCode = "INVALID_BUNDLE"): never {
  throw new BundleError(code, `bundle is not a valid Aegis tar: ${why}`);
}

export interface TarMember {
  name: string;
  size: number;
}

/**
 * Reads a tar stream, handing each entry to `visit` with its data stream,
 * which `visit` must consume (or fail). Refuses links, special files, unsafe
 * names, extension headers, duplicates and content past `limits`; every
 * check runs on the header, before the entry's data is read.
 */
export async function readTar(tar: AsyncIterable<Buffer>, visit: (member: TarMember, data: AsyncIterable<Buffer>) => Promise<void>, limits: TarLimits = BUNDLE_LIMITS): Promise<void> {
  // The whole stream (headers, padding, the end marker) within the cap: a stream of zero blocks is bounded too.
  const counter = new TarCounter(limits.maxTotalSize + (limits.maxEntries + 3) * BLOCK * 2, (limit) => new BundleError("BUNDLE_TOO_LARGE", `bundle decompresses to more than the ${limit}-byte limit`));
  const reader = extract();
  const flowing = new Promise<void>((resolve, reject) => pipeline(tar, counter, reader, (err) => (err ? reject(err) : resolve())));
  flowing.catch(() => {});
  const seen = new Set<string>();
  let total = 0;
  // Where the next header must start: entries follow each other with nothing between.
  let next = 0;
  try {
    for await (const entry of reader) {
      const { name, size = NaN, type, pax, byteOffset } = entry.header as ReadHeader;
      if (pax || byteOffset !== next + BLOCK) bad(`entry "${name}" is not behind one plain ustar header at offset ${next}`);
      if (type !== "file") bad(`entry "${name}" is a ${type ?? "file of an unknown type"}; only regular files are allowed`);
      try {
        checkEntryName(name);
      } catch (err) {
        bad((err as Error).message);
      }
      if (!Number.isSafeInteger(size) || size < 0) bad(`entry "${name}" has an invalid size`);
      if (size > limits.maxEntrySize) bad(`entry "${name}" is ${size} bytes, over the ${limits.maxEntrySize}-byte limit`, "BUNDLE_TOO_LARGE");
      total += size;
      if (total > limits.maxTotalSize) bad(`content is over the ${limits.maxTotalSize}-byte limit`, "BUNDLE_TOO_LARGE");
      if (seen.size >= limits.maxEntries) bad(`more than ${limits.maxEntries} entries`, "BUNDLE_TOO_LARGE");
      if (seen.has(name)) bad(`entry "${name}" appears twice`);
      seen.add(name);
      next = tarDataEnd(next + BLOCK, size);
      // A streamx Readable: it iterates as Buffers like a Node one.
      await visit({ name, size }, entry as unknown as AsyncIterable<Buffer>);
    }
    await flowing;
  } catch (err) {
    reader.destroy();
    throw mapTarError(err);
  }
  if (!counter.endsAfter(next)) bad("missing end-of-archive marker");
}

/** tar-stream's own errors (a bad checksum, a cut-off stream) are bad bundles; ours and the source's pass through. */
function mapTarError(err: unknown): unknown {
  if (!(err instanceof Error) || "code" in err || err.name !== "Error") return err;
  const why = err.message.startsWith("Invalid tar header.")
    ? "a header checksum does not match"
    : err.message.startsWith("Invalid tar header: unknown format")
      ? "a header is not a ustar header"
      : err.message === "Unexpected end of data"
        ? "it is cut off"
        : err.message;
  return new BundleError("INVALID_BUNDLE", `bundle is not a valid Aegis tar: ${why}`, { cause: err });
}
