// Rotary position embedding, Hugging Face rotate_half convention, written straight into a cache
// layout. Positions come from a buffer (never from row offsets) and cos/sin from a table made on
// the host in float64, so the GPU and the reference use the very same angles. Each invocation
// writes two neighbouring elements, which for an f16 cache is exactly one u32 word. The vec4
// variant writes four elements of each half of a head (the pairs a rotation couples), reading x,
// the table and writing out 16 bytes at a time (8 for an f16 cache).

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";

/** RoPE frequencies of a model: base `theta`, optionally with Llama-3.1 "llama3" scaling. */
export interface RopeConfig {
  /** Base of the inverse frequencies, `theta^(−2i/d)`. */
  theta: number;
  /** Llama-3.1 frequency scaling, as in transformers' `_compute_llama3_parameters`. */
  scaling?: {
    /** Always "llama3". */
    type: "llama3";
    /** Factor by which low frequencies are divided. */
    factor: number;
    /** Wavelengths above originalMaxPositions / lowFreqFactor are fully scaled. */
    lowFreqFactor: number;
    /** Wavelengths below originalMaxPositions / highFreqFactor are left alone. */
    highFreqFactor: number;
    /** Context length the model was pretrained with. */
    originalMaxPositions: number;
  };
}

/** The `headDim / 2` inverse frequencies of `rope`, in float64. */
export function ropeInverseFrequencies(rope: RopeConfig, headDim: number): Float64Array {
  const inv = Float64Array.from(
    { length: headDim / 2 },
    (_, i) => 1 / rope.theta ** ((2 * i) / headDim),
  );
  const s = rope.scaling;
  if (!s) return inv;
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen > lowWavelen) return f / s.factor;
    if (wavelen < highWavelen) return f;
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) /
      (s.highFreqFactor - s.lowFreqFactor);
    return ((1 - smooth) * f) / s.factor + smooth * f;
  });
}

/** The `[maxPositions, headDim / 2, 2]` table of (cos, sin) the `rope` kernel reads. */
export function ropeTable(rope: RopeConfig, headDim: number, maxPositions: number): Float32Array {
  const inv = ropeInverseFrequencies(rope, headDim);
  const half = inv.length;
  const table = new Float32Array(maxPositions * half * 2);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      table[(p * half + i) * 2] = Math.cos(p * inv[i]);
      table[(p * half + i) * 2 + 1] = Math.sin(p * inv[i]);
    }
  }
  return table;
}

/** What a `rope` kernel is specialised on. */
export interface RopeSpec {
  /** Whether to rotate (Q, K) or only copy into place (V). */
  rotate: boolean;
  /** Storage type of `out`. */
  out: StorageType;
  /** Vector loads and stores: headDim a multiple of 8, inStride and inOffset multiples of 4. */
  vec4?: boolean;
}

const FIELDS: ParamFields = [
  ["rows", "u32"],
  ["heads", "u32"],
  ["headDim", "u32"],
  ["inStride", "u32"],
  ["inOffset", "u32"],
  ["outRowOffset", "u32"],
  ["posOffset", "u32"],
];
const WORKGROUP = 256;

const ROTATED_WGSL = `
fn value(r: u32, base: u32, i: u32) -> f32 {
  let half = params.headDim / 2u;
  let at = (positions[params.posOffset + r] * half + i % half) * 2u;
  let c = table[at];
  let s = table[at + 1u];
  if (i < half) { return x[base + i] * c - x[base + i + half] * s; }
  return x[base + i] * c + x[base + i - half] * s;
}
`;

const COPIED_WGSL = `
fn value(r: u32, base: u32, i: u32) -> f32 {
  return x[base + i];
}
`;

function storeWgsl(out: StorageType): string {
  return out === "f16"
    ? "out[o / 2u] = pack2x16float(vec2<f32>(v0, v1));"
    : "out[o] = v0;\n  out[o + 1u] = v1;";
}

/** x, then positions and the angle table when rotating, then out. */
function ropeBindings(spec: RopeSpec): BindingSpec[] {
  return [
    { name: "x", access: "read", elem: "f32" },
    ...(spec.rotate
      ? [
        { name: "positions", access: "read", elem: "u32" } as const,
        { name: "table", access: "read", elem: "f32" } as const,
      ]
      : []),
    { name: "out", access: "read_write", elem: spec.out },
  ];
}

