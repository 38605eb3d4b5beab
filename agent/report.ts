// Where the agent's steps go: the operator's log (one line per step, with
// digest and policy name) and the assigner: a TelemetryMessage, signed with
// the agent's key (sealTelemetry), on aegis.telemetry.<host_id> or, without
// NATS, POST /agents/{uid}/telemetry (README "The agent", message format).
import { RECEIPT_COUNTERS_MAX, TELEMETRY_PAYLOAD_TYPE, type InForceReceipt, type TelemetryMessage } from "../assigner/api/index.js";
import { dropCounters } from "./state.js";

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
  /** An `attached` step's proof: program id, hooks, since. Only a step with one goes to the assigner as `attached`. */
  receipt?: InForceReceipt;
}

export interface Reporter {
  report(step: StepReport): void;
}

/** The payload of a step, to be signed: `seq` must grow with every message the agent sends. */
export function telemetryMessage(hostId: string, step: StepReport, seq: number, now = new Date()): TelemetryMessage {
  return {
    type: TELEMETRY_PAYLOAD_TYPE,
    host_id: hostId,
    artifact_id: step.id,
    event: step.event,
    ...(step.code ? { code: step.code.slice(0, 64) } : {}),
    ...(step.reason ? { reason: step.reason.slice(0, 2048) } : {}),
    ...(step.counters ? { counters: step.counters } : {}),
    ...(step.receipt ? { receipt: step.receipt } : {}),
    time: now.toISOString(),
    seq,
  };
}

/** rule<i> → drops of every drop rule (`allows` left out); past RECEIPT_COUNTERS_MAX rules, of the rules that dropped the most. */
export function receiptCounters(counters: number[], allows: readonly number[] = []): Record<string, number> {
  let listed = dropCounters(counters, allows);
  if (listed.length > RECEIPT_COUNTERS_MAX) listed = listed.filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, RECEIPT_COUNTERS_MAX).sort((a, b) => a[0] - b[0]);
  return Object.fromEntries(listed.map(([i, n]) => [`rule${i}`, n]));
}

/** The operator's line for a step. */
export function logLine(step: StepReport): string {
  const what = step.name ? `${step.name}${step.version ? ` ${step.version}` : ""} ${step.id}` : step.id;
  const code = step.code ? ` [${step.code}]` : "";
  return `${step.event} ${what}${code}${step.reason ? `: ${step.reason}` : ""}`;
}
