// In-place residual add. The vec4 variant moves 16 bytes per load, so a few loads per invocation
// keep enough bytes in flight to approach HBM bandwidth; the scalar one serves any count.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";

/** What an `add` kernel is specialised on. */
export interface AddSpec {
  /** Four elements per invocation as vec4 (count must be a multiple of 4). */
  vec4?: boolean;
}

const FIELDS: ParamFields = [["count", "u32"]];
const WORKGROUP = 256;
const BINDINGS: BindingSpec[] = [
  { name: "x", access: "read_write", elem: "f32" },
  { name: "y", access: "read", elem: "f32" },
];

/** `x += y` over `count` elements. */
export const add: KernelFamily<AddSpec> = {
  name: "add",
  key: (spec) => (spec.vec4 ? "add_v4" : "add"),
  generate: (spec) => {
    const width = spec.vec4 ? 4 : 1;
    const vectors: Record<string, string> = spec.vec4 ? { x: "vec4<f32>", y: "vec4<f32>" } : {};
    return computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS, vectors)}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.count / ${width}u) { return; }
  x[e] += y[e];
}
`,
      bindings: BINDINGS,
      threads: WORKGROUP,
    });
  },
  dispatch: (spec, sizes) => gridFor(sizes.count / (spec.vec4 ? 4 : 1), WORKGROUP),
  params(spec, sizes) {
    if (spec.vec4 && sizes.count % 4 !== 0) {
      throw new Error(
        `add: the vec4 variant needs count to be a multiple of 4, got ${sizes.count}`,
      );
    }
    return packParams("add", FIELDS, sizes);
  },
  reference(_spec, { count }, { x, y }) {
    for (let e = 0; e < count; e++) x[e] += y[e];
  },
};
