// The kernel Datapath with bpftool as its loader: each load, fill, program id
// and counter read is a bpftool process. The fallback where libbpf cannot be
// loaded in-process (LibbpfDatapath); both pin the same layout.
import { loadProgram, programId, readCounters } from "./bpftool.js";
import { KernelDatapath, toolOptions, type KernelDatapathOptions } from "./kernel-datapath.js";

export type BpftoolDatapathOptions = KernelDatapathOptions;

export class BpftoolDatapath extends KernelDatapath {
  constructor(options: BpftoolDatapathOptions = {}) {
    const tool = toolOptions(options);
    super(
      {
        loadProgram: (object, rules, pinDir) => loadProgram(object, rules, pinDir, tool),
        programId: (progPin) => programId(progPin, tool),
        readCounters: (mapsDir, indexes) => readCounters(mapsDir, indexes, tool),
      },
      options,
    );
  }
}
