// `aegis agent run`: the host daemon (agent/). Thin: it resolves flags and
// environment (flags win), builds the Datapath and the Agent inside the
// action (lazy imports), and stops cleanly on SIGTERM without detaching.
// `aegis agent status`: what the host enforces, read from the state dir and
// the pins without changing anything.
import type { Command } from "commander";
import type { DatapathChoice } from "../../ebpf/index.js";
import { InputError } from "../../errors.js";
import { env } from "../env.js";
import { parseDuration } from "../options.js";
import { report, table } from "../output.js";

interface RunOptions {
  assigner?: string;
  hostId?: string;
  iface: string[];
  trust?: string;
  trustRootRef?: string;
  trustRootKey?: string;
  stateDir: string;
  nats?: string;
  pollInterval: string;
  pullTimeout: string;
  fetchBudget?: string;
  commandTimeout: string;
  registryMirror: string[];
  registryAllow: string[];
  enrollSecret?: string;
  dryRun?: boolean;
  label: string[];
  pinRoot?: string;
  plainHttp?: boolean;
  metricsPort?: string;
  metricsHost: string;
  datapath: string;
}

const list = (value: string | undefined) => (value ?? "").split(",").map((s) => s.trim()).filter(Boolean);
// A repeatable flag: given once, it replaces the environment's list; again, it adds.
const collect = (value: string, previous: string[], fromEnv: string[]) => (previous === fromEnv ? list(value) : [...previous, ...list(value)]);

