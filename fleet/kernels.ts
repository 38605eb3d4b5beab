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

/** What the check may be given instead of asking the assigner. */
export interface KnownFacts {
  /** The agents, when already listed. */
  agents?: readonly z.infer<typeof AgentJson>[];
  /**
   * Programs by digest, from the manifests' annotations, for digests the
   * assigner does not know yet (a dry run registers nothing). A digest in
   * neither (pushed without annotations, and not registered) is not checked.
   */
  programs?: ReadonlyMap<string, string>;
}

/**
 * Refuses (CONFLICT) `adds` that a host's reported kernel cannot run, as the
 * assigner would. Reads the artifacts' programs from the assigner (one
 * listing) and the agents (another), unless `known` has them.
 */
export async function refuseUnrunnable(client: AssignerClient, adds: readonly HostAdd[], known: KnownFacts = {}): Promise<void> {
  if (adds.length === 0) return;
  const registered = new Map((await client.artifacts()).artifacts.map((a) => [a.id, a.metadata.program]));
  const programOf = (id: string) => registered.get(id) ?? known.programs?.get(id);
  if (![...new Set(adds.map((a) => a.artifactId))].some(programOf)) return;
  const byHost = new Map((known.agents ?? (await client.hosts()).agents).map((a) => [a.host_id, a]));
  const refused = unrunnable(adds, programOf, (hostId) => {
    const agent = byHost.get(hostId);
    return agent && { ...(agent.capabilities ? { capabilities: featuresOf(agent.capabilities) } : {}), ...(agent.kernel ? { kernel: agent.kernel } : {}) };
  });
  if (refused.length > 0) throw unrunnableError(refused, "--force");
}
