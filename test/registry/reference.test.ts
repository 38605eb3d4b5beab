import { describe, expect, it } from "vitest";
import { formatReference, parseReference, RegistryClient } from "../../registry/index.js";
import { parseChallenge } from "../../registry/remote/client.js";

const DIGEST = `sha256:${"a".repeat(64)}`;

describe("references", () => {
  it.each([
    ["127.0.0.1:5000/aegis/policies:v1", { kind: "remote", registry: "127.0.0.1:5000", repository: "aegis/policies", tag: "v1" }],
    [`ghcr.io/team/net/icmp@${DIGEST}`, { kind: "remote", registry: "ghcr.io", repository: "team/net/icmp", digest: DIGEST }],
    [`localhost/p:1.0.0@${DIGEST}`, { kind: "remote", registry: "localhost", repository: "p", tag: "1.0.0", digest: DIGEST }],
    ["oci:./mirror", { kind: "layout", dir: "./mirror" }],
    ["oci:/srv/oci:v2", { kind: "layout", dir: "/srv/oci", tag: "v2" }],
    [`oci:/srv/oci@${DIGEST}`, { kind: "layout", dir: "/srv/oci", digest: DIGEST }],
  ])("parses %s", (text, expected) => {
    expect(parseReference(text)).toEqual(expected);
  });

  it.each([
    ["policies:v1", /expected host\[:port\]\/repository/],
    ["team/policy:v1", /"team" is not a registry host/],
    ["127.0.0.1:5000/Upper/case", /not a valid repository name/],
    ["127.0.0.1:5000/p:bad tag!", /is not a valid tag/],
    ["127.0.0.1:5000/p@sha256:short", /is not a sha256 digest/],
    ["oci:", /no layout directory/],
  ])("refuses %s", (text, message) => {
    expect(() => parseReference(text)).toThrow(message);
  });

  it("formats with the digest in preference to the tag", () => {
    const ref = parseReference("127.0.0.1:5000/p:v1");
    expect(formatReference(ref)).toBe("127.0.0.1:5000/p:v1");
    expect(formatReference(ref, DIGEST)).toBe(`127.0.0.1:5000/p@${DIGEST}`);
  });
});

describe("transport", () => {
  it("uses plain HTTP only for loopback or when asked", () => {
    expect(new RegistryClient("registry.example.com").baseUrl).toBe("https://registry.example.com");
    expect(new RegistryClient("10.0.0.5:5000").baseUrl).toBe("https://10.0.0.5:5000");
    expect(new RegistryClient("10.0.0.5:5000", { plainHttp: true }).baseUrl).toBe("http://10.0.0.5:5000");
    expect(new RegistryClient("127.0.0.1:5000").baseUrl).toBe("http://127.0.0.1:5000");
    expect(new RegistryClient("localhost:5000").baseUrl).toBe("http://localhost:5000");
  });

  it("parses bearer challenges", () => {
    expect(parseChallenge('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.example.com/token", service: "registry.example.com", scope: "repository:a/b:pull,push" },
    });
    expect(parseChallenge('Basic realm="x"')).toEqual({ scheme: "basic", params: { realm: "x" } });
  });
});
