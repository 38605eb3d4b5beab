// Progress on a terminal only (cli/progress.ts): drawn on a stream that says
// it is a TTY, nothing on a pipe or with --json; and end to end, `aegis push`
// under a pseudo-terminal (util-linux `script`) draws its bar, while the same
// push with stderr piped writes nothing there.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { duringStep, startProgress, type ProgressStream } from "../../cli/progress.js";
import type { Descriptor } from "../../registry/index.js";
import { requireBinary } from "../harness/process.js";
import { aegis, AEGIS } from "./run.js";

const execFileAsync = promisify(execFile);

function fakeStream(isTTY: boolean): ProgressStream & { text: string } {
  const stream = {
    isTTY,
    text: "",
    write(chunk: string) {
      stream.text += chunk;
      return true;
    },
  };
  return stream;
}

const desc = (digest: string, size: number): Descriptor => ({ mediaType: "application/octet-stream", digest, size });

describe("startProgress", () => {
  it("draws a bar on a terminal, from onProgress and from copy events, and ends the line", () => {
    const tty = fakeStream(true);
    const bar = startProgress("pushing", { stream: tty, intervalMs: 0 });
    expect(bar.active).toBe(true);
    bar.onProgress(1024 * 1024, 4 * 1024 * 1024);
    expect(tty.text).toContain(`\rpushing [${"#".repeat(8)}${"-".repeat(22)}] 1.0/4.0 MiB`);
    bar.onEvent!({ kind: "start", desc: desc("sha256:a", 2048) });
    bar.onEvent!({ kind: "bytes", desc: desc("sha256:a", 2048), bytes: 1024 });
    bar.finish();
    expect(tty.text.endsWith("\n"), "finish ends the line").toBe(true);
  });

  it("counts items (hosts) as a number", () => {
    const tty = fakeStream(true);
    const bar = startProgress("reading hosts", { stream: tty, unit: "items", intervalMs: 0 });
    bar.onProgress(3, 12);
    expect(tty.text).toContain("3/12");
    expect(tty.text).not.toContain("MiB");
  });

  it("draws nothing when the stream is not a terminal, or with --json", async () => {
    for (const [name, stream, json] of [["a pipe", fakeStream(false), false], ["--json on a terminal", fakeStream(true), true]] as const) {
      const bar = startProgress("pushing", { stream, json, intervalMs: 0 });
      expect(bar.active, name).toBe(false);
      expect(bar.onEvent, name).toBeUndefined();
      bar.onProgress(1, 2);
      bar.finish();
      expect(await duringStep("building", { stream, json }, async () => 42), name).toBe(42);
      expect(stream.text, `${name}: nothing written`).toBe("");
    }
  });

  it("duringStep shows its label while the work runs and wipes it after", async () => {
    const tty = fakeStream(true);
    await duringStep("building policies/x", { stream: tty }, async () => {
      expect(tty.text).toBe("building policies/x…\x1b[K");
    });
    expect(tty.text.endsWith("\r\x1b[K")).toBe(true);
  });
});

describe("aegis push on a pseudo-terminal and on a pipe", () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), "aegis-progress-"));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it("draws the bar only on the terminal", async () => {
    const script = requireBinary("script", "util-linux");
    // `script` runs the command with stdin, stdout and stderr on a new pseudo-terminal.
    const command = `${JSON.stringify(process.execPath)} ${JSON.stringify(AEGIS)} push policies/block-icmp-8888 oci:${join(work, "tty")}:v1`;
    const onTty = await execFileAsync(script, ["-qec", command, "/dev/null"], { encoding: "utf8" });
    expect(onTty.stdout, "the bar, on the terminal").toMatch(/\rpushing block-icmp-8888 \[#{30}\] [\d.]+\/[\d.]+ KiB/);
    expect(onTty.stdout, "then the digest").toMatch(/sha256:[a-f0-9]{64}/);

    const piped = await aegis(["push", "policies/block-icmp-8888", `oci:${join(work, "pipe")}:v1`]);
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stderr, "nothing on a piped stderr").toBe("");
    expect(piped.stdout).toMatch(/^sha256:[a-f0-9]{64}\n$/);
  });
});
