// Ordering text by its UTF-16 code units, the same on every machine.
// String.prototype.localeCompare follows the process's locale (LANG, ICU's
// collation: "Eth0" and "eth0", "å0" and "aa1" change places between locales)
// and can call two different strings equal; what is written down (receipts,
// state, bundles, capsules, API answers) must not depend on where it was made.

/** Compares `a` and `b` by code unit: negative, zero (only when equal) or positive. */
export function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
