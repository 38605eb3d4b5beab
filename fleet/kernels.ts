// The kernel check before a fleet change (README "GitOps"): a program added
// to a host whose agent reported a kernel that cannot run it is refused,
// naming each such host, before anything is changed. The assigner refuses
// the same in each POST /assignments, but a plan of more than one request
// would be left half made by a refusal in a later one, and a rollout's
// hosts get the new digests step by step: refused only at its final step
// (hosts not staged), it would roll back rings that passed.
import type { z } from "zod";
import { featuresOf, unrunnable, unrunnableError, type AgentJson, type AssignerClient } from "../assigner/api/index.js";

/** Each addition of a digest to a host: `hostId` gets `artifactId`. */
export interface HostAdd {
  artifactId: string;
  hostId: string;
}

/**
 * Refuses (CONFLICT) `adds` that a host's reported kernel cannot run, as the
 * assigner would; `agents` when already listed (else asked for). Reads the
 * artifacts' programs from the assigner (one listing).
 */
export async function refuseUnrunnable(client: AssignerClient, adds: readonly HostAdd[], agents?: readonly z.infer<typeof AgentJson>[]): Promise<void> {
  if (adds.length === 0) return;
  const programs = new Map((await client.artifacts()).artifacts.map((a) => [a.id, a.metadata.program]));
  if (![...new Set(adds.map((a) => a.artifactId))].some((id) => programs.get(id))) return;
  const byHost = new Map((agents ?? (await client.hosts()).agents).map((a) => [a.host_id, a]));
  const refused = unrunnable(adds, (id) => programs.get(id), (hostId) => {
    const agent = byHost.get(hostId);
    return agent && { ...(agent.capabilities ? { capabilities: featuresOf(agent.capabilities) } : {}), ...(agent.kernel ? { kernel: agent.kernel } : {}) };
  });
  if (refused.length > 0) throw unrunnableError(refused, "--force");
}
