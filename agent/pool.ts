// The agent's bounded fan-out: a pass's fetches and a rotation's fetches of
// signatures run a few at a time (a host's load on its registries stays
// small however many digests it is assigned), and none starts once the
// work's deadline has passed.
/**
 * Runs `work` on `items` in order, at most `concurrency` at a time, starting
 * none once `stop` is aborted: resolves with the items never started. A
 * `work` that throws rejects the whole (the others run on to their end).
 */
export async function pooled<T>(items: readonly T[], concurrency: number, stop: AbortSignal, work: (item: T) => Promise<void>): Promise<T[]> {
  const queue = [...items];
  const worker = async () => {
    while (queue.length > 0 && !stop.aborted) await work(queue.shift()!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, worker));
  return queue;
}
