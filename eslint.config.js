// @ts-check
import js from "@eslint/js";
import { defineConfig } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig(
  { ignores: ["dist/**", "node_modules/**", "bench/results/**"] },
  js.configs.recommended,
  tseslint.configs.strict,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", destructuredArrayIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      // noUncheckedIndexedAccess makes every index `T | undefined`; `!` after a
      // bounds check is the readable way to say "checked".
      "@typescript-eslint/no-non-null-assertion": "off",
    },
  },
  {
    // CommonJS scripts: bench/bare-copy.cjs runs in the format the CLI ships in (scripts/bundle-cli.mjs).
    files: ["**/*.cjs"],
    languageOptions: { sourceType: "commonjs", globals: { require: "readonly", module: "writable", __filename: "readonly", __dirname: "readonly" } },
    rules: { "@typescript-eslint/no-require-imports": "off" },
  },
  {
    // The agent and the CLI reach the assigner only through its wire contract
    // (assigner/api/): loading the server would drag Express, ioredis and
    // prom-client into every command and every host. `aegis assigner serve`
    // loads the server with a dynamic import(), which this rule does not see;
    // test/architecture/imports.test.ts checks that one too.
    files: ["agent/**/*.ts", "cli/**/*.ts", "fleet/**/*.ts"],
    rules: {
      "no-restricted-imports": ["error", {
        patterns: [{ group: ["**/assigner/*", "!**/assigner/api", "**/assigner/*/**", "!**/assigner/api/**"], message: "import the assigner's wire contract from assigner/api/ only" }],
      }],
    },
  },
);
