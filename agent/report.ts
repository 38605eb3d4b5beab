// Where the agent's steps go: the operator's log (one line per step, with
// digest and policy name) and the assigner (TelemetryMessage on
// aegis.telemetry.<host_id>). A Reporter is the seam where signed in-force
// receipts and the HTTP telemetry route (no NATS) will plug in.
import type { TelemetryMessage } from "../assigner/api/index.js";

export type StepEvent = TelemetryMessage["event"];

/** One step of the agent, as reported. */
export interface StepReport {
  event: StepEvent;
  id: string;
  /** Policy name and version, when known. */
  name?: string;
  version?: string;
  /** Why it failed (message), or what happened (interfaces, source). */
  reason?: string;
  /** The stable error code of a failure. */
  code?: string;
  counters?: Record<string, number>;
}

export interface Reporter {
  report(step: StepReport): void;
}

/** The wire shape of a step: a failure's reason starts with its code, so the assigner's status shows it. */
export function telemetryMessage(hostId: string, step: StepReport, now = new Date()): TelemetryMessage {
  const reason = step.event === "failed" ? `${step.code ?? "INTERNAL"}: ${step.reason ?? ""}` : step.reason;
  return {
    host_id: hostId,
    artifact_id: step.id,
    event: step.event,
    ...(reason ? { reason: reason.slice(0, 2048) } : {}),
    ...(step.counters ? { counters: step.counters } : {}),
    time: now.toISOString(),
  };
}

/** The operator's line for a step. */
export function logLine(step: StepReport): string {
  const what = step.name ? `${step.name}${step.version ? ` ${step.version}` : ""} ${step.id}` : step.id;
  const code = step.code ? ` [${step.code}]` : "";
  return `${step.event} ${what}${code}${step.reason ? `: ${step.reason}` : ""}`;
}
