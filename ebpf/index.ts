// The ebpf package: the TC classifier's rule compiler and build, the
// Datapath interface the agent drives, and its two implementations.
export {
  BPFFS,
  checkPinDir,
  ensureBpffs,
  fillMaps,
  findPinned,
  loadObject,
  loadProgram,
  programId,
  readCounters,
  TC_ACT,
  testRun,
  unpin,
  type Pinned,
  type TestRunResult,
} from "./bpftool.js";
export { BpftoolDatapath, type BpftoolDatapathOptions } from "./bpftool-datapath.js";
export { DEFAULT_PIN_ROOT, KernelDatapath, type KernelDatapathOptions, type ProgramLoader } from "./kernel-datapath.js";
export { LIBBPF_SONAME } from "./libbpf.js";
export { DATAPATH_CHOICES, LibbpfDatapath, openKernelDatapath, type DatapathChoice, type LibbpfDatapathOptions, type OpenedDatapath } from "./libbpf-datapath.js";
export { compileProgram, compileSource, listPrograms } from "./compile.js";
export { checkHook, compareHooks, hookName, idOfPinName, pinName, type Attachment, type Datapath, type Hook, type LoadedProgram, type NetInterface } from "./datapath.js";
export { EbpfError, type EbpfErrorCode } from "./errors.js";
export { PROGRAM_NEEDS, probeKernelFeatures, unmetNeeds, type KernelFeatures } from "./requirements.js";
export { MemoryDatapath, MemoryKernel, type DatapathOperation, type MemoryDatapathOptions } from "./memory-datapath.js";
export { COUNTERS_MAP, compileRules, FILLED_MAPS, sizeDefines, mapEntries, type CompiledRules, type FilledMap, type MapContents, type MapEntry, type MapSizes } from "./rules.js";
export { attachTc, detachTc, filtersAt, listClsact, listLinks, listTc, TC_DIRECTIONS, type TcDirection, type TcEntry, type TcFilter, type TcHook } from "./tc.js";
