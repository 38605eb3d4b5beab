// Child processes and temp dirs for the harness, with cleanup that also
// runs when a test run ends without calling stop().
import { execFile, spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import type { Socket } from "node:net";
import { accessSync, constants, mkdtempSync, rmSync } from "node:fs";
import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";

const liveChildren = new Set<ChildProcess>();
const liveTempDirs = new Set<string>();

// 'exit' handlers must be synchronous: SIGKILL children, remove dirs.
process.on("exit", () => {
  for (const child of liveChildren) child.kill("SIGKILL");
  for (const dir of liveTempDirs) rmSync(dir, { recursive: true, force: true });
});

/** Resolves `name` on PATH or throws an error naming the Debian package. */
export function requireBinary(name: string, debianPackage: string): string {
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  throw new Error(
    `test harness: '${name}' not found on PATH; install the Debian package '${debianPackage}' (apt-get install ${debianPackage})`,
  );
}

/** Runs a short command to completion and returns its stdout. */
export function run(file: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: "utf8" }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(" ")} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  liveTempDirs.add(dir);
  return dir;
}

export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  liveTempDirs.delete(dir);
}

export interface ManagedProcess {
  readonly child: ChildProcess;
  /** Last few KB of stderr+stdout, for error messages. */
  output(): string;
  /** Resolves with the exit code (or signal name) once the process is gone. */
  readonly exited: Promise<string>;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

const OUTPUT_LIMIT = 16 * 1024;

/**
 * Spawns a long-running server. Besides the 'exit' handler, a watchdog
 * `sh` holds a pipe from this process: if Node dies without running exit
 * handlers (SIGKILL, crash), the pipe reaches EOF and the watchdog kills
 * the server (and removes `cleanupDir`), so no server outlives the test run.
 */
export function spawnManaged(file: string, args: readonly string[], options: { cleanupDir?: string } = {}): ManagedProcess {
  const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
  liveChildren.add(child);
  let output = "";
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString("utf8")).slice(-OUTPUT_LIMIT);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);

  const exited = new Promise<string>((resolve) => {
    child.once("exit", (code, signal) => {
      liveChildren.delete(child);
      resolve(signal ?? String(code));
    });
    // spawn failures (e.g. ENOENT) emit 'error' and never 'exit'
    child.once("error", (err) => {
      liveChildren.delete(child);
      collect(Buffer.from(String(err)));
      resolve("error");
    });
  });

  let watchdog: ChildProcess | undefined;
  if (child.pid !== undefined) {
    // pid and dir go in as positional parameters: no shell quoting of paths
    const script = 'read _ignored; kill -9 "$1" 2>/dev/null; if [ -n "$2" ]; then rm -rf "$2"; fi';
    watchdog = spawn("sh", ["-c", script, "aegis-watchdog", String(child.pid), options.cleanupDir ?? ""], {
      stdio: ["pipe", "ignore", "ignore"],
    });
    watchdog.unref();
    // the pipe must not keep the event loop alive; only its EOF matters
    (watchdog.stdin as Socket | null)?.unref();
    liveChildren.add(watchdog);
    watchdog.once("exit", () => {
      if (watchdog) liveChildren.delete(watchdog);
    });
  }

  const stop = async (graceMs = 5000): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    }
    // SIGKILL the watchdog so it never runs `kill` on a possibly reused pid
    watchdog?.kill("SIGKILL");
  };

  return { child, output: () => output, exited, stop };
}

/** A server that exited, or never answered, while we waited for it. */
export class StartError extends Error {
  constructor(
    message: string,
    /** Its last output, to tell why (say, "address already in use"). */
    readonly output: string,
  ) {
    super(message);
  }
}

/**
 * Polls `ready` every 20 ms until it answers true, failing early if the
 * process exits, or after `timeoutMs`. `ready` should resolve false (not
 * throw) while the server is not up yet.
 */
export async function waitUntilReady(proc: ManagedProcess, ready: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  let exited: string | undefined;
  void proc.exited.then((code) => (exited = code));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new StartError(`${what} exited (${exited}): ${proc.output()}`, proc.output());
    // Another process could hold the port too: ours must also still be alive.
    if ((await ready()) && exited === undefined) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new StartError(`${what} did not become ready within ${timeoutMs} ms: ${proc.output()}`, proc.output());
}