export function registerAgent(program: Command): void {
  const agent = program.command("agent").description("the host agent");
  const ifacesEnv = list(env("AEGIS_IFACES"));
  const mirrorsEnv = list(env("AEGIS_REGISTRY_MIRRORS"));
  const allowEnv = list(env("AEGIS_REGISTRY_ALLOW"));
  agent
    .command("run")
    .description("enforce what the assigner assigns to this host (root; --dry-run verifies only)")
    .option("--assigner <url>", "assigner URL (AEGIS_ASSIGNER_URL)", env("AEGIS_ASSIGNER_URL"))
    .option("--host-id <id>", "this host's id (AEGIS_HOST_ID)", env("AEGIS_HOST_ID"))
    .option("--iface <name>", "attach on this interface, repeatable or comma-separated (AEGIS_IFACES); default every Ethernet device (not the loopback, nor a tunnel)", (v, p: string[]) => collect(v, p, ifacesEnv), ifacesEnv)
    .option("--trust <files>", "trusted public keys or trust file, comma-separated (AEGIS_TRUST)", env("AEGIS_TRUST"))
    .option("--trust-root-ref <ref>", "follow this signed trust root (`aegis trust push`): host/repo:tag or @sha256:… (AEGIS_TRUST_ROOT_REF)", env("AEGIS_TRUST_ROOT_REF"))
    .option("--trust-root-key <files>", "operator public keys the trust root must be signed by, comma-separated (AEGIS_TRUST_ROOT_KEY)", env("AEGIS_TRUST_ROOT_KEY"))
    .option("--state-dir <dir>", "key, token, installed state and artifact cache (AEGIS_STATE_DIR)", env("AEGIS_STATE_DIR") ?? "/var/lib/aegis")
    .option("--nats <url>", "nats://… to be woken at once (AEGIS_NATS_URL); default polling only", env("AEGIS_NATS_URL"))
    .option("--poll-interval <duration>", "mean poll interval, jittered (AEGIS_POLL_INTERVAL)", env("AEGIS_POLL_INTERVAL") ?? "30s")
    .option("--pull-timeout <duration>", "longest one registry may take to serve an artifact whole, then the next is tried (AEGIS_PULL_TIMEOUT)", env("AEGIS_PULL_TIMEOUT") ?? "5m")
    .option("--fetch-budget <duration>", "longest a pass may spend fetching its new digests, then those still under way fail and wait for a later pass (AEGIS_FETCH_BUDGET); default one digest's longest fetch", env("AEGIS_FETCH_BUDGET"))
    .option("--command-timeout <duration>", "longest one tc, ip or bpftool run may take, then it is killed and the step fails TIMEOUT (AEGIS_COMMAND_TIMEOUT)", env("AEGIS_COMMAND_TIMEOUT") ?? "30s")
    .option("--registry-mirror <repo>", "pull from this repository first (host/repo or oci:<dir>), repeatable (AEGIS_REGISTRY_MIRRORS)", (v, p: string[]) => collect(v, p, mirrorsEnv), mirrorsEnv)
    .option("--registry-allow <host>", "read an artifact's reference (the assigner's word) only on this registry, host[:port], repeatable or comma-separated (AEGIS_REGISTRY_ALLOW); default any. A reference elsewhere, or to a directory on this host, is not read: the assigner's copy is asked instead", (v, p: string[]) => collect(v, p, allowEnv), allowEnv)
    .option("--enroll-secret <secret>", "the assigner's registration secret (AEGIS_ENROLL_SECRET)", env("AEGIS_ENROLL_SECRET"))
    .option("--label <k=v>", "a label sent at registration, repeatable", (v, p: string[]) => [...p, v], [] as string[])
    .option("--dry-run", "fetch and verify only: nothing is loaded or attached")
    .option("--pin-root <dir>", "bpffs directory programs are pinned under (AEGIS_PIN_ROOT); default /sys/fs/bpf/aegis", env("AEGIS_PIN_ROOT"))
    .option("--plain-http", "use http:// for non-loopback registries")
    .option("--metrics-port <port>", "serve Prometheus /metrics on this port (AEGIS_METRICS_PORT); default none", env("AEGIS_METRICS_PORT"))
    .option("--metrics-host <address>", "address /metrics listens on (AEGIS_METRICS_HOST)", env("AEGIS_METRICS_HOST") ?? "127.0.0.1")
    .option("--datapath <kind>", "auto (libbpf in-process if libbpf.so.1 loads, else bpftool), libbpf or bpftool (AEGIS_DATAPATH)", env("AEGIS_DATAPATH") ?? "auto")
    .action(async (options: RunOptions) => {
      if (!options.assigner) throw new InputError("INVALID_ARGUMENT", "no assigner: pass --assigner or set AEGIS_ASSIGNER_URL");
      if (!options.hostId) throw new InputError("INVALID_ARGUMENT", "no host id: pass --host-id or set AEGIS_HOST_ID");
      if (!options.trust && !options.trustRootRef) {
        throw new InputError("INVALID_ARGUMENT", "no trusted keys: pass --trust or set AEGIS_TRUST, or follow a trust root with --trust-root-ref (the agent installs only signed policies)");
      }
      if (options.trustRootRef && !options.trustRootKey) throw new InputError("INVALID_ARGUMENT", "--trust-root-ref needs --trust-root-key (the operator key the trust root is signed by)");
      const labels: Record<string, string> = {};
      for (const label of options.label) {
        const eq = label.indexOf("=");
        if (eq <= 0) throw new InputError("INVALID_ARGUMENT", `--label ${label}: expected key=value`);
        labels[label.slice(0, eq)] = label.slice(eq + 1);
      }
      const pollIntervalMs = parseDuration(options.pollInterval, "poll-interval");
      const pullTimeoutMs = parseDuration(options.pullTimeout, "pull-timeout");
      const fetchBudgetMs = options.fetchBudget === undefined ? undefined : parseDuration(options.fetchBudget, "fetch-budget");
      const commandTimeoutMs = parseDuration(options.commandTimeout, "command-timeout");
      const metricsPort = options.metricsPort === undefined ? undefined : Number(options.metricsPort);
      if (metricsPort !== undefined && !(Number.isInteger(metricsPort) && metricsPort >= 0 && metricsPort < 65536)) {
        throw new InputError("INVALID_ARGUMENT", `--metrics-port ${options.metricsPort}: expected a port number`);
      }
      const [{ Agent, serveMetrics }, { DATAPATH_CHOICES, openKernelDatapath }, { loadTrust, trustedRootFetcher }, { credentialsFromEnvironment, isRegistryHost }] = await Promise.all([
        import("../../agent/index.js"),
        import("../../ebpf/index.js"),
        import("../../signing/index.js"),
        import("../../registry/index.js"),
      ]);
      const badHost = options.registryAllow.find((host) => !isRegistryHost(host));
      if (badHost !== undefined) throw new InputError("INVALID_ARGUMENT", `--registry-allow ${badHost}: expected a registry's host[:port], e.g. registry.example.com or 127.0.0.1:5000`);
      if (!DATAPATH_CHOICES.includes(options.datapath as DatapathChoice)) {
        throw new InputError("INVALID_ARGUMENT", `--datapath ${options.datapath}: expected ${DATAPATH_CHOICES.join(", ")}`);
      }
      // Aborted by SIGTERM or SIGINT: a tc stuck on the kernel's rtnl lock is killed then, not waited for.
      const stopping = new AbortController();
      const datapath = openKernelDatapath(options.datapath as DatapathChoice, { ...(options.pinRoot ? { pinRoot: options.pinRoot } : {}), commandTimeoutMs, signal: stopping.signal });
      process.stderr.write(`aegis agent: datapath ${datapath.kind}${datapath.fallback ? ` (libbpf unavailable: ${datapath.fallback})` : ""}\n`);
      const repository = { plainHttp: options.plainHttp ?? false, credentials: credentialsFromEnvironment };
      const agent = new Agent({
        assigner: options.assigner,
        hostId: options.hostId,
        stateDir: options.stateDir,
        datapath: datapath.datapath,
        trust: options.trust ? await loadTrust([options.trust], { fetchTrustedRoot: trustedRootFetcher(repository), rootSupplied: options.trustRootRef !== undefined }) : { keys: [] },
        ...(options.trustRootRef ? { trustRoot: { reference: options.trustRootRef, operator: await loadTrust([options.trustRootKey!]) } } : {}),
        ifaces: options.iface,
        mirrors: options.registryMirror,
        ...(options.registryAllow.length > 0 ? { allowedRegistries: options.registryAllow } : {}),
        pollIntervalMs,
        pullTimeoutMs,
        ...(fetchBudgetMs !== undefined ? { fetchBudgetMs } : {}),
        labels,
        dryRun: options.dryRun ?? false,
        repository,
        ...(options.nats ? { natsUrl: options.nats } : {}),
        ...(options.enrollSecret !== undefined ? { enrollSecret: options.enrollSecret } : {}),
      });
      // The port first: one in use fails the start, before the agent's loop runs (a restart loop behind it would never show why).
      const metrics = metricsPort === undefined ? undefined : await serveMetrics(agent.metrics, metricsPort, options.metricsHost);
      await agent.start();
      process.stderr.write(`aegis agent: running for host ${options.hostId} against ${options.assigner} (state in ${options.stateDir})\n`);
      if (metrics) process.stderr.write(`aegis agent: metrics on ${metrics.url}\n`);
      const stop = (signal: string) => {
        process.stderr.write(`aegis agent: ${signal}: stopping; everything attached stays in force\n`);
        metrics?.server.close();
        // The agent's own signal first, so the steps its tools' abort fails are not reported as failures.
        const stopped = agent.stop();
        stopping.abort(new Error(`${signal}: stopping`));
        void stopped.then(() => process.exit(0));
      };
      process.once("SIGINT", () => stop("SIGINT"));
      process.once("SIGTERM", () => stop("SIGTERM"));
    });

  agent
    .command("status")
    .description("what this host enforces: digest, policy, interfaces, direction, attached since, drops (reads the pins; root)")
    .option("--state-dir <dir>", "the agent's state dir (AEGIS_STATE_DIR)", env("AEGIS_STATE_DIR") ?? "/var/lib/aegis")
    .option("--pin-root <dir>", "bpffs directory programs are pinned under (AEGIS_PIN_ROOT); default /sys/fs/bpf/aegis", env("AEGIS_PIN_ROOT"))
    .option("--json", "print JSON for scripts")
    .action(async (options: { stateDir: string; pinRoot?: string; json?: boolean }) => {
      const [{ collectStatus, STATUS_HEADER, statusCells, StateDir }, { openKernelDatapath }] = await Promise.all([import("../../agent/index.js"), import("../../ebpf/index.js")]);
      const { datapath } = openKernelDatapath("auto", options.pinRoot ? { pinRoot: options.pinRoot } : {});
      const rows = await collectStatus(datapath, await new StateDir(options.stateDir).installed());
      report(options, rows.length > 0 ? table(STATUS_HEADER, statusCells(rows)) : `nothing enforced: no program pinned under ${options.pinRoot ?? "/sys/fs/bpf/aegis"} and none recorded in ${options.stateDir}`, { programs: rows });
    });
}
