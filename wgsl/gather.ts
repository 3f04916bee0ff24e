// Gathers selected KV rows per head (APB's passing blocks after top-k). f32 copies element by
// element; f16 copies the raw halves and writes whole words, so odd head sizes work too.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, halfBits } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";

/** What a `gather` kernel is specialised on: the element type gathered. */
export interface GatherSpec {
  /** Storage type of `src` and `out`. */
  elem: StorageType;
}

const FIELDS: ParamFields = [
  ["k", "u32"],
  ["heads", "u32"],
  ["headDim", "u32"],
  ["srcRowOffset", "u32"],
];
const WORKGROUP = 256;

const SOURCE_WGSL = `
// Source element of output element e of [k, heads, headDim].
fn source(e: u32) -> u32 {
  let jg = e / params.headDim;
  let g = jg % params.heads;
  return ((params.srcRowOffset + idx[jg]) * params.heads + g) * params.headDim + e - jg * params.headDim;
}
`;

function mainCode(elem: StorageType): string {
  if (elem === "f32") {
    return `
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e < params.k * params.heads * params.headDim) { out[e] = src[source(e)]; }
}
`;
  }
  return `${halfBits("src")}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let w = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  let e = 2u * w;
  let count = params.k * params.heads * params.headDim;
  if (e >= count) { return; }
  // An odd count leaves the high half of the last word as it was.
  var high = out[w] >> 16u;
  if (e + 1u < count) { high = bits_src(source(e + 1u)); }
  out[w] = bits_src(source(e)) | (high << 16u);
}
`;
}

/** `out[j, g, :] = src[srcRowOffset + idx[j, g], g, :]`. */
export const gather: KernelFamily<GatherSpec> = {
  name: "gather",
  key: (spec) => `gather_${spec.elem}`,
  generate(spec) {
    const bindings: BindingSpec[] = [
      { name: "idx", access: "read", elem: "u32" },
      { name: "src", access: "read", elem: spec.elem },
      { name: "out", access: "read_write", elem: spec.elem },
    ];
    return computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(bindings)}${SOURCE_WGSL}${mainCode(spec.elem)}`,
      bindings,
      threads: WORKGROUP,
    });
  },
  dispatch(spec, { k, heads, headDim }) {
    const count = k * heads * headDim;
    return gridFor(spec.elem === "f16" ? Math.ceil(count / 2) : count, WORKGROUP);
  },
  params: (_spec, sizes) => packParams("gather", FIELDS, sizes),
  reference(spec, { k, heads, headDim, srcRowOffset }, { idx, src, out }) {
    const stored = spec.elem === "f16" ? Math.f16round : (x: number) => x;
    for (let j = 0; j < k; j++) {
      for (let g = 0; g < heads; g++) {
        const from = ((srcRowOffset + idx[j * heads + g]) * heads + g) * headDim;
        for (let d = 0; d < headDim; d++) {
          out[(j * heads + g) * headDim + d] = stored(src[from + d]);
        }
      }
    }
  },
};
