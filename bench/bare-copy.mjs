// The floor for bench/cli.ts's one-registry copy row, as bench/bare-server.ts
// is for the assigner's: the requests `aegis copy -r` makes when source and
// destination share a registry, on bare node:http in one ES module (the
// format `aegis` ships in), with the manifest's digest checked as any honest
// client must. GET the manifest; list its referrers (the API, then the tag
// schema's fallback tag, as registry 2.8.2 has no API) beside HEAD and a mount
// of each blob; PUT the manifest under the tag. No argument parser, no
// retries, no streams, no progress: what `aegis copy` costs beyond this
// process is its own, and what this costs beyond skopeo is Node's.
//
// Usage: node bench/bare-copy.mjs <host:port>/<repo>@<digest> <host:port>/<repo>:<tag>
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import { Agent, request } from "node:http";
import process from "node:process";

const [src, dst] = process.argv.slice(2);
const SOURCE = /^([^/]+)\/(.+)@(sha256:[0-9a-f]{64})$/.exec(src ?? "");
const DESTINATION = /^([^/]+)\/(.+):([\w][\w.-]{0,127})$/.exec(dst ?? "");
if (!SOURCE || !DESTINATION || SOURCE[1] !== DESTINATION[1]) {
  process.stderr.write("usage: bare-copy.mjs <host:port>/<repo>@<digest> <host:port>/<repo>:<tag> (one registry)\n");
  process.exit(2);
}
const [, registry, srcRepo, digest] = SOURCE;
const [, , dstRepo, tag] = DESTINATION;
const [hostname, port] = registry.split(":");
const agent = new Agent({ keepAlive: true });

/** One request; resolves with the status and the whole body, or rejects on a status not in `expect`. */
function send(method, path, expect, headers = {}, body = undefined) {
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port: Number(port), method, path, headers, agent }, (res) => {
      const chunks = [];
      res.on("data", (chunk) => chunks.push(chunk));
      res.on("error", reject);
      res.on("end", () =>
        expect.includes(res.statusCode) ? resolve({ status: res.statusCode, body: Buffer.concat(chunks) }) : reject(new Error(`${method} ${path}: HTTP ${res.statusCode}`)),
      );
    });
    req.on("error", reject);
    req.end(body);
  });
}

const accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
const { body: manifestBytes } = await send("GET", `/v2/${srcRepo}/manifests/${digest}`, [200], { accept });
if (`sha256:${createHash("sha256").update(manifestBytes).digest("hex")}` !== digest) throw new Error(`manifest does not match ${digest}`);
const manifest = JSON.parse(manifestBytes.toString("utf8"));

// The bench's source has no referrers, on a registry without the API: anything else is refused, not left uncopied.
const referrers = send("GET", `/v2/${srcRepo}/referrers/${digest}`, [404]).then(() => send("HEAD", `/v2/${srcRepo}/manifests/${digest.replace(":", "-")}`, [404]));
await Promise.all(
  [manifest.config, ...manifest.layers].map(async ({ digest: blob }) => {
    const head = await send("HEAD", `/v2/${dstRepo}/blobs/${blob}`, [200, 404]);
    if (head.status === 200) return;
    await send("POST", `/v2/${dstRepo}/blobs/uploads/?mount=${encodeURIComponent(blob)}&from=${encodeURIComponent(srcRepo)}`, [201], { "content-length": "0" });
  }),
);
await referrers;
await send("PUT", `/v2/${dstRepo}/manifests/${tag}`, [201], { "content-type": manifest.mediaType, "content-length": String(manifestBytes.length) }, manifestBytes);
agent.destroy();
process.stdout.write(`${digest}\n`);
