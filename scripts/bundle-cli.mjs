// Bundles the `aegis` command (issue 10: start-up time). Node spends much of
// a short command's life finding, reading and compiling small module files:
// `aegis pull` loaded ~180 of them (zod alone ~100). esbuild joins our code
// and the small pure-JavaScript packages the CLI needs into a few files:
// dist/cli/aegis.cjs (the executable: it turns on the compile cache,
// cli/compile-cache.ts, then loads main-*.cjs, what commander needs to parse
// arguments) and chunks beside it that commands load lazily (code splitting
// keeps each `await import()` a separate file; test/cli/startup.test.ts reads
// the chunks `--version` loads). Not minified, with comments naming each
// source file, so the output stays readable; esbuild's output depends only on
// its input and options, so the build is reproducible (test/cli/bundle.test.ts).
// Runs after tsc (npm run build), which emits every other folder's modules
// to dist/ (tests load some from there); cli/ is built only here, so
// dist/cli holds the bundle alone.
// https://esbuild.github.io/api/#splitting
//
// The files are CommonJS. esbuild splits only ES modules, so it builds them as
// ES modules and then rewrites each file as CommonJS, chunk for chunk: Node
// 20's ES module loader reads every file through its thread pool and links the
// graph in promise jobs, where require() reads and compiles in place. In
// alternating runs that made `aegis --version` 13% faster, a copy that only
// mounts 6% and a 1 MiB pull 3.5% (docs/architecture.md).
//
// Usage: node scripts/bundle-cli.mjs [outdir]   (default dist/cli)
import { build, transform } from "esbuild";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import process from "node:process";
import { fileURLToPath, URL } from "node:url";

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/**
 * Packages joined into the bundle: small, pure JavaScript, needed on the
 * CLI's common paths. Every other package stays an import from
 * node_modules: the native ones (zstd-napi, koffi), and the heavy ones only
 * some commands load (express, ioredis, NATS, prom-client, sigstore, pino),
 * which the start-up test still sees by their node_modules paths.
 */
const BUNDLED = new Set(["commander", "zod", "yaml", "tar-stream", "streamx", "fast-fifo", "b4a", "text-decoder", "events-universal", "bare-events"]);

/** The package a bare specifier names ("@scope/name/sub" → "@scope/name"). */
function packageOf(specifier) {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0];
}

const externalPackages = {
  name: "external-packages",
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.path.startsWith("node:")) return { path: args.path, external: true };
      return BUNDLED.has(packageOf(args.path)) ? undefined : { path: args.path, external: true };
    });
  },
};

/**
 * zod's `z` namespace re-exports its ~60 locale modules (error messages in
 * other languages), so none can be tree-shaken: 400 KB parsed by every
 * command that validates. Aegis uses only the English messages zod installs
 * by default, so `locales` holds `en` alone.
 */
const zodEnglishOnly = {
  name: "zod-english-only",
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]node_modules[\\/]zod[\\/]v4[\\/](classic|core)$/.test(args.resolveDir) ? { path: "zod-locales", namespace: "zod-english-only", pluginData: args.resolveDir } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "zod-english-only" }, (args) => ({
      contents: 'export { default as en } from "../locales/en.js";\n',
      resolveDir: args.pluginData,
      loader: "js",
    }));
  },
};

/**
 * The policy schemas (policy/policy.ts, on every pull and push) use zod's
 * tree-shakable "mini" API, but code splitting would put all of zod's core
 * that classic zod needs (the fleet, trust and assigner commands) into one
 * shared chunk of 300 KB that a pull then loads. Loading zod/mini's files
 * under a namespace of their own makes them separate modules, so the pull
 * path gets only the part of zod's core its schemas use. The two copies
 * share no state the code relies on: schemas of one are never composed with
 * the other's, and each sets its English messages (policy.ts, classic zod).
 */
