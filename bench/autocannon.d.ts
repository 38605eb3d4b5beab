// autocannon 9 ships no types (and @types/autocannon is not a dependency):
// just the part of its programmatic API that bench/assigner.ts uses.
declare module "autocannon" {
  export interface RequestParams {
    method?: string;
    path?: string;
    headers?: Record<string, string>;
  }

  export interface Request extends RequestParams {
    /** Called before each send of this request; may rewrite it. */
    setupRequest?: (request: RequestParams, context: Record<string, unknown>) => RequestParams;
  }

  export interface Options {
    url: string;
    connections?: number;
    pipelining?: number;
    /** Seconds. */
    duration?: number;
    /** Seconds before a request counts as timed out. */
    timeout?: number;
    headers?: Record<string, string>;
    requests?: Request[];
  }

  /** Percentiles and summary of one histogram (latency in ms, requests per second). */
  export interface Histogram {
    average: number;
    mean: number;
    stddev: number;
    min: number;
    max: number;
    total: number;
    p50: number;
    p90: number;
    p99: number;
    p99_9: number;
  }

  export interface Result {
    latency: Histogram;
    requests: Histogram;
    throughput: Histogram;
    /** Seconds. */
    duration: number;
    errors: number;
    timeouts: number;
    /** Every answer that is not a 2xx (1xx, 3xx, 4xx, 5xx). */
    non2xx: number;
    statusCodeStats: Record<string, { count: number }>;
  }

  /** Without a callback autocannon returns a thenable tracker. */
  export default function autocannon(options: Options): PromiseLike<Result>;
}
