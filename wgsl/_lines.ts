// Generated WGSL repeats a line per register, row or tile: `lines(n, f)` writes f(0) … f(n − 1).

/** The integers 0 … n − 1. */
export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** f(0) … f(n − 1), joined by `sep` (a newline by default). */
export function lines(n: number, f: (i: number) => string, sep = "\n"): string {
  return range(n).map(f).join(sep);
}
