// A small client of the assigner's HTTP API, for operators' commands.
import { request } from "undici";
import { AssignerError, ERROR_STATUS, type AssignerErrorCode } from "./errors.js";

export class AssignerClient {
  constructor(
    readonly baseUrl: string,
    private readonly token: string,
  ) {}

  async call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
    let res;
    try {
      res = await request(new URL(path, this.baseUrl), {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { "content-type": "application/json" } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      throw new AssignerError("UNAVAILABLE", `cannot reach the assigner at ${this.baseUrl}: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode >= 400) {
      let error = text;
      let code: AssignerErrorCode = "BAD_REQUEST";
      try {
        const parsed = JSON.parse(text) as { error?: string; code?: string };
        error = parsed.error ?? text;
        if (parsed.code && parsed.code in ERROR_STATUS) code = parsed.code as AssignerErrorCode;
      } catch {
        // Not our JSON (a proxy's page, say): keep the text.
      }
      throw new AssignerError(code, `assigner answered ${res.statusCode}: ${error}`);
    }
    return JSON.parse(text) as T;
  }
}
