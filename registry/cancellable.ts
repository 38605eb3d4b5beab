// A read-only source whose every read carries one signal, so a whole check
// (verifyArtifact reading a manifest, a listing and the signatures it names)
// is cancelled at once, though its steps pass no options of their own.
import type { AbortOptions, ReadOnlyTarget } from "./storage.js";

/**
 * `source` with `signal` given to every read (beside any signal the read is
 * given), and a listing checked after it too: a source that ignores the
 * signal cannot hand back a listing once it fired.
 */
export function cancellable(source: ReadOnlyTarget, signal: AbortSignal | undefined): ReadOnlyTarget {
  if (!signal) return source;
  const withSignal = (options?: AbortOptions): AbortOptions => ({ signal: options?.signal ? AbortSignal.any([signal, options.signal]) : signal });
  const checked = async <T>(listing: Promise<T>): Promise<T> => {
    const result = await listing;
    signal.throwIfAborted();
    return result;
  };
  const { fetchUnverified } = source;
  return {
    name: source.name,
    fetch: (desc, options) => source.fetch(desc, withSignal(options)),
    exists: (desc, options) => source.exists(desc, withSignal(options)),
    ...(fetchUnverified ? { fetchUnverified: (desc, options) => fetchUnverified.call(source, desc, withSignal(options)) } : {}),
    resolve: (reference, options) => source.resolve(reference, withSignal(options)),
    tags: (options) => checked(source.tags(withSignal(options))),
    referrers: (subject, artifactType, options) => checked(source.referrers(subject, artifactType, withSignal(options))),
  };
}