const zodMiniAlone = {
  name: "zod-mini-alone",
  setup(b) {
    // Paths relative to the checkout, so the output names no directory of this machine.
    const own = (path) => ({ path: relative(ROOT, path), namespace: "zod-mini" });
    b.onResolve({ filter: /^zod\/(mini|v4\/locales\/en\.js)$/ }, async (args) => {
      if (args.pluginData === "zod-mini-alone") return undefined;
      const found = await b.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, pluginData: "zod-mini-alone" });
      return found.errors.length > 0 ? { errors: found.errors } : own(found.path);
    });
    // Within zod: relative imports only; its locale index is English alone, as zodEnglishOnly does for classic zod.
    b.onResolve({ filter: /.*/, namespace: "zod-mini" }, (args) => own(join(args.resolveDir, args.path === "../locales/index.js" ? "../locales/en.js" : args.path)));
    b.onLoad({ filter: /.*/, namespace: "zod-mini" }, (args) => {
      const path = join(ROOT, args.path);
      return { contents: readFileSync(path, "utf8"), resolveDir: dirname(path), loader: "js" };
    });
  },
};

/**
 * commander requires node:child_process as it loads, only to spawn
 * executable subcommands, which aegis has none of; child_process brings
 * dgram and its own modules with it, compiled on every command. Inside
 * commander it resolves to a stand-in that requires the real module if a
 * spawn ever happens.
 */
const commanderSpawnsLazily = {
  name: "commander-spawns-lazily",
  setup(b) {
    b.onResolve({ filter: /^node:child_process$/ }, (args) =>
      /[\\/]node_modules[\\/]commander[\\/]/.test(args.importer) ? { path: "child_process", namespace: "commander-spawns-lazily" } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "commander-spawns-lazily" }, () => ({
      contents: 'module.exports = { spawn: (...args) => require("node:child_process").spawn(...args) };\n',
      loader: "js",
    }));
  },
};

const outdir = process.argv[2] ?? `${ROOT}dist/cli`;

// An earlier build's files go first.
mkdirSync(outdir, { recursive: true });
for (const name of readdirSync(outdir, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name)) {
  if (/^(aegis|[a-z-]+-[A-Z0-9]{8})\.c?js(\.map)?$/.test(name)) rmSync(join(outdir, name));
}

const { outputFiles } = await build({
  absWorkingDir: ROOT,
  entryPoints: { aegis: "cli/aegis.ts" },
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  outdir,
  // Chunks sit beside aegis.cjs in dist/cli, two levels below the checkout like
  // dist/ebpf: ebpf/compile.ts finds its C sources at "../../ebpf/" from there.
  chunkNames: "[name]-[hash]",
  plugins: [commanderSpawnsLazily, zodMiniAlone, externalPackages, zodEnglishOnly],
  legalComments: "inline",
  logLevel: "warning",
  write: false,
});

/**
 * One ES module of the build as CommonJS: imports become require() (dynamic
 * ones too, so a command's chunk still loads only when it runs), exports
 * become getters on `exports`, and import.meta.url is the file's own URL.
 * Chunks are named .cjs, as the package's "type" is "module".
 */
async function commonJs(code) {
  // The "// <source path>" line above each module's code (one word, at the line's start; a plugin's
  // modules are "namespace:path") survives the rewrite as a legal comment ("//!").
  const { code: out } = await transform(code.replace(/^\/\/ (?=\S+$)/gm, "//! "), {
    format: "cjs",
    platform: "node",
    target: "node20",
    loader: "js",
    supported: { "dynamic-import": false },
    define: { "import.meta.url": "__aegisUrl" },
    banner: code.includes("import.meta.url") ? 'const __aegisUrl = require("node:url").pathToFileURL(__filename).href;' : "",
    legalComments: "inline",
    logLevel: "warning",
  });
  return out.replace(/^\/\/! /gm, "// ").replace(/require\("(\.\/[\w-]+)\.js"\)/g, 'require("$1.cjs")');
}

for (const file of outputFiles) {
  const name = basename(file.path).replace(/\.js$/, ".cjs");
  // The entry keeps its "#!/usr/bin/env node" line (esbuild carries it over from cli/aegis.ts).
  writeFileSync(join(outdir, name), await commonJs(file.text), { mode: name === "aegis.cjs" ? 0o755 : 0o644 });
}
