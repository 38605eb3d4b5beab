// The policy source format: CIDR lists and files expand into the same
// normalized rules as one YAML rule per CIDR; every problem is reported at
// once with its file and field (or line); policy.yml works like policy.yaml;
// host bits set are a warning naming the network; `aegis policy build`
// prints the warnings on stderr and in --json.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { buildBundle } from "../../bundle/index.js";
import { loadPolicy } from "../../policy/index.js";
import { aegis } from "../cli/run.js";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A policy directory holding `files` (name → text). */
function policyDir(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "aegis-policy-src-"));
  dirs.push(dir);
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, ".."), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
  return dir;
}

const HEAD = "name: t\nversion: 1.0.0\nprogram: aegis_net\n";

async function problemsOf(dir: string): Promise<string> {
  const err = (await loadPolicy(dir).catch((e: unknown) => e)) as Error & { code?: string };
  expect(err, "loadPolicy should have failed").toBeInstanceOf(Error);
  expect(err.code).toBe("INVALID_POLICY");
  return err.message;
}

describe("CIDR lists and files", () => {
  it("expand into the same normalized rules, and the same bundle bytes, as one YAML rule per CIDR", async () => {
    const listed = policyDir({
      "policy.yaml": `${HEAD}rules:
  - { action: allow, dst: 192.0.2.1/32, protocol: tcp, ports: "443" }
  - action: drop
    dst: [198.51.100.0/24, { file: lists/deny.txt }, "2001:db8::/32"]
    protocol: udp
    ports: 1000-2000
  - { action: drop, dst: { file: lists/deny.txt } }
  - { action: drop, src: 10.0.0.0/8 }
`,
      "lists/deny.txt": "# deny list\n203.0.113.0/24\n\n   192.0.2.128/25   # trailing comment\n2001:db8:1::/48\n",
    });
    const expanded = policyDir({
      "policy.yml": `${HEAD}rules:
  - { action: allow, dst: 192.0.2.1/32, protocol: tcp, ports: "443" }
  - { action: drop, dst: 198.51.100.0/24, protocol: udp, ports: "1000-2000" }
  - { action: drop, dst: 203.0.113.0/24, protocol: udp, ports: "1000-2000" }
  - { action: drop, dst: 192.0.2.128/25, protocol: udp, ports: "1000-2000" }
  - { action: drop, dst: "2001:db8:1::/48", protocol: udp, ports: "1000-2000" }
  - { action: drop, dst: "2001:db8::/32", protocol: udp, ports: "1000-2000" }
  - { action: drop, dst: 203.0.113.0/24 }
  - { action: drop, dst: 192.0.2.128/25 }
  - { action: drop, dst: "2001:db8:1::/48" }
  - { action: drop, src: 10.0.0.0/8 }
`,
    });
    const a = await loadPolicy(listed);
    const b = await loadPolicy(expanded);
    expect(a.policy.rules).toHaveLength(10);
    expect(a.policy).toEqual(b.policy);
    expect(a.policy.rules[1]).toEqual({ action: "drop", dst: "198.51.100.0/24", protocol: "udp", ports: { from: 1000, to: 2000 } });
    expect(a.warnings).toEqual([]);
    const [builtA, builtB] = [await buildBundle(listed), await buildBundle(expanded)];
    expect(builtA.bytes.equals(builtB.bytes), "the two forms give the same bundle").toBe(true);
  });

  it("100,000 CIDRs in a file are one rule in YAML, loaded into 100,000 normalized rules", async () => {
    const lines: string[] = [];
    for (let i = 0; i < 100_000; i++) lines.push(`10.${(i >> 8) & 255}.${i & 255}.${(i >> 16) * 16}/28`);
    const dir = policyDir({ "policy.yaml": `${HEAD}rules:\n  - { action: drop, dst: { file: deny.txt } }\n`, "deny.txt": lines.join("\n") });
    const { policy, warnings } = await loadPolicy(dir);
    expect(policy.rules).toHaveLength(100_000);
    expect(policy.rules[99_999]).toEqual({ action: "drop", dst: lines[99_999], protocol: "any" });
    expect(warnings).toEqual([]);
  });

  it("a bad line names the file and the line; a file outside the directory, missing, or of the other family is refused", async () => {
    const outside = policyDir({ "secret.txt": "10.0.0.0/8\n" });
    const dir = policyDir({
      "policy.yaml": `${HEAD}rules:
  - { action: drop, dst: { file: deny.txt } }
  - { action: drop, dst: { file: ../secret.txt } }
  - { action: drop, dst: { file: /etc/hostname } }
  - { action: drop, dst: { file: link.txt } }
  - { action: drop, dst: { file: nope.txt } }
  - { action: drop, src: "2001:db8::/32", dst: { file: deny.txt } }
`,
      "deny.txt": "# ok\n10.0.0.0/8\nnot-a-cidr\n10.0.0.0/40 # too long\n",
    });
    symlinkSync(join(outside, "secret.txt"), join(dir, "link.txt"));
    const message = await problemsOf(dir);
    const yaml = join(dir, "policy.yaml");
    for (const expected of [
      `${join(dir, "deny.txt")}:3: "not-a-cidr" is not an IPv4 or IPv6 CIDR`,
      `${join(dir, "deny.txt")}:4: "10.0.0.0/40" has a prefix length outside 0-32`,
      `${yaml}: rules[1].dst.file: "../secret.txt" is not a relative path inside the policy directory`,
      `${yaml}: rules[2].dst.file: "/etc/hostname" is not a relative path inside the policy directory`,
      `${yaml}: rules[3].dst.file: "link.txt" leads outside the policy directory`,
      `${yaml}: rules[4].dst.file: cannot read ${join(dir, "nope.txt")} (no such file)`,
      `${yaml}: rules[5].dst: src and dst must be the same address family (${join(dir, "deny.txt")} holds IPv4 networks)`,
    ]) {
      expect(message, `missing: ${expected}`).toContain(expected);
    }
    // The file's own problems are reported once, though two rules name it.
    expect(message.split("not-a-cidr").length - 1).toBe(1);
  });
});

