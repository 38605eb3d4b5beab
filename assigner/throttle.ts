// At most one log line per key (a host, a client address) per interval, so a
// host that keeps failing, or a client that keeps being refused, is named in
// the log without flooding it. Memory is bounded: past maxKeys, the key that
// logged longest ago is forgotten (it may then log once more).
import { setBounded } from "../util/index.js";

export class LogThrottle {
  /** By key: when it last logged, and how many lines were held back since. */
  private readonly last = new Map<string, { at: number; held: number }>();

  constructor(
    private readonly intervalMs = 60_000,
    private readonly maxKeys = 10_000,
  ) {}

  /** Whether to log for `key` now: undefined if not, else how many were held back since its last line. */
  take(key: string, now = Date.now()): { held: number } | undefined {
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.held++;
      return undefined;
    }
    // Moved to the end: the map's order is the order keys last logged in.
    setBounded(this.last, key, { at: now, held: 0 }, this.maxKeys);
    return { held: entry?.held ?? 0 };
  }
}
