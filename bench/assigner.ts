// The agents' poll, GET /artifacts/for-host/{host}, under load: 10,000 hosts
// with 3 assignments each, autocannon in this process, each server in its own
// child process. Compared, in the same run:
//  (a) the assigner (dist/cli/aegis.cjs assigner serve, Redis store);
//  (b) bench/bare-server.ts: bare node:http doing the same Redis reads
//      (SMEMBERS + MGET, JSON) — the ceiling of "answer from Redis";
//  (c) the assigner's 304 (If-None-Match with the host's current ETag).
// Plus the assigner polled with per-host agent tokens, as real agents do, and
// with its for-host cache always missing (the same Redis reads as (b), and one more).
// Set AEGIS_BENCH_CPU_PROF=<dir> to write --cpu-prof profiles of the servers.
import { createHash, randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import autocannon, { type Request, type Result } from "autocannon";
import { Redis } from "ioredis";
import type { ArtifactRecord } from "../assigner/store/store.js";
import { freePort } from "../test/harness/ports.js";
import { makeTempDir, removeTempDir, spawnManaged, waitUntilReady, type ManagedProcess } from "../test/harness/process.js";
import { startRedis } from "../test/harness/tcp-server.js";
import type { BenchResult, Row } from "./report.js";

const HOSTS = 10_000;
/**
 * Extra hosts for the cache-miss row. The assigner keeps at most 100,000
 * serialized answers (CACHE_MAX in assigner/services.ts, evicted oldest
 * first); cycling over more hosts than that means every poll misses, which
 * is what the first poll after a fleet-wide rollout (every version bumped) costs.
 */
const COLD_HOSTS = 120_000;
const PER_HOST = 3;
const ARTIFACTS = 30;
/** Every host's version after its 3 assignments; the ETag is "v3". */
const VERSION = PER_HOST;
const CONNECTIONS = 100;
const DURATION_S = 10;
/** Long enough to JIT both sides and, for the assigner, pass every host once (fills its for-host cache, as steady polling does). */
const WARMUP_S = 3;
const PREFIX = "aegis";
const ADMIN_TOKEN = randomBytes(16).toString("hex");
const HEALTH_TIMEOUT_MS = 20_000;

const CLI = fileURLToPath(new URL("../dist/cli/aegis.cjs", import.meta.url));
const BARE_SERVER = fileURLToPath(new URL("./bare-server.ts", import.meta.url));

const hostId = (i: number) => `host-${String(i).padStart(5, "0")}`;
const coldHostId = (i: number) => `cold-${String(i).padStart(6, "0")}`;
const agentToken = (i: number) => `bench-agent-token-${i}`;
const sha256Hex = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");

function artifactRecord(i: number): ArtifactRecord {
  const id = `sha256:${sha256Hex(`manifest-${i}`)}`;
  return {
    id,
    reference: `127.0.0.1:5000/policies/bench-${i}@${id}`,
    name: `bench-policy-${i}`,
    version: "1.0.0",
    description: `benchmark policy ${i}: drop tcp to 10.0.${i}.0/24`,
    size: 4096 + i,
    layerDigest: `sha256:${sha256Hex(`layer-${i}`)}`,
    metadata: { policy_type: "xdp", target_ip: `10.0.${i}.0/24`, protocol: "tcp", direction: "ingress", rules: "1", program: "xdp_filter" },
    signature: randomBytes(64).toString("base64"),
    createdAt: new Date(0).toISOString(),
  };
}

/**
 * Writes the keys RedisStore reads (assigner/store/redis.ts) in one pipeline:
 * 30,000 assignment scripts would take far longer and measure nothing here.
 * Also stores one agent token per host, as registration would.
 */
async function populate(redisUrl: string): Promise<void> {
  const redis = new Redis(redisUrl);
  try {
    const records = Array.from({ length: ARTIFACTS }, (_, i) => artifactRecord(i));
    const exec = async (p: ReturnType<Redis["pipeline"]>) => {
      const failed = (await p.exec())?.find(([err]) => err !== null);
      if (failed) throw failed[0]!;
    };
    const p = redis.pipeline();
    for (const record of records) {
      p.set(`${PREFIX}:artifact:${record.id}`, JSON.stringify(record));
      p.sadd(`${PREFIX}:artifacts`, record.id);
    }
    await exec(p);
    const assign = (p: ReturnType<Redis["pipeline"]>, host: string, h: number) => {
      // Three distinct artifacts per host, spread evenly over the 30.
      const ids = [h, h + 7, h + 13].map((k) => records[k % ARTIFACTS]!.id);
      p.sadd(`${PREFIX}:{a}:host:${host}`, ...ids);
      p.set(`${PREFIX}:{a}:version:${host}`, String(VERSION));
      for (const id of ids) p.sadd(`${PREFIX}:{a}:hosts:${id}`, host);
    };
    // Chunks of 10,000 hosts keep each pipeline's queued replies small.
    for (let start = 0; start < HOSTS + COLD_HOSTS; start += 10_000) {
      const chunk = redis.pipeline();
      for (let h = start; h < Math.min(start + 10_000, HOSTS + COLD_HOSTS); h++) {
        if (h < HOSTS) {
          assign(chunk, hostId(h), h);
          chunk.set(`${PREFIX}:token:${sha256Hex(agentToken(h))}`, JSON.stringify({ agentUid: `agent-${h}`, hostId: hostId(h) }));
        } else {
          assign(chunk, coldHostId(h - HOSTS), h);
        }
      }
      await exec(chunk);
    }
  } finally {
    redis.disconnect();
  }
}

/** Node flags for the servers: a CPU profile per process when asked for. */
function nodeFlags(): string[] {
  const dir = process.env.AEGIS_BENCH_CPU_PROF;
  return dir ? ["--cpu-prof", `--cpu-prof-dir=${dir}`] : [];
}

/** Whether a server's /healthz answers OK yet. */
async function healthy(url: string): Promise<boolean> {
  return fetch(`${url}/healthz`).then((res) => res.ok, () => false);
}

interface Server {
  url: string;
  proc: ManagedProcess;
}

async function startAssigner(redisUrl: string, dataDir: string): Promise<Server> {
  const port = await freePort();
  const args = [...nodeFlags(), CLI, "assigner", "serve", "--port", String(port), "--host", "127.0.0.1"];
  args.push("--redis", redisUrl, "--admin-token", ADMIN_TOKEN, "--data-dir", dataDir);
  const proc = spawnManaged(process.execPath, args);
  const url = `http://127.0.0.1:${port}`;
  await waitUntilReady(proc, () => healthy(url), "assigner", HEALTH_TIMEOUT_MS);
  return { url, proc };
}

async function startBare(redisUrl: string): Promise<Server> {
  const port = await freePort();
  const proc = spawnManaged(process.execPath, [...nodeFlags(), "--import", "tsx", BARE_SERVER, String(port), redisUrl, PREFIX]);
  const url = `http://127.0.0.1:${port}`;
  await waitUntilReady(proc, () => healthy(url), "bare server", HEALTH_TIMEOUT_MS);
  return { url, proc };
}

/** Before timing anything: both servers give the same body for a few hosts, and the 304 works. */
async function checkAnswers(assigner: string, bare: string): Promise<void> {
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` };
  for (const h of [0, 1, 4_999, HOSTS - 1]) {
    const path = `/artifacts/for-host/${hostId(h)}`;
    const [a, b] = await Promise.all([fetch(assigner + path, { headers: auth }), fetch(bare + path)]);
    const [aBody, bBody] = await Promise.all([a.text(), b.text()]);
    if (a.status !== 200 || b.status !== 200) throw new Error(`${path}: assigner ${a.status}, bare ${b.status}: ${aBody} ${bBody}`);
    if (aBody !== bBody) throw new Error(`${path}: the bare server's body differs from the assigner's:\n${aBody}\n${bBody}`);
    const parsed = JSON.parse(aBody) as { total: number };
    if (parsed.total !== PER_HOST) throw new Error(`${path}: total ${parsed.total}, expected ${PER_HOST}`);
    if (a.headers.get("etag") !== `"v${VERSION}"`) throw new Error(`${path}: ETag ${a.headers.get("etag")}, expected "v${VERSION}"`);
    const agent = await fetch(assigner + path, { headers: { authorization: `Bearer ${agentToken(h)}` } });
    if (agent.status !== 200 || (await agent.text()) !== aBody) throw new Error(`${path}: agent token got ${agent.status}`);
    const cached = await fetch(assigner + path, { headers: { ...auth, "if-none-match": `"v${VERSION}"` } });
    if (cached.status !== 304) throw new Error(`${path} with If-None-Match: ${cached.status}, expected 304`);
  }
}

/**
 * One request definition whose path (and headers) move to the next host on
 * every send, through a counter shared by all connections: the load covers
 * all 10,000 hosts in turn instead of repeating a few.
 */
function rotatingRequest({ hosts, host, headersFor }: Target): Request[] {
  let next = 0;
  return [
    {
      method: "GET",
      setupRequest: (request) => {
        const i = next++ % hosts;
        return { ...request, path: `/artifacts/for-host/${host(i)}`, headers: headersFor(i) };
      },
    },
  ];
}

/** CPU seconds (user + system) a process has used so far, from /proc (Linux). */
function cpuSeconds(pid: number): number {
  // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ is 100 on Linux
}

/** redis-server's pid, so its CPU share can be shown next to the servers'. */
async function redisPid(redisUrl: string): Promise<number> {
  const redis = new Redis(redisUrl);
  try {
    const info = await redis.info("server");
    return Number(/^process_id:(\d+)/m.exec(info)![1]);
  } finally {
    redis.disconnect();
  }
}

interface Target {
  name: string;
  server: Server;
  expectedStatus: number;
  /** How many hosts the load cycles over, and the i-th one's id. */
  hosts: number;
  host: (i: number) => string;
  headersFor: (i: number) => Record<string, string>;
}

/**
 * Warm-up, then the measured run. CPU shares are shown because all three
 * processes (server, redis-server, this load generator) share the machine's
 * cores: on 2 cores they add up to ~200 % and that, not the server, is the limit.
 */
async function load(target: Target, redis: number): Promise<Row> {
  const { name, server, expectedStatus } = target;
  const options = { url: server.url, connections: CONNECTIONS, pipelining: 1, timeout: 10 };
  await autocannon({ ...options, duration: WARMUP_S, requests: rotatingRequest(target) });
  const pid = server.proc.child.pid!;
  const serverCpu0 = cpuSeconds(pid);
  const redisCpu0 = cpuSeconds(redis);
  const benchCpu0 = process.cpuUsage();
  const result: Result = await autocannon({ ...options, duration: DURATION_S, requests: rotatingRequest(target) });
  const serverCpu = cpuSeconds(pid) - serverCpu0;
  const redisCpu = cpuSeconds(redis) - redisCpu0;
  const benchCpu = process.cpuUsage(benchCpu0);
  const statuses = Object.entries(result.statusCodeStats);
  const unexpected = statuses.filter(([status]) => Number(status) !== expectedStatus).reduce((sum, [, s]) => sum + s.count, 0);
  return {
    target: name,
    requests_per_s: Math.round(result.requests.average),
    p50_ms: result.latency.p50,
    p99_ms: result.latency.p99,
    // autocannon counts every non-2xx (so also each expected 304) in non2xx:
    // errors here are connection errors and timeouts plus any status but the expected one.
    errors: result.errors + unexpected,
    statuses: statuses.map(([status, s]) => `${status}:${s.count}`).join(" "),
    server_cpu_pct: Math.round((serverCpu / result.duration) * 100),
    // Answers per CPU-second of the server process: its efficiency, which
    // stays comparable when other work on the machine takes cores away.
    req_per_server_cpu_s: Math.round(result.requests.total / serverCpu),
    redis_cpu_pct: Math.round((redisCpu / result.duration) * 100),
    loadgen_cpu_pct: Math.round(((benchCpu.user + benchCpu.system) / 1e6 / result.duration) * 100),
  };
}

export default async function assignerBench(): Promise<BenchResult> {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first (the bench spawns the compiled CLI)`);
  const redis = await startRedis();
  const dataDir = makeTempDir("aegis-bench-assigner-");
  const servers: Server[] = [];
  const rows: Row[] = [];
  try {
    await populate(redis.url);
    const assigner = await startAssigner(redis.url, dataDir);
    servers.push(assigner);
    const bare = await startBare(redis.url);
    servers.push(bare);
    await checkAnswers(assigner.url, bare.url);

    const pid = await redisPid(redis.url);
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const notModified = { ...admin, "if-none-match": `"v${VERSION}"` };
    const hot = { hosts: HOSTS, host: hostId };
    const targets: Target[] = [
      { name: "assigner, cached", server: assigner, expectedStatus: 200, ...hot, headersFor: () => admin },
      { name: "bare node:http + Redis", server: bare, expectedStatus: 200, ...hot, headersFor: () => ({}) },
      { name: "assigner 304", server: assigner, expectedStatus: 304, ...hot, headersFor: () => notModified },
      // As real agents poll: a token per host (cached per process), last-seen written once a minute.
      { name: "assigner, agent tokens", server: assigner, expectedStatus: 200, ...hot, headersFor: (i) => ({ authorization: `Bearer ${agentToken(i)}` }) },
      // Every answer built afresh: version GET, MULTI(SMEMBERS, GET), MGET — vs. the bare server's SMEMBERS + MGET.
      // Run last, so the cold hosts it caches crowd nothing out of the rows before it.
      { name: "assigner, cache miss", server: assigner, expectedStatus: 200, hosts: COLD_HOSTS, host: coldHostId, headersFor: () => admin },
    ];
    for (const target of targets) rows.push(await load(target, pid));
    // Shown as the second headline, beside the cached row.
    rows.splice(1, 0, ...rows.splice(rows.length - 1, 1));
  } finally {
    // One at a time, each awaited: the profiles (if any) are written on exit.
    for (const server of servers) await server.proc.stop();
    await redis.stop();
    await removeTempDir(dataDir);
  }
  const row = (name: string) => rows.find((r) => r.target === name)!;
  const [ours, miss, ceiling] = [row("assigner, cached"), row("assigner, cache miss"), row("bare node:http + Redis")];
  const perCpu = (r: Row) => Number(r.req_per_server_cpu_s);
  return {
    name: "assigner",
    rows,
    ratio: Number(ours.requests_per_s) / Number(ceiling.requests_per_s),
    ratioOf: "assigner req/s (for-host cache hit) / bare node:http + same Redis reads req/s, GET /artifacts/for-host",
    headlines: [
      {
        ratio: Number(miss.requests_per_s) / Number(ceiling.requests_per_s),
        ratioOf: "assigner req/s, every poll a cache miss / bare node:http + same Redis reads req/s",
      },
    ],
    cpuEfficiencyRatio: perCpu(ours) / perCpu(ceiling),
    cacheMissCpuEfficiencyRatio: perCpu(miss) / perCpu(ceiling),
    hosts: HOSTS,
    coldHosts: COLD_HOSTS,
    assignmentsPerHost: PER_HOST,
    connections: CONNECTIONS,
    pipelining: 1,
    durationSeconds: DURATION_S,
    warmupSeconds: WARMUP_S,
    cpus: availableParallelism(),
  };
}
