// Fleet files: the desired state of a fleet, in Git, by digest (README
// "GitOps"). One file (or a directory of them) lists policies, each an
// artifact reference pinned by digest and the hosts (by id) and label
// selectors it goes to; `environment` names the stage a file describes, for
// `aegis promote`. Small and strict: an unknown field, a missing target or a
// name used twice is an error naming the file and the field. Edits (`--pin`,
// `promote`) replace only the ref's text, found by the YAML document's
// ranges, so the rest of the file stays as it is, and are written atomically.
import { createHash } from "node:crypto";
import { readdir, realpath, stat } from "node:fs/promises";
import { join } from "node:path";
import { isAlias, isScalar, parseDocument, type Document } from "yaml";
import { z } from "zod";
import { HostId, SelectorText, canonicalSelector } from "../assigner/api/index.js";
import { InputError } from "../errors.js";
import { parseReference, type Reference } from "../registry/index.js";
import { atomicWriteAll, readRegular, type AtomicWriteFile } from "../util/index.js";

type RemoteReference = Extract<Reference, { kind: "remote" }>;

/** Bounds: a fleet is large, a file listing it is still text a person reads. */
export const FLEET_MAX_FILES = 256;
export const FLEET_MAX_POLICIES = 1000;
const FLEET_MAX_BYTES = 4 * 1024 * 1024;

const Name = z.string().regex(/^[a-z0-9]([a-z0-9._-]{0,62})$/, "1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit");

const PolicyEntry = z
  .strictObject({
    name: Name.meta({ description: "Unique across the files applied together; promote matches entries by it" }),
    ref: z.string().min(1).max(1024).meta({ description: "host[:port]/repo@sha256:… (a tag is refused, or pinned with --pin)" }),
    hosts: z.array(HostId).max(FLEET_MAX_POLICIES).optional(),
    selectors: z.array(SelectorText).max(64).optional(),
  })
  .refine((p) => (p.hosts?.length ?? 0) + (p.selectors?.length ?? 0) > 0, "a policy needs at least one target: hosts or selectors");

const FleetDocument = z.strictObject({
  environment: Name.optional(),
  policies: z.array(PolicyEntry).max(FLEET_MAX_POLICIES),
});

export interface FleetPolicy {
  name: string;
  /** As written in the file. */
  ref: string;
  reference: RemoteReference;
  /** The digest the ref pins; undefined for a tag (refused, or resolved with --pin). */
  digest: string | undefined;
  hosts: string[];
  /** Canonical selector texts. */
  selectors: string[];
  file: string;
  /** Its index in the file's `policies`, for errors and edits. */
  index: number;
}

export interface FleetFile {
  path: string;
  /** SHA-256 of the text read: edits are written only over that same text (rewriteRefs). */
  digest: string;
  environment: string | undefined;
  policies: FleetPolicy[];
}

/** The desired state the files describe. */
export interface Fleet {
  files: FleetFile[];
  policies: FleetPolicy[];
}

function fieldPath(path: PropertyKey[]): string {
  return path.reduce<string>((out, key) => (typeof key === "number" ? `${out}[${key}]` : out ? `${out}.${String(key)}` : String(key)), "");
}

/** A fleet file's text (within FLEET_MAX_BYTES) and its SHA-256. */
async function readText(file: string): Promise<{ text: string; digest: string; mode: number }> {
  let text: string;
  let mode: number;
  try {
    mode = (await stat(file)).mode & 0o7777;
    // A regular file only, read within the limit whatever size it reports (-f /dev/zero, a FIFO).
    text = (await readRegular(file, FLEET_MAX_BYTES)).toString("utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EFBIG") throw new InputError("INVALID_ARGUMENT", `${file}: larger than ${FLEET_MAX_BYTES} bytes`);
    if (code === "EINVAL") throw new InputError("INVALID_ARGUMENT", `${file}: not a regular file`);
    throw new InputError("FILE_NOT_FOUND", `${file}: cannot read fleet file (${code ?? (err as Error).message})`, { cause: err });
  }
  return { text, digest: createHash("sha256").update(text).digest("hex"), mode };
}

