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

  /**
   * The text exposition format, version 0.0.4. A read of the pins that
   * takes over `readMs` (tc or bpftool stuck; default 8 s, within
   * Prometheus's 10 s scrape timeout) leaves policies and drops out of this
   * answer, says so in aegis_agent_pins_read, and still gives the rest (the
   * last poll, whose going stale is the alert to have).
   */
  async text(readMs = 8_000): Promise<string> {
    this.reading ??= this.programs()
      .catch(() => [])
      .finally(() => (this.reading = undefined));
    let timer: NodeJS.Timeout | undefined;
    const rows = await Promise.race([this.reading, new Promise<undefined>((resolve) => (timer = setTimeout(resolve, readMs, undefined)))]);
    clearTimeout(timer);
    const inForce = rows?.filter((p) => p.pinned && p.interfaces.length > 0);
    const lines = [
      "# HELP aegis_agent_pins_read Whether this scrape read the pins in time (0: policies in force and drops are left out).",
      "# TYPE aegis_agent_pins_read gauge",
      `aegis_agent_pins_read ${inForce ? 1 : 0}`,
      ...(inForce
        ? [
            "# HELP aegis_agent_policies_in_force Programs pinned and attached on at least one interface.",
            "# TYPE aegis_agent_policies_in_force gauge",
            `aegis_agent_policies_in_force ${inForce.length}`,
            "# HELP aegis_agent_drops_total Packets dropped by each installed policy (sum of its drop rules' counters; allow rules' matches are not drops).",
            "# TYPE aegis_agent_drops_total counter",
            ...inForce.map((p) => `aegis_agent_drops_total{policy="${escape(p.name)}",version="${escape(p.version)}",digest="${escape(p.id)}"} ${p.drops ?? 0}`),
          ]
        : []),
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

/** Serves GET /metrics on host:port (port 0: any free one); resolves once listening. `readMs`: AgentMetrics.text()'s. */
export async function serveMetrics(metrics: AgentMetrics, port: number, host = "127.0.0.1", readMs?: number): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    if (req.method !== "GET" || req.url?.split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: GET /metrics\n");
      return;
    }
    void metrics.text(readMs).then((text) => res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(text));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  return { server, url: `http://${host.includes(":") ? `[${host}]` : host}:${address.port}/metrics` };
}
