// The ceiling for bench/assigner.ts: a bare node:http server that answers
// GET /artifacts/for-host/{host} with only the Redis reads the assigner's
// cache-miss path needs (SMEMBERS of the host's set, MGET of the artifact
// records) and the same JSON body. No auth, no validation, no cache, no
// metrics: whatever the assigner costs beyond this is its own overhead.
//
// Run as its own process (so it has its own event loop, like the assigner):
//   node --import tsx bench/bare-server.ts <port> <redis-url> [prefix]
import { createServer } from "node:http";
import { Redis } from "ioredis";
import { toArtifactJson } from "../assigner/artifacts.js";
import type { ArtifactRecord } from "../assigner/store/store.js";

const FOR_HOST = "/artifacts/for-host/";

const [portArg, redisUrl, prefix = "aegis"] = process.argv.slice(2);
const port = Number(portArg);
if (!Number.isInteger(port) || !redisUrl) {
  console.error("usage: bare-server.ts <port> <redis-url> [prefix]");
  process.exit(2);
}

const redis = new Redis(redisUrl);

async function forHost(hostId: string): Promise<string> {
  // Sorted like RedisStore.hostDesired, so the answer matches the assigner's.
  const ids = (await redis.smembers(`${prefix}:{a}:host:${hostId}`)).sort();
  const values = ids.length > 0 ? await redis.mget(ids.map((id) => `${prefix}:artifact:${id}`)) : [];
  const artifacts = values.filter((v): v is string => v !== null).map((v) => toArtifactJson(JSON.parse(v) as ArtifactRecord));
  return JSON.stringify({ artifacts, total: artifacts.length });
}

const server = createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
    return;
  }
  if (req.method !== "GET" || !req.url?.startsWith(FOR_HOST)) {
    res.writeHead(404).end();
    return;
  }
  forHost(decodeURIComponent(req.url.slice(FOR_HOST.length))).then(
    (body) => res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) }).end(body),
    (err: unknown) => res.writeHead(500).end(String(err)),
  );
});

server.listen(port, "127.0.0.1", () => console.log(`bare server listening on 127.0.0.1:${port}`));

// Exit (rather than die by the signal) so `--cpu-prof` can write its profile.
const stop = () => {
  server.close();
  redis.disconnect();
  process.exit(0);
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
