// The assigner logs like a service (issue 11): a real `aegis assigner serve`
// process with Redis, NATS and registry 2.8.2 (behind a proxy that can refuse
// everything) writes one JSON line per request (method, route template,
// status, duration, kind of caller) and never a token; when Redis, NATS or
// the registry goes away it warns once, and says once when it is back.
import { generateKeyPairSync } from "node:crypto";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../assigner/logging.js";
import { aegis, expectOneErrorLine } from "../cli/run.js";
import { startAssignerProcess, type AssignerProcess } from "../harness/assigner-process.js";
import { beginRegistration, http } from "../harness/assigner-http.js";
import { startRegistryProxy, type RegistryProxy } from "../harness/proxy.js";
import { startRegistry, type RegistryServer } from "../harness/registry.js";
import { startNats, startRedis, type TcpServer } from "../harness/tcp-server.js";

const TOKEN = "log-test-operator-token-5f2c";
const ENROLL = "log-test-enroll-secret-9a1d";
let redis: TcpServer;
let nats: TcpServer;
let registry: RegistryServer;
let proxy: RegistryProxy;
let assigner: AssignerProcess;

type Line = Record<string, unknown> & { level: string; msg: string };

/** Every whole line the process wrote so far; each must be JSON (stdout is a pipe, not a terminal). */
function lines(proc: AssignerProcess): Line[] {
  const output = proc.process.output();
  // The log is written asynchronously: a line still on its way is left for the next look.
  return output
    .slice(0, output.lastIndexOf("\n") + 1)
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      try {
        return JSON.parse(line) as Line;
      } catch {
        throw new Error(`a log line that is not JSON: ${line}`);
      }
    });
}

