// What a user waits for, as whole processes, beside the tool they would use
// instead (issue 10): cold start (`aegis --version`, `aegis pull --help`
// against `node -e 0` and `skopeo --version`), `aegis pull` by digest into a
// directory (1 MiB and 50 MiB bundles) against `skopeo copy docker://…@sha256:…
// oci:<dir>`, `aegis copy -r` registry → registry against `skopeo copy` between
// the same repositories (on one registry both tools mount the blob, so that
// row times start-up and a few requests; on two registries the 50 MiB
// streams from one into the other: each round copies into a registry started
// for it, because skopeo remembers where it has seen a blob (its blob info
// cache) and would otherwise mount it from an earlier round's repository),
// and `aegis push` against `skopeo copy oci:<layout> docker://…` of the same
// artifact. Registries 2.8.2 (test/harness) serve both tools in the same run.
// Aegis runs from a copy laid out as a global npm install lays it out
// (install(), below), so where this checkout lies does not move its numbers.
//
// Every command runs under `/usr/bin/time -f %M` (Debian `time`: its peak RSS,
// the "Maximum resident set size" of `time -v`); both sides pay the same
// wrapper. Wall time is taken around the whole process. Rounds rotate the
// order of all commands, so neither side always runs first or after the other;
// medians are reported, and beside each ratio of medians the spread of each
// round's own ratio and the rounds that met the goal (the two sides of a round
// run close together, so a busy spell of the machine moves both). Before each,
// untimed, `sync` writes out what earlier commands and its own set-up left in
// the page cache (a fresh 50 MiB bundle and its layout before a push), so the
// kernel's write-back of it does not run during the timed process. Each round
// writes into fresh directories, a fresh pull cache ($AEGIS_CACHE_DIR) and
// fresh destination repositories, so nothing is already there; one untimed
// round first warms the page cache and checks every command's result (the
// digest arrives intact).
//
// The bundles are real: `aegis policy build` of policies/deny-egress-cidrs,
// plus incompressible files (random bytes) so the layer is 1 MiB or 50 MiB
// after zstd, packed as a sorted ustar + zstd (the format's "anything else
// the agent needs"; each entry under the 64 MiB entry cap), and checked by
// `aegis push`, which decodes a bundle before it pushes it. (The policy
// itself cannot carry 50 MiB of incompressible bytes: its description is
// copied into the manifest's annotations, capped at 4 MiB, and rules
// compress well.) The copy reads
// the pulled 50 MiB artifact (so a tool may mount it across repositories, as
// a user's would); every push round sends a bundle made fresh for it, pushed
// untimed into an OCI layout first (skopeo's source, and the digest both
// pushes must give).
//
// Every command runs without NODE_EXTRA_CA_CERTS unless
// AEGIS_BENCH_KEEP_ENV=1: where it is set (here, to the system's bundle, for
// a proxy's CA), Node 20 reads and parses every certificate in it before any
// JavaScript runs, ~35 ms of each process (`node -e 0`: 0.06 s instead of
// 0.02 s), a cost of that machine's set-up rather than of either tool (no
// command here uses TLS, and skopeo never reads it). The report says which.
//
// The one-registry copy has two more sides: bench/bare-copy.cjs makes the
// same requests in the same order on bare node:http (no CLI parser, retries
// or stream pipelines), and bench/library-copy.cjs makes the copy with
// aegis's registry code alone (no CLI). Their rows against skopeo (their
// aegis_ columns hold those processes) are roughly what Node itself costs
// there, and what the registry code adds to it; aegis's row against the
// bare one, what aegis adds in all.
//
// Every aegis command reads and writes its compile cache (cli/compile-cache.ts)
// in a folder of this run's, which the untimed round fills: the timed rounds
// are what a user's second and later runs take. Two rows time the same
// commands with an empty cache folder of their own each round, as a first
// run after an install would (it also writes the caches as it exits).
// (bench/library-copy.cjs loads the registry chunk itself, so the
// compile cache, which `aegis` turns on, never applies to it.)
//
// AEGIS_BENCH_ROUNDS sets the rounds (default 7).
import { spawnSync, type SpawnSyncOptions } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startRegistry, type RegistryServer } from "../test/harness/registry.js";
import { makeTempDir, removeTempDir, requireBinary } from "../test/harness/process.js";
import { median, type BenchResult, type Row } from "./report.js";

