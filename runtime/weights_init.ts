// Seeded weights: where a weight buffer's values start in its tensor's random stream.

import type { WeightDecl } from "../compiler/plan.ts";

/** Element index of a weight buffer's first value within its whole tensor (0 unless split). */
export function weightOffset(w: WeightDecl): number {
  if (!w.rows) return 0;
  const rowElements = w.shape.slice(1).reduce((a, b) => a * b, 1);
  return w.rows[0] * rowElements;
}

/** Elements a weight buffer holds (its rows of the tensor). */
export function weightElements(w: WeightDecl): number {
  const rowElements = w.shape.slice(1).reduce((a, b) => a * b, 1);
  return (w.rows?.[1] ?? w.shape[0]) * rowElements;
}
