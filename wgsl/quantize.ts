// Symmetric int8 quantisation of rows, the input side of the W8A8 path: per row (a token of an
// activation, or an output channel of a weight) scale = absmax / 127 and q = round(x / scale) in
// [−127, 127], four q packed little-endian into one i32 word (element k is byte k % 4 of word k / 4,
// the order in which Dawn's subgroupMatrixLoad reads i8 from an array<i32>). Rows are padded with
// zeros to `qStride` words, a multiple of 4, so the GEMM stages them with aligned vec4 loads.
// SmoothQuant (arXiv 2211.10438) moves activation outliers into the weights: activations are
// divided by a per-channel factor s and weights multiplied by it, which leaves X·Wᵀ unchanged.
// One workgroup per row: a strided absmax, a tree reduction in workgroup memory (no subgroups, so
// the kernel also runs on Deno's wgpu and on software adapters), then quantise and pack.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";

/** What a `quantize` kernel is specialised on. */
export interface QuantizeSpec {
  /** Storage type of the input rows (activations are f32; weights may be f16). */
  input: StorageType;
  /**
   * SmoothQuant factor per column (binding `smoothing`, f32; `smooth` is a reserved word in
   * WGSL): activations are divided by it,
   * weights multiplied; "none" reads no factor.
   */
  smooth: "none" | "divide" | "multiply";
}

const FIELDS: ParamFields = [
  ["rows", "u32"],
  ["cols", "u32"],
  ["xOffset", "u32"],
  ["qStride", "u32"],
];
const WORKGROUP = 256;

/** The largest magnitude a quantised value takes (symmetric: −127 … 127, never −128). */
export const QMAX = 127;

/** WGSL `fn pack4(v) -> i32`: four values rounded (ties to even), clamped to ±127, packed. */
export const PACK4_WGSL = `
fn pack4(v: vec4<f32>) -> i32 {
  let t = vec4<i32>(clamp(round(v), vec4<f32>(-${QMAX}.0), vec4<f32>(${QMAX}.0)));
  let b = vec4<u32>(t) & vec4<u32>(0xffu);
  return bitcast<i32>(b.x | (b.y << 8u) | (b.z << 16u) | (b.w << 24u));
}
`;

/** Words per packed row of `cols` int8 values: whole 16-byte vectors, as the GEMM loads them. */
export function packedStride(cols: number): number {
  return Math.ceil(cols / 16) * 4;
}

function smoothWgsl(spec: QuantizeSpec): string {
  if (spec.smooth === "none") return "";
  return spec.smooth === "divide" ? " / smoothing[c]" : " * smoothing[c]";
}

/**
 * Row r (input row `xOffset + r`): `scale[r] = max_c |x'[r, c]| / 127` and
 * `q[r, c] = clamp(round(x'[r, c] / scale[r]), −127, 127)` with `x' = x` (or x divided or
 * multiplied by `smoothing[c]`), packed four to an i32 word into `q[r·qStride …]`, zero-padded. A row
 * of zeros gets scale 0 and q = 0.
 */
export const quantize: KernelFamily<QuantizeSpec> = {
  name: "quantize",
  key: (spec) => `quantize_${spec.input}${spec.smooth === "none" ? "" : `_smooth_${spec.smooth}`}`,
  generate(spec) {
    const bindings: BindingSpec[] = [
      { name: "x", access: "read", elem: spec.input },
      ...(spec.smooth === "none"
        ? []
        : [{ name: "smoothing", access: "read", elem: "f32" } as const]),
      { name: "q", access: "read_write", elem: "i32" },
      { name: "scale", access: "read_write", elem: "f32" },
    ];
    const s = smoothWgsl(spec);
    const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings)}
${storageLoader("x", spec.input)}${PACK4_WGSL}
var<workgroup> partial: array<f32, ${WORKGROUP}>;

fn value(base: u32, c: u32) -> f32 {
  if (c >= params.cols) { return 0.0; }
  return load_x(base + c)${s};
}

