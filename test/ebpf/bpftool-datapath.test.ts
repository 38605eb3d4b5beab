// BpftoolDatapath as root: the kernel Datapath suite (conformance, crash
// recovery, real traffic) on a veth pair this file creates.
import { BpftoolDatapath } from "../../ebpf/index.js";
import { kernelDatapathSuite, kernelLab } from "./kernel-datapath.js";

kernelDatapathSuite("bpftool", kernelLab("dpb"), (options) => new BpftoolDatapath(options));
