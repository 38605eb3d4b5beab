// @ts-check
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "bench/results/**"] },
  js.configs.recommended,
  ...tseslint.configs.strict,
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", destructuredArrayIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      // noUncheckedIndexedAccess makes every index `T | undefined`; `!` after a
      // bounds check is the readable way to say "checked".
      "@typescript-eslint/no-non-null-assertion": "off",
    },
  },
);
