// Compiles the project once before any test file runs (npm run build: tsc,
// then the CLI's bundle): the CLI tests run `node dist/cli/aegis.cjs` exactly
// as users do.
import { execFileSync } from "node:child_process";

export default function setup(): void {
  execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
  execFileSync(process.execPath, ["scripts/bundle-cli.mjs"], { stdio: "inherit" });
}