/** The built CLI, in this checkout: set-up runs it; the timed commands run the copy install() lays out. */
const BUILT = fileURLToPath(new URL("../dist/cli/aegis.cjs", import.meta.url));
const REPO = fileURLToPath(new URL("../", import.meta.url));
const BARE_COPY = fileURLToPath(new URL("./bare-copy.cjs", import.meta.url));
const LIBRARY_COPY = fileURLToPath(new URL("./library-copy.cjs", import.meta.url));
/** The bundle's registry chunk, as `aegis copy` loads it (its name carries a content hash). */
function registryChunk(): string {
  const dir = dirname(BUILT);
  const name = existsSync(dir) ? readdirSync(dir).find((n) => /^registry-[A-Z0-9]+\.cjs$/.test(n)) : undefined;
  if (!name) throw new Error(`no registry-*.cjs in ${dir}: run npm run build`);
  return join(dir, name);
}
const POLICY = fileURLToPath(new URL("../policies/deny-egress-cidrs", import.meta.url));
const ROUNDS = Number(process.env.AEGIS_BENCH_ROUNDS ?? 7);
const KEEP_ENV = process.env.AEGIS_BENCH_KEEP_ENV === "1";
/** The environment every command runs in (see the top of this file). */
const ENVIRONMENT = Object.fromEntries(Object.entries(process.env).filter(([name]) => KEEP_ENV || name !== "NODE_EXTRA_CA_CERTS"));
const MiB = 1024 * 1024;
/** Random content is split into entries of this size, well below BUNDLE_LIMITS.maxEntrySize (64 MiB, bundle/tar.ts). */
const ENTRY_MAX = 24 * MiB;
const NODE = process.execPath;

interface Run {
  argv: string[];
  env?: Record<string, string>;
}

/** One command of the bench; `run` gets a fresh directory and a round tag (for fresh repositories). */
interface Command {
  name: string;
  /** Untimed set-up before each run (a fresh registry). */
  prepare?(round: string): Promise<void>;
  run(dir: string, round: string): Run;
  /** Throws if the command's result is wrong (run once per round, untimed). */
  check?(dir: string, round: string): Promise<void>;
}

interface Sample {
  ms: number;
  rssMiB: number;
}

function sh(file: string, args: string[], options: SpawnSyncOptions = {}): string {
  const result = spawnSync(file, args, { encoding: "utf8", maxBuffer: 64 * MiB, ...options });
  if (result.status !== 0) throw new Error(`${file} ${args.join(" ")} exited ${result.status ?? result.signal}: ${String(result.stderr ?? "").trim()}`);
  return String(result.stdout ?? "");
}

/** One whole process under GNU time, with `compileCache` as its AEGIS_COMPILE_CACHE: wall ms around it, peak RSS from time's %M (KiB). */
function timed(time: string, run: Run, rssFile: string, compileCache: string): Sample {
  const start = performance.now();
  const result = spawnSync(time, ["-f", "%M", "-o", rssFile, ...run.argv], {
    stdio: ["ignore", "ignore", "pipe"],
    encoding: "utf8",
    env: { ...ENVIRONMENT, AEGIS_COMPILE_CACHE: compileCache, ...run.env },
  });
  const ms = performance.now() - start;
  if (result.status !== 0) throw new Error(`${run.argv.join(" ")} exited ${result.status ?? result.signal}: ${result.stderr.trim()}`);
  const kib = Number(readFileSync(rssFile, "utf8").trim().split("\n").pop());
  if (!Number.isFinite(kib)) throw new Error(`no peak RSS from /usr/bin/time for ${run.argv.join(" ")}`);
  return { ms, rssMiB: kib / 1024 };
}

/** The example policy built by `aegis policy build`, unpacked into `<work>/base`: the real part of every bundle. */
function buildBase(work: string): string {
  const dir = join(work, "base");
  mkdirSync(dir);
  const built = join(work, "built.tar.zst");
  sh(NODE, [BUILT, "policy", "build", POLICY, "-o", built]);
  sh("tar", ["--zstd", "-xf", built, "-C", dir]);
  return dir;
}

/**
 * A bundle whose layer is about `size` bytes, written to `file`: the built
 * policy plus fresh random files (so no two bundles share a blob), packed as
 * ustar with fixed owner, mode and mtime, sorted, in zstd.
 */
