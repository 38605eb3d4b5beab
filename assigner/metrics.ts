// Prometheus metrics at /metrics.
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class AssignerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: "aegis_http_requests_total",
    help: "HTTP requests by route and status",
    labelNames: ["method", "route", "status"] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: "aegis_http_request_duration_seconds",
    help: "HTTP request latency by route",
    labelNames: ["route"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly assignmentChanges = new Counter({
    name: "aegis_assignment_changes_total",
    help: "Assignments added or removed",
    labelNames: ["op"] as const,
    registers: [this.registry],
  });
  readonly telemetry = new Counter({
    name: "aegis_telemetry_messages_total",
    help: "Telemetry messages received over NATS or HTTP, by result: recorded, invalid (malformed, unsigned or mis-signed, for another host, stale, replayed), or dropped (unregistered host, unknown artifact, or a NATS message the store could not take)",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "aegis_" });
  }

  /** Times one request; call the returned function with the status when it ends. */
  observe(method: string, route: string): (status: number) => void {
    const end = this.duration.startTimer({ route });
    return (status) => {
      end();
      this.requests.inc({ method, route, status: String(status) });
    };
  }
}