describe("CIDR files: bounds", () => {
  it("a rule whose list or file names no network is a problem, not a rule left out unsaid", async () => {
    const dir = policyDir({
      "policy.yaml": `${HEAD}rules:\n  - { action: drop, dst: { file: empty.txt } }\n  - { action: drop, dst: 10.0.0.0/8 }\n`,
      "empty.txt": "# nothing yet\n\n",
    });
    expect(await problemsOf(dir)).toBe(`${join(dir, "policy.yaml")}: rules[0].dst: names no network (an empty list or file): the rule would not be in the policy; remove it, or add a network`);
  });

  it("a file of the wrong kind is read no further than 50 bad lines; host-bit warnings past 100 are counted", async () => {
    const junk = Array.from({ length: 200_000 }, (_, i) => `line ${i}`).join("\n");
    const dir = policyDir({ "policy.yaml": `${HEAD}rules:\n  - { action: drop, dst: { file: junk.txt } }\n`, "junk.txt": junk });
    const message = await problemsOf(dir);
    expect(message.split("is not an IPv4 or IPv6 CIDR").length - 1, "problems spelled out, after the notice").toBe(49);
    expect(message).toContain(`${join(dir, "junk.txt")}: not read past line 50: 50 of its lines are not CIDRs (is it a list of networks?)`);
    const hosts = Array.from({ length: 300 }, (_, i) => `10.0.${i >> 8}.${(i & 255) | 1}/24`).join("\n");
    const warned = await loadPolicy(policyDir({ "policy.yaml": `${HEAD}rules:\n  - { action: drop, dst: { file: hosts.txt } }\n`, "hosts.txt": hosts }));
    expect(warned.warnings, "100 warnings and a count").toHaveLength(101);
    expect(warned.warnings.at(-1)).toBe("and 200 more warnings");
  });

  it("past 1,000,000 rules, the CIDRs are counted, not built: many rules naming one large file are refused at once", async () => {
    const lines = Array.from({ length: 300_000 }, (_, i) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`).join("\n");
    const rules = Array.from({ length: 40 }, (_, i) => `  - { action: drop, dst: { file: big.txt }, protocol: tcp, ports: "${i + 1}" }`).join("\n");
    const dir = policyDir({ "policy.yaml": `${HEAD}rules:\n${rules}\n`, "big.txt": lines });
    const before = process.memoryUsage().heapUsed;
    expect(await problemsOf(dir)).toBe(`${join(dir, "policy.yaml")}: rules: the policy expands to 12000000 rules, more than 1000000`);
    // 12 million rule objects would take gigabytes; the file's 300,000 strings, some tens of MiB.
    expect(process.memoryUsage().heapUsed - before, "heap growth, bytes").toBeLessThan(512 * 1024 * 1024);
  });
});

describe("policy problems", () => {
  it("are all reported at once, each with its file and field", async () => {
    const dir = policyDir({
      "policy.yaml": `name: t
version: one
program: aegis_net
rules:
  - { action: drop, dst: 10.1.2.300/8 }
  - { action: drop, dst: 10.0.0.0/8, protocol: icmp, ports: "80" }
  - { action: explode }
  - { action: drop, dst: [10.0.0.0/8, 300.0.0.0/8] }
  - { action: drop, dst: 7 }
extra: 1
`,
    });
    const yaml = join(dir, "policy.yaml");
    const message = await problemsOf(dir);
    for (const expected of [
      `${yaml}: version: a semantic version`,
      `${yaml}: rules[0].dst: "10.1.2.300/8" is not an IPv4 or IPv6 CIDR`,
      `${yaml}: rules[1].ports: ports need protocol tcp or udp, not icmp`,
      `${yaml}: rules[2].action:`,
      `${yaml}: rules[3].dst[1]: "300.0.0.0/8" is not an IPv4 or IPv6 CIDR`,
      `${yaml}: rules[4].dst: a CIDR, { file: <path in the policy directory> }, or a list of them`,
      `extra`,
    ]) {
      expect(message, `missing: ${expected}`).toContain(expected);
    }
    expect(message.split("; ").length, message).toBe(7);
  });

  it("YAML syntax errors are all listed with their lines", async () => {
    const dir = policyDir({ "policy.yaml": "name: t\nname: u\nrules: [\n  - {action: drop\n" });
    const message = await problemsOf(dir);
    expect(message).toMatch(new RegExp(`^${join(dir, "policy.yaml")}:\\d+: invalid YAML`));
    expect(message.split("; ").length, message).toBeGreaterThan(1);
  });
});

describe("policy.yml", () => {
  const rules = "rules:\n  - { action: drop, dst: 192.0.2.0/24 }\n";

  it("is read like policy.yaml", async () => {
    const { policy, file } = await loadPolicy(policyDir({ "policy.yml": HEAD + rules }));
    expect(file.endsWith("policy.yml")).toBe(true);
    expect(policy.rules).toEqual([{ action: "drop", dst: "192.0.2.0/24", protocol: "any" }]);
  });

  it("beside a policy.yaml is an error naming both", async () => {
    const dir = policyDir({ "policy.yml": HEAD + rules, "policy.yaml": HEAD + rules });
    await expect(loadPolicy(dir)).rejects.toMatchObject({ code: "INVALID_POLICY", message: `${dir}: both policy.yaml and policy.yml exist; keep one` });
  });
});

describe("host bits set", () => {
  const dir = () =>
    policyDir({
      "policy.yaml": `${HEAD}rules:
  - { action: drop, dst: 8.8.8.8/24 }
  - { action: drop, dst: [10.0.0.0/8, "2001:db8::1/32"] }
  - { action: drop, src: 10.1.2.3/8 }
  - { action: drop, dst: { file: deny.txt } }
`,
      "deny.txt": "192.0.2.0/24\n198.51.100.7/24\n",
    });

  it("is a warning naming the network it becomes, with file and field or line", async () => {
    const d = dir();
    const { policy, warnings } = await loadPolicy(d);
    const yaml = join(d, "policy.yaml");
    expect(warnings).toEqual([
      `${yaml}: rules[0].dst: 8.8.8.8/24 has host bits set; it is read as 8.8.8.0/24`,
      `${yaml}: rules[1].dst[1]: 2001:db8::1/32 has host bits set; it is read as 2001:db8::/32`,
      `${yaml}: rules[2].src: 10.1.2.3/8 has host bits set; it is read as 10.0.0.0/8`,
      `${join(d, "deny.txt")}:2: 198.51.100.7/24 has host bits set; it is read as 198.51.100.0/24`,
    ]);
    expect(policy.rules.map((r) => r.dst ?? r.src)).toEqual(["8.8.8.0/24", "10.0.0.0/8", "2001:db8::/32", "10.0.0.0/8", "192.0.2.0/24", "198.51.100.0/24"]);
  });

  it("aegis policy build prints the warnings on stderr and in --json; the bundle is written", async () => {
    const d = dir();
    const human = await aegis(["policy", "build", d, "-o", join(d, "out.tar.zst")]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stderr).toContain(`aegis: warning: ${join(d, "policy.yaml")}: rules[0].dst: 8.8.8.8/24 has host bits set; it is read as 8.8.8.0/24\n`);
    expect(human.stderr.trimEnd().split("\n")).toHaveLength(4);
    expect(human.stdout).toMatch(/^built t 1\.0\.0 .* \(6 rules, /);
    const json = await aegis(["policy", "build", d, "-o", join(d, "out.tar.zst"), "--json"]);
    expect(json.code, json.stderr).toBe(0);
    const out = JSON.parse(json.stdout) as { rules: number; warnings: string[] };
    expect(out.rules).toBe(6);
    expect(out.warnings).toHaveLength(4);
    expect(out.warnings[3]).toBe(`${join(d, "deny.txt")}:2: 198.51.100.7/24 has host bits set; it is read as 198.51.100.0/24`);
  });

  it("aegis push of a policy directory prints the same warnings on stderr and in --json", async () => {
    const d = dir();
    const layout = join(d, "store");
    const pushed = await aegis(["push", d, `oci:${layout}:1.0.0`, "--json"]);
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(pushed.stderr, "the build's warnings on stderr").toContain(`aegis: warning: ${join(d, "policy.yaml")}: rules[0].dst: 8.8.8.8/24 has host bits set; it is read as 8.8.8.0/24\n`);
    const out = JSON.parse(pushed.stdout) as { digest: string; warnings: string[] };
    expect(out.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(out.warnings, "the same four warnings in --json").toHaveLength(4);
  });
});
