// An assigner as its own process (`aegis assigner serve`), as operators run
// it: for tests of several assigners sharing one Redis and NATS, and of what
// a whole process does under load (its RSS).
import { join } from "node:path";
import { freePort } from "./ports.js";
import { makeTempDir, spawnManaged, waitUntilReady, type ManagedProcess } from "./process.js";

export interface AssignerProcess {
  url: string;
  pid: number;
  process: ManagedProcess;
  stop(): Promise<void>;
}

/** Starts `node dist/cli/aegis.cjs assigner serve` with `args` on a free loopback port; resolves once /healthz answers. */
export async function startAssignerProcess(args: readonly string[], env: Record<string, string> = {}): Promise<AssignerProcess> {
  const dataDir = makeTempDir("aegis-assigner-proc-");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const cli = join(process.cwd(), "dist/cli/aegis.cjs");
  const proc = spawnManaged("env", [...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, cli, "assigner", "serve", "--port", String(port), "--data-dir", dataDir, ...args], { cleanupDir: dataDir });
  await waitUntilReady(proc, () => fetch(`${url}/healthz`).then(() => true, () => false), "aegis assigner serve");
  return { url, pid: proc.child.pid!, process: proc, stop: () => proc.stop() };
}
