// Loads eBPF objects into the kernel and talks to them through bpftool:
// pinning, filling maps, BPF_PROG_TEST_RUN and reading counters. Everything
// lives under a caller-chosen pin directory on bpffs (the agent uses
// /sys/fs/bpf/aegis/<digest>/) so it outlives the process that loaded it.
import { createWriteStream } from "node:fs";
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { EbpfError } from "./errors.js";
import { run, type ToolOptions } from "./exec.js";
import { COUNTERS_MAP, FILLED_MAPS, mapEntries, u32, type CompiledRules } from "./rules.js";

export const BPFFS = "/sys/fs/bpf";

/** TC verdicts as a classifier returns them (retval of a test run, signed). */
export const TC_ACT = { UNSPEC: -1, OK: 0, SHOT: 2 } as const;

/** Where loadObject pinned things: `<pinDir>/prog/<function>` and `<pinDir>/maps/<map>`. */
export interface Pinned {
  pinDir: string;
  progPin: string;
  mapsDir: string;
}

export interface TestRunResult {
  /** The program's return value as a signed int (TC_ACT_UNSPEC is -1). */
  retval: number;
  /** Average kernel-measured time of one run. */
  durationNs: number;
}

/** Mounts bpffs at /sys/fs/bpf unless it already is. */
export async function ensureBpffs(tool: ToolOptions = {}): Promise<void> {
  const mounts = await readFile("/proc/mounts", "utf8");
  if (mounts.split("\n").some((line) => line.split(" ")[1] === BPFFS && line.split(" ")[2] === "bpf")) return;
  await run("BPFFS_FAILED", `cannot mount bpffs at ${BPFFS}`, "mount", ["-t", "bpf", "bpf", BPFFS], tool);
}

/**
 * Loads every program of an object and pins programs and maps under pinDir,
 * which must not exist yet. On failure nothing stays pinned.
 */
