// The agent's deadlines (a pass's fetches, the assigner's answers, a pull
// from the assigner, the trust root's sources): a signal that aborts once
// the time is up, joined with the one that stops the agent.
export interface Deadline {
  /** The outer signal and the deadline's together: what the work is given. */
  signal: AbortSignal;
  /** The deadline's own: aborted only once the time is up. */
  deadline: AbortSignal;
  /** Moves the deadline to `ms` after its start (a pull from the assigner, once it knows the layer's size). */
  moveTo: (ms: number) => void;
  /** Stops the timer: called once the work settles. */
  clear: () => void;
}

/**
 * `outer` (if any) joined with a deadline `ms` away that aborts with
 * `reason()`. The deadline's controller is held by its timer, not an
 * AbortSignal.timeout() that only AbortSignal.any() refers to: Node may
 * collect such a timeout signal before it fires (nodejs/node#57736), and a
 * hung assigner then held the pass for ever (seen in whole-suite test runs,
 * under GC pressure).
 */
export function withDeadline(outer: AbortSignal | undefined, ms: number, reason: () => unknown): Deadline {
  const deadline = new AbortController();
  const started = performance.now();
  let timer = setTimeout(() => deadline.abort(reason()), ms);
  return {
    signal: outer ? AbortSignal.any([outer, deadline.signal]) : deadline.signal,
    deadline: deadline.signal,
    moveTo: (total) => {
      clearTimeout(timer);
      timer = setTimeout(() => deadline.abort(reason()), Math.max(0, started + total - performance.now()));
    },
    clear: () => clearTimeout(timer),
  };
}