function makeBundle(base: string, size: number, file: string): string {
  const dir = `${file}.d`;
  sh("cp", ["-r", base, dir]);
  const names = ["policy.json", "program.o"];
  // Headroom for the policy, the program, tar headers and zstd framing of random bytes.
  let left = size - 64 * 1024;
  mkdirSync(join(dir, "extra"));
  for (let i = 0; left > 0; i++, left -= ENTRY_MAX) {
    const name = `extra/random-${i}.bin`;
    writeFileSync(join(dir, name), randomBytes(Math.min(left, ENTRY_MAX)));
    names.push(name);
  }
  sh("sh", ["-c", `tar --format=ustar --owner=0 --group=0 --numeric-owner --mode=0644 --mtime=@0 --sort=name -C "$1" -cf - ${names.join(" ")} | zstd -q -3 -o "$2"`, "sh", dir, file]);
  rmSync(dir, { recursive: true });
  return file;
}

/** Registry manifest digest of repo:tag (Docker-Content-Digest), for checks. */
async function manifestDigest(registryUrl: string, repo: string, tag: string): Promise<string | null> {
  const res = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, {
    method: "HEAD",
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  return res.ok ? res.headers.get("docker-content-digest") : null;
}

function expectEqual(what: string, got: unknown, want: unknown): void {
  if (got !== want) throw new Error(`bench cli: ${what}: got ${String(got)}, expected ${String(want)}`);
}

interface Comparison {
  row: string;
  aegis: string;
  peer: string;
  /** The issue's goal: aegis ≤ factor × peer (and peak RSS ≤ rssMiB). */
  goal?: { factor: number; rssMiB?: number };
  size?: number;
}

/**
 * The CLI laid out under `work` as a global npm install lays it out
 * (<prefix>/lib/node_modules/aegis: dist/cli, package.json, the packages),
 * and its path. Node's loader works over the whole path of every file it
 * loads, and where the bundle lay once changed a pull's peak RSS by ~4 MiB
 * (util/jit.ts): the timed commands run from at least that depth, not from
 * wherever this checkout happens to be. The packages are hard links where
 * the file system allows (a copy elsewhere), not a symlink, which Node would
 * resolve back into the checkout.
 */
function install(work: string): string {
  const root = join(work, "usr", "local", "lib", "node_modules", "aegis");
  cpSync(dirname(BUILT), join(root, "dist", "cli"), { recursive: true });
  cpSync(join(REPO, "package.json"), join(root, "package.json"));
  const packages = join(REPO, "node_modules");
  try {
    sh("cp", ["-al", packages, join(root, "node_modules")]);
  } catch {
    rmSync(join(root, "node_modules"), { recursive: true, force: true });
    sh("cp", ["-a", packages, join(root, "node_modules")]);
  }
  return join(root, "dist", "cli", "aegis.cjs");
}

export default async function cliBench(): Promise<BenchResult> {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run "npm run build" first`);
  requireBinary("skopeo", "skopeo");
  const time = requireBinary("time", "time");
  requireBinary("zstd", "zstd");
  const registry = await startRegistry();
  /** The two-registry rows' destinations, one per command and round. */
  const destinations = new Map<string, RegistryServer>();
  const work = makeTempDir("aegis-bench-cli-");
  try {
    const AEGIS = install(work);
    const host = registry.host;
    const base = buildBase(work);
    const small = makeBundle(base, 1 * MiB, join(work, "pull-1m.tar.zst"));
    const large = makeBundle(base, 50 * MiB, join(work, "pull-50m.tar.zst"));
    const sizeOf = (file: string) => readFileSync(file).byteLength;
    const push = (bundle: string, ref: string) => sh(NODE, [AEGIS, "push", bundle, ref]).trim();
    const smallDigest = push(small, `${host}/bench/pull-1m:1`);
    const largeDigest = push(large, `${host}/bench/pull-50m:1`);
    const skopeo = ["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false"];

    const pullAegis = (digest: string, repo: string): Command["run"] => (dir) => ({
      argv: [NODE, AEGIS, "pull", `${host}/${repo}@${digest}`, "-o", join(dir, "out")],
      env: { AEGIS_CACHE_DIR: join(dir, "cache") },
    });
    const pullSkopeo = (digest: string, repo: string): Command["run"] => (dir) => ({
      argv: [...skopeo, `docker://${host}/${repo}@${digest}`, `oci:${join(dir, "oci")}`],
    });
    const checkAegisPull: Command["check"] = async (dir) => {
      const policy = JSON.parse(readFileSync(join(dir, "out", "policy.json"), "utf8")) as { name: string };
      expectEqual("aegis pull wrote policy.json", policy.name, "deny-egress-cidrs");
    };
    const checkSkopeoPull = (digest: string): Command["check"] => async (dir) => {
      const index = JSON.parse(readFileSync(join(dir, "oci", "index.json"), "utf8")) as { manifests: { digest: string }[] };
      expectEqual("skopeo's OCI layout index", index.manifests[0]?.digest, digest);
    };
    const inRegistry = (repo: (round: string) => string, digest: (dir: string) => string, url = (_round: string) => registry.url): Command["check"] => async (dir, round) =>
      expectEqual(`manifest of ${repo(round)}:1`, await manifestDigest(url(round), repo(round), "1"), digest(dir));
    /** A copy into a registry started for this command and round (stopped once the round is checked). */
    const toFreshRegistry = (name: string, argv: (src: string, dst: string) => string[]): Command => {
      const key = (round: string) => `${name} ${round}`;
      const destination = (round: string) => destinations.get(key(round))!;
      return {
        name,
        prepare: async (round) => void destinations.set(key(round), await startRegistry()),
        run: (_dir, round) => ({ argv: argv(`${host}/bench/pull-50m@${largeDigest}`, `${destination(round).host}/bench/copy:1`) }),
        check: async (dir, round) => {
          try {
            await inRegistry(() => "bench/copy", () => largeDigest, () => destination(round).url)!(dir, round);
          } finally {
            await destination(round).stop();
            destinations.delete(key(round));
          }
        },
      };
    };
    // Each push sends a bundle the registry has never seen (no blob to skip or mount): made
    // before the timed process starts, with its digest from a push into an OCI layout, which
    // is also skopeo's source.
    const pushDigests = new Map<string, string>();
    const freshBundle = (dir: string): { bundle: string; layout: string } => {
      const bundle = makeBundle(base, 50 * MiB, join(dir, "bundle.tar.zst"));
      const layout = join(dir, "layout");
      pushDigests.set(dir, push(bundle, `oci:${layout}:1`));
      return { bundle, layout };
    };

    // --- Every command, by name (argv built per round) ---
    const chunk = registryChunk();
    const commands: Command[] = [
      { name: "node -e 0", run: () => ({ argv: [NODE, "-e", "0"] }) },
      { name: "skopeo --version", run: () => ({ argv: ["skopeo", "--version"] }) },
      { name: "aegis --version", run: () => ({ argv: [NODE, AEGIS, "--version"] }) },
      { name: "aegis pull --help", run: () => ({ argv: [NODE, AEGIS, "pull", "--help"] }) },
      { name: "aegis --version, first run", run: (dir) => ({ argv: [NODE, AEGIS, "--version"], env: { AEGIS_COMPILE_CACHE: join(dir, "compile-cache") } }) },
      { name: "aegis pull 1 MiB", run: pullAegis(smallDigest, "bench/pull-1m"), check: checkAegisPull },
      { name: "skopeo pull 1 MiB", run: pullSkopeo(smallDigest, "bench/pull-1m"), check: checkSkopeoPull(smallDigest) },
      { name: "aegis pull 50 MiB", run: pullAegis(largeDigest, "bench/pull-50m"), check: checkAegisPull },
      { name: "skopeo pull 50 MiB", run: pullSkopeo(largeDigest, "bench/pull-50m"), check: checkSkopeoPull(largeDigest) },
      {
        name: "aegis copy -r 50 MiB",
        run: (_dir, round) => ({ argv: [NODE, AEGIS, "copy", "-r", `${host}/bench/pull-50m@${largeDigest}`, `${host}/bench/copy-aegis-${round}:1`] }),
        check: inRegistry((round) => `bench/copy-aegis-${round}`, () => largeDigest),
      },
      {
        name: "aegis copy -r 50 MiB, first run",
        run: (dir, round) => ({
          argv: [NODE, AEGIS, "copy", "-r", `${host}/bench/pull-50m@${largeDigest}`, `${host}/bench/copy-uncached-${round}:1`],
          env: { AEGIS_COMPILE_CACHE: join(dir, "compile-cache") },
        }),
        check: inRegistry((round) => `bench/copy-uncached-${round}`, () => largeDigest),
      },
      {
        name: "skopeo copy 50 MiB",
        run: (_dir, round) => ({ argv: [...skopeo, `docker://${host}/bench/pull-50m@${largeDigest}`, `docker://${host}/bench/copy-skopeo-${round}:1`] }),
        check: inRegistry((round) => `bench/copy-skopeo-${round}`, () => largeDigest),
      },
      {
        name: "bare Node copy 50 MiB",
        run: (_dir, round) => ({ argv: [NODE, BARE_COPY, `${host}/bench/pull-50m@${largeDigest}`, `${host}/bench/copy-bare-${round}:1`] }),
        check: inRegistry((round) => `bench/copy-bare-${round}`, () => largeDigest),
      },
      {
        name: "registry code copy 50 MiB",
        run: (_dir, round) => ({ argv: [NODE, LIBRARY_COPY, chunk, `${host}/bench/pull-50m@${largeDigest}`, `${host}/bench/copy-library-${round}:1`] }),
        check: inRegistry((round) => `bench/copy-library-${round}`, () => largeDigest),
      },
      toFreshRegistry("aegis copy -r 50 MiB, two registries", (src, dst) => [NODE, AEGIS, "copy", "-r", src, dst]),
      toFreshRegistry("skopeo copy 50 MiB, two registries", (src, dst) => [...skopeo, `docker://${src}`, `docker://${dst}`]),
      {
        name: "aegis push 50 MiB",
        run: (dir, round) => ({ argv: [NODE, AEGIS, "push", freshBundle(dir).bundle, `${host}/bench/push-aegis-${round}:1`] }),
        check: inRegistry((round) => `bench/push-aegis-${round}`, (dir) => pushDigests.get(dir)!),
      },
      {
        name: "skopeo push 50 MiB",
        run: (dir, round) => ({ argv: [...skopeo, `oci:${freshBundle(dir).layout}:1`, `docker://${host}/bench/push-skopeo-${round}:1`] }),
        check: inRegistry((round) => `bench/push-skopeo-${round}`, (dir) => pushDigests.get(dir)!),
      },
    ];

    const comparisons: Comparison[] = [
      { row: "cold start --version", aegis: "aegis --version", peer: "node -e 0", goal: { factor: 2 } },
      { row: "cold start pull --help", aegis: "aegis pull --help", peer: "node -e 0", goal: { factor: 2 } },
      { row: "cold start vs skopeo", aegis: "aegis --version", peer: "skopeo --version" },
      { row: "cold start --version, first run (empty compile cache)", aegis: "aegis --version, first run", peer: "node -e 0" },
      { row: "pull 1 MiB", aegis: "aegis pull 1 MiB", peer: "skopeo pull 1 MiB", goal: { factor: 3, rssMiB: 64 }, size: sizeOf(small) },
      { row: "pull 50 MiB", aegis: "aegis pull 50 MiB", peer: "skopeo pull 50 MiB", goal: { factor: 1.2, rssMiB: 64 }, size: sizeOf(large) },
      { row: "copy -r 50 MiB, one registry (mount)", aegis: "aegis copy -r 50 MiB", peer: "skopeo copy 50 MiB", goal: { factor: 1.2 }, size: sizeOf(large) },
      { row: "floor: bare Node copy, one registry", aegis: "bare Node copy 50 MiB", peer: "skopeo copy 50 MiB", size: sizeOf(large) },
      { row: "registry code alone (no CLI), one registry", aegis: "registry code copy 50 MiB", peer: "skopeo copy 50 MiB", size: sizeOf(large) },
      { row: "copy -r, one registry, vs the floor", aegis: "aegis copy -r 50 MiB", peer: "bare Node copy 50 MiB", size: sizeOf(large) },
      { row: "copy -r, one registry, first run (empty compile cache)", aegis: "aegis copy -r 50 MiB, first run", peer: "skopeo copy 50 MiB", size: sizeOf(large) },
      { row: "copy -r 50 MiB, two registries", aegis: "aegis copy -r 50 MiB, two registries", peer: "skopeo copy 50 MiB, two registries", goal: { factor: 1.2 }, size: sizeOf(large) },
      { row: "push 50 MiB", aegis: "aegis push 50 MiB", peer: "skopeo push 50 MiB", goal: { factor: 1.2, rssMiB: 64 }, size: sizeOf(large) },
    ];

    const samples = new Map<string, Sample[]>(commands.map((c) => [c.name, []]));
    const rssFile = join(work, "rss");
    const compileCache = join(work, "compile-cache");
    // Round -1 (untimed): page cache, and every result checked.
    for (let round = -1; round < ROUNDS; round++) {
      for (let i = 0; i < commands.length; i++) {
        const command = commands[(((round + i) % commands.length) + commands.length) % commands.length]!;
        const tag = round < 0 ? "warm" : `r${round}`;
        const dir = join(work, "runs", `${command.name.replace(/[^a-z0-9]+/gi, "-")}-${tag}`);
        mkdirSync(dir, { recursive: true });
        await command.prepare?.(tag);
        const run = command.run(dir, tag);
        // What earlier commands and this one's set-up wrote (a fresh 50 MiB bundle, a registry's blobs) goes to disk now, not during the timed process.
        sh("sync", []);
        const sample = timed(time, run, rssFile, compileCache);
        await command.check?.(dir, tag);
        if (round >= 0) samples.get(command.name)!.push(sample);
        rmSync(dir, { recursive: true, force: true });
      }
    }

    const stats = (name: string) => {
      const all = samples.get(name)!;
      return { ms: median(all.map((s) => s.ms)), rss: Math.max(...all.map((s) => s.rssMiB)) };
    };
    const meets = (goal: NonNullable<Comparison["goal"]>, ratio: number, rss: number) => ratio <= goal.factor && (goal.rssMiB === undefined || rss <= goal.rssMiB);
    const rows: Row[] = comparisons.map(({ row, aegis, peer, goal, size }) => {
      const ours = stats(aegis);
      const theirs = stats(peer);
      const ratio = ours.ms / theirs.ms;
      const met = goal === undefined ? "" : meets(goal, ratio, ours.rss) ? "yes" : "no";
      // Both commands of a round ran minutes apart at most, so a round's own ratio is spared the drift of a
      // busy machine between rounds: their spread, and how many rounds met the goal, say how near the median
      // ratio is to its edge (a row met in 4 rounds of 7 is noise away from missing).
      const theirRounds = samples.get(peer)!;
      const rounds = samples.get(aegis)!.map((s, r) => ({ ratio: s.ms / theirRounds[r]!.ms, rss: s.rssMiB }));
      const roundRatios = rounds.map((r) => r.ratio);
      return {
        row,
        layer_mib: size === undefined ? "" : size / MiB,
        aegis_ms: ours.ms,
        peer,
        peer_ms: theirs.ms,
        ratio,
        goal: goal === undefined ? "" : `≤ ${goal.factor}×${goal.rssMiB === undefined ? "" : `, ≤ ${goal.rssMiB} MiB`}`,
        met,
        rounds_met: goal === undefined ? "" : `${rounds.filter((r) => meets(goal, r.ratio, r.rss)).length}/${rounds.length}`,
        round_ratios: `${Math.min(...roundRatios).toFixed(2)}–${Math.max(...roundRatios).toFixed(2)}`,
        aegis_rss_mib: ours.rss,
        peer_rss_mib: theirs.rss,
      };
    });
    const headline = rows.find((r) => r.row === "pull 50 MiB")!;
    return {
      name: "cli",
      rows,
      ratio: Number(headline.ratio),
      ratioOf: `aegis pull / skopeo copy docker:// oci:, 50 MiB bundle, whole processes, median of ${ROUNDS}`,
      rounds: ROUNDS,
      statistic: "wall ms: median of rounds (ratio: of the medians; round_ratios: the lowest and highest of each round's own ratio; rounds_met: rounds whose own ratio and peak RSS met the goal); peak RSS: max of rounds (/usr/bin/time %M)",
      conditions: `aegis run from a copy laid out as a global npm install (…/usr/local/lib/node_modules/aegis); its compile cache filled by the untimed round, except the "first run" rows (an empty one each round); environment: ${KEEP_ENV || process.env.NODE_EXTRA_CA_CERTS === undefined ? "as given" : `as given, less NODE_EXTRA_CA_CERTS=${process.env.NODE_EXTRA_CA_CERTS} (AEGIS_BENCH_KEEP_ENV=1 keeps it)`}`,
      commands: commands.map((c) => c.name),
      node: process.version,
      skopeo: sh("skopeo", ["--version"]).trim(),
    };
  } finally {
    await Promise.all([registry.stop(), ...[...destinations.values()].map((r) => r.stop())]);
    await removeTempDir(work);
  }
}
