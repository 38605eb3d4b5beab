// Runs the eBPF toolchain (clang, bpftool, tc, ip) and turns its failures
// into EbpfErrors that carry the tool's own explanation. Every run has a
// deadline: a tc stuck on the kernel's rtnl lock, or in a namespace being
// torn down, would otherwise hold the agent's pass, and its stop, forever.
import { execFile } from "node:child_process";
import { EbpfError, type EbpfErrorCode } from "./errors.js";

// Verifier logs run to thousands of lines; the end holds the reason.
const MAX_DETAIL = 4000;

/** How long one tool run may take unless told otherwise (ms). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;

/** What bounds a tool run: its deadline, and the caller's signal (the agent stopping). */
export interface ToolOptions {
  /** Default DEFAULT_COMMAND_TIMEOUT_MS; past it the tool is killed and the run fails TIMEOUT. */
  timeoutMs?: number;
  /** Aborting kills the tool and rejects with the signal's reason. */
  signal?: AbortSignal;
}

export async function run(
  code: EbpfErrorCode,
  what: string,
  command: string,
  args: string[],
  options: ToolOptions & { cwd?: string } = {},
): Promise<string> {
  const { signal, cwd } = options;
  const ms = options.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
  signal?.throwIfAborted();
  return new Promise<string>((resolve, reject) => {
    // Counter dumps of 100k rules are tens of megabytes of JSON.
    const child = execFile(command, args, { ...(cwd ? { cwd } : {}), maxBuffer: 1 << 30, encoding: "utf8" }, (err, stdout, stderr) => {
      settle();
      if (!err) return resolve(stdout);
      const failure = err as NodeJS.ErrnoException;
      const detail = failure.code === "ENOENT" ? `${command} is not installed` : (stderr.trim() || stdout.trim() || failure.message).slice(-MAX_DETAIL);
      reject(new EbpfError(code, `${what}: ${detail}`, { cause: err }));
    });
    // Rejected at once, not when the tool exits: one blocked in the kernel dies only once it leaves the call.
    const stop = (failure: unknown) => {
      settle();
      child.kill("SIGKILL");
      reject(failure);
    };
    const timer = setTimeout(() => stop(new EbpfError("TIMEOUT", `${what}: ${[command, ...args].join(" ")} did not finish within ${ms} ms`)), ms);
    const onAbort = () => stop(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const settle = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
  });
}
