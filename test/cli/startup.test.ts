// The CLI's start-up loads no server code: `aegis --version` and `aegis pull
// --help` are run in child processes whose every loaded module is recorded:
// ES modules by a module.register() resolve hook
// (https://nodejs.org/api/module.html#customization-hooks), CommonJS ones
// (the CLI's bundle and the packages it requires) from require.cache at exit.
// dist/cli/aegis.cjs is a bundle (scripts/bundle-cli.mjs): the modules inside
// each file of it that loads are read from esbuild's "// <source path>" lines.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AEGIS } from "./run.js";

const execFileAsync = promisify(execFile);

/** Packages the CLI must not load unless a command that needs them runs. */
const HEAVY = ["express", "ioredis", "prom-client", "@nats-io/transport-node", "@sigstore/sign", "pino"];

/**
 * Runs in the process and, as a hook, in the hooks thread: appends each
 * resolved URL to the file named in `data`. ESM imports of CommonJS packages
 * (express, ioredis, …) resolve through it too, so each package's entry is
 * seen; and at exit, every file in require.cache, which holds what require()
 * loaded (the CLI's files and what they require).
 */
const RECORDER = `
import { appendFileSync } from "node:fs";
import { createRequire, register } from "node:module";
import { pathToFileURL } from "node:url";
import { isMainThread } from "node:worker_threads";
if (isMainThread) {
  register(import.meta.url, { data: { file: process.env.AEGIS_LOADED_MODULES } });
  const { cache } = createRequire(import.meta.url);
  process.on("exit", () => appendFileSync(process.env.AEGIS_LOADED_MODULES, Object.keys(cache).map((path) => pathToFileURL(path).href + "\\n").join("")));
}
let file;
export function initialize(data) { file = data.file; }
export async function resolve(specifier, context, nextResolve) {
  const result = await nextResolve(specifier, context);
  appendFileSync(file, result.url + "\\n");
  return result;
}
`;

let work: string;
let recorder: string;
let runs = 0;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), "aegis-startup-"));
  recorder = join(work, "recorder.mjs");
  writeFileSync(recorder, RECORDER);
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Runs node with the recorder; returns its output and the URLs of the modules it loaded. */
async function loaded(args: string[], mayFail = false): Promise<{ stdout: string; modules: string[] }> {
  const file = join(work, `modules-${runs++}.txt`);
  writeFileSync(file, "");
  const { stdout } = await execFileAsync(process.execPath, ["--import", pathToFileURL(recorder).href, ...args], {
    env: { ...process.env, AEGIS_LOADED_MODULES: file },
  }).catch((err: { stdout: string }) => {
    if (mayFail) return { stdout: err.stdout };
    throw err;
  });
  const urls = readFileSync(file, "utf8").split("\n").filter(Boolean);
  return { stdout, modules: [...urls, ...urls.flatMap(bundledIn)] };
}

/**
 * The sources joined into a file of the CLI's bundle, named as tsc's
 * unbundled build would load them: "registry/x.ts" as ".../dist/registry/x.js",
 * a package file as ".../node_modules/<package>/…", so one check covers both.
 */
function bundledIn(url: string): string[] {
  if (!/\/dist\/cli\/[^/]+\.cjs$/.test(url)) return [];
  const sources = readFileSync(fileURLToPath(url), "utf8").matchAll(/^\/\/ ([\w@./-]+\.(?:ts|js|cjs|mjs|json))$/gm);
  return [...sources].map(([, path]) => `bundled:/${path!.startsWith("node_modules/") ? path : `dist/${path!.replace(/\.ts$/, ".js")}`}`);
}

function packagesIn(modules: string[]): string[] {
  return HEAVY.filter((name) => modules.some((url) => url.includes(`/node_modules/${name}/`)));
}

describe("CLI start-up", () => {
  it("the recorder sees each heavy package when the assigner's server and signing are loaded (control)", async () => {
    const dist = join(AEGIS, "..", "..");
    const script = `await import(${JSON.stringify(pathToFileURL(join(dist, "assigner/index.js")).href)}); await import(${JSON.stringify(pathToFileURL(join(dist, "signing/index.js")).href)});`;
    const { modules } = await loaded(["--input-type=module", "-e", script]);
    // NATS loads when the assigner first connects to it (util/nats.ts), not with the server's code.
    expect(packagesIn(modules), "packages seen when loading the server").toEqual(HEAVY.filter((name) => name !== "@nats-io/transport-node"));
  });

  it("the recorder sees each heavy package that CommonJS code requires, as the CLI's files do (control)", async () => {
    const { modules } = await loaded(["-e", HEAVY.map((name) => `require(${JSON.stringify(name)});`).join(" ")]);
    expect(packagesIn(modules), "packages seen when required").toEqual(HEAVY);
  });

  it("assigner/api (the client agents and the CLI use) loads none of them either", async () => {
    const api = pathToFileURL(join(AEGIS, "..", "..", "assigner/api/index.js")).href;
    const { modules } = await loaded(["--input-type=module", "-e", `await import(${JSON.stringify(api)});`]);
    expect(modules.some((url) => url.endsWith("/dist/assigner/api/client.js")), "the recorder saw the client").toBe(true);
    expect(packagesIn(modules), "heavy packages loaded by assigner/api").toEqual([]);
    expect(modules.filter((url) => /\/dist\/assigner\/(?!api\/)/.test(url)), "assigner server modules loaded by assigner/api").toEqual([]);
  });

  it("a registry command loads the registry client (control), and none of the heavy packages", async () => {
    // inspect of a layout that does not exist: it fails, after loading the registry code (and util/, which every layer shares).
    const { modules } = await loaded([AEGIS, "inspect", `oci:${join(work, "no-layout")}:1`], true);
    expect(modules.filter((url) => url.includes("/dist/registry/")).length, "registry modules seen for aegis inspect").toBeGreaterThan(0);
    expect(packagesIn(modules), "heavy packages loaded by aegis inspect").toEqual([]);
  });

  for (const args of [["--version"], ["pull", "--help"], ["--help"]]) {
    it(`aegis ${args.join(" ")} loads none of ${HEAVY.join(", ")}, nor the assigner's server`, async () => {
      const { stdout, modules } = await loaded([AEGIS, ...args]);
      expect(stdout, `output of aegis ${args.join(" ")}`).toMatch(args[0] === "--version" ? /^0\.1\.0\n$/ : /^Usage: aegis/);
      expect(modules.some((url) => url.endsWith("/dist/cli/aegis.cjs")), "the recorder saw the CLI's own module").toBe(true);
      expect(packagesIn(modules), `heavy packages loaded by aegis ${args.join(" ")}`).toEqual([]);
      expect(modules.filter((url) => /\/dist\/assigner\/(?!api\/)/.test(url)), `assigner server modules loaded by aegis ${args.join(" ")}`).toEqual([]);
      // Nor the registry client: a command loads it when it runs.
      expect(modules.filter((url) => /\/dist\/registry\/(?!remote\/credentials)|\/node_modules\/undici\//.test(url)), `registry client modules loaded by aegis ${args.join(" ")}`).toEqual([]);
    });
  }
});
