// Runs the compiled CLI as a user would, capturing its output.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";

export const AEGIS = fileURLToPath(new URL("../../dist/cli/aegis.cjs", import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `aegis` (or another build's executable, `entry`) with `args`, in this environment plus `env`. */
export function aegis(args: string[], env: NodeJS.ProcessEnv = {}, entry = AEGIS): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [entry, ...args], { env: { ...process.env, ...env }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Asserts the CLI's failure contract: non-zero exit, one "aegis: error:" line, no stack trace. */
export function expectOneErrorLine(result: CliResult): string {
  const lines = result.stderr.trimEnd().split("\n");
  if (result.code === 0) throw new Error(`expected failure, got exit 0: ${result.stdout}`);
  if (lines.length !== 1 || !lines[0]!.startsWith("aegis: error: ") || /\n\s+at /.test(result.stderr)) {
    throw new Error(`expected one error line, got:\n${result.stderr}`);
  }
  return lines[0]!;
}
