// Rewriting a capsule's tar, as someone tampering with it in transit would:
// read every entry into memory (test capsules are small), change them, write
// them back.
import { readFileSync, writeFileSync } from "node:fs";
import { extract, pack, type Header } from "tar-stream";

export interface TarEntry {
  header: Partial<Header> & { name: string };
  data: Buffer;
}

export async function readEntries(path: string): Promise<TarEntry[]> {
  const reader = extract();
  reader.end(readFileSync(path));
  const entries: TarEntry[] = [];
  for await (const entry of reader) {
    const chunks: Buffer[] = [];
    for await (const chunk of entry) chunks.push(chunk as Buffer);
    entries.push({ header: entry.header, data: Buffer.concat(chunks) });
  }
  return entries;
}

export async function writeEntries(path: string, entries: TarEntry[]): Promise<void> {
  const writer = pack();
  for (const { header, data } of entries) writer.entry({ ...header, size: data.byteLength }, data);
  writer.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of writer) chunks.push(chunk as Buffer);
  writeFileSync(path, Buffer.concat(chunks));
}

/** Reads `from`, applies `edit`, writes the result to `to`. */
export async function tamper(from: string, to: string, edit: (entries: TarEntry[]) => TarEntry[]): Promise<string> {
  await writeEntries(to, edit(await readEntries(from)));
  return to;
}

export function blobName(digest: string): string {
  return `blobs/sha256/${digest.slice("sha256:".length)}`;
}
