// The agent's /metrics: the text exposition from the pins and the agent's
// counts, served over real HTTP; and `aegis agent run --metrics-port` as a
// process (dry run, against no assigner), stopped by SIGTERM.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AgentMetrics, serveMetrics, type StatusRow } from "../../agent/index.js";
import { generateKeyPair } from "../../signing/index.js";
import { AEGIS, aegis, expectOneErrorLine } from "../cli/run.js";

const work = mkdtempSync(join(tmpdir(), "aegis-metrics-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const row = (id: string, name: string, drops: number | undefined, interfaces: string[], pinned = true): StatusRow => ({
  id,
  name,
  version: "1.0.0",
  interfaces,
  direction: "egress",
  pinned,
  ...(drops === undefined ? {} : { drops }),
});

describe("AgentMetrics", () => {
  it("exposes policies in force, drops per policy, failures by code and the last poll, over HTTP", async () => {
    const rows = [row("sha256:a", "block-icmp", 12, ["eth0"]), row("sha256:b", 'odd"name', 0, ["eth1"]), row("sha256:c", "loaded-only", 5, []), row("sha256:d", "gone", undefined, [], false)];
    const metrics = new AgentMetrics(async () => rows);
    metrics.failed("NO_SIGNATURE");
    metrics.failed("NO_SIGNATURE");
    metrics.failed("DIGEST_MISMATCH");
    metrics.polled(1_700_000_000_500);
    const { server, url } = await serveMetrics(metrics, 0);
    try {
      expect(url, "loopback by default").toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
      const answer = await fetch(url);
      expect(answer.headers.get("content-type"), "the text format").toContain("version=0.0.4");
      const lines = (await answer.text()).split("\n").filter((l) => l && !l.startsWith("#"));
      expect(lines, "the samples").toEqual([
        "aegis_agent_pins_read 1",
        "aegis_agent_policies_in_force 2",
        'aegis_agent_drops_total{policy="block-icmp",version="1.0.0",digest="sha256:a"} 12',
        'aegis_agent_drops_total{policy="odd\\"name",version="1.0.0",digest="sha256:b"} 0',
        'aegis_agent_failures_total{code="DIGEST_MISMATCH"} 1',
        'aegis_agent_failures_total{code="NO_SIGNATURE"} 2',
        "aegis_agent_last_successful_poll_timestamp_seconds 1700000000.5",
      ]);
      expect((await fetch(url.replace("/metrics", "/other"))).status, "only /metrics").toBe(404);
    } finally {
      server.close();
    }
  });

  it("shows nothing in force when the pins cannot be read, and 0 before the first poll", async () => {
    const text = await new AgentMetrics(() => Promise.reject(new Error("no bpffs"))).text();
    expect(text, "in force").toContain("\naegis_agent_policies_in_force 0\n");
    expect(text, "never polled").toContain("\naegis_agent_last_successful_poll_timestamp_seconds 0\n");
  });

  it("a scrape the pins' read holds too long is answered without policies and drops, saying so, and with the last poll", async () => {
    const metrics = new AgentMetrics(() => new Promise(() => undefined));
    metrics.polled(1_700_000_000_000);
    const { server, url } = await serveMetrics(metrics, 0, "127.0.0.1", 50);
    try {
      const answer = await fetch(url);
      const lines = (await answer.text()).split("\n").filter((l) => l && !l.startsWith("#"));
      expect([answer.status, lines], "the answer").toEqual([200, ["aegis_agent_pins_read 0", "aegis_agent_last_successful_poll_timestamp_seconds 1700000000"]]);
    } finally {
      server.close();
    }
  });

  it("scrapes that arrive together share one read of the pins", async () => {
    let reads = 0;
    const metrics = new AgentMetrics(async () => {
      reads++;
      await new Promise((resolve) => setTimeout(resolve, 20));
      return [row("sha256:a", "block-icmp", 1, ["eth0"])];
    });
    const texts = await Promise.all(Array.from({ length: 20 }, () => metrics.text()));
    expect([reads, texts.every((t) => t.includes("\naegis_agent_policies_in_force 1\n"))], "one read, twenty answers").toEqual([1, true]);
    await metrics.text();
    expect(reads, "a later scrape reads again").toBe(2);
  });
});

describe("aegis agent run --metrics-port", () => {
  it("a metrics port in use fails the start with one line, before the agent runs", async () => {
    const busy = await serveMetrics(new AgentMetrics(async () => []), 0);
    try {
      const port = new URL(busy.url).port;
      writeFileSync(join(work, "busy.pub"), generateKeyPair("ed25519").publicKey);
      const args = ["agent", "run", "--assigner", "http://127.0.0.1:9", "--host-id", "busy-host", "--trust", join(work, "busy.pub"), "--state-dir", join(work, "busy-state")];
      const result = await aegis([...args, "--dry-run", "--metrics-port", port, "--pin-root", join(work, "no-bpffs")]);
      expect(result.code, result.stderr).toBe(1);
      expect(result.stderr.trim().split("\n").at(-1), "the last line names the port in use").toMatch(new RegExp(`^aegis: error: listen EADDRINUSE: .*:${port}$`));
      expect(result.stderr, "the agent never ran").not.toContain("running for host");
    } finally {
      busy.server.close();
    }
  });

  it("refuses a bad port with one line", async () => {
    const result = await aegis(["agent", "run", "--assigner", "http://127.0.0.1:9", "--host-id", "h", "--trust", "/nonexistent.pub", "--metrics-port", "http"], { AEGIS_METRICS_PORT: "" });
    expect(expectOneErrorLine(result), "bad port").toMatch(/--metrics-port http: expected a port number/);
  });

  it("serves /metrics while running, and stops on SIGTERM with exit 0, detaching nothing", async () => {
    writeFileSync(join(work, "ci.pub"), generateKeyPair("ed25519").publicKey);
    const args = ["agent", "run", "--assigner", "http://127.0.0.1:9", "--host-id", "metrics-host", "--trust", join(work, "ci.pub"), "--state-dir", join(work, "state")];
    const child = spawn(process.execPath, [AEGIS, ...args, "--dry-run", "--metrics-port", "0", "--pin-root", join(work, "no-bpffs"), "--poll-interval", "1s"], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
        const match = /metrics on (http:\/\/\S+)/.exec(stderr);
        if (match) resolve(match[1]!);
      });
      child.once("exit", (code) => reject(new Error(`exited ${code} before serving metrics:\n${stderr}`)));
    });
    const text = await (await fetch(url)).text();
    expect(text, "a dry run enforces nothing").toContain("\naegis_agent_policies_in_force 0\n");
    expect(text, "the help lines").toContain("# TYPE aegis_agent_failures_total counter");
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    expect(await exited, stderr).toBe(0);
    expect(stderr, "says it stops without detaching").toContain("SIGTERM: stopping; everything attached stays in force");
  });
});
