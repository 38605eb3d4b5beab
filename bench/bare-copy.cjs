// The floor for bench/cli.ts's one-registry copy row (as bench/bare-server.ts
// is the assigner's ceiling): the requests `aegis copy -r` makes when source
// and destination share a registry, in the same order, on bare node:http in
// one CommonJS file (the format `aegis` ships in). GET the manifest and check its
// digest (aegis verifies every manifest it reads); list its referrers (the
// API, then the tag schema's fallback tag: registry 2.8.2 has no API) beside
// a mount of each blob (asked first, no HEAD: registry/copy.ts); PUT the
// manifest under the tag once the blobs are there, and wait for the listing
// after, as aegis does. No argument
// parser, retries, deadlines, stream pipelines or progress: roughly what Node
// itself costs for this copy; what `aegis copy` costs beyond it is its own.
//
// Usage: node bench/bare-copy.cjs <host>:<port>/<repo>@<digest> <host>:<port>/<repo>:<tag>
"use strict";
const { Buffer } = require("node:buffer");
const { createHash } = require("node:crypto");
const { Agent, request } = require("node:http");
const process = require("node:process");

const SOURCE = /^([^/:]+):(\d+)\/([^@:]+)@(sha256:[0-9a-f]{64})$/.exec(process.argv[2] ?? "");
const DESTINATION = /^([^/:]+):(\d+)\/([^@:]+):(\w[\w.-]{0,127})$/.exec(process.argv[3] ?? "");
if (!SOURCE || !DESTINATION || SOURCE[1] !== DESTINATION[1] || SOURCE[2] !== DESTINATION[2]) {
  process.stderr.write("usage: bare-copy.cjs <host>:<port>/<repo>@<digest> <host>:<port>/<repo>:<tag> (one registry)\n");
  process.exit(2);
}
const [, hostname, port, srcRepo, digest] = SOURCE;
const [, , , dstRepo, tag] = DESTINATION;
const agent = new Agent({ keepAlive: true });
/** A stalled registry fails the run instead of hanging the bench. */
const TIMEOUT_MS = 30_000;

/** One request; resolves with the response and its whole body, or rejects on a status not in `expect`. */
function send(method, path, expect, headers = {}, body = undefined) {
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port: Number(port), method, path, headers, agent }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () =>
        expect.includes(res.statusCode) ? resolve({ res, body: Buffer.concat(chunks) }) : reject(new Error(`${method} ${path}: HTTP ${res.statusCode}`)),
      );
    });
    req.setTimeout(TIMEOUT_MS, () => req.destroy(new Error(`${method} ${path}: no answer in ${TIMEOUT_MS} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

async function main() {
  const got = await send("GET", `/v2/${srcRepo}/manifests/${digest}`, [200], { accept: "application/vnd.oci.image.manifest.v1+json" });
  const manifestBytes = got.body;
  if (`sha256:${createHash("sha256").update(manifestBytes).digest("hex")}` !== digest) throw new Error(`manifest does not match ${digest}`);
  const manifest = JSON.parse(manifestBytes.toString("utf8"));
  if (!manifest.config || !Array.isArray(manifest.layers)) throw new Error(`${digest} is not an image manifest`);

  // The bench's source has no referrers: anything but "none" is refused, not left uncopied.
  const referrers = send("GET", `/v2/${srcRepo}/referrers/${digest}`, [404]).then(() => send("HEAD", `/v2/${srcRepo}/manifests/${digest.replace(":", "-")}`, [404]));
  referrers.catch(() => {}); // awaited below, after the PUT
  await Promise.all(
    [manifest.config, ...manifest.layers].map(({ digest: blob }) =>
      send("POST", `/v2/${dstRepo}/blobs/uploads/?mount=${encodeURIComponent(blob)}&from=${encodeURIComponent(srcRepo)}`, [201], { "content-length": "0" }),
    ),
  );
  const contentType = got.res.headers["content-type"] ?? "application/vnd.oci.image.manifest.v1+json";
  await send("PUT", `/v2/${dstRepo}/manifests/${tag}`, [201], { "content-type": contentType, "content-length": String(manifestBytes.length) }, manifestBytes);
  await referrers;
  process.stdout.write(`${digest}\n`);
}

main().catch((err) => {
  process.stderr.write(`bare-copy: ${err.message}\n`);
  process.exit(1);
});
