// The gated-MLP product silu(gate)·up, one invocation per element.

import type { BindingSpec, KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";
import { silu, SILU_WGSL } from "./_silu.ts";
import type { NoSpec } from "./_no_spec.ts";

const FIELDS: ParamFields = [["rows", "u32"], ["cols", "u32"]];
const WORKGROUP = 256;
const BINDINGS: BindingSpec[] = [
  { name: "a", access: "read", elem: "f32" },
  { name: "b", access: "read", elem: "f32" },
  { name: "out", access: "read_write", elem: "f32" },
];

/** `out = silu(a) · b` elementwise over `[rows, cols]`. */
export const siluMul: KernelFamily<NoSpec> = {
  name: "silu_mul",
  key: () => "silu_mul",
  generate: () => ({
    code: `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS)}${SILU_WGSL}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.cols) { return; }
  out[e] = silu(a[e]) * b[e];
}
`,
    entry: "main",
    workgroupSize: [WORKGROUP, 1, 1],
    bindings: BINDINGS,
    features: [],
    workgroupBytes: 0,
  }),
  dispatch: (_spec, sizes) => gridFor(sizes.rows * sizes.cols, WORKGROUP),
  params: (_spec, sizes) => packParams("silu_mul", FIELDS, sizes),
  reference(_spec, { rows, cols }, { a, b, out }) {
    for (let e = 0; e < rows * cols; e++) out[e] = silu(a[e]) * b[e];
  },
};
