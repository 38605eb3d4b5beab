#!/usr/bin/env node
// The `aegis` executable: turns the compile cache on (cli/compile-cache.ts),
// then loads the command itself (cli/main.ts). The command is a module of
// its own, loaded after, so that its code, the largest file of the bundle,
// comes from the cache too.
import { enableCompileCache } from "./compile-cache.js";

enableCompileCache();
// No top-level await: the bundle is CommonJS (scripts/bundle-cli.mjs). main.ts reports its own errors.
void import("./main.js");
