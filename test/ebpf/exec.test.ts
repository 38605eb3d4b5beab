// The eBPF tools' deadline and stop (ebpf/exec.ts), through a kernel
// Datapath's options and tc.ts's: tc and ip that never finish (a script on
// PATH in their place that sleeps, as a tc waiting on the rtnl lock would)
// are killed once the command timeout passes, or at once when the signal
// aborts, and the call fails then, not when they exit. No root needed.
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BpftoolDatapath, listTc } from "../../ebpf/index.js";

const dir = mkdtempSync(join(tmpdir(), "aegis-slow-tools-"));
const path = process.env.PATH;

beforeAll(() => {
  // Each records its pid (exec keeps it: the pid is the sleep's), then outlasts any test's budget.
  for (const tool of ["tc", "ip"]) {
    writeFileSync(join(dir, tool), `#!/bin/sh\necho $$ > ${join(dir, `${tool}.pid`)}\nexec sleep 60\n`);
    chmodSync(join(dir, tool), 0o755);
  }
  process.env.PATH = `${dir}:${path}`;
});
afterAll(() => {
  process.env.PATH = path;
  rmSync(dir, { recursive: true, force: true });
});

/** `work`'s outcome, or a rejection naming `what` once `ms` pass without it (what happened before the deadline existed: a hang). */
async function within<T>(ms: number, what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not settled within ${ms} ms`)), ms)));
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The pid `tool`'s script recorded, once it has written it whole (the file exists, empty, before echo writes). */
function recordedPid(tool: string): number | undefined {
  const text = existsSync(join(dir, `${tool}.pid`)) ? readFileSync(join(dir, `${tool}.pid`), "utf8") : "";
  return /^\d+\n$/.test(text) ? Number(text) : undefined;
}

/** Whether the process `tool`'s script recorded still runs, once it had up to 2 s to be reaped. */
async function stillRuns(tool: string): Promise<boolean> {
  const pid = recordedPid(tool);
  // Not process.kill(0): that is this test's own process group.
  if (!pid) throw new Error(`${tool} recorded no pid`);
  for (let i = 0; i < 40; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return false;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

describe("eBPF tool runs", () => {
  it("fail TIMEOUT, naming the command, once the command timeout passes, and the tool is killed", async () => {
    const cases: [string, () => Promise<unknown>, string][] = [
      ["ip (interfaces)", () => new BpftoolDatapath({ commandTimeoutMs: 300 }).interfaces(), "ip -j link show"],
      ["tc (listTc)", () => listTc(undefined, undefined, { timeoutMs: 300 }), "tc -j qdisc show"],
    ];
    for (const [what, call, command] of cases) {
      const started = performance.now();
      const err = await within(5_000, what, call().then(() => undefined, (e: unknown) => e));
      expect(err, `${what}: fails TIMEOUT naming the command`).toMatchObject({ code: "TIMEOUT", message: expect.stringContaining(`${command} did not finish within 300 ms`) });
      expect(performance.now() - started, `${what}: failed at its deadline`).toBeLessThan(3_000);
      expect(await stillRuns(what.split(" ")[0]!), `${what}: the tool was killed`).toBe(false);
    }
  });

  it("fail with the signal's reason at once when the Datapath's signal aborts, and the tool is killed", async () => {
    rmSync(join(dir, "ip.pid"), { force: true });
    const stopping = new AbortController();
    const call = new BpftoolDatapath({ signal: stopping.signal }).interfaces().then(() => undefined, (e: unknown) => e);
    // Aborted once ip runs (its pid recorded), so the kill is of a running tool.
    for (let i = 0; i < 250 && !recordedPid("ip"); i++) await new Promise((r) => setTimeout(r, 20));
    const reason = new Error("agent stopping");
    stopping.abort(reason);
    expect(await within(2_000, "an aborted ip", call), "rejects with the signal's reason").toBe(reason);
    expect(await stillRuns("ip"), "the tool was killed").toBe(false);
  });
});
