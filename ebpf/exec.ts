// Runs the eBPF toolchain (clang, bpftool, tc) and turns its failures into
// EbpfErrors that carry the tool's own explanation.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { EbpfError, type EbpfErrorCode } from "./errors.js";

const execFileAsync = promisify(execFile);

// Verifier logs run to thousands of lines; the end holds the reason.
const MAX_DETAIL = 4000;

export async function run(
  code: EbpfErrorCode,
  what: string,
  command: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<string> {
  try {
    // Counter dumps of 100k rules are tens of megabytes of JSON.
    const { stdout } = await execFileAsync(command, args, { ...options, maxBuffer: 1 << 30, encoding: "utf8" });
    return stdout;
  } catch (err) {
    const failure = err as NodeJS.ErrnoException & { stderr?: string; stdout?: string };
    const detail =
      failure.code === "ENOENT"
        ? `${command} is not installed`
        : (failure.stderr?.trim() || failure.stdout?.trim() || failure.message).slice(-MAX_DETAIL);
    throw new EbpfError(code, `${what}: ${detail}`, { cause: err });
  }
}