function ropeVec4(spec: RopeSpec) {
  const bindings = ropeBindings(spec);
  const vectors: Record<string, string> = {
    x: "vec4<f32>",
    table: "vec4<f32>",
    out: spec.out === "f32" ? "vec4<f32>" : "vec2<u32>",
  };
  // (cos, sin) of the four frequencies i … i+3 are eight consecutive floats of the table.
  const rotate = spec.rotate
    ? `
  let at = (positions[params.posOffset + r] * half + i) / 2u;
  let t0 = table[at];
  let t1 = table[at + 1u];
  let cs = vec4<f32>(t0.x, t0.z, t1.x, t1.z);
  let sn = vec4<f32>(t0.y, t0.w, t1.y, t1.w);
  let first = x1 * cs - x2 * sn;
  let second = x2 * cs + x1 * sn;`
    : `
  let first = x1;
  let second = x2;`;
  const store = spec.out === "f32"
    ? `out[o / 4u] = first;
  out[(o + half) / 4u] = second;`
    : `out[o / 4u] = vec2<u32>(pack2x16float(first.xy), pack2x16float(first.zw));
` +
      `  out[(o + half) / 4u] = vec2<u32>(pack2x16float(second.xy), pack2x16float(second.zw));`;
  const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings, vectors)}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let half = params.headDim / 2u;
  let quads = half / 4u;
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.heads * quads) { return; }
  let rh = e / quads;
  let i = (e - rh * quads) * 4u;
  let r = rh / params.heads;
  let h = rh - r * params.heads;
  let base = r * params.inStride + params.inOffset + h * params.headDim;
  let x1 = x[(base + i) / 4u];
  let x2 = x[(base + half + i) / 4u];${rotate}
  let o = ((params.outRowOffset + r) * params.heads + h) * params.headDim + i;
  ${store}
}
`;
  return computeKernel({ code, bindings, threads: WORKGROUP });
}

/**
 * `out[outRowOffset + r, h, i]` = element i of head h of row r of `x` (at
 * `r·inStride + inOffset + h·headDim`), rotated by the angle of `positions[posOffset + r]` when
 * `rotate`; `posOffset` (default 0) lets a chunk of a prompt read its slice of the positions.
 */
export const rope: KernelFamily<RopeSpec> = {
  name: "rope",
  key: (spec) => `rope_${spec.rotate ? "rotate" : "copy"}_${spec.out}${spec.vec4 ? "_v4" : ""}`,
  generate(spec) {
    if (spec.vec4) return ropeVec4(spec);
    const bindings = ropeBindings(spec);
    const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings)}
${spec.rotate ? ROTATED_WGSL : COPIED_WGSL}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let pairs = params.headDim / 2u;
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.heads * pairs) { return; }
  let rh = e / pairs;
  let i = (e - rh * pairs) * 2u;
  let r = rh / params.heads;
  let h = rh - r * params.heads;
  let base = r * params.inStride + params.inOffset + h * params.headDim;
  let v0 = value(r, base, i);
  let v1 = value(r, base, i + 1u);
  let o = ((params.outRowOffset + r) * params.heads + h) * params.headDim + i;
  ${storeWgsl(spec.out)}
}
`;
    return computeKernel({ code, bindings, threads: WORKGROUP });
  },
  dispatch: (spec, s) => gridFor((s.rows * s.heads * s.headDim) / (spec.vec4 ? 8 : 2), WORKGROUP),
  params(spec, sizes) {
    if (sizes.headDim % 2 !== 0) throw new Error(`rope: headDim ${sizes.headDim} must be even`);
    if (
      spec.vec4 && (sizes.headDim % 8 !== 0 || sizes.inStride % 4 !== 0 || sizes.inOffset % 4 !== 0)
    ) {
      throw new Error(
        `rope: the vec4 variant needs headDim % 8, inStride % 4 and inOffset % 4 to be 0 ` +
          `(got ${sizes.headDim}, ${sizes.inStride}, ${sizes.inOffset})`,
      );
    }
    return packParams("rope", FIELDS, { posOffset: 0, ...sizes });
  },
  reference(spec, sizes, { x, positions, table, out }) {
    const { rows, heads, headDim, inStride, inOffset, outRowOffset, posOffset = 0 } = sizes;
    const half = headDim / 2;
    const stored = spec.out === "f16" ? Math.f16round : (v: number) => v;
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < heads; h++) {
        const base = r * inStride + inOffset + h * headDim;
        for (let i = 0; i < headDim; i++) {
          let v = x[base + i];
          if (spec.rotate) {
            const at = (positions[posOffset + r] * half + (i % half)) * 2;
            const [c, s] = [table[at], table[at + 1]];
            v = i < half ? v * c - x[base + i + half] * s : v * c + x[base + i - half] * s;
          }
          out[((outRowOffset + r) * heads + h) * headDim + i] = stored(v);
        }
      }
    }
  },
};
