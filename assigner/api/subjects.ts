// The NATS subjects of the assigner's contract (docs/architecture.md "The data path"): the
// assigner publishes an AssignmentNotice on aegis.assignments.<host_id> when a
// host's set changes; agents publish a SignedTelemetry on
// aegis.telemetry.<host_id>. Both shapes are in schemas.ts.
export const assignmentsSubject = (hostId: string) => `aegis.assignments.${hostId}`;
const TELEMETRY_PREFIX = "aegis.telemetry.";
export const telemetrySubject = (hostId: string) => `${TELEMETRY_PREFIX}${hostId}`;

/** The host a telemetry subject names: the messages on it must be signed by that host's agent. */
export const telemetrySubjectHost = (subject: string): string | undefined => (subject.startsWith(TELEMETRY_PREFIX) ? subject.slice(TELEMETRY_PREFIX.length) : undefined);

/** What the assigner subscribes to: every host's telemetry. */
export const TELEMETRY_SUBJECTS = "aegis.telemetry.>";
