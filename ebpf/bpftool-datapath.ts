// The kernel Datapath with bpftool as its loader: each load, fill, program id
// and counter read is a bpftool process. The fallback where libbpf cannot be
// loaded in-process (LibbpfDatapath); both pin the same layout.
import { loadProgram, programId, readCounters } from "./bpftool.js";
import { KernelDatapath, type KernelDatapathOptions } from "./kernel-datapath.js";

export type BpftoolDatapathOptions = KernelDatapathOptions;

export class BpftoolDatapath extends KernelDatapath {
  constructor(options: BpftoolDatapathOptions = {}) {
    super({ loadProgram, programId, readCounters }, options);
  }
}
