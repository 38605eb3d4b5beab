// The CLI's failure contract for mistakes people make (issue 11, acceptance
// 4): a usage error, an unreadable or missing key, a private key about to be
// written into a git work tree are each one `aegis: error: …` line naming the
// problem in plain words, and exit 1.
import { execFile } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AEGIS, aegis, expectOneErrorLine, type CliResult } from "./run.js";

const DIGEST = `sha256:${"0".repeat(64)}`;
let work: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "aegis-cli-errors-"));
  writeFileSync(join(work, "garbage.key"), "this is not a key\n");
  writeFileSync(join(work, "garbage.pub"), "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** One error line, exit 1 exactly (commander's own usage errors exited 2 and printed the help). */
async function failsWith(args: string[], message: RegExp): Promise<string> {
  const result = await aegis(args, { AEGIS_ASSIGNER_URL: "http://127.0.0.1:1", AEGIS_ADMIN_TOKEN: "x" });
  const line = expectOneErrorLine(result);
  expect(result.code, `exit code of aegis ${args.join(" ")}`).toBe(1);
  expect(result.stdout, `stdout of aegis ${args.join(" ")} (no help text)`).toBe("");
  expect(line, `aegis ${args.join(" ")}`).toMatch(message);
  return line;
}

describe("usage errors: one line, exit 1, no help dump", () => {
  it.each([
    ["an unknown option", ["pull", "127.0.0.1:1/x:v1", "-o", "out", "--frobnicate"], /^aegis: error: unknown option '--frobnicate' \(see 'aegis pull --help'\)$/],
    ["a missing argument", ["assign", DIGEST], /^aegis: error: missing required argument 'host' \(see 'aegis assign --help'\)$/],
    ["an unknown command", ["frobnicate"], /^aegis: error: unknown command 'frobnicate' \(see 'aegis --help'\)$/],
    ["an unknown subcommand", ["artifact", "frobnicate"], /^aegis: error: unknown command 'frobnicate' \(see 'aegis artifact --help'\)$/],
    ["a missing required option", ["keygen"], /^aegis: error: required option '-o, --output <prefix>' not specified \(see 'aegis keygen --help'\)$/],
    ["too many arguments", ["hosts", "extra"], /too many arguments for 'hosts'/],
  ])("%s", async (_name, args, message) => {
    await failsWith(args, message);
  });

  it("--help and --version still print and exit 0", async () => {
    const help = await aegis(["hosts", "--help"]);
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: aegis hosts/);
    expect((await aegis(["--version"])).stdout.trim()).toBe("0.1.0");
  });
});

describe("system and OpenSSL errors in plain words", () => {
  it("a file that is not a PEM private key: no OpenSSL error code", async () => {
    const line = await failsWith(["sign", `127.0.0.1:1/x@${DIGEST}`, "--key", join(work, "garbage.key")], /garbage\.key: not a PKCS#8 PEM private key$/);
    expect(line).not.toMatch(/error:[0-9A-F]{8}|DECODER routines/);
  });

  it("a broken PEM public key: no OpenSSL error code", async () => {
    const line = await failsWith(["verify", `127.0.0.1:1/x@${DIGEST}`, "--key", join(work, "garbage.pub")], /garbage\.pub: not a PEM public key/);
    expect(line).not.toMatch(/error:[0-9A-F]{8}|routines/);
  });

  it.each([
    ["a missing private key", ["sign", `127.0.0.1:1/x@${DIGEST}`, "--key", "missing.key"], "missing.key"],
    ["a missing public key", ["verify", `127.0.0.1:1/x@${DIGEST}`, "--key", "missing.pub"], "missing.pub"],
    ["a missing trust file", ["verify", `127.0.0.1:1/x@${DIGEST}`, "--trust", "missing-trust.yaml"], "missing-trust.yaml"],
  ])("%s: named once, no ENOENT", async (_name, args, file) => {
    const line = await failsWith(args, /: no such file or directory$/);
    expect(line.split(file).length - 1, `${file} named once in: ${line}`).toBe(1);
    expect(line).not.toMatch(/ENOENT|open '/);
  });
});

describe("input files this user cannot read", () => {
  it.each([
    ["a bundle file, by push", (file: string) => ["push", file, "127.0.0.1:1/x:1"], "cannot read bundle file"],
    ["a capsule, by mirror import", (file: string) => ["mirror", "import", "--key", "KEY", file, "oci:OUT"], "cannot read capsule"],
  ])("%s: FILE_NOT_FOUND naming it, not INTERNAL", async (_name, argv, words) => {
    // stat() needs no read right, so the file is seen; the open is what fails. Root reads any file: the CLI runs as nobody
    // (65534), which only root may do. (From a clone nobody cannot reach, the CLI fails to start, and its stderr says so.)
    if (process.getuid?.() !== 0) throw new Error("this case needs root (to run the CLI as another user)");
    const top = mkdtempSync(join(tmpdir(), "aegis-cli-unreadable-"));
    try {
      chmodSync(top, 0o755);
      const file = join(top, "secret");
      writeFileSync(file, "bytes nobody may read", { mode: 0o600 });
      const made = await aegis(["keygen", "-o", join(top, "k")]);
      expect(made.code, made.stderr).toBe(0);
      chmodSync(join(top, "k.pub"), 0o644);
      const args = [...argv(file).map((a) => a.replace("KEY", join(top, "k.pub")).replace("OUT", join(top, "out"))), "--json"];
      const result = await new Promise<CliResult>((resolve) =>
        execFile(process.execPath, [AEGIS, ...args], { uid: 65534, gid: 65534, env: { PATH: process.env.PATH, HOME: top, AEGIS_COMPILE_CACHE: "off" } }, (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
        ),
      );
      const line = expectOneErrorLine(result);
      expect(line, `aegis ${args.join(" ")}`).toBe(`aegis: error: ${file}: ${words}: permission denied`);
      expect(JSON.parse(result.stdout), `aegis ${args.join(" ")}: its JSON`).toEqual({ error: `${file}: ${words}: permission denied`, code: "FILE_NOT_FOUND" });
      expect(existsSync(join(top, "out")), "nothing written").toBe(false);
    } finally {
      rmSync(top, { recursive: true, force: true });
    }
  });
});

describe("keygen and git work trees", () => {
  it("refuses to write a private key inside a git work tree unless --allow-in-repo", async () => {
    const repo = join(work, "repo");
    mkdirSync(join(repo, ".git"), { recursive: true });
    mkdirSync(join(repo, "keys"));
    const prefix = join(repo, "keys", "ci");
    await failsWith(["keygen", "-o", prefix], new RegExp(`ci\\.key would be inside the git work tree ${repo.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}.*--allow-in-repo`));
    expect(existsSync(`${prefix}.key`), "no key written after the refusal").toBe(false);
    expect(existsSync(`${prefix}.pub`), "no public key written after the refusal").toBe(false);
    const allowed = await aegis(["keygen", "-o", prefix, "--allow-in-repo"]);
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(existsSync(`${prefix}.key`)).toBe(true);
  });

  it("writes outside a work tree as before", async () => {
    const result = await aegis(["keygen", "-o", join(work, "outside")]);
    expect(result.code, result.stderr).toBe(0);
  });

  it(".gitignore covers private keys", () => {
    expect(readFileSync(".gitignore", "utf8").split("\n")).toContain("*.key");
  });
});
