// Greedy sampling: one workgroup per row; each invocation keeps the best (value, index) of a
// strided slice, then a tree reduction picks the largest value, ties to the lowest index. NaN is
// recognised by its bits, because drivers may fold `v != v` away.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";
import type { NoSpec } from "./_no_spec.ts";

const FIELDS: ParamFields = [["rows", "u32"], ["cols", "u32"]];
const WORKGROUP = 256;
const NONE = 0xffffffff;
const BINDINGS: BindingSpec[] = [
  { name: "logits", access: "read", elem: "f32" },
  { name: "out", access: "read_write", elem: "u32" },
];

/** `out[r]` = index of the largest non-NaN value of row r (lowest on ties; 0 if all NaN). */
export const argmax: KernelFamily<NoSpec> = {
  name: "argmax",
  key: () => "argmax",
  generate: () =>
    computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS)}
var<workgroup> bestValue: array<f32, ${WORKGROUP}>;
var<workgroup> bestIndex: array<u32, ${WORKGROUP}>;

fn is_nan(v: f32) -> bool {
  return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// Whether candidate (v, i) beats the current best (bv, bi); index ${NONE}u means "none yet".
fn beats(v: f32, i: u32, bv: f32, bi: u32) -> bool {
  return i != ${NONE}u && (bi == ${NONE}u || v > bv || (v == bv && i < bi));
}

@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let r = ${FLAT_GROUP};
  if (r >= params.rows) { return; }
  let base = r * params.cols;
  var bv = 0.0;
  var bi = ${NONE}u;
  for (var c = lid; c < params.cols; c += ${WORKGROUP}u) {
    let v = logits[base + c];
    if (!is_nan(v) && beats(v, c, bv, bi)) {
      bv = v;
      bi = c;
    }
  }
  bestValue[lid] = bv;
  bestIndex[lid] = bi;
  for (var stride = ${WORKGROUP / 2}u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (lid < stride) {
      let v = bestValue[lid + stride];
      let i = bestIndex[lid + stride];
      if (beats(v, i, bestValue[lid], bestIndex[lid])) {
        bestValue[lid] = v;
        bestIndex[lid] = i;
      }
    }
  }
  if (lid == 0u) { out[r] = select(bestIndex[0], 0u, bestIndex[0] == ${NONE}u); }
}
`,
      bindings: BINDINGS,
      threads: WORKGROUP,
      workgroupBytes: WORKGROUP * 8,
    }),
  dispatch: (_spec, sizes) => grid2d(sizes.rows),
  params: (_spec, sizes) => packParams("argmax", FIELDS, sizes),
  reference(_spec, { rows, cols }, { logits, out }) {
    for (let r = 0; r < rows; r++) {
      let best = 0;
      let bestValue = NaN;
      for (let c = 0; c < cols; c++) {
        const v = logits[r * cols + c];
        if (!Number.isNaN(v) && (Number.isNaN(bestValue) || v > bestValue)) {
          best = c;
          bestValue = v;
        }
      }
      out[r] = best;
    }
  },
};
