// Pull speed in process: our verified pull (manifest + layer from registry
// 2.8.2 into an OCI layout, every byte hashed) against `curl … | openssl dgst
// -sha256` of the same layer blob, in the same run (OpenSSL's SHA-256, as
// Node's is; coreutils sha256sum is several times slower and would flatter
// us). Also samples memory, to show large blobs stream. bench/cli.ts times
// the whole `aegis pull` process against skopeo.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { promisify } from "node:util";
import { copy, descriptorFor, EMPTY_CONFIG, encodeJson, MediaType, OciLayoutTarget, RemoteRepository, storeEmptyConfig, type Descriptor } from "../registry/index.js";
import { startRegistry } from "../test/harness/registry.js";
import { median, type BenchResult, type Row } from "./report.js";

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
const RUNS = Number(process.env.AEGIS_BENCH_ROUNDS ?? 7);

async function pushRandomArtifact(repo: RemoteRepository, size: number): Promise<{ manifest: Descriptor; layer: Descriptor }> {
  const data = randomBytes(size);
  const layer = descriptorFor(MediaType.PolicyLayer, data);
  await storeEmptyConfig(repo);
  await repo.push(layer, Readable.from([data]));
  const bytes = encodeJson({ schemaVersion: 2, mediaType: MediaType.ImageManifest, artifactType: MediaType.PolicyArtifact, config: EMPTY_CONFIG, layers: [layer] });
  const manifest = descriptorFor(MediaType.ImageManifest, bytes);
  await repo.push(manifest, Readable.from([bytes]));
  return { manifest, layer };
}

/** Runs `work` and reports its time and the peak RSS growth sampled meanwhile. */
async function measure(work: () => Promise<unknown>): Promise<{ ms: number; peakRssMiB: number }> {
  const base = process.memoryUsage().rss;
  let peak = base;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  const start = performance.now();
  await work();
  const ms = performance.now() - start;
  clearInterval(sampler);
  return { ms, peakRssMiB: (Math.max(peak, process.memoryUsage().rss) - base) / MiB };
}

export default async function pullBench(): Promise<BenchResult> {
  const registry = await startRegistry();
  const work = mkdtempSync(join(tmpdir(), "aegis-bench-pull-"));
  const rows: Row[] = [];
  try {
    for (const size of [1 * MiB, 50 * MiB]) {
      const repo = new RemoteRepository(registry.host, `bench/pull${size}`);
      const { manifest, layer } = await pushRandomArtifact(repo, size);
      const blobUrl = `${registry.url}/v2/bench/pull${size}/blobs/${layer.digest}`;
      const ours: number[] = [];
      const curl: number[] = [];
      let peak = 0;
      for (let run = 0; run < RUNS; run++) {
        const dir = join(work, `run-${size}-${run}`);
        const pulled = await measure(() => copy(repo, manifest.digest, new OciLayoutTarget(dir)));
        ours.push(pulled.ms);
        peak = Math.max(peak, pulled.peakRssMiB);
        rmSync(dir, { recursive: true, force: true });
        const start = performance.now();
        const { stdout } = await execFileAsync("bash", ["-c", `set -o pipefail; curl -sf '${blobUrl}' | openssl dgst -sha256 -r`]);
        curl.push(performance.now() - start);
        if (!stdout.startsWith(layer.digest.slice(7))) throw new Error("curl baseline read different bytes");
      }
      const oursMs = median(ours);
      const curlMs = median(curl);
      rows.push({
        size_mib: size / MiB,
        aegis_pull_ms: oursMs,
        curl_openssl_sha256_ms: curlMs,
        ratio: oursMs / curlMs,
        aegis_MiB_per_s: size / MiB / (oursMs / 1000),
        peak_rss_growth_mib: peak,
      });
    }
  } finally {
    await registry.stop();
    rmSync(work, { recursive: true, force: true });
  }
  const large = rows[rows.length - 1]!;
  return {
    name: "pull",
    rows,
    ratio: Number(large.ratio),
    ratioOf: `aegis pull (in process) / curl | openssl dgst -sha256, 50 MiB, median of ${RUNS}`,
    runs: RUNS,
  };
}
