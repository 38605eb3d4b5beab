// packaging/: the systemd unit passes `systemd-analyze verify`, stops the
// agent with SIGTERM and no stop command (nothing is detached), keeps the
// capabilities BPF needs; every variable of the example env file is one
// `aegis agent run` reads.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { AEGIS, aegis } from "../cli/run.js";

const run = promisify(execFile);
const unit = readFileSync("packaging/aegis-agent.service", "utf8");
const work = mkdtempSync(join(tmpdir(), "aegis-unit-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The unit's settings as key → values. */
function settings(text: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const match = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (match) map.set(match[1]!, [...(map.get(match[1]!) ?? []), match[2]!]);
  }
  return map;
}

describe("packaging/aegis-agent.service", () => {
  it("is a unit systemd accepts (with the binary at this machine's path)", async () => {
    // verify checks that ExecStart's program exists: point it at this checkout's CLI.
    const local = unit.replace(/^ExecStart=\/usr\/local\/bin\/aegis /m, `ExecStart=${process.execPath} ${AEGIS} `);
    expect(local, "ExecStart rewritten").not.toBe(unit);
    writeFileSync(join(work, "aegis-agent.service"), local);
    const { stderr } = await run("systemd-analyze", ["verify", "--man=no", join(work, "aegis-agent.service")]).catch((err: { stderr: string }) => ({ stderr: err.stderr }));
    expect(stderr.trim(), "systemd-analyze verify").toBe("");
  });

  it("starts after the network, restarts always, stops by SIGTERM to the agent without a stop command, and keeps the BPF capabilities", () => {
    const s = settings(unit);
    expect(s.get("After"), "after the network is up").toEqual(["network-online.target"]);
    expect(s.get("EnvironmentFile"), "its settings").toEqual(["/etc/aegis/agent.env"]);
    expect(s.get("ExecStart"), "the agent").toEqual(["/usr/local/bin/aegis agent run"]);
    expect(s.get("Restart"), "restarts").toEqual(["always"]);
    expect(s.get("KillMode"), "SIGTERM goes to the agent").toEqual(["mixed"]);
    expect(s.get("KillSignal")).toEqual(["SIGTERM"]);
    expect(s.has("ExecStop") || s.has("ExecStopPost"), "nothing runs on stop (no detaching)").toBe(false);
    const caps = (s.get("CapabilityBoundingSet") ?? []).join(" ").split(/\s+/);
    for (const cap of ["CAP_BPF", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_PERFMON"]) expect(caps, cap).toContain(cap);
    expect(s.get("ReadWritePaths"), "bpffs stays writable under ProtectSystem=strict").toEqual(["/sys/fs/bpf"]);
    expect(s.get("RestrictAddressFamilies")?.[0]?.split(" "), "netlink for tc").toContain("AF_NETLINK");
  });

  it("documents only variables the agent reads", async () => {
    const help = (await aegis(["agent", "run", "--help"])).stdout;
    const names = [...readFileSync("packaging/agent.env.example", "utf8").matchAll(/^#?\s*(AEGIS_[A-Z_]+)=/gm)].map((m) => m[1]!);
    expect(names.length, "variables found").toBeGreaterThan(5);
    for (const name of names) expect(help, `${name} in aegis agent run --help`).toContain(name);
  });
});
