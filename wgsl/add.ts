// In-place residual add, one invocation per element.

import type { BindingSpec, KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";
import type { NoSpec } from "./_no_spec.ts";

const FIELDS: ParamFields = [["count", "u32"]];
const WORKGROUP = 256;
const BINDINGS: BindingSpec[] = [
  { name: "x", access: "read_write", elem: "f32" },
  { name: "y", access: "read", elem: "f32" },
];

/** `x += y` over `count` elements. */
export const add: KernelFamily<NoSpec> = {
  name: "add",
  key: () => "add",
  generate: () => ({
    code: `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS)}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.count) { return; }
  x[e] += y[e];
}
`,
    entry: "main",
    workgroupSize: [WORKGROUP, 1, 1],
    bindings: BINDINGS,
    features: [],
    workgroupBytes: 0,
  }),
  dispatch: (_spec, sizes) => gridFor(sizes.count, WORKGROUP),
  params: (_spec, sizes) => packParams("add", FIELDS, sizes),
  reference(_spec, { count }, { x, y }) {
    for (let e = 0; e < count; e++) x[e] += y[e];
  },
};
