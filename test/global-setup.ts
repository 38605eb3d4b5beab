// Compiles the project once before any test file runs (npm run build: tsc,
// then the CLI's bundle): the CLI tests run `node dist/cli/aegis.cjs` exactly
// as users do. Every `aegis` the tests start keeps its compile cache
// (cli/compile-cache.ts) in a folder of this run's, not in the home
// directory of whoever runs them (a test may still name its own). Everything
// runs under umask 022.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export default function setup(): () => void {
  // Files and folders get umask 022's modes, whatever the shell's: the temp sweeps (util/atomic-write.ts) refuse a
  // folder its group may write, as umask 002 makes them, and the tests of those sweeps expect a sweep.
  process.umask(0o022);
  execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
  execFileSync(process.execPath, ["scripts/bundle-cli.mjs"], { stdio: "inherit" });
  const compileCache = mkdtempSync(join(tmpdir(), "aegis-test-compile-cache-"));
  process.env.AEGIS_COMPILE_CACHE = compileCache;
  return () => rmSync(compileCache, { recursive: true, force: true });
}
