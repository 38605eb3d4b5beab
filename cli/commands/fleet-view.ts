// What the operator asks the assigner about the fleet: `aegis artifact add`,
// `aegis artifacts`, `aegis hosts` and `aegis status <digest>`. Each prints a
// table with a header, or the data with --json, and talks to the assigner only
// through its typed client (assigner/api), loaded when the command runs.
import { resolve } from "node:path";
import type { Command } from "commander";
import type { z } from "zod";
import type { AgentDetailJson, AssignerClient, StatusJson } from "../../assigner/api/index.js";
import { errorCode, InputError } from "../../errors.js";
import { repositoryOptions } from "../options.js";
import { report, table } from "../output.js";
import { startProgress } from "../progress.js";
import { client, withClientOptions, type ClientOptions } from "./assigner.js";

type AgentDetail = z.infer<typeof AgentDetailJson>;
type Status = z.infer<typeof StatusJson>;

/** Agents read at once: enough to be quick, few enough not to crowd the assigner. */
const CONCURRENCY = 8;

/** The fleet as read: each agent's detail, and how many listed agents were gone by the time they were read. */
interface Fleet {
  agents: AgentDetail[];
  skipped: number;
}

/**
 * Every registered host with its assignments and latest status, one
 * GET /agents/{uid} per host, CONCURRENCY at a time, with progress on a
 * terminal. Hosts assigned to but not yet registered have no agent and are
 * not listed. An agent deleted, or registered again (a new uid), between
 * the list and its own read is a 404: it is left out and counted, not the
 * end of the command, which reads a fleet that changes while it runs.
 */
async function readFleet(assigner: AssignerClient, options: ClientOptions): Promise<Fleet> {
  const agents = (await assigner.hosts()).agents.sort((a, b) => a.host_id.localeCompare(b.host_id));
  const details: (AgentDetail | undefined)[] = new Array(agents.length);
  const progress = startProgress("reading hosts", { ...options, unit: "items" });
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < agents.length) {
      const i = next++;
      details[i] = await assigner.agent(agents[i]!.uid).catch((err: unknown) => {
        if (errorCode(err) === "NOT_FOUND") return undefined;
        throw err;
      });
      progress.onProgress(++done, agents.length);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, agents.length) }, worker));
  progress.finish();
  const read = details.filter((d): d is AgentDetail => d !== undefined);
  const skipped = agents.length - read.length;
  if (skipped > 0 && !options.json) {
    process.stderr.write(`aegis: ${skipped} host${skipped === 1 ? " was" : "s were"} left out: deleted or registered again while this ran; run it again to see ${skipped === 1 ? "it" : "them"} as ${skipped === 1 ? "it is" : "they are"} now\n`);
  }
  return { agents: read, skipped };
}

/** What a host's latest report about an artifact says, in a few words. */
function describeStatus(status: Status | undefined): string {
  if (!status) return "no report yet";
  if (status.event === "failed") return `${status.code ? `[${status.code}] ` : ""}${status.reason ?? "failed"}`;
  if (status.program_id !== undefined) {
    const hooks = (status.interfaces ?? []).map((i) => `${i.iface}/${i.direction}`).join(",");
    const drops = status.counters ? `, drops ${Object.entries(status.counters).map(([rule, n]) => `${rule}=${n}`).join(" ")}` : "";
    return `program ${status.program_id} on ${hooks} since ${status.since}${drops}`;
  }
  return status.reason ?? "";
}

const labelsText = (labels: Record<string, string> | undefined) =>
  Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",") || "-";

