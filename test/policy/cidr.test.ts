// CIDR parsing without node:net: every text form a policy may use, its
// canonical text, and the texts refused (a zone such as "%eth0" among them).
import { describe, expect, it } from "vitest";
import { canonicalCidr, formatCidr, parseCidr } from "../../policy/cidr.js";

describe("parseCidr", () => {
  it.each([
    ["10.1.2.3/8", "10.0.0.0/8"],
    [" 192.0.2.7 ", "192.0.2.7/32"],
    ["::/0", "::/0"],
    ["2001:DB8::/32", "2001:db8::/32"],
    ["2001:db8:0:0:1:0:0:1/128", "2001:db8::1:0:0:1/128"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8/128"],
    ["1:2:3:4:5:6:7::/112", "1:2:3:4:5:6:7:0/112"],
    ["::1:2:3:4:5:6:7", "0:1:2:3:4:5:6:7/128"],
    ["::ffff:192.0.2.1/128", "::ffff:c000:201/128"],
    ["1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304/128"],
    ["fe80::1/64", "fe80::/64"],
  ])("%s is %s", (text, canonical) => {
    expect(formatCidr(parseCidr(text)), text).toBe(canonical);
    expect(canonicalCidr(text).cidr, `canonicalCidr(${text})`).toBe(canonical);
  });

  it.each([
    ["fe80::1%eth0/64", "a zone"],
    ["1::2::3/64", "two ::"],
    ["12345::/16", "a group of five digits"],
    [":1::/16", "a lone leading colon"],
    ["1:/16", "a trailing colon"],
    ["g::/16", "a group that is not hex"],
    ["1:2:3:4:5:6:7:8:9", "nine groups"],
    ["1:2:3:4::5:6:7:8", ":: standing for no group"],
    ["1:2:3:4:5:6:7", "seven groups without ::"],
    ["::ffff:300.1.1.1", "an IPv4 tail out of range"],
    ["::ffff:01.2.3.4", "an IPv4 tail with a leading zero"],
    ["1:2:3:4:5:6:7:1.2.3.4", "an IPv4 tail after seven groups"],
    ["010.0.0.0/8", "an IPv4 leading zero"],
    ["10.0.0/8", "three IPv4 octets"],
    ["not-a-cidr", "a word"],
  ])("%s is refused (%s)", (text, why) => {
    expect(() => parseCidr(text), why).toThrow(`"${text}" is not an IPv4 or IPv6 CIDR`);
  });

  it("prefix lengths past the family's width are refused", () => {
    expect(() => parseCidr("::/129")).toThrow('"::/129" has a prefix length outside 0-128');
    expect(() => parseCidr("10.0.0.0/33")).toThrow('"10.0.0.0/33" has a prefix length outside 0-32');
  });
});