/** The YAML document of a fleet file's text; invalid YAML is an error naming the file and line. */
function parseText(file: string, text: string): Document {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const line = first.linePos?.[0]?.line;
    throw new InputError("INVALID_ARGUMENT", `${file}${line ? `:${line}` : ""}: invalid YAML: ${first.message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "")}`);
  }
  return doc;
}

/** Parses one fleet file; every problem in it is named, with its field, in one error. */
export async function loadFleetFile(file: string): Promise<FleetFile> {
  const { text, digest } = await readText(file);
  const doc = parseText(file, text);
  const parsed = FleetDocument.safeParse(doc.toJS() ?? {});
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 20).map((issue) => `${fieldPath(issue.path) || "(top level)"}: ${issue.message}`);
    throw new InputError("INVALID_ARGUMENT", `${file}: ${problems.join("; ")}`);
  }
  const problems: string[] = [];
  const policies: FleetPolicy[] = [];
  parsed.data.policies.forEach((entry, index) => {
    let reference: RemoteReference | undefined;
    try {
      const ref = parseReference(entry.ref);
      if (ref.kind !== "remote") throw new InputError("INVALID_REFERENCE", "an OCI layout cannot be assigned: name a registry (host/repo@sha256:…)");
      reference = ref;
    } catch (err) {
      problems.push(`policies[${index}].ref: ${(err as Error).message}`);
      return;
    }
    policies.push({
      name: entry.name,
      ref: entry.ref,
      reference,
      digest: reference.digest,
      hosts: [...new Set(entry.hosts ?? [])],
      selectors: [...new Set((entry.selectors ?? []).map(canonicalSelector))],
      file,
      index,
    });
  });
  if (problems.length > 0) throw new InputError("INVALID_ARGUMENT", `${file}: ${problems.join("; ")}`);
  return { path: file, digest, environment: parsed.data.environment, policies };
}

/** The fleet files a path names: the file, or a directory's *.yaml / *.yml (not recursive), sorted. */
async function expand(path: string): Promise<string[]> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    throw new InputError("FILE_NOT_FOUND", `${path}: no such fleet file or directory`, { cause: err });
  }
  if (!info.isDirectory()) return [path];
  const names = (await readdir(path)).filter((n) => /\.ya?ml$/.test(n) && !n.startsWith(".")).sort();
  if (names.length === 0) throw new InputError("FILE_NOT_FOUND", `${path}: no fleet files (*.yaml, *.yml) in this directory`);
  return names.map((n) => join(path, n));
}

/**
 * Loads fleet files and directories of them; with `environment`, only the
 * files of that environment. Policy names must be unique within an
 * environment. Exported for other commands that read what the fleet names
 * (`aegis mirror export --from`): `policies[].digest` and `.reference`.
 */
export async function loadFleetFiles(paths: readonly string[], options: { environment?: string } = {}): Promise<Fleet> {
  return fleetOf(await readFleetFiles(paths), paths, options);
}

/** Every fleet file `paths` name (files, and directories of them), read and checked one by one. */
export async function readFleetFiles(paths: readonly string[]): Promise<FleetFile[]> {
  const names = [...new Set((await Promise.all(paths.map(expand))).flat())];
  if (names.length > FLEET_MAX_FILES) throw new InputError("INVALID_ARGUMENT", `more than ${FLEET_MAX_FILES} fleet files`);
  return Promise.all(names.map(loadFleetFile));
}

