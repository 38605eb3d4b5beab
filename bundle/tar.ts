// A minimal ustar writer and a strict reader for bundles. The writer fixes
// every varying field (mtime, owner, mode) so the same files give the same
// bytes; the reader accepts only what the writer makes: regular files with
// plain relative names, within size caps.
// https://pubs.opengroup.org/onlinepubs/9699919799/utilities/pax.html#tag_20_92_13_06
import { InputError } from "../errors.js";
import { BundleError, type BundleErrorCode } from "./errors.js";

const BLOCK = 512;

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
  maxEntrySize: 32 * 1024 * 1024,
  maxTotalSize: 64 * 1024 * 1024,
};

function writeString(header: Buffer, offset: number, length: number, value: string): void {
  header.write(value, offset, length, "utf8");
}

function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  writeString(header, offset, length, value.toString(8).padStart(length - 1, "0") + "\0");
}

/** Checks a member name: relative, no "..", no empty parts, ASCII. */
export function checkEntryName(name: string): string {
  if (!/^[A-Za-z0-9._-]+(?:\/[A-Za-z0-9._-]+)*$/.test(name) || name.split("/").some((p) => p === "." || p === "..")) {
    throw new InputError("INVALID_ARGUMENT", `bundle entry "${name}" is not a plain relative path`);
  }
  if (name.length > 100) throw new InputError("INVALID_ARGUMENT", `bundle entry "${name}" is longer than 100 characters`);
  return name;
}

/** Writes entries sorted by name with mtime 0, uid/gid 0, mode 0644. */
export function writeTar(entries: TarEntry[]): Buffer {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const blocks: Buffer[] = [];
  for (const entry of sorted) {
    const header = Buffer.alloc(BLOCK);
    writeString(header, 0, 100, checkEntryName(entry.name));
    writeOctal(header, 100, 8, 0o644);
    writeOctal(header, 108, 8, 0);
    writeOctal(header, 116, 8, 0);
    writeOctal(header, 124, 12, entry.data.byteLength);
    writeOctal(header, 136, 12, 0);
    header.fill(" ", 148, 156);
    writeString(header, 156, 1, "0");
    writeString(header, 257, 6, "ustar\0");
    writeString(header, 263, 2, "00");
    const sum = header.reduce((total, byte) => total + byte, 0);
    writeString(header, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
    blocks.push(header, Buffer.from(entry.data));
    const padding = (BLOCK - (entry.data.byteLength % BLOCK)) % BLOCK;
    if (padding) blocks.push(Buffer.alloc(padding));
  }
  blocks.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(blocks);
}

function readString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? length : end).toString("utf8");
}

function bad(why: string, code: BundleErrorCode = "INVALID_BUNDLE"): never {
  throw new BundleError(code, `bundle is not a valid Aegis tar: ${why}`);
}

/** Reads a bundle's tar, refusing links, special files, unsafe names and oversize content. */
export function readTar(tar: Buffer, limits: TarLimits = BUNDLE_LIMITS): TarEntry[] {
  const entries: TarEntry[] = [];
  let total = 0;
  for (let offset = 0; offset + BLOCK <= tar.byteLength; ) {
    const header = tar.subarray(offset, offset + BLOCK);
    if (header.every((byte) => byte === 0)) return entries;
    const stored = parseInt(readString(header, 148, 8).trim() || "NaN", 8);
    const sum = header.reduce((acc, byte, i) => acc + (i >= 148 && i < 156 ? 32 : byte), 0);
    if (stored !== sum) bad(`header checksum mismatch at offset ${offset}`);
    const prefix = readString(header, 345, 155);
    const name = (prefix ? `${prefix}/` : "") + readString(header, 0, 100);
    const type = readString(header, 156, 1) || "0";
    if (type !== "0") bad(`entry "${name}" has type '${type}'; only regular files are allowed`);
    try {
      checkEntryName(name);
    } catch (err) {
      bad((err as Error).message);
    }
    const size = parseInt(readString(header, 124, 12).trim() || "NaN", 8);
    if (!Number.isSafeInteger(size) || size < 0) bad(`entry "${name}" has an invalid size`);
    if (size > limits.maxEntrySize) bad(`entry "${name}" is ${size} bytes, over the ${limits.maxEntrySize}-byte limit`, "BUNDLE_TOO_LARGE");
    total += size;
    if (total > limits.maxTotalSize) bad(`content is over the ${limits.maxTotalSize}-byte limit`, "BUNDLE_TOO_LARGE");
    if (entries.length >= limits.maxEntries) bad(`more than ${limits.maxEntries} entries`, "BUNDLE_TOO_LARGE");
    if (entries.some((e) => e.name === name)) bad(`entry "${name}" appears twice`);
    const start = offset + BLOCK;
    if (start + size > tar.byteLength) bad(`entry "${name}" is truncated`);
    entries.push({ name, data: tar.subarray(start, start + size) });
    offset = start + Math.ceil(size / BLOCK) * BLOCK;
  }
  bad("missing end-of-archive marker");
}
