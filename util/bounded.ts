// Caches a long-running process fills from what others name (registries an
// assigner lists, repositories, token scopes): each keeps its newest entries
// only, so a lying assigner naming a new host on every pass cannot grow it
// for ever.

/** Sets `key` in `map` (as its newest entry), dropping the oldest entries past `max`; returns `value`. */
export function setBounded<K, V>(map: Map<K, V>, key: K, value: V, max: number): V {
  map.delete(key);
  map.set(key, value);
  for (const oldest of map.keys()) {
    if (map.size <= max) break;
    map.delete(oldest);
  }
  return value;
}