export function registerFleetView(program: Command): void {
  const artifact = program.command("artifact").description("artifacts registered with the assigner");
  withClientOptions(
    artifact
      .command("add")
      .description("register an artifact with the assigner, by digest; prints the digest")
      .argument("<ref>", "host[:port]/repo@sha256:…, or oci:<dir>@sha256:… on the assigner's machine (a tag is refused, with the digest it resolves to, unless --resolve)")
      .option("--resolve", "resolve a tag to its digest here and register that digest")
      .option("--plain-http", "use http:// for a non-loopback registry when resolving a tag"),
  ).action(async (refText: string, options: ClientOptions & { resolve?: boolean; plainHttp?: boolean }) => {
    const { formatReference, openReference } = await import("../../registry/index.js");
    const opened = openReference(refText, repositoryOptions(options));
    // An OCI layout is read by the assigner from its own file system: name it by an absolute path.
    if (opened.ref.kind === "layout") opened.ref = { ...opened.ref, dir: resolve(opened.ref.dir) };
    let digest = opened.ref.digest;
    if (!digest) {
      if (!opened.ref.tag) throw new InputError("INVALID_REFERENCE", `${refText} names no digest`);
      // A tag can move: only a digest is registered, and resolving one is asked for explicitly.
      digest = (await opened.target.resolve(opened.ref.tag)).digest;
      if (!options.resolve) {
        throw new InputError("INVALID_REFERENCE", `${refText} is a tag, and tags move: it resolves to ${formatReference(opened.ref, digest)} now; register that, or pass --resolve`);
      }
    }
    const registered = await (await client(options)).registerArtifact(formatReference(opened.ref, digest));
    report(options, registered.id, registered);
  });

  withClientOptions(program.command("artifacts").description("list the artifacts registered with the assigner")).action(async (options: ClientOptions) => {
    const result = await (await client(options)).artifacts();
    const rows = result.artifacts.map((a) => [a.id, a.name, a.version, a.signature ? "yes" : "no", a.reference]);
    report(options, rows.length > 0 ? table(["DIGEST", "NAME", "VERSION", "SIGNED", "REFERENCE"], rows) : "no artifacts registered", result);
  });

  withClientOptions(program.command("hosts").description("list registered hosts: labels, last seen, and how many of their assignments are enforced or failed")).action(
    async (options: ClientOptions) => {
      const fleet = await readFleet(await client(options), options);
      const hosts = fleet.agents.map((agent) => {
        const latest = new Map(agent.status.map((s) => [s.artifact_id, s]));
        const events = agent.assignments.map((id) => latest.get(id)?.event);
        return {
          ...agent,
          assigned: agent.assignments.length,
          // Enforced only on the host's own signed in-force receipt (README "Proof of enforcement").
          enforced: events.filter((e) => e === "attached").length,
          failed: events.filter((e) => e === "failed").length,
        };
      });
      const rows = hosts.map((h) => [h.host_id, labelsText(h.labels), h.last_seen ?? "never", String(h.assigned), String(h.enforced), String(h.failed)]);
      report(options, rows.length > 0 ? table(["HOST", "LABELS", "LAST SEEN", "ASSIGNED", "ENFORCED", "FAILED"], rows) : "no hosts registered", { hosts, total: hosts.length, skipped: fleet.skipped });
    },
  );

  withClientOptions(
    program
      .command("status")
      .description("an artifact's convergence: how many of the hosts assigned it enforce it, and each host's latest report (failures with their reasons)")
      .argument("<digest>", "artifact id: sha256:…")
      .option("--summary", "each host's event, code and reason only, without its receipt's program, interfaces and counters (taken on its own when the full answer is too large)"),
  ).action(async (digest: string, options: ClientOptions & { summary?: boolean }) => {
    const assigner = await client(options);
    // The artifact first: an unknown digest is one clear error, before reading the fleet.
    const artifact = await assigner.artifact(digest);
    // Every host's counters can pass the answer's cap on a large fleet: then the summary is shown, and said to be.
    const reports = await assigner.status(digest, { summary: options.summary === true }).catch((err: unknown) => {
      if (options.summary || !(errorCode(err) === "BAD_GATEWAY" && /larger than \d+ bytes/.test((err as Error).message))) throw err;
      if (!options.json) process.stderr.write("aegis: the full status is larger than one answer may be: each host's event only (--summary)\n");
      return assigner.status(digest, { summary: true });
    });
    const fleet = await readFleet(assigner, options);
    const assignedTo = new Set(fleet.agents.filter((agent) => agent.assignments.includes(digest)).map((agent) => agent.host_id));
    const latest = new Map(reports.hosts.map((s) => [s.host_id, s]));
    const hostIds = [...new Set([...assignedTo, ...latest.keys()])].sort();
    const hosts = hostIds.map((hostId) => {
      const status = latest.get(hostId);
      return { host_id: hostId, assigned: assignedTo.has(hostId), state: status?.event ?? "pending", ...(status ? { status } : {}) };
    });
    const enforcing = hosts.filter((h) => h.assigned && h.state === "attached").length;
    const failed = hosts.filter((h) => h.assigned && h.state === "failed");
    const summary =
      `${digest} (${artifact.name} ${artifact.version}): ${enforcing} of ${assignedTo.size} assigned host${assignedTo.size === 1 ? "" : "s"} enforcing` +
      (failed.length > 0 ? `, ${failed.length} failed (${failed.map((h) => `${h.host_id}: ${describeStatus(h.status)}`).join("; ")})` : "");
    const rows = hosts.map((h) => [h.host_id, h.assigned ? "yes" : "no", h.state, h.status?.time ?? "-", describeStatus(h.status)]);
    const human = rows.length > 0 ? `${summary}\n${table(["HOST", "ASSIGNED", "STATE", "REPORTED", "DETAIL"], rows)}` : `${summary}\nno host is assigned it or has reported on it`;
    report(options, human, { artifact_id: digest, name: artifact.name, version: artifact.version, assigned: assignedTo.size, enforcing, failed: failed.length, hosts, skipped: fleet.skipped });
  });
}
