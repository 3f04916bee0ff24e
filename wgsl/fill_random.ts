// Deterministic seeded weights made on the GPU, reproducible bit for bit on the host: the value
// is fixed by f32 round-to-nearest steps that the JS side repeats with Math.fround. The product
// scale·(2u − 1) passes through an OR with a uniform zero so that no driver can contract it with
// the following add into an FMA, which would round once instead of twice.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";
import { hash1, HASH_WGSL, unitFromHash } from "./_hash.ts";

/** What a `fill_random` kernel is specialised on: the element type written. */
export interface FillRandomSpec {
  /** Storage type of the filled buffer. */
  elem: StorageType;
}

const FIELDS: ParamFields = [
  ["count", "u32"],
  ["seed", "u32"],
  ["scale", "f32"],
  ["bias", "f32"],
  ["offset", "u32"],
  ["opaqueZero", "u32"],
];
const WORKGROUP = 256;

/** The f32 value element `index` of a fill gets: `bias + scale·(2u − 1)`, u from the hash. */
export function fillRandomValue(seed: number, scale: number, bias: number, index: number): number {
  const centred = 2 * unitFromHash(hash1(seed, index)) - 1;
  return Math.fround(Math.fround(bias) + Math.fround(Math.fround(scale) * centred));
}

/** The values `fill_random` writes for these sizes, made on the host. */
export function fillRandomHost(
  elem: StorageType,
  count: number,
  seed: number,
  scale: number,
  bias: number,
  offset: number,
): Float32Array | Float16Array {
  const out = elem === "f16" ? new Float16Array(count) : new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = fillRandomValue(seed, scale, bias, (offset + i) >>> 0);
  return out;
}

const VALUE_WGSL = `${HASH_WGSL}
fn value(i: u32) -> f32 {
  let centred = 2.0 * unit_from_hash(hash1(params.seed, params.offset + i)) - 1.0;
  let product = bitcast<f32>(bitcast<u32>(params.scale * centred) | params.opaqueZero);
  return params.bias + product;
}
`;

function mainCode(elem: StorageType): string {
  if (elem === "f32") {
    return `
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e < params.count) { out[e] = value(e); }
}
`;
  }
  return `
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let w = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  let e = 2u * w;
  if (e >= params.count) { return; }
  // An odd count leaves the high half of the last word as it was.
  var high = out[w] & 0xffff0000u;
  if (e + 1u < params.count) { high = pack2x16float(vec2<f32>(0.0, value(e + 1u))) & 0xffff0000u; }
  out[w] = (pack2x16float(vec2<f32>(value(e), 0.0)) & 0xffffu) | high;
}
`;
}

/** `out[i] = bias + scale·(2u − 1)` with u uniform from `hash1(seed, offset + i)`. */
export const fillRandom: KernelFamily<FillRandomSpec> = {
  name: "fill_random",
  key: (spec) => `fill_random_${spec.elem}`,
  generate(spec) {
    const bindings: BindingSpec[] = [{ name: "out", access: "read_write", elem: spec.elem }];
    return computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(bindings)}${VALUE_WGSL}${mainCode(spec.elem)}`,
      bindings,
      threads: WORKGROUP,
    });
  },
  dispatch: (spec, { count }) =>
    gridFor(spec.elem === "f16" ? Math.ceil(count / 2) : count, WORKGROUP),
  params: (_spec, sizes) => packParams("fill_random", FIELDS, { ...sizes, opaqueZero: 0 }),
  reference(spec, { count, seed, scale, bias, offset }, { out }) {
    out.set(fillRandomHost(spec.elem, count, seed, scale, bias, offset));
  },
};