export async function loadObject(object: Buffer, pinDir: string, tool: ToolOptions = {}): Promise<Pinned> {
  checkPinDir(pinDir);
  await ensureBpffs(tool);
  await securePinRoot(dirname(pinDir));
  try {
    await mkdir(pinDir);
  } catch (err) {
    // Never load over (and on failure, clean up) someone else's pins.
    throw new EbpfError("LOAD_FAILED", `cannot create pin directory ${pinDir}: ${(err as Error).message}`, { cause: err });
  }
  const pinned: Pinned = { pinDir, progPin: "", mapsDir: join(pinDir, "maps") };
  const work = await mkdtemp(join(tmpdir(), "aegis-load-"));
  try {
    const objectFile = join(work, "program.o");
    await writeFile(objectFile, object);
    const progDir = join(pinDir, "prog");
    await run("LOAD_FAILED", `cannot load eBPF object into ${pinDir}`, "bpftool", [
      "prog", "loadall", objectFile, progDir, "pinmaps", pinned.mapsDir,
    ], tool);
    const programs = await readdir(progDir);
    const [program] = programs;
    if (programs.length !== 1 || !program) {
      throw new EbpfError("LOAD_FAILED", `expected one program in the object, found ${programs.length}: ${programs.map((p) => JSON.stringify(p)).join(", ")}`);
    }
    checkProgramName(program);
    pinned.progPin = join(progDir, program);
    return pinned;
  } catch (err) {
    await unpin(pinDir);
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Writes compiled rules into the pinned maps, in one bpftool process. */
export async function fillMaps(mapsDir: string, maps: CompiledRules["maps"], tool: ToolOptions = {}): Promise<void> {
  if (FILLED_MAPS.every((name) => maps[name].count === 0)) return;
  function* lines(): Generator<string> {
    for (const name of FILLED_MAPS) {
      const prefix = `map update pinned ${join(mapsDir, name)} key hex `;
      for (const { key, value } of mapEntries(maps[name])) yield `${prefix}${hexBytes(key)} value hex ${hexBytes(value)}`;
    }
  }
  await batch(lines(), `cannot fill the maps in ${mapsDir}`, [], tool);
}

/** loadObject + fillMaps: a program ready to attach, or nothing pinned. */
export async function loadProgram(object: Buffer, rules: CompiledRules, pinDir: string, tool: ToolOptions = {}): Promise<Pinned> {
  const pinned = await loadObject(object, pinDir, tool);
  try {
    await fillMaps(pinned.mapsDir, rules.maps, tool);
    return pinned;
  } catch (err) {
    await unpin(pinDir);
    throw err;
  }
}

/** Runs a pinned TC program on one Ethernet frame with BPF_PROG_TEST_RUN. */
export async function testRun(progPin: string, packet: Buffer, repeat = 1): Promise<TestRunResult> {
  const work = await mkdtemp(join(tmpdir(), "aegis-run-"));
  try {
    const dataFile = join(work, "packet");
    await writeFile(dataFile, packet);
    const out = await run("BPFTOOL_FAILED", `cannot test-run ${progPin}`, "bpftool", [
      "prog", "run", "pinned", progPin, "data_in", dataFile, "repeat", String(repeat), "-j",
    ]);
    const { retval, duration } = JSON.parse(out) as { retval: number; duration: number };
    return { retval: retval | 0, durationNs: duration };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * Rules whose counters one bpftool process reads: its JSON gives each CPU's
 * value of each rule (~90 characters), so 100,000 rules on 64 CPUs in one
 * answer would pass the longest string V8 makes.
 */
const COUNTERS_PER_READ = 4096;

/**
 * Packets matched per rule, summed over CPUs: all rules, or only the given
 * rule indexes (cheaper for large policies), in the order asked.
 */
export async function readCounters(mapsDir: string, indexes?: number[], tool: ToolOptions = {}): Promise<number[]> {
  const map = join(mapsDir, COUNTERS_MAP);
  if (!indexes) {
    const shown = await run("BPFTOOL_FAILED", `cannot read ${map}`, "bpftool", ["map", "show", "pinned", map, "-j"], tool);
    return readCounters(mapsDir, Array.from({ length: (JSON.parse(shown) as { max_entries: number }).max_entries }, (_, i) => i), tool);
  }
  const counters: number[] = [];
  for (let at = 0; at < indexes.length; at += COUNTERS_PER_READ) {
    const lines = indexes.slice(at, at + COUNTERS_PER_READ).map((i) => `map lookup pinned ${map} key hex ${hexBytes(u32(i))}`);
    const out = await batch(lines, `cannot read ${map}`, ["-j"], tool);
    for (const result of JSON.parse(out) as { output: PerCpuEntry }[]) counters.push(sumCpus(result.output));
  }
  return counters;
}

/**
 * A program's name (the ELF symbol of the bundle's program.o) becomes its
 * pin's file name, which goes to tc as an argument and into `tc -batch`
 * lines. The kernel checks only the first 15 characters it keeps, so a
 * crafted object could name a newline and a second tc command: names are
 * letters, digits and underscores.
 */
export function checkProgramName(name: string): void {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(name)) {
    throw new EbpfError("LOAD_FAILED", `the eBPF object's program is named ${JSON.stringify(name)}: a program's name must be 1 to 64 letters, digits and underscores`);
  }
}

/** What loadObject pinned under pinDir, or undefined if nothing is. */
export async function findPinned(pinDir: string): Promise<Pinned | undefined> {
  const programs = await readdir(join(pinDir, "prog")).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw new EbpfError("BPFFS_FAILED", `cannot read ${pinDir}: ${err.message}`, { cause: err });
  });
  const [program] = programs;
  // Its name is not checked here (a pin named badly, by an older agent, must not stop every listing): attachTc refuses it.
  return program ? { pinDir, progPin: join(pinDir, "prog", program), mapsDir: join(pinDir, "maps") } : undefined;
}

/** The kernel's id of a pinned program. */
export async function programId(progPin: string, tool: ToolOptions = {}): Promise<number> {
  const out = await run("BPFTOOL_FAILED", `cannot show ${progPin}`, "bpftool", ["prog", "show", "pinned", progPin, "-j"], tool);
  return (JSON.parse(out) as { id: number }).id;
}

/** Removes everything pinned under pinDir (programs stay alive while attached). */
export async function unpin(pinDir: string): Promise<void> {
  await rm(pinDir, { recursive: true, force: true });
}

interface PerCpuEntry {
  values: { cpu: number; value: string[] }[];
}

function sumCpus(entry: PerCpuEntry): number {
  let total = 0n;
  for (const { value } of entry.values) {
    // value is the u64 as little-endian "0x.." bytes.
    total += Buffer.from(value.map((b) => parseInt(b, 16))).readBigUInt64LE(0);
  }
  return Number(total);
}

/** Runs `lines` as one `bpftool batch`; the file is written as they come (a million rules' lines are more text than one string holds). */
async function batch(lines: Iterable<string>, what: string, flags: string[], tool: ToolOptions): Promise<string> {
  const work = await mkdtemp(join(tmpdir(), "aegis-batch-"));
  try {
    const file = join(work, "commands");
    await pipeline(Readable.from(joined(lines)), createWriteStream(file));
    return await run("BPFTOOL_FAILED", what, "bpftool", ["batch", "file", file, ...flags], tool);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** `lines`, newline-terminated, in strings of about 1 MiB. */
function* joined(lines: Iterable<string>): Generator<string> {
  let held: string[] = [];
  let size = 0;
  for (const line of lines) {
    held.push(line);
    size += line.length + 1;
    if (size < 1 << 20) continue;
    yield `${held.join("\n")}\n`;
    held = [];
    size = 0;
  }
  if (held.length > 0) yield `${held.join("\n")}\n`;
}

function hexBytes(bytes: Buffer): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/**
 * Refuses a folder of pins that is not this user's alone; a missing one
 * holds no pins. bpffs is often mounted 1777 (as `mount -t bpf` leaves it):
 * a user who made the folder first, or who may write it, could rename the
 * pins in it and swap which program runs under which digest (an ingress
 * policy's pins to an egress one's). Checked before pins are read as well
 * as before they are made: pins an earlier version left in such a folder
 * are not taken on trust either.
 */
export async function checkPinRoot(root: string): Promise<void> {
  const stat = await lstat(root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return undefined;
    throw new EbpfError("BPFFS_FAILED", `cannot read ${root}: ${err.message}`, { cause: err });
  });
  if (stat && (!stat.isDirectory() || stat.uid !== process.geteuid?.() || (stat.mode & 0o022) !== 0)) {
    const what = stat.isDirectory() ? `owned by uid ${stat.uid} with mode ${(stat.mode & 0o7777).toString(8)}` : "not a folder";
    throw new EbpfError("INVALID_PIN_PATH", `pin root ${root} is ${what}: pins go only in a folder this user alone may write (remove it, or give it to root with mode 0700)`);
  }
}

/** Makes the folder the pins go in unless it is there (0700: root's alone), and checks it (checkPinRoot). */
export async function securePinRoot(root: string): Promise<void> {
  await mkdir(root, { recursive: true, mode: 0o700 });
  await checkPinRoot(root);
}

/** Refuses a pin directory outside bpffs: bpffs refuses names with dots, and bpftool batch splits lines on spaces. */
export function checkPinDir(pinDir: string): void {
  if (!pinDir.startsWith(`${BPFFS}/`) || /[.\s#\\"']/.test(pinDir.slice(BPFFS.length))) {
    throw new EbpfError(
      "INVALID_PIN_PATH",
      `pin directory "${pinDir}" must be under ${BPFFS}/ with no dots, spaces, quotes, # or \\ (e.g. ${BPFFS}/aegis/sha256-<hex>)`,
    );
  }
}
