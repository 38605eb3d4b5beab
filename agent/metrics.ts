// The agent's Prometheus metrics on --metrics-port (127.0.0.1 by default):
// policies in force, drops per policy, failures by code, the last successful
// poll. Policies and drops are read from the pins at scrape time (as
// `aegis agent status` reads them). A few lines of text exposition instead
// of prom-client, which stays off the agent's load path.
// https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { StatusRow } from "./status.js";
import { byCodeUnit } from "../util/index.js";

export class AgentMetrics {
  private readonly failures = new Map<string, number>();
  private lastPoll: number | undefined;
  /** The read of the pins under way: scrapes that arrive together share it (on the bpftool datapath each is a scan by tc and bpftool). */
  private reading: Promise<StatusRow[]> | undefined;

  /** `programs`: what is pinned now (status.ts's collectStatus); a failure to read it shows nothing in force. */
  constructor(private readonly programs: () => Promise<StatusRow[]>) {}

  failed(code: string): void {
    this.failures.set(code, (this.failures.get(code) ?? 0) + 1);
  }

  polled(time = Date.now()): void {
    this.lastPoll = time;
  }

  /** The text exposition format, version 0.0.4. */
  async text(): Promise<string> {
    this.reading ??= this.programs()
      .catch(() => [])
      .finally(() => (this.reading = undefined));
    const inForce = (await this.reading).filter((p) => p.pinned && p.interfaces.length > 0);
    const lines = [
      "# HELP aegis_agent_policies_in_force Programs pinned and attached on at least one interface.",
      "# TYPE aegis_agent_policies_in_force gauge",
      `aegis_agent_policies_in_force ${inForce.length}`,
      "# HELP aegis_agent_drops_total Packets dropped by each installed policy (sum of its drop rules' counters; allow rules' matches are not drops).",
      "# TYPE aegis_agent_drops_total counter",
      ...inForce.map((p) => `aegis_agent_drops_total{policy="${escape(p.name)}",version="${escape(p.version)}",digest="${escape(p.id)}"} ${p.drops ?? 0}`),
      "# HELP aegis_agent_failures_total Failed steps (fetch, verify, load, attach) by error code.",
      "# TYPE aegis_agent_failures_total counter",
      ...[...this.failures].sort(([a], [b]) => byCodeUnit(a, b)).map(([code, n]) => `aegis_agent_failures_total{code="${escape(code)}"} ${n}`),
      "# HELP aegis_agent_last_successful_poll_timestamp_seconds When a pass last finished: the assigner answered the agent's poll and every step was tried.",
      "# TYPE aegis_agent_last_successful_poll_timestamp_seconds gauge",
      `aegis_agent_last_successful_poll_timestamp_seconds ${this.lastPoll === undefined ? 0 : this.lastPoll / 1000}`,
    ];
    return `${lines.join("\n")}\n`;
  }
}

function escape(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/**
 * Serves GET /metrics on host:port (port 0: any free one); resolves once
 * listening. A scrape the kernel's read holds past `scrapeTimeoutMs`
 * (default 10 s: tc or bpftool stuck) is answered 503, not left hanging.
 */
export async function serveMetrics(metrics: AgentMetrics, port: number, host = "127.0.0.1", scrapeTimeoutMs = 10_000): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    if (req.method !== "GET" || req.url?.split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: GET /metrics\n");
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => (timer = setTimeout(resolve, scrapeTimeoutMs, undefined)));
    void Promise.race([metrics.text(), late]).then((text) => {
      clearTimeout(timer);
      if (text === undefined) res.writeHead(503, { "content-type": "text/plain" }).end(`reading the kernel took over ${scrapeTimeoutMs} ms\n`);
      else res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(text);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return { server, url: `http://${host.includes(":") ? `[${host}]` : host}:${address.port}/metrics` };
}
