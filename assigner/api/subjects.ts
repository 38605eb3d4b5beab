// The NATS subjects of the assigner's contract (DESIGN.md "NATS"): the
// assigner publishes an AssignmentNotice on aegis.assignments.<host_id> when a
// host's set changes; agents publish a TelemetryMessage on
// aegis.telemetry.<host_id>. Both shapes are in schemas.ts.
export const assignmentsSubject = (hostId: string) => `aegis.assignments.${hostId}`;
export const telemetrySubject = (hostId: string) => `aegis.telemetry.${hostId}`;

/** What the assigner subscribes to: every host's telemetry. */
export const TELEMETRY_SUBJECTS = "aegis.telemetry.>";