@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let r = ${FLAT_GROUP};
  if (r >= params.rows) { return; }
  let base = (params.xOffset + r) * params.cols;
  var top = 0.0;
  for (var c = lid; c < params.cols; c += ${WORKGROUP}u) {
    top = max(top, abs(value(base, c)));
  }
  partial[lid] = top;
  for (var stride = ${WORKGROUP / 2}u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (lid < stride) { partial[lid] = max(partial[lid], partial[lid + stride]); }
  }
  workgroupBarrier();
  let absmax = partial[0];
  let inv = select(${QMAX}.0 / absmax, 0.0, absmax == 0.0);
  if (lid == 0u) { scale[r] = absmax / ${QMAX}.0; }
  for (var w = lid; w < params.qStride; w += ${WORKGROUP}u) {
    let c = 4u * w;
    let v = vec4<f32>(value(base, c), value(base, c + 1u), value(base, c + 2u), value(base, c + 3u));
    q[r * params.qStride + w] = pack4(v * inv);
  }
}
`;
    return computeKernel({ code, bindings, threads: WORKGROUP, workgroupBytes: WORKGROUP * 4 });
  },
  dispatch: (_spec, sizes) => grid2d(sizes.rows),
  params(_spec, sizes) {
    if (!(sizes.qStride >= Math.ceil(sizes.cols / 4) && sizes.qStride % 4 === 0)) {
      throw new Error(
        `quantize: qStride ${sizes.qStride} must be a multiple of 4 words holding ${sizes.cols} columns`,
      );
    }
    return packParams("quantize", FIELDS, sizes);
  },
  reference(spec, sizes, { x, smoothing, q, scale }) {
    const { rows, cols, xOffset, qStride } = sizes;
    const stored = storageRound(spec.input);
    const row = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const v = stored(x[(xOffset + r) * cols + c]);
        row[c] = spec.smooth === "none"
          ? v
          : Math.fround(spec.smooth === "divide" ? v / smoothing[c] : v * smoothing[c]);
      }
      const { q: codes, scale: s } = quantizeRow(row);
      scale[r] = s;
      const words = packInt8(codes, qStride);
      for (let w = 0; w < qStride; w++) q[r * qStride + w] = words[w];
    }
  },
};

/** WGSL's `round`: to the nearest integer, ties to even. */
export function roundHalfEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * One row quantised the way the kernel does it in f32: `scale = absmax / 127`, codes
 * `round(x · (127 / absmax))` clamped to ±127. (The GPU's division is within 2.5 ulp, so a code
 * exactly at a rounding tie may differ by one; tests allow that.)
 */
export function quantizeRow(row: ArrayLike<number>): { q: Int8Array; scale: number } {
  let absmax = 0;
  for (let i = 0; i < row.length; i++) absmax = Math.max(absmax, Math.abs(row[i]));
  const inv = absmax === 0 ? 0 : Math.fround(QMAX / absmax);
  const q = new Int8Array(row.length);
  for (let i = 0; i < row.length; i++) {
    const t = roundHalfEven(Math.fround(row[i] * inv));
    q[i] = Math.max(-QMAX, Math.min(QMAX, t));
  }
  return { q, scale: Math.fround(absmax / QMAX) };
}

/** Packs int8 codes four to a little-endian word, zero-padded to `words` words. */
export function packInt8(codes: ArrayLike<number>, words: number): Int32Array {
  const out = new Int32Array(words);
  for (let i = 0; i < codes.length; i++) {
    out[i >> 2] |= (codes[i] & 0xff) << (8 * (i & 3));
  }
  return out;
}

/** The `count` int8 codes held in packed words (inverse of {@linkcode packInt8}). */
export function unpackInt8(words: ArrayLike<number>, count: number, offset = 0): Int8Array {
  const out = new Int8Array(count);
  for (let i = 0; i < count; i++) out[i] = (words[offset + (i >> 2)] >> (8 * (i & 3))) << 24 >> 24;
  return out;
}

/**
 * Quantises a row-major [rows, cols] matrix per row into packed words (row stride
 * {@linkcode packedStride}) and per-row scales: per-output-channel for a weight [N, K], per-token
 * for activations.
 */
export function quantizeRows(
  x: ArrayLike<number>,
  rows: number,
  cols: number,
): { q: Int32Array; scale: Float32Array; stride: number } {
  const stride = packedStride(cols);
  const q = new Int32Array(rows * stride);
  const scale = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = Array.from({ length: cols }, (_, c) => x[r * cols + c]);
    const { q: codes, scale: s } = quantizeRow(row);
    q.set(packInt8(codes, stride), r * stride);
    scale[r] = s;
  }
  return { q, scale, stride };
}

/**
 * SmoothQuant's factor per input channel j: `s_j = max|X_j|^α / max|W_j|^(1−α)` from calibration
 * absmaxes of the activations and of the weight columns (α = 0.5 in the paper). A channel with a
 * zero on either side gets 1.
 */
export function smoothQuantFactors(
  activationAbsMax: ArrayLike<number>,
  weightAbsMax: ArrayLike<number>,
  alpha = 0.5,
): Float32Array {
  return Float32Array.from({ length: activationAbsMax.length }, (_, j) => {
    const a = activationAbsMax[j];
    const w = weightAbsMax[j];
    return a > 0 && w > 0 ? a ** alpha / w ** (1 - alpha) : 1;
  });
}
