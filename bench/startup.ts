// CLI cold start: whole processes of `aegis --version` and `aegis pull --help`
// against `node -e 0`, in rounds whose order rotates (so neither warms the
// page cache for the other), medians reported. Peak RSS is taken in separate
// runs under /usr/bin/time, which would otherwise add its own start-up.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { BenchResult, Row } from "./report.js";

const AEGIS = fileURLToPath(new URL("../dist/cli/aegis.js", import.meta.url));
const ROUNDS = 21;

const COMMANDS: { name: string; args: string[] }[] = [
  { name: "node -e 0", args: ["-e", "0"] },
  { name: "aegis --version", args: [AEGIS, "--version"] },
  { name: "aegis pull --help", args: [AEGIS, "pull", "--help"] },
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function run(args: string[]): number {
  const start = performance.now();
  const result = spawnSync(process.execPath, args, { stdio: "ignore" });
  const ms = performance.now() - start;
  if (result.status !== 0) throw new Error(`node ${args.join(" ")} exited ${result.status}`);
  return ms;
}

/** Peak RSS in MiB (GNU time's %M, KiB), or undefined without /usr/bin/time. */
function peakRssMiB(args: string[]): number | undefined {
  const result = spawnSync("/usr/bin/time", ["-f", "%M", process.execPath, ...args], { encoding: "utf8", stdio: ["ignore", "ignore", "pipe"] });
  const kib = Number(result.stderr?.trim().split("\n").pop());
  return result.status === 0 && Number.isFinite(kib) ? kib / 1024 : undefined;
}

export default async function startupBench(): Promise<BenchResult> {
  const times = COMMANDS.map(() => [] as number[]);
  for (const command of COMMANDS) run(command.args); // warm the page cache once
  for (let round = 0; round < ROUNDS; round++) {
    for (let i = 0; i < COMMANDS.length; i++) {
      const index = (round + i) % COMMANDS.length;
      times[index]!.push(run(COMMANDS[index]!.args));
    }
  }
  const rows: Row[] = COMMANDS.map((command, i) => {
    const rss = peakRssMiB(command.args);
    return {
      command: command.name,
      median_ms: median(times[i]!),
      min_ms: Math.min(...times[i]!),
      ...(rss !== undefined ? { peak_rss_mib: rss } : {}),
    };
  });
  return {
    name: "startup",
    rows,
    ratio: Number(rows[1]!.median_ms) / Number(rows[0]!.median_ms),
    ratioOf: `aegis --version / node -e 0, median of ${ROUNDS} cold processes`,
    rounds: ROUNDS,
    node: process.version,
  };
}
