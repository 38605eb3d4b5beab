// A small valid policy for tests that need one whose rules do not matter
// (pushing, pulling, bundling): one drop of 192.0.2.0/24, named as asked.
import type { Policy } from "../../policy/index.js";

export function testPolicy(name: string): Policy {
  return {
    name,
    version: "1.0.0",
    description: "",
    program: "aegis_net",
    attach: { hook: "tc", direction: "egress" },
    rules: [{ action: "drop", dst: "192.0.2.0/24", protocol: "any" }],
  };
}
