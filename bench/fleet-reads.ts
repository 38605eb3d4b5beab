// What a staged rollout and an apply read from the assigner while people
// wait on them, against the full reads they replaced, in the same run, on
// the real assigner (dist/cli/aegis.cjs assigner serve) over a real
// redis-server:
//  (a) a ring's poll, GET /artifacts/{id}/status?view=summary (each host's
//      event, code, reason, time), against the full status with every
//      host's counters and receipt, for 3,000 hosts with 1,000 counters each;
//  (b) an apply's check for a rollout under way, GET /rollouts?active=true,
//      against GET /rollouts, with 100 rollouts kept (the most the assigner
//      keeps), each of 1,000 changes with long targets (~1.3 MB), one running.
// Whole HTTP answers (status line to last byte), one at a time, full and
// cheap read alternated, medians of ROUNDS each; the ratio is cheap / full.
// The store is filled in-process through RedisStore, as the assigner's own
// writes leave it (the summary is written in the status's atomic step).
import { createHash } from "node:crypto";
import { request } from "node:http";
import { RedisStore } from "../assigner/index.js";
import type { RolloutJson } from "../assigner/api/index.js";
import { ROLLOUTS_KEPT } from "../assigner/store/store.js";
import { freePort } from "../test/harness/ports.js";
import { makeTempDir, removeTempDir, spawnManaged, waitUntilReady } from "../test/harness/process.js";
import { startRedis } from "../test/harness/tcp-server.js";
import { median, type BenchResult, type Row } from "./report.js";

const HOSTS = 3_000;
const COUNTERS = 1_000;
/** As many as the assigner keeps. */
const ROLLOUTS = ROLLOUTS_KEPT;
const CHANGES = 1_000;
const ROUNDS = Number(process.env.AEGIS_BENCH_ROUNDS ?? 15);
const ADMIN_TOKEN = "fleet-reads-bench-operator";
const CLI = new URL("../dist/cli/aegis.cjs", import.meta.url).pathname;
const HEALTH_TIMEOUT_MS = 20_000;

const digestOf = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;
const hostId = (i: number) => `host-${String(i).padStart(5, "0")}`;

/** One artifact attached on every host, each status with its counters and receipt; 100 rollouts, the newest running. */
async function populate(redisUrl: string): Promise<string> {
  const store = new RedisStore(redisUrl);
  await store.connect();
  try {
    const id = digestOf("fleet-reads-manifest");
    await store.putArtifact({
      id,
      reference: `127.0.0.1:5000/policies/fleet@${id}`,
      name: "fleet",
      version: "1.0.0",
      description: "fleet reads bench",
      size: 4096,
      layerDigest: digestOf("fleet-reads-layer"),
      metadata: { policy_type: "tc", program: "aegis_net" },
      signature: "",
      createdAt: new Date(0).toISOString(),
    });
    const counters = Object.fromEntries(Array.from({ length: COUNTERS }, (_, i) => [`rule${i}`, i * 7]));
    const since = new Date().toISOString();
    // 50 at a time: the store's script per status, without 3,000 round trips in a row.
    for (let start = 0; start < HOSTS; start += 50) {
      await Promise.all(
        Array.from({ length: Math.min(50, HOSTS - start) }, (_, k) =>
          store.putStatus({
            hostId: hostId(start + k),
            artifactId: id,
            event: "attached",
            counters,
            receipt: { programId: 100 + start + k, interfaces: [{ iface: "eth0", direction: "egress", pref: 5702 }], since },
            time: since,
            seq: 1,
          }),
        ),
      );
    }
    const target = `host in (${Array.from({ length: 150 }, (_, i) => hostId(i)).join(",")})`.slice(0, 1100);
    for (let r = 0; r < ROLLOUTS; r++) {
      const rollout: RolloutJson = {
        id: `rollout-${String(r).padStart(3, "0")}`,
        state: r === ROLLOUTS - 1 ? "running" : "completed",
        changes: Array.from({ length: CHANGES }, (_, c) => ({ from: digestOf(`from-${r}-${c}`), to: digestOf(`to-${r}-${c}`), target })),
        rings: [{ spec: "10%", hosts: 300, state: r === ROLLOUTS - 1 ? "waiting" : "passed", in_force: 300, failed: 0, failures: [] }],
        max_failures: "0",
        ring_timeout_ms: 600_000,
        started_at: since,
        updated_at: since,
      };
      await store.putRollout(rollout);
    }
    return id;
  } finally {
    await store.close();
  }
}

/** GET `path`: the answer's status, size and the time to its last byte (ms). */
function timedGet(url: string, path: string): Promise<{ status: number; bytes: number; ms: number }> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const req = request(url + path, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }, (res) => {
      let bytes = 0;
      res.on("data", (chunk: Buffer) => (bytes += chunk.length));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, bytes, ms: performance.now() - start }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

export default async function run(): Promise<BenchResult> {
  const redis = await startRedis();
  const dataDir = makeTempDir("aegis-bench-fleet-reads-");
  try {
    const id = await populate(redis.url);
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const proc = spawnManaged(process.execPath, [CLI, "assigner", "serve", "--port", String(port), "--host", "127.0.0.1", "--redis", redis.url, "--admin-token", ADMIN_TOKEN, "--data-dir", dataDir, "--log-level", "warn"]);
    try {
      await waitUntilReady(proc, async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.ok === true, "assigner", HEALTH_TIMEOUT_MS);
      const pairs = [
        { row: `status of ${HOSTS} hosts × ${COUNTERS} counters: summary vs full`, cheap: `/artifacts/${id}/status?view=summary`, full: `/artifacts/${id}/status` },
        { row: `rollouts, ${ROLLOUTS} kept (1 running): active=true vs all`, cheap: "/rollouts?active=true", full: "/rollouts" },
      ];
      const rows: Row[] = [];
      for (const pair of pairs) {
        const times = { cheap: [] as number[], full: [] as number[] };
        const sizes = { cheap: 0, full: 0 };
        // One untimed round of each, then alternated (which goes first alternates too).
        for (let round = -1; round < ROUNDS; round++) {
          const order = round % 2 === 0 ? (["cheap", "full"] as const) : (["full", "cheap"] as const);
          for (const side of order) {
            const answer = await timedGet(url, pair[side]);
            if (answer.status !== 200) throw new Error(`GET ${pair[side]}: HTTP ${answer.status}`);
            sizes[side] = answer.bytes;
            if (round >= 0) times[side].push(answer.ms);
          }
        }
        const [cheap, full] = [median(times.cheap), median(times.full)];
        rows.push({ row: pair.row, cheap_ms: cheap, full_ms: full, ratio: cheap / full, cheap_mib: sizes.cheap / 2 ** 20, full_mib: sizes.full / 2 ** 20 });
      }
      const [status, rollouts] = rows as [Row, Row];
      return {
        name: "fleet-reads",
        rows,
        ratio: status.ratio as number,
        ratioOf: `status ?view=summary / full status, ${HOSTS} hosts × ${COUNTERS} counters, whole HTTP answers, median of ${ROUNDS}`,
        headlines: [{ ratio: rollouts.ratio as number, ratioOf: `GET /rollouts?active=true / GET /rollouts, ${ROLLOUTS} kept, median of ${ROUNDS}` }],
        rounds: ROUNDS,
        conditions: `the assigner (dist/cli/aegis.cjs) on one redis-server, this machine; requests one at a time`,
      };
    } finally {
      await proc.stop();
    }
  } finally {
    await redis.stop();
    await removeTempDir(dataDir);
  }
}
