// Building program.o with clang: reproducible bytes, sizes from the policy,
// clear errors. Needs clang, not root.
import { describe, expect, it } from "vitest";
import type { Policy } from "../../policy/index.js";
import { compileProgram, listPrograms } from "../../ebpf/compile.js";
import { EbpfError } from "../../ebpf/errors.js";

const policy = (over: Partial<Policy> = {}): Policy => ({
  name: "t", version: "1.0.0", description: "", program: "aegis_net", attach: { hook: "tc", direction: "egress" },
  rules: [{ action: "drop", dst: "8.8.8.8/32", protocol: "icmp" }],
  ...over,
});

describe("compileProgram", () => {
  it("lists the programs in ebpf/", async () => {
    expect(await listPrograms()).toContain("aegis_net");
  });

  it("gives the same bytes for the same policy, with no temp paths inside", async () => {
    const [a, b] = await Promise.all([compileProgram(policy()), compileProgram(policy())]);
    expect(a.subarray(0, 4).toString("latin1")).toBe("\x7fELF");
    expect(a.equals(b)).toBe(true);
    expect(a.includes("aegis-clang-")).toBe(false);
  });

  it("sizes the maps from the policy", async () => {
    const small = await compileProgram(policy());
    const large = await compileProgram(policy({ rules: Array.from({ length: 3 }, () => ({ action: "drop", protocol: "tcp" })) }));
    expect(small.equals(large)).toBe(false);
  });

  it("names a missing program and its file", async () => {
    const err = await compileProgram(policy({ program: "foo" })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EbpfError);
    expect(err).toMatchObject({ code: "UNKNOWN_PROGRAM", message: expect.stringContaining('unknown eBPF program "foo": ebpf/foo.c not found') });
  });
});
