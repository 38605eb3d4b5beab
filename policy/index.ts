// The policy package (bottom layer): the policy source format, its normalized
// form, and CIDR helpers. bundle/ and ebpf/ both build on it.
export { canonicalCidr, formatCidr, parseCidr, type Cidr } from "./cidr.js";
export { normalizePolicy, type Action, type Direction, type Policy, type Protocol, type Rule } from "./policy.js";
export { loadPolicy, MAX_RULES, type LoadedPolicy } from "./source.js";
