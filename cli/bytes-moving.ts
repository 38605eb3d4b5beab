// Commands that move bytes (pull, push of a bundle file, copy, mirror) turn
// off V8's optimizing compiler, TurboFan, for their process. Their time goes
// to native code (sha256, zstd, sockets, files) and they end within a second
// or so, too soon for optimized JavaScript to pay back compiling it, while
// TurboFan's own machine code and compile memory raise peak RSS: `aegis pull`
// of a 50 MiB bundle peaks ~6 MiB lower on Node 20 (~9 MiB on Node 22) and is
// no slower (bench/cli.ts, issue 10). Commands that compute keep it: `policy
// build` of 100,000 rules takes ~0.5 s with TurboFan and ~0.7 s without, and
// the agent and the assigner run for days.
//
// Called once the command's modules are loaded, before its work: V8 reads
// the flag each time it decides whether to optimize a function, so that is
// in time, and a flag changed earlier would make V8 refuse the code cache
// that Node's own modules (crypto, http) ship with, its flag hash no longer
// matching, and compile each from source (~40 million instructions of a
// 1 MiB pull, by callgrind). https://v8.dev/docs/turbofan
export function movingBytes(): void {
  process.getBuiltinModule("node:v8").setFlagsFromString("--no-turbofan");
}
