// util/text.ts: logText, the agent's log lines made safe: control characters
// escaped (a quoted registry error cannot start a forged journal line) and a
// line bounded (nor flood it).
import { describe, expect, it } from "vitest";
import { logText } from "../../util/index.js";

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
