// cli/output.ts on its own: the table printer, and plainError turning Node's
// system-error texts and OpenSSL's error codes into plain words, each file
// named once.
import { readFile } from "node:fs/promises";
import { createPrivateKey } from "node:crypto";
import { describe, expect, it } from "vitest";
import { InputError } from "../../errors.js";
import { plainError, table } from "../../cli/output.js";
import { printable } from "../../util/index.js";
import { aegis, expectOneErrorLine } from "./run.js";

/** The error a call throws. */
async function thrown(action: () => unknown): Promise<unknown> {
  try {
    await action();
  } catch (err) {
    return err;
  }
  throw new Error("expected a failure");
}

describe("table", () => {
  it("a header, columns padded to the widest cell, no trailing spaces", () => {
    expect(table(["HOST", "LABELS", "N"], [["web-01", "role=web", "1"], ["db", "-", "12"]])).toBe(
      ["HOST    LABELS    N", "web-01  role=web  1", "db      -         12"].join("\n"),
    );
    expect(table(["A", "B"], [])).toBe("A  B");
  });

  it("cells are escaped before they are measured: a label with control characters, a tab or a newline keeps the columns", () => {
    expect(table(["HOST", "REASON", "N"], [["a\x1b[2K", "x\ty\nz", "1"], ["bb", "-", "2"]])).toBe(
      ["HOST      REASON   N", "a\\x1b[2K  x\\ty\\nz  1", "bb        -        2"].join("\n"),
    );
  });
});

describe("printable", () => {
  it("writes control characters as escapes: a terminal runs none of another's sequences, and a line is not painted over", () => {
    expect(printable("ok\r\x1b[2Kfake\x00\x7f\x9b\tend\nnext"), "escaped, tab and newline kept").toBe("ok\\r\\x1b[2Kfake\\x00\\x7f\\x9b\tend\nnext");
    expect(printable("name\u202etxt.exe\u2028x"), "a bidi override and a line separator").toBe("name\\u202etxt.exe\\u2028x");
  });

  it("the error line quotes what a user or a file gave with its control characters escaped", async () => {
    const result = await aegis(["mirror", "import", "/nonexistent/capsule.tar", "oci:/nonexistent/site", "--key", "/nonexistent/x\r\x1b[2Kfine.pub"]);
    const line = expectOneErrorLine(result);
    expect(line.includes("\x1b") || line.includes("\r"), `no escape character or carriage return in ${JSON.stringify(line)}`).toBe(false);
    expect(line, "escaped").toContain("/nonexistent/x\\r\\x1b[2Kfine.pub: cannot read key file");
  });
});

describe("plainError", () => {
  it("a missing file wrapped in a message naming it: the file once, no ENOENT", async () => {
    const cause = await thrown(() => readFile("/no/such/ci.key"));
    const text = plainError(new InputError("FILE_NOT_FOUND", "/no/such/ci.key: cannot read key file", { cause }));
    expect(text).toBe("/no/such/ci.key: cannot read key file: no such file or directory");
  });

  it("a missing file alone: named with the plain words", async () => {
    expect(plainError(await thrown(() => readFile("/no/such/trust.yaml")))).toBe("/no/such/trust.yaml: no such file or directory");
  });

  it("a directory where a file was expected, and permission denied", async () => {
    expect(plainError(await thrown(() => readFile("/")))).toBe("is a directory, not a file");
    const denied = Object.assign(new Error("EACCES: permission denied, open '/root/ci.key'"), { code: "EACCES" });
    expect(plainError(denied)).toBe("/root/ci.key: permission denied");
  });

  it("an OpenSSL code after a message that says what is wrong is dropped", async () => {
    const cause = await thrown(() => createPrivateKey("not a key"));
    expect(String((cause as Error).message)).toMatch(/error:[0-9A-F]{8}:/);
    expect(plainError(new InputError("INVALID_ARGUMENT", "ci.key: not a PKCS#8 PEM private key", { cause }))).toBe("ci.key: not a PKCS#8 PEM private key");
  });

  it("an OpenSSL code alone is said in words", async () => {
    const text = plainError(await thrown(() => createPrivateKey("not a key")));
    expect(text).not.toMatch(/error:[0-9A-F]{8}|routines/);
    expect(text).toMatch(/PEM|key format/);
  });
});
