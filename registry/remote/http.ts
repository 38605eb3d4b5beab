// One HTTP/1.1 request on node:http or node:https, with keep-alive, an idle
// timeout, an abort signal that also cuts off the response body, and
// request bodies streamed with backpressure. The registry client uses this
// instead of undici: loading undici and compiling its WebAssembly parser
// cost about 0.15 s of CPU and 50 MiB of RSS per process, more than a
// whole 50 MiB pull, and a CLI process makes only a handful of requests.
import type { Agent, IncomingHttpHeaders, IncomingMessage } from "node:http";
import { pipeline, type Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { readAll } from "../digest.js";

/** A response body: the stream itself, with undici-style helpers. */
export interface ResponseBody extends Readable {
  /** Reads the rest of the body and drops it. */
  dump(): Promise<void>;
  /** The body as UTF-8; more than `limit` bytes (default 1 MiB) is a SIZE_LIMIT error. */
  text(limit?: number): Promise<string>;
  /** The body parsed as JSON, within `limit` bytes as text(). */
  json(limit?: number): Promise<unknown>;
}

export interface Response {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: ResponseBody;
}

export interface RequestOptions {
  method: string;
  headers?: Record<string, string>;
  /** A Buffer is sent with its Content-Length; a stream as it is read (the caller sets Content-Length). */
  body?: Buffer | Readable;
  /** Longest silence on the socket, waiting for the answer or between body chunks. */
  timeoutMs: number;
  /** Aborting fails the request, or the response body, with the signal's reason. */
  signal?: AbortSignal;
}

const MAX_TEXT = 1024 * 1024;
// node:http through getBuiltinModule, not an ESM import: on Node 22 and later
// the import's namespace reads every export of node:http, and its lazy
// WebSocket exports load Node's bundled undici (~9 ms, several MiB).
const { Agent: HttpAgent, request: httpRequest } = process.getBuiltinModule("node:http");
const httpAgent = new HttpAgent({ keepAlive: true });
let https: { agent: Agent; request: typeof httpRequest } | undefined;

/** node:https, and TLS with it, load on the first https request: about 1 MiB and 3 ms that a plain-http process never needs. */
function httpsClient(): { agent: Agent; request: typeof httpRequest } {
  if (!https) {
    const { Agent: HttpsAgent, request } = process.getBuiltinModule("node:https");
    https = { agent: new HttpsAgent({ keepAlive: true }), request };
  }
  return https;
}

export function sendRequest(url: URL, options: RequestOptions): Promise<Response> {
  const { signal, body } = options;
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const client = url.protocol === "https:" ? httpsClient() : { agent: httpAgent, request: httpRequest };
    const req = client.request(url, { method: options.method, headers: options.headers, agent: client.agent });
    let res: IncomingMessage | undefined;
    // Before the answer, the call rejects; after it, the body stream fails.
    const fail = (err: unknown) => {
      reject(err);
      res?.destroy(err as Error);
      req.destroy(err as Error);
    };
    const onAbort = () => fail(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const done = () => signal?.removeEventListener("abort", onAbort);
    req.setTimeout(options.timeoutMs, () => fail(Object.assign(new Error(`no answer within ${options.timeoutMs / 1000} s`), { code: "ETIMEDOUT" })));
    req.on("error", (err) => {
      done();
      reject(err);
    });
    req.on("response", (answer) => {
      res = answer;
      answer.once("close", done);
      resolve({ statusCode: answer.statusCode ?? 0, headers: answer.headers, body: withHelpers(answer) });
    });
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    // A failing body (a digest mismatch as it is verified) breaks off the request, and is what the call rejects with.
    else pipeline(body, req, (err) => err && fail(err));
  });
}

function withHelpers(res: IncomingMessage): ResponseBody {
  const text = async (limit = MAX_TEXT) => (await readAll(res, limit, "response body")).toString("utf8");
  return Object.assign(res, {
    async dump() {
      res.resume();
      await finished(res);
    },
    text,
    async json(limit?: number) {
      return JSON.parse(await text(limit)) as unknown;
    },
  });
}
