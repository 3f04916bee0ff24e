// N-way merge of partial attention results by their log-sum-exp: one invocation per output
// element. Weights are exp(lse_p − max) / Σ, never exp(lse_p − L): subtracting the rounded L would
// cost accuracy when |lse| is large (around 1e4 an f32 ulp is 1e-3). Parts at −∞ are skipped by
// their bits, so an empty part is an exact identity.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";
import { NEG_INF_WGSL } from "./_neg_inf.ts";
import type { NoSpec } from "./_no_spec.ts";

const FIELDS: ParamFields = [
  ["parts", "u32"],
  ["rows", "u32"],
  ["heads", "u32"],
  ["headDim", "u32"],
  ["partStride", "u32"],
];
const WORKGROUP = 256;
const BINDINGS: BindingSpec[] = [
  { name: "o", access: "read", elem: "f32" },
  { name: "lse", access: "read", elem: "f32" },
  { name: "out", access: "read_write", elem: "f32" },
  { name: "outLse", access: "read_write", elem: "f32" },
];

/**
 * Merges `parts` partial attention outputs (part p, row r at row `p·partStride + r`):
 * `L = log Σ_p e^{lse_p}`, `out = Σ_p e^{lse_p − L}·o_p`; all parts −∞ give out 0, lse −∞.
 */
export const lseMerge: KernelFamily<NoSpec> = {
  name: "lse_merge",
  key: () => "lse_merge",
  generate: () =>
    computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS)}${NEG_INF_WGSL}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.heads * params.headDim) { return; }
  let rh = e / params.headDim;
  let d = e - rh * params.headDim;
  let r = rh / params.heads;
  let h = rh - r * params.heads;
  var top = 0.0;
  var any = false;
  for (var p = 0u; p < params.parts; p++) {
    let x = lse[(p * params.partStride + r) * params.heads + h];
    if (!is_neg_inf(x)) {
      top = select(x, max(top, x), any);
      any = true;
    }
  }
  if (!any) {
    out[e] = 0.0;
    if (d == 0u) { outLse[rh] = bitcast<f32>(NEG_INF_BITS); }
    return;
  }
  var sum = 0.0;
  var acc = 0.0;
  for (var p = 0u; p < params.parts; p++) {
    let row = (p * params.partStride + r) * params.heads + h;
    let x = lse[row];
    if (!is_neg_inf(x)) {
      let w = exp(x - top);
      sum += w;
      acc += w * o[row * params.headDim + d];
    }
  }
  out[e] = acc / sum;
  if (d == 0u) { outLse[rh] = top + log(sum); }
}
`,
      bindings: BINDINGS,
      threads: WORKGROUP,
    }),
  dispatch: (_spec, s) => gridFor(s.rows * s.heads * s.headDim, WORKGROUP),
  params: (_spec, sizes) => packParams("lse_merge", FIELDS, sizes),
  reference(_spec, sizes, { o, lse, out, outLse }) {
    const { parts, rows, heads, headDim, partStride } = sizes;
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < heads; h++) {
        const at = (p: number) => (p * partStride + r) * heads + h;
        let top = -Infinity;
        for (let p = 0; p < parts; p++) top = Math.max(top, lse[at(p)]);
        const rh = r * heads + h;
        if (top === -Infinity) {
          out.fill(0, rh * headDim, (rh + 1) * headDim);
          outLse[rh] = -Infinity;
          continue;
        }
        // Empty parts are skipped, not weighted by zero: their o may be anything, even NaN.
        const full = Array.from({ length: parts }, (_, p) => at(p)).filter((i) =>
          lse[i] > -Infinity
        );
        const sum = full.reduce((acc, i) => acc + Math.exp(lse[i] - top), 0);
        for (let d = 0; d < headDim; d++) {
          const acc = full.reduce((a, i) => a + Math.exp(lse[i] - top) * o[i * headDim + d], 0);
          out[rh * headDim + d] = acc / sum;
        }
        outLse[rh] = top + Math.log(sum);
      }
    }
  },
};
