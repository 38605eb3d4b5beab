// The middle of bench/cli.ts's one-registry copy rows: the same copy as
// `aegis copy -r`, by aegis's own registry code (the bundled chunk
// dist/cli/registry-*.cjs, as the CLI loads it) called directly, with no
// argument parser, signature step, progress, Ctrl-C handling or JIT setting
// (util/jit.ts); it prints the digest, as bare-copy.cjs does. Between
// bare-copy.cjs (bare node:http) and `aegis copy -r`, it tells what the
// registry code costs and what the CLI around it adds.
//
// Usage: node bench/library-copy.cjs <dist/cli/registry-*.cjs> <src> <dst>   (host:port/repo@digest, host:port/repo:tag; plain HTTP)
"use strict";
const process = require("node:process");

const [chunk, srcText, dstText] = process.argv.slice(2);
if (!chunk || !srcText || !dstText) {
  process.stderr.write("usage: library-copy.cjs <dist/cli/registry-*.cjs> <src> <dst>\n");
  process.exit(2);
}
const { copy, credentialsFromEnvironment, openReference } = require(chunk);

async function main() {
  const options = { plainHttp: true, credentials: credentialsFromEnvironment };
  const src = openReference(srcText, options);
  const dst = openReference(dstText, options);
  const { digest } = await src.target.resolve(src.selector);
  const root = await copy(src.target, digest, dst.target, dst.selector, { referrers: true });
  process.stdout.write(`${root.digest}\n`);
}

main().catch((err) => {
  process.stderr.write(`library-copy: ${err.message}\n`);
  process.exit(1);
});
