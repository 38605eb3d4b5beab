// POST /artifacts's body read as it arrives: the seed's upload is a JSON
// object whose "data" is the bundle in base64 (up to --max-upload-bytes).
// Parsing that whole would hold it three times (the raw body, the parsed
// string, the decoded bytes); this scanner decodes and hashes the top-level
// "data" string as its bytes come in and keeps only the rest of the object
// (small, bounded) to parse with JSON.parse and zod, with "data" left as "".
// JSON's structural characters are ASCII, so scanning UTF-8 bytes is exact
// (RFC 8259 section 8.1).
import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { AssignerError } from "./api/index.js";

/** The decoded "data" of an upload. */
export interface Upload {
  bytes: Buffer;
  size: number;
  /** sha256:<hex> of `bytes`. */
  digest: string;
}

export interface ScannedBody {
  /** The JSON text of the body with the top-level "data" string emptied. */
  rest: string;
  /** Absent when the body has no top-level "data" string (a {"reference"} body, say). */
  upload?: Upload;
}

/** What is left of a body once "data" is taken out: a few fields. */
export const MAX_REST_BYTES = 64 * 1024;

/** Longer keys are not read (the schema's are short): a key is collected byte by byte. */
const MAX_KEY_BYTES = 64;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const SLASH = 0x2f;

/** Base64's alphabet (RFC 4648 section 4): 1 for a data character, 2 for the padding "=". */
const BASE64 = new Uint8Array(256);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") BASE64[c.charCodeAt(0)] = 1;
BASE64["=".charCodeAt(0)] = 2;

/** The most body bytes that can carry `maxUploadBytes` of data: base64, each "/" possibly escaped as "\/", and the rest. */
export function maxUploadBodyBytes(maxUploadBytes: number): number {
  return 2 * 4 * Math.ceil(maxUploadBytes / 3) + MAX_REST_BYTES;
}

const tooLarge = (message: string) => new AssignerError("PAYLOAD_TOO_LARGE", message);
const notBase64 = () => new AssignerError("BAD_REQUEST", "body.data: must be base64");

/**
 * Decodes base64 characters as they come, four at a time, hashing the bytes
 * into one buffer: sized from the body's length when it is known, so the
 * bundle is held once; doubled as needed when it is not (chunked).
 */
class Base64Sink {
  private pending = "";
  private padding = 0;
  private buffer: Buffer;
  private readonly hash = createHash("sha256");
  size = 0;

  constructor(
    private readonly maxBytes: number,
    expectedBytes: number,
  ) {
    this.buffer = Buffer.allocUnsafe(Math.min(maxBytes, Math.max(expectedBytes, 64 * 1024)));
  }

  /** `chars` are ASCII bytes of the string, escapes already resolved. */
  write(chars: Buffer): void {
    for (let i = 0; i < chars.length; i++) {
      const kind = BASE64[chars[i]!];
      // Padding only at the end, at most two: anything after it is not base64.
      if (kind === 0 || (kind === 1 && this.padding > 0) || (kind === 2 && ++this.padding > 2)) throw notBase64();
    }
    const text = this.pending + chars.toString("latin1");
    const whole = text.length - (text.length % 4);
    this.pending = text.slice(whole);
    if (whole > 0) this.push(Buffer.from(text.slice(0, whole), "base64"));
  }

  end(): Upload {
    // Unpadded base64 is accepted, as Buffer.from and the schema did before.
    if (this.pending) this.push(Buffer.from(this.pending, "base64"));
    return { bytes: this.buffer.subarray(0, this.size), size: this.size, digest: `sha256:${this.hash.digest("hex")}` };
  }

  private push(bytes: Buffer): void {
    const size = this.size + bytes.length;
    if (size > this.maxBytes) throw tooLarge(`body.data: the bundle is larger than this assigner accepts (${this.maxBytes} bytes; --max-upload-bytes)`);
    if (size > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.min(this.maxBytes, Math.max(size, this.buffer.length * 2)));
      this.buffer.copy(grown, 0, 0, this.size);
      this.buffer = grown;
    }
    this.hash.update(bytes);
    bytes.copy(this.buffer, this.size);
    this.size = size;
  }
}

