// The gated-MLP product silu(gate)·up. The vec4 variant moves 16 bytes per load (enough bytes in
// flight for HBM bandwidth); the scalar one serves any size.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";
import { silu, SILU_WGSL } from "./_silu.ts";

/** What a `silu_mul` kernel is specialised on. */
export interface SiluMulSpec {
  /** Four elements per invocation as vec4 (rows·cols must be a multiple of 4). */
  vec4?: boolean;
}

const FIELDS: ParamFields = [["rows", "u32"], ["cols", "u32"]];
const WORKGROUP = 256;
const BINDINGS: BindingSpec[] = [
  { name: "a", access: "read", elem: "f32" },
  { name: "b", access: "read", elem: "f32" },
  { name: "out", access: "read_write", elem: "f32" },
];

// silu on each lane of a vec4, in the overflow-safe form of SILU_WGSL.
const SILU4_WGSL = `
fn silu4(a: vec4<f32>) -> vec4<f32> {
  let e = exp(-abs(a));
  return a * select(e / (1.0 + e), 1.0 / (1.0 + e), a >= vec4<f32>());
}
`;

/** `out = silu(a) · b` elementwise over `[rows, cols]`. */
export const siluMul: KernelFamily<SiluMulSpec> = {
  name: "silu_mul",
  key: (spec) => (spec.vec4 ? "silu_mul_v4" : "silu_mul"),
  generate: (spec) => {
    const width = spec.vec4 ? 4 : 1;
    const vectors: Record<string, string> = spec.vec4
      ? { a: "vec4<f32>", b: "vec4<f32>", out: "vec4<f32>" }
      : {};
    return computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS, vectors)}${
        spec.vec4 ? SILU4_WGSL : SILU_WGSL
      }
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.cols / ${width}u) { return; }
  out[e] = ${spec.vec4 ? "silu4" : "silu"}(a[e]) * b[e];
}
`,
      bindings: BINDINGS,
      threads: WORKGROUP,
    });
  },
  dispatch: (spec, sizes) => gridFor((sizes.rows * sizes.cols) / (spec.vec4 ? 4 : 1), WORKGROUP),
  params(spec, sizes) {
    if (spec.vec4 && (sizes.rows * sizes.cols) % 4 !== 0) {
      throw new Error(
        `silu_mul: the vec4 variant needs rows·cols to be a multiple of 4, got ${sizes.rows}·${sizes.cols}`,
      );
    }
    return packParams("silu_mul", FIELDS, sizes);
  },
  reference(_spec, { rows, cols }, { a, b, out }) {
    for (let e = 0; e < rows * cols; e++) out[e] = silu(a[e]) * b[e];
  },
};
