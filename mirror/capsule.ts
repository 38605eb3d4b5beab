// The capsule: one OCI image layout as a tar (what `skopeo copy
// oci-archive:capsule.tar:sha256:<hex>` reads), carrying artifacts by digest
// with their signatures into a site that cannot reach the registry they came
// from. Written deterministically (sorted entries, fixed headers), so the same
// artifacts give the same bytes; read strictly and as a stream, into a
// staging layout, refusing anything that is not exactly such a layout.
// https://github.com/opencontainers/image-spec/blob/main/image-layout.md
//
// index.json lists each artifact (annotated with its digest as the ref name,
// and where it came from) and each referrers index under its tag-schema tag
// (`sha256-<hex>`, as OciLayoutTarget and registries without the referrers
// API keep signatures). Every blob must be reachable from those entries.
import { createReadStream } from "node:fs";
import { open, rename, rm, stat } from "node:fs/promises";
import { basename, dirname } from "node:path";
import { once } from "node:events";
import { pipeline as pipe, Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { extract as tarExtract, pack as tarPack, type Header } from "tar-stream";
import { InputError } from "../errors.js";
import {
  Annotation,
  copy,
  COPY_LIMITS,
  encodeJson,
  isManifestType,
  MAX_MANIFEST_SIZE,
  MediaType,
  OciLayoutTarget,
  parseManifest,
  readAll,
  referrersTag,
  RegistryError,
  successors,
  type CopyEvent,
  type Descriptor,
  type Index,
  type ReadOnlyTarget,
} from "../registry/index.js";
import { byCodeUnit, isTempFor, makeTempDir, openWriteStream, syncDir, TarCounter, tarDataEnd, tempPathFor } from "../util/index.js";
import { listSignatures, type TrustPolicy } from "../signing/index.js";
import { MirrorError } from "./errors.js";
import { checkSigned } from "./verified.js";

/** Where an artifact of a capsule came from (`host/repo@sha256:…`), for the operator. */
export const SOURCE_ANNOTATION = "vnd.aegis.capsule.source";

const LAYOUT_FILE = encodeJson({ imageLayoutVersion: "1.0.0" });
const BLOB = /^blobs\/sha256\/([a-f0-9]{64})$/;
const DIRECTORIES = new Set(["blobs", "blobs/", "blobs/sha256", "blobs/sha256/"]);
const REFERRERS_TAG = /^sha256-[a-f0-9]{64}$/;
/** Bytes a capsule may spend per entry besides its content: its header, padding, and room for a long-name (pax) header. */
const HEADER_ROOM = 8 * 1024;

export interface CapsuleLimits {
  /** Most blobs (copy() refuses graphs over 10,000 nodes, and a capsule holds several). */
  maxBlobs: number;
  maxBlobSize: number;
  maxTotalSize: number;
}

export const CAPSULE_LIMITS: CapsuleLimits = {
  maxBlobs: 20_000,
  maxBlobSize: 1024 * 1024 * 1024,
  maxTotalSize: 8 * 1024 * 1024 * 1024,
};

export interface CapsuleSource {
  target: ReadOnlyTarget;
  digest: string;
  /** The reference, `host/repo@sha256:…`, recorded in the capsule. */
  reference: string;
}

export interface CapsuleArtifact {
  desc: Descriptor;
  /** Where it was exported from, when the capsule says. */
  source: string | undefined;
  /** The signatures (sigstore bundle referrers) exported with it; for an export only. */
  signatures?: number;
}

export interface WrittenCapsule {
  artifacts: CapsuleArtifact[];
  blobs: number;
  bytes: number;
}

export interface WriteOptions {
  /** The capsule's size limits (maxBlobs, maxBlobSize, maxTotalSize); default CAPSULE_LIMITS, which an import holds it to. */
  limits?: CapsuleLimits;
  /**
   * Given, each artifact must carry a signature it accepts in the capsule as
   * written (import's check), or nothing is written: one whose signatures a
   * capsule cannot carry (a cosign .sig tag alone) fails here, not at the site.
   */
  trust?: TrustPolicy;
  onEvent?: (event: CopyEvent) => void;
  signal?: AbortSignal;
}

/**
 * Writes the artifacts `sources` name, with their signatures (sigstore
 * bundle referrers) and everything they reference, to `output` as a
 * capsule, within CAPSULE_LIMITS, which an import holds it to. They are
 * copied (and so verified) into a staging layout beside `output` first;
 * `output` is replaced only once the whole tar is written and synced.
 */
export async function writeCapsule(sources: CapsuleSource[], output: string, options: WriteOptions = {}): Promise<WrittenCapsule> {
  if (sources.length === 0) throw new InputError("INVALID_ARGUMENT", "a capsule needs at least one artifact");
  if (!(await stat(dirname(output)).then((s) => s.isDirectory(), () => false))) {
    throw new InputError("FILE_NOT_FOUND", `cannot write ${output}: ${dirname(output)} is not a directory`);
  }
  // Before any download: the rename at the end could not replace a directory.
  if (await stat(output).then((s) => s.isDirectory(), () => false)) throw new InputError("INVALID_ARGUMENT", `cannot write ${output}: it is a directory`);
  const { signal } = options;
  const limits = options.limits ?? CAPSULE_LIMITS;
  // Its blobs are written deep inside it, then only read while the tar is written. What an export into the same
  // file left when it was killed goes first: its staging layout and its tar's temp file.
  const { dir: staging, release } = await makeTempDir(dirname(output), `.${basename(output)}.staging-`, (name) => isTempFor(output, name));
  try {
    const layout = new OciLayoutTarget(staging);
    const artifacts = new Map<string, CapsuleArtifact>();
    /** Each node of the capsule once, by digest (artifacts share blobs): what is left of limits.maxTotalSize is the next copy's bound. */
    const sizes = new Map<string, number>();
    // In reference order: a digest named from two repositories is copied, signatures and all, from the first by code unit
    // and recorded as from there, so the order given changes nothing.
    for (const source of [...sources].sort((a, b) => byCodeUnit(a.reference, b.reference))) {
      if (artifacts.has(source.digest)) continue;
      // Before any blob is fetched: an unsigned artifact fails here, not after gigabytes (checked again below, in the
      // capsule, for what the requirement asks), and so does one whose accepted signatures a capsule cannot carry.
      if (options.trust) {
        const explained = await checkSigned(source.target, source.digest, source.reference, options.trust, { signal });
        if (!explained.signatures.some((v) => v.accepted && v.format === "sigstore-bundle")) {
          throw new MirrorError("NOT_VERIFIED", `${source.reference} is signed only with a cosign .sig tag, which a capsule does not carry: sign it with aegis sign (or cosign sign --new-bundle-format)`);
        }
      }
      const root = await source.target.resolve(source.digest, { signal });
      // Only its signatures travel: any other referrer (an SBOM anyone who can push attached) could be of any size, and an import takes none.
      const signatures = await listSignatures(source.target, root, { signal });
      // An import takes only signed artifacts: a capsule with an unsigned one could never be imported (found here,
      // not at the site). Without keys the signatures are not checked here, only that there are some.
      if (signatures.length === 0) {
        throw new MirrorError("NOT_VERIFIED", `${source.reference} carries no signature (a sigstore bundle referrer), and an import refuses an unsigned artifact: sign it first (aegis sign)`);
      }
      await copy(source.target, source.digest, layout, undefined, {
        referrers: signatures,
        maxBlobSize: limits.maxBlobSize,
        // What earlier artifacts hold counts once; a blob this one shares with them counts again here, erring on the safe side.
        maxTotalSize: limits.maxTotalSize - [...sizes.values()].reduce((sum, size) => sum + size, 0),
        onEvent: (event) => {
          sizes.set(event.desc.digest, event.desc.size);
          options.onEvent?.(event);
        },
        signal,
      }).catch((err: unknown) => {
        throw err instanceof RegistryError && err.code === "SIZE_LIMIT" ? new MirrorError("CAPSULE_TOO_LARGE", `cannot export ${source.reference}: ${err.message}`, { cause: err }) : err;
      });
      artifacts.set(root.digest, { desc: plain(root), source: source.reference, signatures: signatures.length });
    }
    const sorted = [...artifacts.values()].sort((a, b) => byCodeUnit(a.desc.digest, b.desc.digest));
    if (options.trust) {
      for (const { desc, source } of sorted) await checkSigned(layout, desc.digest, `${source ?? desc.digest} (with the signatures a capsule carries: sigstore bundle referrers)`, options.trust);
    }
    const wanted = new Set(sorted.map((a) => referrersTag(a.desc)));
    const referrerIndexes = await Promise.all(
      (await layout.tags())
        .filter((t) => wanted.has(t))
        .sort(byCodeUnit)
        .map(async (tag) => ({ ...plain(await layout.resolve(tag)), annotations: { [Annotation.RefName]: tag } })),
    );
    const index: Index = {
      schemaVersion: 2,
      mediaType: MediaType.ImageIndex,
      manifests: [
        ...sorted.map(({ desc, source }) => ({ ...desc, annotations: { [Annotation.RefName]: desc.digest, ...(source ? { [SOURCE_ANNOTATION]: source } : {}) } })),
        ...referrerIndexes,
      ],
    };
    const blobs = [...(await reachable(layout, index.manifests, limits.maxBlobs)).values()].sort((a, b) => byCodeUnit(a.digest, b.digest));
    return { artifacts: sorted, blobs: blobs.length, bytes: await writeTar(output, encodeJson(index), blobs, layout, signal) };
  } finally {
    await release();
  }
}

/** The tar, into a temp file beside `output`, synced, then renamed over it. */
async function writeTar(output: string, index: Buffer, blobs: Descriptor[], layout: ReadOnlyTarget, signal?: AbortSignal): Promise<number> {
  const temp = tempPathFor(output);
  const pack = tarPack();
  let created = false;
  try {
    const file = await openWriteStream(temp, { flags: "wx", mode: 0o644 });
    created = true;
    const written = pipeline(pack as AsyncIterable<Buffer>, file, { signal });
    // Awaited below; a failure while adding entries is reported from there instead.
    written.catch(() => undefined);
    // Fixed headers: the same artifacts give the same bytes.
    const header = (name: string, size: number, type: Header["type"] = "file"): Partial<Header> & { name: string } => ({
      name,
      size,
      type,
      mode: type === "directory" ? 0o755 : 0o644,
      mtime: new Date(0),
      uid: 0,
      gid: 0,
      uname: "",
      gname: "",
    });
    const add = async (name: string, content: Readable | Buffer, size: number) => {
      let done: (err?: Error | null) => void = () => {};
      const finished = new Promise<void>((resolve, reject) => (done = (err) => (err ? reject(err) : resolve())));
      const entry = pack.entry(header(name, size), (err) => done(err));
      if (Buffer.isBuffer(content)) {
        entry.end(content);
      } else {
        for await (const chunk of content as AsyncIterable<Buffer>) if (!entry.write(chunk)) await once(entry, "drain");
        entry.end(null);
      }
      await finished;
    };
    await add("oci-layout", LAYOUT_FILE, LAYOUT_FILE.byteLength);
    await add("index.json", index, index.byteLength);
    for (const dir of ["blobs/", "blobs/sha256/"]) await new Promise<void>((resolve, reject) => pack.entry(header(dir, 0, "directory"), (err) => (err ? reject(err) : resolve())));
    for (const blob of blobs) await add(`blobs/sha256/${blob.digest.slice("sha256:".length)}`, await layout.fetch(blob, { signal }), blob.size);
    pack.finalize();
    await written;
    const handle = await open(temp, "r");
    let size: number;
    try {
      await handle.sync();
      size = (await handle.stat()).size;
    } finally {
      await handle.close();
    }
    await rename(temp, output);
    await syncDir(dirname(output));
    return size;
  } catch (err) {
    pack.destroy();
    if (created) await rm(temp, { force: true });
    throw err;
  }
}

export interface OpenedCapsule {
  /** The staging layout the capsule was read into: every blob verified, the referrers indexes tagged. */
  target: OciLayoutTarget;
  artifacts: CapsuleArtifact[];
}

export interface ReadOptions {
  limits?: CapsuleLimits;
  /** Progress while reading: a start and bytes per blob. */
  onEvent?: (event: CopyEvent) => void;
  signal?: AbortSignal;
}

/**
 * Reads the capsule at `path` into a staging layout in `dir` (which must be
 * empty or absent), as a stream and within `limits`: entries may only be the
 * layout's files, each blob is checked against the digest it is stored
 * under, and afterwards the capsule must hold exactly what index.json reaches.
 * Anything else throws a MirrorError and nothing outside `dir` is touched.
 */
export async function readCapsule(path: string, dir: string, options: ReadOptions = {}): Promise<OpenedCapsule> {
  const limits = options.limits ?? CAPSULE_LIMITS;
  const emit = options.onEvent ?? (() => {});
  const cannotRead = (err: unknown) => {
    throw new InputError("FILE_NOT_FOUND", `${path}: cannot read capsule`, { cause: err });
  };
  const info = await stat(path).catch(cannotRead);
  // A device (/dev/zero) gives bytes for ever, and is never opened; a pipe is read within the limit below.
  if (!info.isFile() && !info.isFIFO()) throw new InputError("INVALID_ARGUMENT", `capsule ${path} is not a file or a pipe`);
  // A file is opened here: stat() needs no read right, so this is where one this user cannot read is told. A pipe
  // is opened by its stream, as it is read: that open waits for a writer, and the signal must be able to stop it.
  const file = info.isFile() ? (await open(path, "r").catch(cannotRead)).createReadStream() : createReadStream(path);
  const target = new OciLayoutTarget(dir);
  const extract = tarExtract();
  // Bytes read, for the end-of-archive check below (util/tar-end.ts), within the content limit and room for
  // every entry's headers: a file of endless zero blocks or headers is refused, not read to its end.
  const readLimit = limits.maxTotalSize + (limits.maxBlobs + 16) * HEADER_ROOM;
  const counting = new TarCounter(readLimit, (limit) => new MirrorError("CAPSULE_TOO_LARGE", `capsule refused: it is over ${limit} bytes`));
  // Errors of either side reach the loop below through the extractor.
  pipeline(file, counting, extract, { signal: options.signal }).catch(() => undefined);
  const held = new Set<string>();
  const seen = new Set<string>();
  let index: Buffer | undefined;
  let layoutFile: Buffer | undefined;
  let total = 0;
  // Where the last entry's data ends (tar-stream's byteOffset is where it starts).
  let entriesEnd = 0;
  try {
    for await (const entry of extract) {
      const { name, type } = entry.header;
      const size = entry.header.size ?? 0;
      entriesEnd = tarDataEnd((entry.header as Header & { byteOffset: number }).byteOffset, size);
      if (seen.has(name)) refuse("INVALID_CAPSULE", `entry "${name}" appears twice`);
      seen.add(name);
      if (held.size >= limits.maxBlobs) refuse("CAPSULE_TOO_LARGE", `more than ${limits.maxBlobs} blobs`);
      if (type === "directory" && DIRECTORIES.has(name)) {
        entry.resume();
        continue;
      }
      if (type !== "file") refuse("INVALID_CAPSULE", `entry "${name}" is a ${type ?? "special file"}; a capsule holds only files and the blobs directories`);
      total += size;
      if (total > limits.maxTotalSize) refuse("CAPSULE_TOO_LARGE", `its content is over the ${limits.maxTotalSize}-byte limit`);
      const blob = BLOB.exec(name);
      if (name === "index.json") {
        index = await readAll(Readable.from(entry), MAX_MANIFEST_SIZE, "index.json");
      } else if (name === "oci-layout") {
        layoutFile = await readAll(Readable.from(entry), 1024, "oci-layout");
      } else if (blob) {
        if (size > limits.maxBlobSize) refuse("CAPSULE_TOO_LARGE", `blob sha256:${blob[1]} is ${size} bytes, over the ${limits.maxBlobSize}-byte limit`);
        const desc = { mediaType: "application/octet-stream", digest: `sha256:${blob[1]}`, size };
        emit({ kind: "start", desc });
        const counter = new Transform({
          transform(chunk: Buffer, _encoding, callback) {
            emit({ kind: "bytes", desc, bytes: chunk.byteLength });
            callback(null, chunk);
          },
        });
        await target.push(desc, pipe(Readable.from(entry), counter, () => {}), { signal: options.signal }).catch((err: unknown) => {
          if (err instanceof RegistryError && (err.code === "DIGEST_MISMATCH" || err.code === "SIZE_MISMATCH")) {
            refuse("DIGEST_MISMATCH", `blob ${desc.digest} does not match its digest`, err);
          }
          throw err;
        });
        emit({ kind: "done", desc });
        held.add(desc.digest);
      } else {
        refuse("INVALID_CAPSULE", `entry "${name}" is not part of an OCI image layout (oci-layout, index.json, blobs/sha256/<hex>)`);
      }
    }
  } catch (err) {
    file.destroy();
    extract.destroy();
    options.signal?.throwIfAborted();
    if (err instanceof MirrorError || err instanceof InputError) throw err;
    if (err instanceof RegistryError && err.code === "SIZE_LIMIT") refuse("CAPSULE_TOO_LARGE", err.message, err);
    if (err instanceof RegistryError) throw err;
    // This machine's own failure (a full disk or a size limit while staging, a read error): not the capsule's.
    if ((err as NodeJS.ErrnoException).syscall !== undefined) throw err;
    refuse("INVALID_CAPSULE", `not a tar archive: ${(err as Error).message}`, err);
  }
  if (!counting.endsAfter(entriesEnd)) refuse("INVALID_CAPSULE", "it is cut off: no end-of-archive marker after its last entry");
  if (layoutVersion(layoutFile) !== "1.0.0") refuse("INVALID_CAPSULE", "it has no oci-layout file of version 1.0.0");
  if (!index) refuse("INVALID_CAPSULE", "it has no index.json");
  let entries: Descriptor[];
  try {
    entries = (parseManifest(index, MediaType.ImageIndex) as Index).manifests;
  } catch (err) {
    refuse("INVALID_CAPSULE", "its index.json is not a valid image index", err);
  }
  const artifacts: CapsuleArtifact[] = [];
  const listed = new Set<string>();
  const referrersIndexes: { desc: Descriptor; ref: string }[] = [];
  for (const desc of entries) {
    if (!isManifestType(desc.mediaType)) refuse("INVALID_CAPSULE", `index.json lists ${desc.digest} as ${desc.mediaType}, not a manifest`);
    if (!held.has(desc.digest)) refuse("MISSING_CONTENT", `index.json lists ${desc.digest}, which the capsule does not hold`);
    const ref = desc.annotations?.[Annotation.RefName];
    if (ref && REFERRERS_TAG.test(ref)) referrersIndexes.push({ desc, ref });
    else if (listed.has(desc.digest)) refuse("INVALID_CAPSULE", `index.json lists ${desc.digest} twice`);
    else {
      listed.add(desc.digest);
      artifacts.push({ desc: plain(desc), source: desc.annotations?.[SOURCE_ANNOTATION] });
    }
  }
  if (artifacts.length === 0) refuse("INVALID_CAPSULE", "its index.json lists no artifact");
  // A referrers index is tagged as registries without the referrers API tag it, so referrers() finds the signatures:
  // one per listed artifact at most. The artifacts are indexed too, with the media types index.json gives them
  // (a manifest need not name its own), all in one write of the staging index.json.
  const tagged = new Set<string>();
  for (const { desc, ref } of referrersIndexes) {
    if (!listed.has(ref.replace("-", ":"))) refuse("INVALID_CAPSULE", `index.json tags ${desc.digest} as ${ref}, the referrers of an artifact it does not list`);
    if (tagged.has(ref)) refuse("INVALID_CAPSULE", `index.json tags ${ref} twice`);
    tagged.add(ref);
  }
  await target.index([...artifacts.map(({ desc }) => ({ desc })), ...referrersIndexes.map(({ desc, ref }) => ({ desc: plain(desc), tag: ref }))]).catch((err: unknown) => {
    // Every digest listed is held (checked above): one the staging layout will not index has another size than its blob.
    if (err instanceof RegistryError && err.code === "NOT_FOUND") refuse("INVALID_CAPSULE", "index.json gives a manifest another size than the blob it holds", err);
    throw err;
  });
  const reached = await reachable(target, entries, limits.maxBlobs, held).catch((err: unknown) => {
    if (err instanceof RegistryError) refuse(err.code === "SIZE_LIMIT" ? "CAPSULE_TOO_LARGE" : "INVALID_CAPSULE", err.message, err);
    throw err;
  });
  const unlisted = [...held].filter((d) => !reached.has(d));
  if (unlisted.length > 0) {
    refuse("UNLISTED_CONTENT", `it holds ${unlisted.length} blob(s) that nothing index.json lists reaches: ${unlisted.slice(0, 3).join(", ")}${unlisted.length > 3 ? ", …" : ""}`);
  }
  return { target, artifacts };
}

/**
 * Every descriptor reachable from `entries` (manifests, their children,
 * recursively), within copy()'s bounds. Manifests are read from `target`,
 * verified. Given `held`, what a capsule holds, a descriptor outside it is
 * MISSING_CONTENT before anything else happens.
 */
async function reachable(target: ReadOnlyTarget, entries: Descriptor[], maxNodes: number, held?: Set<string>): Promise<Map<string, Descriptor>> {
  const seen = new Map<string, Descriptor>();
  const visit = async (desc: Descriptor, depth: number): Promise<void> => {
    if (seen.has(desc.digest)) return;
    if (held && !held.has(desc.digest)) refuse("MISSING_CONTENT", `its manifests name ${desc.digest}, which it does not hold`);
    if (depth > COPY_LIMITS.maxDepth) refuse("CAPSULE_TOO_LARGE", `${desc.digest} is nested more than ${COPY_LIMITS.maxDepth} levels deep`);
    if (seen.size >= maxNodes) refuse("CAPSULE_TOO_LARGE", `its graph has more than ${maxNodes} nodes`);
    seen.set(desc.digest, plain(desc));
    if (!isManifestType(desc.mediaType)) return;
    const bytes = await readAll(await target.fetch(desc), MAX_MANIFEST_SIZE, `manifest ${desc.digest}`);
    for (const child of successors(parseManifest(bytes, desc.mediaType))) await visit(child, depth + 1);
  };
  for (const entry of entries) await visit(entry, 0);
  return seen;
}

function layoutVersion(file: Buffer | undefined): unknown {
  try {
    return file && (JSON.parse(file.toString("utf8")) as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  } catch {
    return undefined;
  }
}

function refuse(code: MirrorError["code"], why: string, cause?: unknown): never {
  throw new MirrorError(code, `capsule refused: ${why}`, cause === undefined ? undefined : { cause });
}

function plain(desc: Descriptor): Descriptor {
  return { mediaType: desc.mediaType, digest: desc.digest, size: desc.size };
}
