// Builds a policy's eBPF object with clang. The output is reproducible: the
// same policy and toolchain give the same bytes, so a rebuilt bundle keeps
// its digest.
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Policy } from "../policy/index.js";
import { EbpfError } from "./errors.js";
import { run } from "./exec.js";
import { compileRules, sizeDefines } from "./rules.js";

// The C sources sit next to this file under tsx, and two levels up
// (dist/ebpf -> ebpf) once compiled to JavaScript.
const PROGRAM_DIR = [new URL("./", import.meta.url), new URL("../../ebpf/", import.meta.url)]
  .map((url) => fileURLToPath(url))
  .find((dir) => existsSync(join(dir, "aegis_net.c")));

/** Names of the programs a policy's `program` can name (ebpf/<name>.c). */
export async function listPrograms(): Promise<string[]> {
  if (!PROGRAM_DIR) return [];
  const files = await readdir(PROGRAM_DIR);
  return files.filter((f) => f.endsWith(".c")).map((f) => f.slice(0, -2)).sort();
}

/** The program.o for a policy: its program, with maps sized for its rules. */
export async function compileProgram(policy: Policy): Promise<Buffer> {
  const programs = await listPrograms();
  if (!PROGRAM_DIR || !programs.includes(policy.program)) {
    throw new EbpfError(
      "UNKNOWN_PROGRAM",
      `unknown eBPF program "${policy.program}": ebpf/${policy.program}.c not found (available: ${programs.join(", ") || "none"})`,
    );
  }
  const source = await readFile(join(PROGRAM_DIR, `${policy.program}.c`), "utf8");
  return compileSource(policy.program, source, sizeDefines(compileRules(policy.rules).sizes));
}

let multiarchInclude: Promise<string[]> | undefined;

/** Compiles one C source with `clang -O2 -g -target bpf` and returns the object. */
export async function compileSource(name: string, source: string, defines: string[] = []): Promise<Buffer> {
  // <linux/types.h> needs <asm/types.h>, which Debian keeps per architecture.
  multiarchInclude ??= run("COMPILE_FAILED", "clang -print-multiarch", "clang", ["-print-multiarch"]).then((triple) => {
    const dir = `/usr/include/${triple.trim()}`;
    return triple.trim() && existsSync(dir) ? [`-I${dir}`] : [];
  });
  const include = await multiarchInclude;
  const dir = await mkdtemp(join(tmpdir(), "aegis-clang-"));
  try {
    // Compiling a relative path from inside the temp dir, with the debug
    // info's directory fixed to ".", keeps the temp path out of the object.
    await writeFile(join(dir, `${name}.c`), source);
    const args = [
      "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
      ...include,
      `-fdebug-prefix-map=${dir}=.`,
      "-fdebug-compilation-dir=.",
      ...defines,
      "-c", `${name}.c`, "-o", `${name}.o`,
    ];
    await run("COMPILE_FAILED", `clang failed compiling ebpf/${name}.c`, "clang", args, { cwd: dir });
    return await readFile(join(dir, `${name}.o`));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
