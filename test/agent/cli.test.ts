// `aegis agent run`'s flags: what it refuses before it starts, with one clear line.
import { describe, expect, it } from "vitest";
import { parseDuration as parseFlag } from "../../cli/options.js";

const parseDuration = (text: string) => parseFlag(text, "poll-interval");
import { aegis, expectOneErrorLine } from "../cli/run.js";

const NO_ENV = { AEGIS_ASSIGNER_URL: "", AEGIS_HOST_ID: "", AEGIS_TRUST: "", AEGIS_IFACES: "", AEGIS_NATS_URL: "" };

describe("aegis agent run", () => {
  it("names the missing setting: assigner, host id, trust", async () => {
    expect(expectOneErrorLine(await aegis(["agent", "run"], NO_ENV)), "no assigner").toMatch(/--assigner or set AEGIS_ASSIGNER_URL/);
    expect(expectOneErrorLine(await aegis(["agent", "run"], { ...NO_ENV, AEGIS_ASSIGNER_URL: "http://127.0.0.1:9" })), "no host id").toMatch(/--host-id or set AEGIS_HOST_ID/);
    expect(expectOneErrorLine(await aegis(["agent", "run", "--assigner", "http://127.0.0.1:9", "--host-id", "h"], NO_ENV)), "no trust").toMatch(/--trust or set AEGIS_TRUST/);
    expect(expectOneErrorLine(await aegis(["agent", "run", "--assigner", "http://127.0.0.1:9", "--host-id", "h", "--trust-root-ref", "127.0.0.1:9/trust/root:current"], NO_ENV)), "a trust root without the operator key").toMatch(/--trust-root-ref needs --trust-root-key/);
  });

  it("refuses a bad --label, --poll-interval, --pull-timeout, --fetch-budget, --command-timeout and --registry-allow; flags win over the environment", async () => {
    const base = ["agent", "run", "--assigner", "http://127.0.0.1:9", "--host-id", "h", "--trust", "/nonexistent.pub"];
    expect(expectOneErrorLine(await aegis([...base, "--label", "novalue"], NO_ENV)), "label").toMatch(/--label novalue: expected key=value/);
    expect(expectOneErrorLine(await aegis([...base, "--poll-interval", "soon"], NO_ENV)), "flag").toMatch(/--poll-interval soon/);
    expect(expectOneErrorLine(await aegis([...base, "--poll-interval", "soon"], { ...NO_ENV, AEGIS_POLL_INTERVAL: "5s" })), "flag over env").toMatch(/--poll-interval soon/);
    expect(expectOneErrorLine(await aegis(base, { ...NO_ENV, AEGIS_POLL_INTERVAL: "later" })), "env when no flag").toMatch(/later/);
    expect(expectOneErrorLine(await aegis([...base, "--pull-timeout", "forever"], NO_ENV)), "pull timeout").toMatch(/--pull-timeout forever: expected a duration/);
    expect(expectOneErrorLine(await aegis(base, { ...NO_ENV, AEGIS_PULL_TIMEOUT: "1ms" })), "pull timeout from the environment").toMatch(/--pull-timeout 1ms is too short/);
    expect(expectOneErrorLine(await aegis([...base, "--fetch-budget", "a while"], NO_ENV)), "fetch budget").toMatch(/--fetch-budget a while: expected a duration/);
    expect(expectOneErrorLine(await aegis(base, { ...NO_ENV, AEGIS_FETCH_BUDGET: "2ms" })), "fetch budget from the environment").toMatch(/--fetch-budget 2ms is too short/);
    expect(expectOneErrorLine(await aegis([...base, "--command-timeout", "never"], NO_ENV)), "command timeout").toMatch(/--command-timeout never: expected a duration/);
    expect(expectOneErrorLine(await aegis(base, { ...NO_ENV, AEGIS_COMMAND_TIMEOUT: "1ms" })), "command timeout from the environment").toMatch(/--command-timeout 1ms is too short/);
    expect(expectOneErrorLine(await aegis([...base, "--registry-allow", "https://registry.example.com"], NO_ENV)), "allowed registry").toMatch(/--registry-allow https:\/\/registry\.example\.com: expected a registry's host\[:port\]/);
    expect(expectOneErrorLine(await aegis([...base, "--registry-allow", "registry"], NO_ENV)), "a bare word, which no reference names as its registry").toMatch(/--registry-allow registry: expected a registry's host\[:port\]/);
    expect(expectOneErrorLine(await aegis(base, { ...NO_ENV, AEGIS_REGISTRY_ALLOW: "ok.example:5000,registry.example/team" })), "allowed registry from the environment").toMatch(/--registry-allow registry\.example\/team: expected/);
    expect(expectOneErrorLine(await aegis([...base, "--datapath", "ebpf"], NO_ENV)), "datapath").toMatch(/--datapath ebpf: expected auto, libbpf, bpftool/);
  });

  it("parses durations", () => {
    expect([parseDuration("30s"), parseDuration("500ms"), parseDuration("2m"), parseDuration("5")], "30s 500ms 2m 5").toEqual([30_000, 500, 120_000, 5_000]);
    expect(() => parseDuration("5ms"), "too short").toThrow(/too short/);
    expect(parseDuration("4.35m"), "whole milliseconds (4.35 * 60000 is not)").toBe(261_000);
    expect(() => parseDuration("36000m"), "past what a timer takes").toThrow(/--poll-interval 36000m is too long \(at most 35791m\)/);
  });
});
