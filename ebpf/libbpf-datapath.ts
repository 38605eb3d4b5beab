// The kernel Datapath with libbpf as its loader, in this process: no bpftool
// process per load or read, and maps filled in batches. Constructing it
// loads libbpf.so.1, so a host without it fails here (LIBBPF_UNAVAILABLE)
// and can fall back to BpftoolDatapath (openKernelDatapath does); both pin
// the same layout, so either adopts what the other loaded.
import { BpftoolDatapath } from "./bpftool-datapath.js";
import { EbpfError } from "./errors.js";
import { KernelDatapath, type KernelDatapathOptions } from "./kernel-datapath.js";
import { libbpf, LIBBPF_SONAME, loadProgramLibbpf, programIdLibbpf, readCountersLibbpf } from "./libbpf.js";

export interface LibbpfDatapathOptions extends KernelDatapathOptions {
  /** The libbpf shared library, a soname or a path; default libbpf.so.1. */
  library?: string;
}

export class LibbpfDatapath extends KernelDatapath {
  readonly library: string;

  constructor(options: LibbpfDatapathOptions = {}) {
    const library = options.library ?? LIBBPF_SONAME;
    libbpf(library);
    super(
      {
        loadProgram: (object, rules, pinDir) => loadProgramLibbpf(object, rules, pinDir, library),
        programId: (progPin) => programIdLibbpf(progPin, library),
        readCounters: (mapsDir, indexes) => readCountersLibbpf(mapsDir, indexes, library),
      },
      options,
    );
    this.library = library;
  }
}

export const DATAPATH_CHOICES = ["auto", "libbpf", "bpftool"] as const;
export type DatapathChoice = (typeof DATAPATH_CHOICES)[number];

export interface OpenedDatapath {
  datapath: KernelDatapath;
  kind: "libbpf" | "bpftool";
  /** Why `auto` fell back to bpftool. */
  fallback?: string;
}

/**
 * The agent's kernel Datapath: libbpf in-process when the library loads,
 * else (`auto`) bpftool. `libbpf` insists (LIBBPF_UNAVAILABLE), `bpftool`
 * never tries libbpf.
 */
export function openKernelDatapath(choice: DatapathChoice, options: LibbpfDatapathOptions = {}): OpenedDatapath {
  if (choice === "bpftool") return { datapath: new BpftoolDatapath(options), kind: "bpftool" };
  try {
    return { datapath: new LibbpfDatapath(options), kind: "libbpf" };
  } catch (err) {
    if (choice === "libbpf" || !(err instanceof EbpfError) || err.code !== "LIBBPF_UNAVAILABLE") throw err;
    return { datapath: new BpftoolDatapath(options), kind: "bpftool", fallback: err.message };
  }
}