/**
 * Reads `body` to its end. Throws PAYLOAD_TOO_LARGE when the data passes
 * `maxUploadBytes` or the rest passes MAX_REST_BYTES, BAD_REQUEST when "data"
 * is not base64; malformed JSON elsewhere is left for JSON.parse to refuse.
 * `bodyBytes`, the Content-Length when there is one, sizes the data's buffer.
 */
export async function scanUploadBody(body: Readable, maxUploadBytes: number, bodyBytes = 0): Promise<ScannedBody> {
  const rest: Buffer[] = [];
  let restSize = 0;
  const keep = (bytes: Buffer) => {
    restSize += bytes.length;
    if (restSize > MAX_REST_BYTES) throw tooLarge(`request body is too large: its fields other than data pass ${MAX_REST_BYTES} bytes`);
    // A copy: a slice would keep the whole chunk it came from alive.
    rest.push(Buffer.from(bytes));
  };

  let depth = 0;
  let topIsObject = false;
  let inString = false;
  let escaped = false;
  // At depth 1 of the top object: the next string is a key; the key just read; whether a value starts now.
  let expectKey = false;
  let key: Buffer[] | undefined;
  let lastKey: string | undefined;
  let valueStarts = false;
  // Inside the data string.
  let sink: Base64Sink | undefined;
  let dataEscaped = false;
  let upload: Upload | undefined;

  // Refusing part-way leaves the body unread rather than destroyed, so the answer still goes out (http.ts closes the connection after it).
  for await (const chunk of body.iterator({ destroyOnReturn: false }) as AsyncIterable<Buffer>) {
    let keptFrom = 0;
    let i = 0;
    while (i < chunk.length) {
      if (sink) {
        // The data string: runs of base64 up to a quote or a backslash, taken whole.
        if (dataEscaped) {
          // Some encoders write "/" as "\/" (PHP, say); no other escape belongs in base64.
          if (chunk[i] !== SLASH) throw notBase64();
          sink.write(chunk.subarray(i, i + 1));
          dataEscaped = false;
          i++;
          continue;
        }
        let end = i;
        while (end < chunk.length && chunk[end] !== QUOTE && chunk[end] !== BACKSLASH) end++;
        if (end > i) sink.write(chunk.subarray(i, end));
        i = end;
        if (i === chunk.length) break;
        if (chunk[i] === BACKSLASH) {
          dataEscaped = true;
          i++;
          continue;
        }
        if (upload) throw new AssignerError("BAD_REQUEST", "body: data is given twice");
        upload = sink.end();
        sink = undefined;
        keptFrom = i; // the closing quote
        i++;
        continue;
      }
      const c = chunk[i]!;
      if (inString) {
        // A key longer than any field's name is not "data": it is not kept.
        if (key && key.length < MAX_KEY_BYTES) key.push(chunk.subarray(i, i + 1));
        else key = undefined;
        if (escaped) escaped = false;
        else if (c === BACKSLASH) escaped = true;
        else if (c === QUOTE) {
          inString = false;
          if (key) {
            // The key as JSON reads it, escapes resolved.
            try {
              lastKey = JSON.parse(`"${Buffer.concat(key).toString("utf8")}`) as string;
            } catch {
              lastKey = undefined;
            }
            key = undefined;
          }
        }
        i++;
        continue;
      }
      if (valueStarts && c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) {
        valueStarts = false;
        if (c === QUOTE && lastKey === "data") {
          keep(chunk.subarray(keptFrom, i + 1));
          sink = new Base64Sink(maxUploadBytes, Math.ceil((bodyBytes * 3) / 4));
          i++;
          continue;
        }
      }
      if (c === QUOTE) {
        inString = true;
        if (expectKey) {
          expectKey = false;
          key = [];
          lastKey = undefined;
        }
      } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
        if (depth === 0) topIsObject = c === 0x7b;
        depth++;
        expectKey = depth === 1 && topIsObject;
      } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
        depth--;
      } else if (depth === 1 && topIsObject) {
        if (c === 0x2c /* , */) expectKey = true;
        else if (c === 0x3a /* : */) valueStarts = true;
      }
      i++;
    }
    if (!sink && keptFrom < chunk.length) keep(chunk.subarray(keptFrom));
  }
  if (sink) throw new AssignerError("BAD_REQUEST", "malformed JSON body: the data string does not end");
  return { rest: Buffer.concat(rest).toString("utf8"), ...(upload ? { upload } : {}) };
}
