// Fleet files (fleet/file.ts): a directory of environments loads whole (as
// `aegis mirror export --from` reads it), names are unique within an
// environment, what `loadFleetFiles` returns, and edits that refuse a file
// changed under them or write every file or none.
import { execFileSync } from "node:child_process";
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { environmentsOf, loadFleetFiles, promote } from "../../fleet/index.js";

const dir = mkdtempSync(join(tmpdir(), "aegis-fleet-file-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const D1 = `sha256:${"1".repeat(64)}`;
const D2 = `sha256:${"2".repeat(64)}`;

describe("loadFleetFiles", () => {
  it("loads every environment of a directory, or one, with digests and selectors in canonical form", async () => {
    writeFileSync(join(dir, "prod.yaml"), `environment: prod\npolicies:\n  - name: icmp\n    ref: r.example/net/icmp@${D1}\n    hosts: [web-01, web-01]\n    selectors: ["zone in (b,a),env==prod"]\n`);
    writeFileSync(join(dir, "staging.yml"), `environment: staging\npolicies:\n  - name: icmp\n    ref: r.example:5000/net/icmp:1.0@${D2}\n    selectors: [env=staging]\n`);
    writeFileSync(join(dir, "notes.txt"), "not a fleet file");
    const all = await loadFleetFiles([dir]);
    expect(environmentsOf(all)).toEqual(["prod", "staging"]);
    expect(all.policies.map((p) => ({ name: p.name, digest: p.digest, registry: p.reference.registry, hosts: p.hosts, selectors: p.selectors }))).toEqual([
      { name: "icmp", digest: D1, registry: "r.example", hosts: ["web-01"], selectors: ["env=prod,zone in (a,b)"] },
      { name: "icmp", digest: D2, registry: "r.example:5000", hosts: [], selectors: ["env=staging"] },
    ]);
    expect((await loadFleetFiles([dir], { environment: "staging" })).policies.map((p) => p.digest)).toEqual([D2]);
    await expect(loadFleetFiles([dir], { environment: "qa" })).rejects.toThrow("no fleet file has environment: qa");
  });

  it("refuses a name used twice in one environment, naming both places", async () => {
    const sub = mkdtempSync(join(dir, "dup-"));
    writeFileSync(join(sub, "a.yaml"), `policies:\n  - name: x\n    ref: r.example/p@${D1}\n    hosts: [h]\n`);
    writeFileSync(join(sub, "b.yaml"), `policies:\n  - name: y\n    ref: r.example/p@${D1}\n    hosts: [h]\n  - name: x\n    ref: r.example/p@${D2}\n    hosts: [h]\n`);
    await expect(loadFleetFiles([sub])).rejects.toThrow(`${join(sub, "b.yaml")}: policies[1].name: "x" is also the name of ${join(sub, "a.yaml")} policies[0]`);
  });

  it("names the file and line of invalid YAML, and a missing path", async () => {
    writeFileSync(join(dir, "broken.yaml"), "policies:\n  - name: [\n");
    await expect(loadFleetFiles([join(dir, "broken.yaml")])).rejects.toThrow(/broken\.yaml:\d+: invalid YAML/);
    await expect(loadFleetFiles([join(dir, "nope.yaml")])).rejects.toThrow("nope.yaml: no such fleet file or directory");
  });
});

describe("edits (promote, apply --pin)", () => {
  const entry = (name: string, digest: string) => `  - name: ${name}\n    ref: r.example/p@${digest}\n    hosts: [h]\n`;
  const prodA = `environment: prod\npolicies:\n${entry("a", D1)}`;
  /** A directory where staging pins a and b at D2, and prod-a.yaml pins a at D1 (prodA). */
  function stagingAndProdA(prefix: string): string {
    const sub = mkdtempSync(join(dir, prefix));
    writeFileSync(join(sub, "staging.yaml"), `environment: staging\npolicies:\n${entry("a", D2)}${entry("b", D2)}`);
    writeFileSync(join(sub, "prod-a.yaml"), prodA);
    return sub;
  }

  it("refuse a file changed between the read and the write, and write no file", async () => {
    const sub = stagingAndProdA("edit-");
    writeFileSync(join(sub, "prod-b.yaml"), `environment: prod\npolicies:\n${entry("b", D1)}`);
    // Someone edits prod-b.yaml while promote checks the digest: another policy before b (the entry promote edits moves), or only b's hosts.
    const edited = `environment: prod\npolicies:\n${entry("c", D1)}${entry("b", D1)}`;
    const hostsOnly = `environment: prod\npolicies:\n${entry("b", D1).replace("[h]", "[h, h2]")}`;
    for (const text of [hostsOnly, edited]) {
      const promoting = promote([sub], D2, "staging", "prod", async () => writeFileSync(join(sub, "prod-b.yaml"), text));
      await expect(promoting, text).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: `${join(sub, "prod-b.yaml")}: changed since aegis read it; nothing was written (run again)` });
      expect(readFileSync(join(sub, "prod-b.yaml"), "utf8"), "the edited file").toBe(text);
    }
    expect(readFileSync(join(sub, "prod-a.yaml"), "utf8"), "the other file").toBe(prodA);
    // The file the change was decided from counts too: staging no longer pins the digest.
    const staging = readFileSync(join(sub, "staging.yaml"), "utf8");
    const reverted = promote([sub], D2, "staging", "prod", async () => writeFileSync(join(sub, "staging.yaml"), staging.replaceAll(D2, D1)));
    await expect(reverted, "staging edited").rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: `${join(sub, "staging.yaml")}: changed since aegis read it; nothing was written (run again)` });
    expect(readFileSync(join(sub, "prod-a.yaml"), "utf8"), "prod after staging was edited").toBe(prodA);
    writeFileSync(join(sub, "staging.yaml"), staging);
    // Another environment's file may change meanwhile.
    writeFileSync(join(sub, "dev.yaml"), `environment: dev\npolicies:\n${entry("a", D1)}`);
    const other = await promote([sub], D2, "staging", "prod", async () => writeFileSync(join(sub, "dev.yaml"), `environment: dev\npolicies:\n${entry("a", D2)}`));
    expect(other.map((c) => c.name), "promoted while dev.yaml changed").toEqual(["a", "b"]);
    writeFileSync(join(sub, "prod-a.yaml"), prodA);
    // Run again, it reads the files as they are now.
    await promote([sub], D2, "staging", "prod");
    const prod = await loadFleetFiles([sub], { environment: "prod" });
    expect(prod.policies.map((p) => `${p.name} ${p.digest}`), "promoted").toEqual([`a ${D2}`, `c ${D1}`, `b ${D2}`]);
  });

  it("change only the ref's text: quoting, line ends, flow lists and comments stay; a symlinked file is written where it points", async () => {
    const sub = mkdtempSync(join(dir, "text-"));
    writeFileSync(join(sub, "staging.yaml"), `environment: staging\npolicies:\n${entry("a", D2)}${entry("b", D2)}`);
    const prodText = `environment: prod\r\npolicies:   # reviewed\r\n  - { name: a, ref: "r.example/p@${D1}", hosts: [h1,   h2] }\r\n  - name: b\r\n    ref: 'r.example/p@${D1}'\r\n    hosts: [h]\r\n`;
    mkdirSync(join(sub, "..", `${basename(sub)}-envs`), { recursive: true });
    const target = join(sub, "..", `${basename(sub)}-envs`, "prod.yaml");
    writeFileSync(target, prodText);
    symlinkSync(target, join(sub, "prod.yaml"));
    await promote([sub], D2, "staging", "prod");
    expect(readFileSync(target, "utf8"), "the linked file, only its refs changed").toBe(prodText.replaceAll(D1, D2));
    expect(lstatSync(join(sub, "prod.yaml")).isSymbolicLink(), "the link kept").toBe(true);
  });

  it.each([
    ["the anchored ref (its alias would move too)", "a", "policies[0].ref (a) is the YAML anchor &r"],
    ["an alias of another policy's ref", "b", "policies[1].ref (b) is the YAML alias *r"],
  ])("refuse to edit %s, naming the file and policy, and write nothing", async (what, name, why) => {
    const sub = mkdtempSync(join(dir, "anchor-"));
    writeFileSync(join(sub, "staging.yaml"), `environment: staging\npolicies:\n${entry(name, D2)}`);
    const prodText = `environment: prod\npolicies:\n  - name: a\n    ref: &r r.example/p@${D1}\n    hosts: [h]\n  - name: b\n    ref: *r\n    hosts: [h2]\n`;
    writeFileSync(join(sub, "prod.yaml"), prodText);
    await expect(promote([sub], D2, "staging", "prod"), `promote ${name}: ${what}`).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining(`${join(sub, "prod.yaml")}: ${why}`) });
    expect(readFileSync(join(sub, "prod.yaml"), "utf8"), `the prod file after promoting ${name}: ${what}`).toBe(prodText);
  });

  it("refuse a fleet file that is not a regular file (a FIFO, /dev/zero) at once", async () => {
    const sub = mkdtempSync(join(dir, "odd-"));
    execFileSync("mkfifo", [join(sub, "fifo.yaml")]);
    await expect(loadFleetFiles([join(sub, "fifo.yaml")]), "a FIFO").rejects.toThrow(`${join(sub, "fifo.yaml")}: not a regular file`);
    await expect(loadFleetFiles(["/dev/zero"]), "/dev/zero").rejects.toThrow("/dev/zero: not a regular file");
  });

  it("write every edited file or none, each keeping its mode", async () => {
    const sub = stagingAndProdA("all-");
    chmodSync(join(sub, "prod-a.yaml"), 0o664);
    // The second file to write has a name its temp file cannot have (over NAME_MAX, 255 bytes): writing it fails after prod-a.yaml's was written.
    const long = join(sub, `${"z".repeat(240)}.yaml`);
    writeFileSync(long, `environment: prod\npolicies:\n${entry("b", D1)}`);
    await expect(promote([sub], D2, "staging", "prod"), "promote with an unwritable file").rejects.toMatchObject({ code: "ENAMETOOLONG" });
    expect(readFileSync(join(sub, "prod-a.yaml"), "utf8"), "the file written before the failure").toBe(prodA);
    expect(readdirSync(sub).filter((n) => n.startsWith(".")), "temp files left").toEqual([]);
    // Under a shorter name, the edit lands, and each file keeps its mode (not atomicWrite's default).
    renameSync(long, join(sub, "prod-b.yaml"));
    await promote([sub], D2, "staging", "prod");
    const prod = await loadFleetFiles([sub], { environment: "prod" });
    expect(prod.policies.map((p) => `${p.name} ${p.digest}`), "promoted").toEqual([`a ${D2}`, `b ${D2}`]);
    expect((statSync(join(sub, "prod-a.yaml")).mode & 0o777).toString(8), "mode of the rewritten file").toBe("664");
  });
});