/** Polls the log until `match` finds a line (bounded), and returns it. */
async function waitForLine(proc: AssignerProcess, what: string, match: (line: Line) => boolean): Promise<Line> {
  for (let i = 0; i < 300; i++) {
    const found = lines(proc).find(match);
    if (found) return found;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no log line for ${what} in:\n${proc.process.output()}`);
}

const change = (dependency: string, level: "warn" | "info") => (line: Line) => line.dependency === dependency && line.level === level && /is (unavailable|back)$/.test(line.msg);

beforeAll(async () => {
  [redis, nats, registry] = await Promise.all([startRedis(), startNats(), startRegistry()]);
  proxy = await startRegistryProxy(registry.url);
  assigner = await startAssignerProcess([
    "--redis", redis.url, "--nats", nats.url, "--registry", `${proxy.host}/uploads`,
    "--admin-token", TOKEN, "--enroll-secret", ENROLL, "--health-interval", "0.1",
  ]);
});
afterAll(async () => {
  await assigner?.stop();
  await proxy?.stop();
  await Promise.all([redis?.stop(), nats?.stop(), registry?.stop()]);
});

describe("request lines", () => {
  it("one JSON line per request: method, route template, status, duration, principal kind; no token anywhere", async () => {
    const keys = generateKeyPairSync("ed25519");
    await http(assigner.url, "GET", "/healthz");
    await http(assigner.url, "GET", "/agents", { token: TOKEN });
    await http(assigner.url, "GET", "/agents", { token: "a-wrong-token-3e7" });
    const registration = await beginRegistration(assigner.url, "log-host", keys, { enroll_secret: ENROLL });
    const completed = await registration.complete();
    const agentToken = completed.json.token as string;
    expect(agentToken, JSON.stringify(completed.json)).toBeTruthy();
    expect((await http(assigner.url, "GET", "/artifacts/for-host/log-host", { token: agentToken })).status).toBe(200);
    await http(assigner.url, "GET", "/no/such/route");

    const expected = [
      { method: "GET", route: "/healthz", status: 200, principal: "anonymous" },
      { method: "GET", route: "/agents", status: 200, principal: "admin" },
      { method: "GET", route: "/agents", status: 401, principal: "anonymous" },
      { method: "POST", route: "/agents/register/init", status: 200, principal: "anonymous" },
      { method: "POST", route: "/agents/register/complete", status: 200, principal: "anonymous" },
      { method: "GET", route: "/artifacts/for-host/{host_id}", status: 200, principal: "agent" },
      { method: "GET", route: "unmatched", status: 404, principal: "anonymous" },
    ];
    await waitForLine(assigner, "the last request", (line) => line.route === "unmatched");
    const requests = lines(assigner).filter((line) => line.msg === "request");
    for (const want of expected) {
      const found = requests.find((line) => Object.entries(want).every(([k, v]) => line[k] === v));
      expect(found, `a request line ${JSON.stringify(want)} in:\n${JSON.stringify(requests, null, 1)}`).toBeDefined();
      expect(found!.level).toBe("info");
      expect(typeof found!.duration_ms, "duration_ms is a number").toBe("number");
      expect(found!.time, "an ISO time").toMatch(/^\d{4}-\d\d-\d\dT/);
    }
    const text = assigner.process.output();
    for (const secret of [TOKEN, "a-wrong-token-3e7", agentToken, ENROLL]) expect(text.includes(secret), `a secret in the log: ${secret.slice(0, 12)}…`).toBe(false);
    expect(text).not.toMatch(/authorization|bearer/i);
  });
});

describe("dependencies going away and coming back", () => {
  it("warns once when Redis, NATS or the registry goes away, and says once when each is back", async () => {
    await waitForLine(assigner, "start-up", (line) => /listening on/.test(line.msg));
    await redis.kill();
    const redisDown = await waitForLine(assigner, "redis unavailable", change("store", "warn"));
    expect(redisDown.msg).toBe(`redis ${redis.host} is unavailable`);
    // A second assigner started while Redis is away says so once, at start-up.
    const late = await startAssignerProcess(["--redis", redis.url, "--admin-token", TOKEN, "--enroll-secret", ENROLL, "--health-interval", "0.1"]);
    await waitForLine(late, "redis unavailable at start-up", (line) => line.dependency === "store" && line.level === "warn");
    await nats.kill();
    const natsDown = await waitForLine(assigner, "nats unavailable", change("nats", "warn"));
    expect(natsDown.msg).toBe(`nats ${nats.host} is unavailable`);
    proxy.set({ throttle: { status: 503, times: 1_000_000 } });
    await waitForLine(assigner, "registry unavailable", change("registry", "warn"));
    await redis.start();
    await waitForLine(assigner, "redis back", change("store", "info"));
    await waitForLine(late, "redis back, at the late assigner", change("store", "info"));
    await late.stop();
    expect(lines(late).filter((line) => line.dependency === "store" && line.level === "warn"), "the late assigner's warnings about redis").toHaveLength(1);
    await nats.start();
    await waitForLine(assigner, "nats back", change("nats", "info"));
    proxy.set({ throttle: { status: 503, times: 0 } });
    const registryBack = await waitForLine(assigner, "registry back", change("registry", "info"));
    expect(registryBack.msg).toBe(`registry ${proxy.host}/uploads is back`);
    // Many checks ran (every 100 ms) while the others went down and came back: one line per change each.
    for (const dependency of ["store", "nats", "registry"]) {
      for (const level of ["warn", "info"] as const) {
        expect(lines(assigner).filter(change(dependency, level)), `${dependency} ${level} lines`).toHaveLength(1);
      }
    }
  });
});

describe("--log-level and the terminal form", () => {
  it("--log-level warn leaves out the request lines; an unknown level is one error line", async () => {
    const quiet = await startAssignerProcess(["--admin-token", TOKEN, "--log-level", "warn"]);
    try {
      await http(quiet.url, "GET", "/agents", { token: TOKEN });
      // The enroll-secret warning is there, so the log works; no request line, though /healthz and /agents were asked.
      await waitForLine(quiet, "the warning", (line) => line.level === "warn");
      expect(lines(quiet).filter((line) => line.msg === "request")).toEqual([]);
    } finally {
      await quiet.stop();
    }
    expect(expectOneErrorLine(await aegis(["assigner", "serve", "--log-level", "loud", "--port", "0"]))).toMatch(/--log-level loud is not one of fatal, error, warn, info/);
  });

  it("on a terminal a line is short and readable, not JSON", () => {
    let text = "";
    const tty = Object.assign(
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          text += chunk.toString();
          done();
        },
      }),
      { isTTY: true },
    );
    const logger = createLogger({ stream: tty });
    logger.info({ method: "GET", route: "/agents", status: 200, duration_ms: 1.5, principal: "admin" }, "request");
    logger.warn({ dependency: "store", endpoint: "redis 127.0.0.1:6379" }, "redis 127.0.0.1:6379 is unavailable");
    const [request, warning] = text.trimEnd().split("\n");
    expect(request).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}GET \/agents 200 1\.5ms admin$/);
    expect(warning).toMatch(/^\d\d:\d\d:\d\d\.\d{3} WARN {2}redis 127\.0\.0\.1:6379 is unavailable {2}dependency=store endpoint=redis 127\.0\.0\.1:6379$/);
  });
});

// Last: its hundred request lines would push the earlier tests' lines out of the output kept.
describe("/healthz", () => {
  it("asks the registry at most once a second, however many callers ask it", async () => {
    const probes = () => proxy.requests.filter((r) => r.path.endsWith("/manifests/aegis-healthz-probe")).length;
    const before = probes();
    const started = Date.now();
    for (let round = 0; round < 5; round++) {
      const answers = await Promise.all(Array.from({ length: 20 }, () => http(assigner.url, "GET", "/healthz")));
      expect(answers.map((a) => a.json.registry), `round ${round}: the registry's state`).toEqual(Array(20).fill("ok"));
    }
    // The health watcher (every 100 ms here) shares the same probe: one per started second, plus one.
    const seconds = Math.ceil((Date.now() - started) / 1000);
    expect(probes() - before, `registry probes for 100 calls in ${seconds} s`).toBeLessThanOrEqual(seconds + 1);
  });
});
