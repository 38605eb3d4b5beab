// V8's optimizing compiler, TurboFan, for short commands: off while they move
// bytes, on while they compute. A command that moves bytes (pull, push of a
// bundle file, copy, mirror) spends its time in native code (sha256, zstd,
// sockets, files) and ends within a second or so, too soon for optimized
// JavaScript to pay back compiling it, while TurboFan's machine code and
// compile memory raise peak RSS: `aegis pull` of a 50 MiB bundle peaks ~7 MiB
// lower on Node 20 (~9 MiB on Node 22, whose Maglev tier stays on) and is no
// slower (bench/cli.ts, issue 10). Validating a large policy is the opposite,
// JavaScript through and through: a 100,000-rule bundle pulls in 0.3 s with
// TurboFan and 0.6 s without, so that step gets it back (computing). Other
// commands never turn it off: `policy build`, the agent, the assigner.
//
// V8 reads the flag each time it decides whether to optimize a function, so
// setting it as a step starts is in time. movingBytes() is called once the
// command's modules are loaded, just before its transfer: after a flag change
// V8 refuses the code cache that Node's own modules (crypto, http) ship with,
// its flag hash no longer matching, and compiles each one loaded later from
// source (~40 million instructions of a 1 MiB pull, by callgrind). A copy
// calls it as its first blob starts to stream, so one that only mounts never
// loads node:v8; a pull once its manifest names a layer of
// bundle/transfer.ts's PRELOAD_BELOW or more, so a smaller one keeps TurboFan,
// and the compile cache for its policy code.
//
// Node's own module loader could make a function hot enough for TurboFan by
// then: its path work on each file loaded made normalizeString hot once the
// bundle lay 20 characters deep or more (/usr/local/lib/node_modules), and
// a 50 MiB pull peaked ~4 MiB higher, the compiler's code paged in. The
// compile cache's hook (cli/compile-cache.ts) now loads the bundle's own
// files past that path work; with the cache off (AEGIS_COMPILE_CACHE=off) it
// is still so. Turning TurboFan off before loading would cost more than that
// is worth: a 1 MiB pull took ~15 ms longer, a copy ~35 ms, their builtins
// compiled without a cache.
// https://v8.dev/docs/turbofan

import { setV8Flag } from "./v8-flags.js";

let moving = false;

/** TurboFan off for the rest of this process, except inside computing(). */
export function movingBytes(): void {
  if (moving) return;
  moving = true;
  setV8Flag("--no-turbofan");
}

/** Runs `work`, a long JavaScript-bound step, with TurboFan back on if movingBytes() had turned it off. */
export function computing<T>(work: () => T): T {
  if (!moving) return work();
  setV8Flag("--turbofan");
  try {
    return work();
  } finally {
    setV8Flag("--no-turbofan");
  }
}