/** The fleet of files read from `paths` (with `environment`, that environment's files), its policy names checked unique. */
export function fleetOf(all: readonly FleetFile[], paths: readonly string[], options: { environment?: string } = {}): Fleet {
  let files = [...all];
  if (options.environment !== undefined) {
    files = files.filter((f) => f.environment === options.environment);
    if (files.length === 0) throw new InputError("INVALID_ARGUMENT", `no fleet file has environment: ${options.environment} (in ${paths.join(", ")})`);
  }
  const seen = new Map<string, FleetPolicy>();
  for (const file of files) {
    for (const policy of file.policies) {
      const key = `${file.environment ?? ""} ${policy.name}`;
      const other = seen.get(key);
      if (other) throw new InputError("INVALID_ARGUMENT", `${policy.file}: policies[${policy.index}].name: "${policy.name}" is also the name of ${other.file} policies[${other.index}]`);
      seen.set(key, policy);
    }
  }
  const policies = files.flatMap((f) => f.policies);
  if (policies.length > FLEET_MAX_POLICIES * FLEET_MAX_FILES) throw new InputError("INVALID_ARGUMENT", `more than ${FLEET_MAX_POLICIES * FLEET_MAX_FILES} policies in the fleet files`);
  return { files, policies };
}

/** The environments the files describe (undefined: a file without one). */
export function environmentsOf(fleet: Fleet): (string | undefined)[] {
  return [...new Set(fleet.files.map((f) => f.environment))];
}

/** One ref to write: `policies[index].ref` of `file`, the policy `name`, from `from` to `to`. */
export interface RefEdit {
  file: string;
  index: number;
  name: string;
  from: string;
  to: string;
}

/**
 * Sets the refs, keeping the rest of each file's text as it is (comments,
 * order, quoting, line ends: a one-digest change is a one-line diff) and its
 * mode; a file reached through a symlink is written where the link points.
 * The files are written together (atomicWriteAll): one that cannot be
 * written leaves every file as it was. Every file `read` (loadFleetFile: all
 * the change was decided from, edited or not) is read again first: one whose
 * text changed since (someone edited it while the registries were checked)
 * refuses the whole change, and no file is written, since what was checked
 * and planned is no longer what the files say.
 */
export async function rewriteRefs(read: readonly FleetFile[], edits: readonly RefEdit[]): Promise<void> {
  if (edits.length === 0) return;
  const edited = new Set(edits.map((e) => e.file));
  const texts = new Map<string, { text: string; doc: Document; mode: number }>();
  for (const file of read) {
    const { text, digest, mode } = await readText(file.path);
    if (digest !== file.digest) throw new InputError("INVALID_ARGUMENT", `${file.path}: changed since aegis read it; nothing was written (run again)`);
    if (edited.has(file.path)) texts.set(file.path, { text, doc: parseText(file.path, text), mode });
  }
  const writes: AtomicWriteFile[] = [];
  for (const [path, { text, doc, mode }] of texts) {
    // Every edit's file is among those read (the callers edit only what they read); spliced from the end, so earlier ranges hold.
    const spans = edits
      .filter((e) => e.file === path)
      .map((e) => ({ edit: e, node: doc.getIn(["policies", e.index, "ref"], true) }))
      .map(({ edit, node }) => {
        // An anchored ref's text is every alias's too: edited, it would move the policies that name it by `*alias`, unasked.
        const shared = isAlias(node) ? `the YAML alias *${node.source}` : isScalar(node) && node.anchor ? `the YAML anchor &${node.anchor}` : undefined;
        if (shared) throw new InputError("INVALID_ARGUMENT", `${path}: policies[${edit.index}].ref (${edit.name}) is ${shared}, whose text other refs may share; write the ref out in each policy; nothing was written`);
        if (!isScalar(node) || !node.range || /^[|>]/.test(text.slice(node.range[0]))) throw new InputError("INVALID_ARGUMENT", `${path}: policies[${edit.index}].ref is not a one-line value; nothing was written`);
        return { start: node.range[0], end: node.range[1], text: scalarLike(text.slice(node.range[0], node.range[1]), edit.to) };
      })
      .sort((a, b) => b.start - a.start);
    let out = text;
    for (const span of spans) out = out.slice(0, span.start) + span.text + out.slice(span.end);
    writes.push({ path: await realpath(path), data: out, mode });
  }
  await atomicWriteAll(writes);
}

/** `value` written as the scalar `source` was: double-quoted, single-quoted, or plain. */
function scalarLike(source: string, value: string): string {
  if (source.startsWith('"')) return JSON.stringify(value);
  if (source.startsWith("'")) return `'${value.replaceAll("'", "''")}'`;
  return value;
}
