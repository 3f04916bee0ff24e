// Seeded uniform scores, the training-free stand-in for a trained compressor: the same
// (seed, row, head) always scores the same, on any device and on the host.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";
import { hash2, HASH_WGSL, unitFromHash } from "./_hash.ts";
import type { NoSpec } from "./_no_spec.ts";

const FIELDS: ParamFields = [["rows", "u32"], ["heads", "u32"], ["seed", "u32"]];
const WORKGROUP = 256;
const BINDINGS: BindingSpec[] = [{ name: "out", access: "read_write", elem: "f32" }];

/** `out[t, g]` = uniform [0, 1) value of `hash2(seed, t, g)`. */
export const randomScore: KernelFamily<NoSpec> = {
  name: "random_score",
  key: () => "random_score",
  generate: () =>
    computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS)}${HASH_WGSL}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.heads) { return; }
  let t = e / params.heads;
  out[e] = unit_from_hash(hash2(params.seed, t, e - t * params.heads));
}
`,
      bindings: BINDINGS,
      threads: WORKGROUP,
    }),
  dispatch: (_spec, sizes) => gridFor(sizes.rows * sizes.heads, WORKGROUP),
  params: (_spec, sizes) => packParams("random_score", FIELDS, sizes),
  reference(_spec, { rows, heads, seed }, { out }) {
    for (let t = 0; t < rows; t++) {
      for (let g = 0; g < heads; g++) out[t * heads + g] = unitFromHash(hash2(seed, t, g));
    }
  },
};
