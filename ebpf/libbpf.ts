// Loads, fills and reads aegis_net through libbpf in this process (Debian's
// libbpf1, libbpf.so.1, called through the koffi FFI): one open of each map,
// each filled with BPF_MAP_UPDATE_BATCH, where bpftool re-opened the pinned
// map for every entry. The pins are the ones bpftool makes
// (`<pinDir>/prog/<function>`, `<pinDir>/maps/<map>`), so either loader can
// adopt what the other left. Nothing here needs a compiler.
// API: https://libbpf.readthedocs.io/en/latest/api.html
import { mkdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { getSystemErrorName } from "node:util";
import { checkPinDir, checkProgramName, ensureBpffs, findPinned, securePinRoot, unpin, type Pinned } from "./bpftool.js";
import { EbpfError, type EbpfErrorCode } from "./errors.js";
import { COUNTERS_MAP, FILLED_MAPS, type CompiledRules, type MapContents } from "./rules.js";

/** The soname Debian's libbpf1 ships; the 1.x ABI returns negative errnos. */
export const LIBBPF_SONAME = "libbpf.so.1";

// Bounds: a bundle's object and its rules are untrusted sizes until checked.
const MAX_OBJECT_BYTES = 64 << 20;
/** Entries per BPF_MAP_UPDATE_BATCH / LOOKUP_BATCH call, so one syscall never runs unbounded. */
const BATCH = 65_536;
/** Counters read back at most (one per rule). */
const MAX_COUNTERS = 1 << 24;
/** Key and value sizes aegis_net's maps may have (bytes; an LPM key is 4 + 16 at most). */
const MAX_KEY_BYTES = 64;
const MAX_VALUE_BYTES = 64;
// What libbpf logs during one call (the verifier's log on a refused program); the end holds the reason.
const MAX_LOG = 4000;
const PRINT_BUFFER = 1 << 20;
// The kernel's "operation not supported" for a map type without batch ops (not in userspace errno.h).
const ENOTSUPP = 524;
// struct bpf_prog_info / bpf_map_info: u32 type, u32 id, then for maps u32 key_size, value_size, max_entries.
const INFO_BYTES = 24;

/* eslint-disable @typescript-eslint/no-explicit-any -- koffi's handles are untyped pointers */
type Handle = any;

interface Binding {
  /** bpf_object__open_mem, the object named as bpftool names program.o: internal maps pin under the same names. */
  openMem(object: Buffer): Handle;
  load(obj: Handle): number;
  close(obj: Handle): void;
  nextProgram(obj: Handle, prev: Handle): Handle;
  programName(prog: Handle): string;
  programFd(prog: Handle): number;
  findMap(obj: Handle, name: string): Handle;
  mapFd(map: Handle): number;
  mapMaxEntries(map: Handle): number;
  mapKeySize(map: Handle): number;
  mapValueSize(map: Handle): number;
  pinMaps(obj: Handle, path: string): number;
  pinPrograms(obj: Handle, path: string): number;
  updateBatch(fd: number, keys: Buffer, values: Buffer, count: [number], opts: null): number;
  updateElem(fd: number, key: Buffer, value: Buffer, flags: number): number;
  lookupElem(fd: number, key: Buffer, value: Buffer): number;
  lookupBatch(fd: number, inBatch: Buffer | null, outBatch: Buffer, keys: Buffer, values: Buffer, count: [number], opts: null): number;
  objGet(path: string): number;
  infoByFd(fd: number, info: Buffer, length: [number]): number;
  possibleCpus(): number;
  closeFd(fd: number): number;
  errno(): number;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

const bindings = new Map<string, Binding>();
/** libbpf's messages since the current call began (see logged()). */
let log = "";

/**
 * The libbpf binding, loaded once per library (a soname or path).
 * LIBBPF_UNAVAILABLE when koffi or the library cannot be loaded (the agent
 * then falls back to bpftool).
 */
export function libbpf(library = LIBBPF_SONAME): Binding {
  const loaded = bindings.get(library);
  if (loaded) return loaded;
  try {
    // koffi is a native addon: required on first use, so importing the ebpf
    // package (the CLI, bundle builds) never loads it.
    const koffi = createRequire(import.meta.url)("koffi") as typeof import("koffi");
    const lib = koffi.load(library);
    const libc = koffi.load("libc.so.6");
    koffi.opaque("bpf_object");
    koffi.opaque("bpf_program");
    koffi.opaque("bpf_map");
    // The head of struct bpf_object_open_opts: libbpf reads only the first `sz` bytes.
    const openOpts = koffi.struct("aegis_bpf_object_open_opts", { sz: "size_t", object_name: "const char *" });
    const openMem = lib.func("bpf_object *bpf_object__open_mem(const void *buf, size_t size, const aegis_bpf_object_open_opts *opts)");
    // libbpf_print_fn_t; a va_list argument is a pointer at the ABI level on
    // x86-64 and arm64 alike, so it can be handed on to vsnprintf as one.
    const printFn = koffi.proto("int aegis_libbpf_print(int level, const char *fmt, void *args)");
    const vsnprintf = libc.func("int vsnprintf(void *buf, size_t size, const char *fmt, void *args)");
    const text = Buffer.alloc(PRINT_BUFFER);
    const print = koffi.register((level: number, fmt: string, args: unknown) => {
      const n = vsnprintf(text, PRINT_BUFFER, fmt, args) as number;
      // LIBBPF_DEBUG (2) is off, as in libbpf's own default printer.
      if (level < 2 && n > 0) log = (log + text.toString("utf8", 0, Math.min(n, PRINT_BUFFER - 1))).slice(-MAX_LOG);
      return 0;
    }, koffi.pointer(printFn));
    lib.func("void *libbpf_set_print(aegis_libbpf_print *fn)")(print);
    const b: Binding = {
      openMem: (object) => openMem(object, object.length, { sz: koffi.sizeof(openOpts), object_name: "program" }),
      load: lib.func("int bpf_object__load(bpf_object *obj)"),
      close: lib.func("void bpf_object__close(bpf_object *obj)"),
      nextProgram: lib.func("bpf_program *bpf_object__next_program(const bpf_object *obj, bpf_program *prev)"),
      programName: lib.func("const char *bpf_program__name(const bpf_program *prog)"),
      programFd: lib.func("int bpf_program__fd(const bpf_program *prog)"),
      findMap: lib.func("bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)"),
      mapFd: lib.func("int bpf_map__fd(const bpf_map *map)"),
      mapMaxEntries: lib.func("uint32_t bpf_map__max_entries(const bpf_map *map)"),
      mapKeySize: lib.func("uint32_t bpf_map__key_size(const bpf_map *map)"),
      mapValueSize: lib.func("uint32_t bpf_map__value_size(const bpf_map *map)"),
      pinMaps: lib.func("int bpf_object__pin_maps(bpf_object *obj, const char *path)"),
      pinPrograms: lib.func("int bpf_object__pin_programs(bpf_object *obj, const char *path)"),
      updateBatch: lib.func("int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const void *opts)"),
      updateElem: lib.func("int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)"),
      lookupElem: lib.func("int bpf_map_lookup_elem(int fd, const void *key, void *value)"),
      lookupBatch: lib.func("int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const void *opts)"),
      objGet: lib.func("int bpf_obj_get(const char *path)"),
      infoByFd: lib.func("int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *length)"),
      possibleCpus: lib.func("int libbpf_num_possible_cpus(void)"),
      closeFd: libc.func("int close(int fd)"),
      errno: () => koffi.errno(),
    };
    bindings.set(library, b);
    return b;
  } catch (err) {
    throw new EbpfError("LIBBPF_UNAVAILABLE", `cannot load ${library} through koffi (Debian: apt-get install libbpf1): ${(err as Error).message}`, { cause: err });
  }
}

// libbpf's own error numbers (enum libbpf_errno in <bpf/libbpf.h>), from 4000.
const LIBBPF_ERRNOS = [
  "LIBELF", "FORMAT", "KVERSION", "ENDIAN", "INTERNAL", "RELOC", "LOAD", "VERIFY", "PROG2BIG", "KVER", "PROGTYPE", "WRNGPID", "INVSEQ", "NLPARSE",
].map((name) => `LIBBPF_ERRNO__${name}`);

/** The name of a negative errno: E2BIG, ENOTSUPP, LIBBPF_ERRNO__FORMAT, or errno <n>. */
export function errnoName(errno: number): string {
  if (errno === -ENOTSUPP) return "ENOTSUPP";
  const libbpfName = LIBBPF_ERRNOS[-errno - 4000];
  if (libbpfName) return libbpfName;
  try {
    return getSystemErrorName(errno);
  } catch {
    return `errno ${-errno}`;
  }
}

/** A Node-style system error for a negative errno (its name as `code`), e.g. E2BIG. */
function systemError(errno: number): NodeJS.ErrnoException {
  const name = errnoName(errno);
  return Object.assign(new Error(name), { code: name, errno });
}

/** Throws an EbpfError naming what failed and the errno, with libbpf's own log when it said something. */
function fail(code: EbpfErrorCode, what: string, result: number): never {
  const cause = systemError(result);
  const said = log.trim();
  log = "";
  throw new EbpfError(code, `${what}: ${cause.code}${said ? `: ${said}` : ""}`, { cause });
}

/** The negative errno a libbpf call that returns a pointer left in errno. */
function lastError(b: Binding): number {
  return -Math.abs(b.errno() || 22 /* EINVAL */);
}

/**
 * Loads every program of an object, fills its maps and pins programs and maps
 * under pinDir, which must not exist yet. The maps are filled before anything
 * is pinned, and on failure nothing stays pinned.
 */
export async function loadProgramLibbpf(object: Buffer, rules: CompiledRules, pinDir: string, library?: string): Promise<Pinned> {
  const b = libbpf(library);
  if (object.length === 0 || object.length > MAX_OBJECT_BYTES) {
    throw new EbpfError("LOAD_FAILED", `eBPF object of ${object.length} bytes: expected 1 byte to ${MAX_OBJECT_BYTES >> 20} MiB`);
  }
  checkPinDir(pinDir);
  await ensureBpffs();
  log = "";
  const obj: unknown = b.openMem(object);
  if (!obj) fail("LOAD_FAILED", "cannot open the eBPF object", lastError(b));
  let pinned = false;
  try {
    const programs: unknown[] = [];
    for (let prog: unknown = b.nextProgram(obj, null); prog; prog = b.nextProgram(obj, prog)) {
      if (programs.push(prog) > 1) throw new EbpfError("LOAD_FAILED", "expected one program in the object, found more");
    }
    if (programs.length !== 1) throw new EbpfError("LOAD_FAILED", "expected one program in the object, found none");
    checkProgramName(b.programName(programs[0]));
    const loaded = b.load(obj);
    if (loaded < 0) fail("LOAD_FAILED", `cannot load the eBPF object (program ${b.programName(programs[0])})`, loaded);
    // The object must have room for every entry, with the key and value
    // sizes the rules were packed in (after the load, so the verifier's
    // verdict on an object comes first, as with bpftool).
    const maps = FILLED_MAPS.map((name) => ({ name, map: b.findMap(obj, name) as unknown, contents: rules.maps[name] }));
    for (const { name, map, contents } of maps) checkMap(b, name, map, contents);
    for (const { name, map, contents } of maps) fillMap(b, name, b.mapFd(map), contents);

    await securePinRoot(dirname(pinDir));
    await mkdir(pinDir).catch((err: Error) => {
      // Never load over (and on failure, clean up) someone else's pins.
      throw new EbpfError("LOAD_FAILED", `cannot create pin directory ${pinDir}: ${err.message}`, { cause: err });
    });
    pinned = true;
    const progDir = join(pinDir, "prog");
    const mapsDir = join(pinDir, "maps");
    const pinnedMaps = b.pinMaps(obj, mapsDir);
    if (pinnedMaps < 0) fail("LOAD_FAILED", `cannot pin the maps at ${mapsDir}`, pinnedMaps);
    const pinnedPrograms = b.pinPrograms(obj, progDir);
    if (pinnedPrograms < 0) fail("LOAD_FAILED", `cannot pin the program at ${progDir}`, pinnedPrograms);
    const found = await findPinned(pinDir);
    if (!found) throw new EbpfError("LOAD_FAILED", `libbpf pinned no program under ${progDir}`);
    return found;
  } catch (err) {
    if (pinned) await unpin(pinDir);
    throw err;
  } finally {
    // Closing drops this process's references; the pins keep the program and maps.
    b.close(obj);
    log = "";
  }
}

function checkMap(b: Binding, name: string, map: unknown, contents: MapContents): void {
  if (!map) throw new EbpfError("MAP_MISMATCH", `the eBPF object has no map ${name}`);
  const { count, keySize, valueSize, keys, values } = contents;
  const [maxEntries, mapKey, mapValue] = [b.mapMaxEntries(map), b.mapKeySize(map), b.mapValueSize(map)];
  if (keySize !== mapKey || valueSize !== mapValue || keySize > MAX_KEY_BYTES || valueSize > MAX_VALUE_BYTES) {
    throw new EbpfError("MAP_MISMATCH", `map ${name} has ${mapKey}-byte keys and ${mapValue}-byte values, the rules ${keySize} and ${valueSize}`);
  }
  if (count > maxEntries) throw new EbpfError("MAP_MISMATCH", `map ${name} holds ${maxEntries} entries, the rules need ${count}`);
  // The kernel reads count * size bytes from these buffers: never past their end.
  if (!Number.isInteger(count) || count < 0 || keys.length !== count * keySize || values.length !== count * valueSize) {
    throw new EbpfError("MAP_MISMATCH", `map ${name}: ${count} entries do not match ${keys.length} key and ${values.length} value bytes`);
  }
}

/** Writes the packed contents in batches; one update per entry where the kernel has no batch op for the map type. */
function fillMap(b: Binding, name: string, fd: number, contents: MapContents): void {
  const { count, keySize, valueSize, keys, values } = contents;
  let done = 0;
  while (done < count) {
    const n = Math.min(BATCH, count - done);
    const processed: [number] = [n];
    const result = b.updateBatch(fd, keys.subarray(done * keySize, (done + n) * keySize), values.subarray(done * valueSize, (done + n) * valueSize), processed, null);
    if (result >= 0) {
      done += n;
      continue;
    }
    // No batch op for this map type (ENOTSUPP), or no BPF_MAP_UPDATE_BATCH
    // at all (EINVAL before Linux 5.6): the rest one by one, on the same fd.
    if (![-ENOTSUPP, -95 /* EOPNOTSUPP */, -22 /* EINVAL */].includes(result)) {
      fail("LIBBPF_FAILED", `cannot update map ${name} (entries ${done}-${done + n - 1} of ${count})`, result);
    }
    // The count the kernel reports back is not set on every error: redo this
    // batch from its start (an update of the same key and value is a no-op).
    for (; done < count; done++) {
      const one = b.updateElem(fd, keys.subarray(done * keySize, (done + 1) * keySize), values.subarray(done * valueSize, (done + 1) * valueSize), 0);
      if (one < 0) fail("LIBBPF_FAILED", `cannot update map ${name} (entry ${done} of ${count})`, one);
    }
  }
}

/** Opens a pinned object, runs use on its fd, and closes it. */
function withPinned<T>(b: Binding, path: string, use: (fd: number) => T): T {
  const fd = b.objGet(path);
  if (fd < 0) fail("LIBBPF_FAILED", `cannot open ${path}`, fd);
  try {
    return use(fd);
  } finally {
    b.closeFd(fd);
  }
}

/** The first five u32 of bpf_prog_info / bpf_map_info: type, id, then for a map key_size, value_size, max_entries. */
function info(b: Binding, fd: number, path: string): Buffer {
  const buffer = Buffer.alloc(INFO_BYTES);
  const result = b.infoByFd(fd, buffer, [INFO_BYTES]);
  if (result < 0) fail("LIBBPF_FAILED", `cannot read the info of ${path}`, result);
  return buffer;
}

/** The kernel's id of a pinned program. */
export async function programIdLibbpf(progPin: string, library?: string): Promise<number> {
  const b = libbpf(library);
  return withPinned(b, progPin, (fd) => info(b, fd, progPin).readUInt32LE(4));
}

/**
 * Packets matched per rule, summed over CPUs: all rules, or only the given
 * rule indexes, in the order asked.
 */
export async function readCountersLibbpf(mapsDir: string, indexes?: number[], library?: string): Promise<number[]> {
  const b = libbpf(library);
  const path = join(mapsDir, COUNTERS_MAP);
  return withPinned(b, path, (fd) => {
    const mapInfo = info(b, fd, path);
    const [valueSize, maxEntries] = [mapInfo.readUInt32LE(12), mapInfo.readUInt32LE(16)];
    // aegis_counters holds a u64 per rule; anything else would size the buffers below wrongly.
    if (valueSize !== 8 || maxEntries > MAX_COUNTERS) {
      throw new EbpfError("MAP_MISMATCH", `${path} has ${valueSize}-byte values and ${maxEntries} entries: expected u64 counters, at most ${MAX_COUNTERS}`);
    }
    const cpus = b.possibleCpus();
    if (cpus < 1) fail("LIBBPF_FAILED", "cannot count the possible CPUs", cpus < 0 ? cpus : -22);
    // A per-CPU value takes 8 bytes per possible CPU.
    const stride = 8;
    const sum = (values: Buffer, at: number) => {
      let total = 0n;
      for (let cpu = 0; cpu < cpus; cpu++) total += values.readBigUInt64LE(at + cpu * stride);
      return Number(total);
    };
    if (indexes) {
      const key = Buffer.alloc(4);
      const value = Buffer.alloc(stride * cpus);
      return indexes.map((index) => {
        key.writeUInt32LE(index);
        const result = b.lookupElem(fd, key, value);
        if (result < 0) fail("LIBBPF_FAILED", `cannot read ${path} at rule ${index}`, result);
        return sum(value, 0);
      });
    }
    const counts: number[] = [];
    const chunk = Math.min(BATCH, maxEntries);
    const keys = Buffer.alloc(4 * chunk);
    const values = Buffer.alloc(stride * cpus * chunk);
    // BPF_MAP_LOOKUP_BATCH walks the array in order, each call resuming
    // where the last one's out_batch left it; ENOENT marks the end.
    const cursors = [Buffer.alloc(4), Buffer.alloc(4)] as const;
    for (let call = 0; counts.length < maxEntries; call++) {
      const got: [number] = [chunk];
      const result = b.lookupBatch(fd, call === 0 ? null : cursors[(call + 1) % 2]!, cursors[call % 2]!, keys, values, got, null);
      if (result < 0 && result !== -2 /* ENOENT */) fail("LIBBPF_FAILED", `cannot read ${path}`, result);
      for (let i = 0; i < got[0]; i++) counts.push(sum(values, i * stride * cpus));
      if (result < 0 || got[0] === 0) break;
    }
    return counts;
  });
}
