// From a reference string to the Target that holds it.
import { OciLayoutTarget } from "./layout.js";
import { parseReference, selector, type Reference } from "./reference.js";
import { RemoteRepository, type RepositoryOptions } from "./remote/repository.js";
import type { Ingester, Target } from "./storage.js";

export interface Opened {
  ref: Reference;
  /** A layout or a registry repository: both ingest. */
  target: Target & Ingester;
  /** The tag or digest the reference selects, if any. */
  selector: string | undefined;
}

export function openReference(text: string, options: RepositoryOptions = {}): Opened {
  const ref = parseReference(text);
  const target =
    ref.kind === "layout" ? new OciLayoutTarget(ref.dir) : new RemoteRepository(ref.registry, ref.repository, options);
  return { ref, target, selector: selector(ref) };
}
