// 1-D max pooling along rows (the retaining-head smoothing of APB's compressor): stride 1,
// implicit −∞ padding, so windows at the ends just cover fewer rows.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";
import type { NoSpec } from "./_no_spec.ts";

const FIELDS: ParamFields = [["rows", "u32"], ["cols", "u32"], ["width", "u32"]];
const WORKGROUP = 256;
const BINDINGS: BindingSpec[] = [
  { name: "x", access: "read", elem: "f32" },
  { name: "out", access: "read_write", elem: "f32" },
];

/** `out[r, c] = max x[r', c]` over `|r' − r| ≤ ⌊width/2⌋` within the rows. */
export const maxpool: KernelFamily<NoSpec> = {
  name: "maxpool",
  key: () => "maxpool",
  generate: () =>
    computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS)}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.cols) { return; }
  let r = e / params.cols;
  let c = e - r * params.cols;
  let half = params.width / 2u;
  let last = min(r + half, params.rows - 1u);
  var best = x[e];
  for (var s = r - min(r, half); s <= last; s++) {
    best = max(best, x[s * params.cols + c]);
  }
  out[e] = best;
}
`,
      bindings: BINDINGS,
      threads: WORKGROUP,
    }),
  dispatch: (_spec, sizes) => gridFor(sizes.rows * sizes.cols, WORKGROUP),
  params: (_spec, sizes) => packParams("maxpool", FIELDS, sizes),
  reference(_spec, { rows, cols, width }, { x, out }) {
    const half = Math.floor(width / 2);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        let best = -Infinity;
        for (let s = Math.max(0, r - half); s <= Math.min(rows - 1, r + half); s++) {
          best = Math.max(best, x[s * cols + c]);
        }
        out[r * cols + c] = best;
      }
    }
  },
};
