// Attention problems shared by the attention and lse_merge tests: segments as objects, their
// flattening into sizes, and a naive masked softmax written independently of the reference.

import type { Sizes } from "../../wgsl/kernel.ts";

/** One KV segment of an attention dispatch. */
export interface Segment {
  src: 0 | 1;
  kvStart: number;
  kvCount: number;
  qStart: number;
  qEnd: number;
  causal: 0 | 1;
  diag: number;
}

/** The shape of an attention dispatch apart from its segments. */
export interface AttentionShape {
  qRows: number;
  heads: number;
  kvHeads: number;
  qOffset: number;
  outOffset: number;
  scale: number;
}

/** Sizes of a dispatch with `segments`, numbered as the kernel expects. */
export function attentionSizes(shape: AttentionShape, segments: Segment[]): Sizes {
  const sizes: Sizes = { ...shape, nseg: segments.length };
  segments.forEach((seg, s) => {
    for (const [field, value] of Object.entries(seg)) sizes[`${field}${s}`] = value;
  });
  return sizes;
}

/**
 * Softmax attention of `q` ([rows, heads, d]) over `k`, `v` ([keys, kvHeads, d]) with an explicit
 * boolean mask, computed the textbook way: scores, max, exponentials, normalised sum.
 */
export function maskedSoftmax(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  rows: number,
  keys: number,
  heads: number,
  kvHeads: number,
  d: number,
  scale: number,
  allowed: (i: number, j: number) => boolean,
): { out: Float64Array; lse: Float64Array } {
  const out = new Float64Array(rows * heads * d);
  const lse = new Float64Array(rows * heads).fill(-Infinity);
  for (let i = 0; i < rows; i++) {
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / (heads / kvHeads));
      const scores = Array.from({ length: keys }, (_, j) => {
        if (!allowed(i, j)) return -Infinity;
        let dot = 0;
        for (let e = 0; e < d; e++) {
          dot += q[(i * heads + h) * d + e] * k[(j * kvHeads + g) * d + e];
        }
        return scale * dot;
      });
      const top = Math.max(...scores);
      if (top === -Infinity) continue;
      const weights = scores.map((s) => Math.exp(s - top));
      const sum = weights.reduce((a, b) => a + b, 0);
      lse[i * heads + h] = top + Math.log(sum);
      for (let j = 0; j < keys; j++) {
        for (let e = 0; e < d; e++) {
          out[(i * heads + h) * d + e] += (weights[j] / sum) * v[(j * kvHeads + g) * d + e];
        }
      }
    }
  }
  return { out, lse };
}
