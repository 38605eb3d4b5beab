// util/text.ts: logText, the agent's log lines made safe: control characters
// escaped (a quoted registry error cannot start a forged journal line) and a
// line bounded (nor flood it); quote, someone else's value in an error
// message, bounded too.
import { describe, expect, it } from "vitest";
import { logText, quote } from "../../util/index.js";

describe("logText", () => {
  it("escapes what would end or repaint the line", () => {
    expect(logText("failed: HTTP 500: oops\r\x1b[2Kverified sha256:abc")).toBe("failed: HTTP 500: oops\\r\\x1b[2Kverified sha256:abc");
    expect(logText("failed: HTTP 500: oops\nverified sha256:abc"), "a newline").toBe("failed: HTTP 500: oops\\nverified sha256:abc");
  });

  it("cuts a line at 4,096 characters and says how many more there were", () => {
    const line = logText(`reason: ${"x".repeat(10_000)}`);
    expect(line).toHaveLength(4096 + "… (5912 more characters)".length);
    expect(line.endsWith("… (5912 more characters)"), line.slice(-40)).toBe(true);
    expect(logText("short"), "a short line as it is").toBe("short");
  });
});

describe("quote", () => {
  it("shows a value as JSON, a string's quotes and control characters escaped, cut at 128 characters", () => {
    expect(quote("application/vnd.oci.image.manifest.v1+json")).toBe('"application/vnd.oci.image.manifest.v1+json"');
    expect(quote('a"b\x1b[2K'), "quotes and an escape sequence").toBe('"a\\"b\\u001b[2K"');
    expect(quote("\u009b2K\u202e"), "a C1 control and a bidi override, which JSON leaves").toBe('"\\x9b2K\\u202e"');
    expect(quote(undefined), "undefined").toBe("undefined");
    expect(quote({ a: 1 }), "an object").toBe('{"a":1}');
    expect(quote("x".repeat(1_000_000)), "a string of a million characters").toBe(`"${"x".repeat(128)}"… (999872 more characters)`);
    expect(quote(["y".repeat(500)]), "a long array").toHaveLength(128 + "… (376 more characters)".length);
  });

  it("does not throw for what JSON.parse takes and JSON.stringify does not (an array nested 200,000 deep)", () => {
    const deep: unknown = JSON.parse(`${"[".repeat(200_000)}${"]".repeat(200_000)}`);
    expect(quote(deep)).toBe("(an object that cannot be shown)");
    expect(quote(10n), "a bigint").toBe("(a bigint that cannot be shown)");
  });
});
