// The kernel Datapath with libbpf as its loader, in this process: no bpftool
// process per load or read, and maps filled in batches. Constructing it
// loads libbpf.so.1, so a host without it fails here (LIBBPF_UNAVAILABLE)
// and can fall back to BpftoolDatapath; both pin the same layout.
import { KernelDatapath, type KernelDatapathOptions } from "./kernel-datapath.js";
import { libbpf, loadProgramLibbpf, programIdLibbpf, readCountersLibbpf } from "./libbpf.js";

export type LibbpfDatapathOptions = KernelDatapathOptions;

export class LibbpfDatapath extends KernelDatapath {
  constructor(options: LibbpfDatapathOptions = {}) {
    libbpf();
    super({ loadProgram: loadProgramLibbpf, programId: programIdLibbpf, readCounters: readCountersLibbpf }, options);
  }
}
