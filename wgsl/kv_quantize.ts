// K and V of one attention dispatch quantised to int8 once, for int8_attention (after
// SageAttention, arXiv 2410.02367), in the layout of _kv_tiles.ts. Quantising inside the attention
// kernel made every workgroup quantise every tile it visits again (a third of its time on the H100);
// here each tile is quantised once per dispatch, and the attention workgroups only copy codes.
//
// One workgroup per (tile, KV head):
// - μ: the mean of the first tile of the dispatch's first segment with keys, per KV head. K is
//   quantised after subtracting it (softmax is invariant to q·μ, a constant per row, which
//   int8_attention adds back to the log-sum-exp), which removes the channel-wise bias of K that
//   would otherwise use up the int8 range.
// - K: one scale per tile (absmax of k − μ / 127); V: one scale per channel per tile.
// Reductions go through workgroup memory, not subgroups, so the kernel also runs on Deno's wgpu
// and on software adapters.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { paramsWgsl } from "./_params.ts";
import { declareBindings, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";
import { ATTENTION_FIELDS, attentionBindings, segmentWgsl } from "./_segments.ts";
import { attention } from "./attention.ts";
import { PACK4_WGSL, packInt8, QMAX, roundHalfEven } from "./quantize.ts";
import { lines } from "./_lines.ts";
import {
  KV_TILE,
  kvTiles,
  recordWords,
  scaleStride,
  segmentKeys,
  segmentTiles,
  segTilesWgsl,
} from "./_kv_tiles.ts";

/** What a `kv_quantize` kernel is specialised on. */
export interface KvQuantizeSpec {
  /** Head size: a multiple of 32 up to 128 (what int8_attention takes). */
  headDim: number;
  /** Storage type of the K and V caches. */
  kv: StorageType;
}

const THREADS = 128;
// Invocation t reads word t % (d/4) of key t / (d/4); `stagers(d)` keys at a time (the rest idle
// when d/4 does not divide THREADS, as for d = 96).
const stagers = (d: number) => Math.floor(THREADS / (d / 4));

/** Bindings: the attention families' two K/V sources, then the codes and scales written. */
export function kvQuantizeBindings(kv: StorageType): BindingSpec[] {
  return [
    ...attentionBindings(kv).filter((b) => /^[kv][01]$/.test(b.name)),
    { name: "codes", access: "read_write", elem: "i32" },
    { name: "scales", access: "read_write", elem: "f32" },
  ];
}

function check(spec: KvQuantizeSpec): void {
  const d = spec.headDim;
  if (!(Number.isInteger(d) && d % 32 === 0 && d >= 32 && d <= 128)) {
    throw new Error(`kv_quantize: headDim ${d} must be 32, 64, 96 or 128`);
  }
}

function generateCode(spec: KvQuantizeSpec): string {
  const d = spec.headDim;
  const d4 = d / 4;
  const S = stagers(d);
  const vec = spec.kv === "f32" ? "vec4<f32>" : "vec2<u32>";
  const load = (name: string) =>
    spec.kv === "f32"
      ? `fn ${name}_vec(row: u32, c: u32) -> vec4<f32> { return ${name}[row * ${d4}u + c]; }`
      : `fn ${name}_vec(row: u32, c: u32) -> vec4<f32> {
  let w = ${name}[row * ${d4}u + c];
  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
}`;
  return `${paramsWgsl(ATTENTION_FIELDS)}${
    declareBindings(kvQuantizeBindings(spec.kv), { k0: vec, v0: vec, k1: vec, v1: vec })
  }${segmentWgsl()}${segTilesWgsl}${PACK4_WGSL}
${load("k0")}
${load("v0")}
${load("k1")}
${load("v1")}

fn k_vec(src: u32, row: u32, c: u32) -> vec4<f32> {
  if (src == 0u) { return k0_vec(row, c); }
  return k1_vec(row, c);
}

fn v_vec(src: u32, row: u32, c: u32) -> vec4<f32> {
  if (src == 0u) { return v0_vec(row, c); }
  return v1_vec(row, c);
}

var<workgroup> part: array<vec4<f32>, ${S * d4}>;
var<workgroup> kPart: array<f32, ${THREADS}>;
var<workgroup> mu: array<vec4<f32>, ${d4}>;
var<workgroup> vInv: array<vec4<f32>, ${d4}>;

@compute @workgroup_size(${THREADS})
fn main(${ENTRY_BUILTINS}) {
  let flat = ${FLAT_GROUP};
  let g = flat % params.kvHeads;
  let tile = flat / params.kvHeads;
  // This workgroup's segment and tile in it, and μ's segment (the first with keys).
  var base = 0u;
  var found = false;
  var seg = segment(0u);
  var t = 0u;
  var muSeg = segment(0u);
  var haveMu = false;
  for (var s = 0u; s < params.nseg; s++) {
    let here = segment(s);
    let n = seg_tiles(here);
    if (!haveMu && n > 0u) {
      muSeg = here;
      haveMu = true;
    }
    if (!found && tile < base + n) {
      seg = here;
      t = tile - base;
      found = true;
    }
    base += n;
  }
  if (!found) { return; }
  let cw = lid % ${d4}u;
  let kg = lid / ${d4}u;
  let stager = kg < ${S}u;

  // μ: per-stager sums in key order, then the stagers' sums in order. Every workgroup sums the
  // same 64 keys again: cheaper than a dispatch of its own and a barrier between the two.
  let muKeys = min(${KV_TILE}u, u32(seg_keys(muSeg, muSeg.qEnd - 1u)));
  let muFirst = muSeg.kvStart * params.kvHeads + g;
  var sum = vec4<f32>();
  for (var j = kg; stager && j < muKeys; j += ${S}u) {
    sum += k_vec(muSeg.src, muFirst + j * params.kvHeads, cw);
  }
  if (stager) { part[lid] = sum; }
  workgroupBarrier();
  if (kg == 0u) {
    var total = part[cw];
    for (var p = 1u; p < ${S}u; p++) { total += part[p * ${d4}u + cw]; }
    mu[cw] = total / f32(muKeys);
  }
  workgroupBarrier();

  // K's absmax after μ over the tile, V's per channel.
  let count = min(${KV_TILE}u, u32(seg_keys(seg, seg.qEnd - 1u)) - t * ${KV_TILE}u);
  let first = (seg.kvStart + t * ${KV_TILE}u) * params.kvHeads + g;
  var kmax = 0.0;
  var vmax = vec4<f32>();
  for (var j = kg; stager && j < count; j += ${S}u) {
    let row = first + j * params.kvHeads;
    let k = abs(k_vec(seg.src, row, cw) - mu[cw]);
    kmax = max(kmax, max(max(k.x, k.y), max(k.z, k.w)));
    vmax = max(vmax, abs(v_vec(seg.src, row, cw)));
  }
  kPart[lid] = kmax;
  if (stager) { part[lid] = vmax; }
  for (var stride = ${THREADS / 2}u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (lid < stride) { kPart[lid] = max(kPart[lid], kPart[lid + stride]); }
  }
  let record = tile * params.kvHeads + g;
  let sBase = params.kvHeads * ${d}u + record * ${scaleStride(d)}u;
  if (kg == 0u) {
    var vm = part[cw];
    for (var p = 1u; p < ${S}u; p++) { vm = max(vm, part[p * ${d4}u + cw]); }
    let vs = vm / ${QMAX}.0;
    vInv[cw] = select(vec4<f32>(1.0) / vs, vec4<f32>(0.0), vs == vec4<f32>(0.0));
    for (var e = 0u; e < 4u; e++) { scales[sBase + 4u * cw + e] = vs[e]; }
    if (tile == 0u) {
      for (var e = 0u; e < 4u; e++) { scales[g * ${d}u + 4u * cw + e] = mu[cw][e]; }
    }
  }
  workgroupBarrier();
  let kTop = kPart[0];
  if (lid == 0u) { scales[sBase + ${d}u] = kTop / ${QMAX}.0; }
  let kInv = select(${QMAX}.0 / kTop, 0.0, kTop == 0.0);

  // Codes, keys past the segment's end as zeros: K a key a row, V a channel a row.
  let kRec = record * ${recordWords(d)}u;
  for (var j = kg; stager && j < ${KV_TILE}u; j += ${S}u) {
    var kq = 0;
    if (j < count) { kq = pack4((k_vec(seg.src, first + j * params.kvHeads, cw) - mu[cw]) * kInv); }
    codes[kRec + j * ${d4}u + cw] = kq;
  }
  // V: each invocation packs a block of four keys by four channels into four words.
  let vRec = kRec + ${KV_TILE * d4}u;
  for (var b = lid; b < ${(KV_TILE / 4) * d4}u; b += ${THREADS}u) {
    let j0 = 4u * (b / ${d4}u);
    let c4 = b % ${d4}u;
${
    lines(4, (i) =>
      `    var v${i} = vec4<f32>();
    if (j0 + ${i}u < count) { v${i} = v_vec(seg.src, first + (j0 + ${i}u) * params.kvHeads, c4) * vInv[c4]; }`)
  }
${
    lines(4, (e) =>
      `    codes[vRec + (4u * c4 + ${e}u) * ${
        KV_TILE / 4
      }u + j0 / 4u] = pack4(vec4<f32>(v0[${e}], v1[${e}], v2[${e}], v3[${e}]));`)
  }
  }
}
`;
}

const f = Math.fround;
const q8 = (v: number) => Math.max(-QMAX, Math.min(QMAX, roundHalfEven(v)));

/**
 * Writes `codes` and `scales` (layout in _kv_tiles.ts) for the dispatch with these sizes: the same
 * uniform struct and segment table as its attention, which reads them. Keys are quantised after
 * subtracting μ, the mean of the first tile of the first segment with keys.
 */
export const kvQuantize: KernelFamily<KvQuantizeSpec> = {
  name: "kv_quantize",
  key: (spec) => `kv_quantize_d${spec.headDim}_${spec.kv}`,
  generate(spec) {
    check(spec);
    const d4 = spec.headDim / 4;
    return computeKernel({
      code: generateCode(spec),
      bindings: kvQuantizeBindings(spec.kv),
      threads: THREADS,
      workgroupBytes: 16 * (stagers(spec.headDim) * d4 + 2 * d4) + 4 * THREADS,
    });
  },
  dispatch: (_spec, sizes) => grid2d(kvTiles(sizes) * sizes.kvHeads),
  params(spec, sizes) {
    return attention.params({ headDim: spec.headDim, kv: spec.kv }, sizes);
  },
  reference(spec, sizes, buffers) {
    const { kvHeads } = sizes;
    const d = spec.headDim;
    const S = stagers(d);
    const stored = storageRound(spec.kv);
    const { codes, scales } = buffers;
    const muSeg = Array.from({ length: sizes.nseg }, (_, s) => s).find((s) =>
      segmentTiles(sizes, s) > 0
    );
    if (muSeg === undefined) return;
    const keyAt = (s: number, key: number, g: number) => {
      const src = sizes[`src${s}`] === 0 ? buffers.k0 : buffers.k1;
      return (c: number) => stored(src[((sizes[`kvStart${s}`] + key) * kvHeads + g) * d + c]);
    };
    // μ as the kernel sums it in f32: per stager in key order, then the stagers in order.
    const muKeys = Math.min(KV_TILE, segmentKeys(sizes, muSeg));
    const mus = Array.from(
      { length: kvHeads },
      (_, g) =>
        Float64Array.from({ length: d }, (_, c) => {
          let total = 0;
          for (let p = 0; p < S; p++) {
            let part = 0;
            for (let j = p; j < muKeys; j += S) part = f(part + keyAt(muSeg, j, g)(c));
            total = f(total + part);
          }
          return f(total / muKeys);
        }),
    );
    let tile = 0;
    for (let s = 0; s < sizes.nseg; s++) {
      const keys = segmentKeys(sizes, s);
      const vb = sizes[`src${s}`] === 0 ? buffers.v0 : buffers.v1;
      for (let t = 0; t < segmentTiles(sizes, s); t++, tile++) {
        for (let g = 0; g < kvHeads; g++) {
          const mu = mus[g];
          const count = Math.min(KV_TILE, keys - t * KV_TILE);
          const row = (j: number) => keyAt(s, t * KV_TILE + j, g);
          const vAt = (j: number, c: number) =>
            stored(vb[((sizes[`kvStart${s}`] + t * KV_TILE + j) * kvHeads + g) * d + c]);
          let kTop = 0;
          const vmax = new Float64Array(d);
          for (let j = 0; j < count; j++) {
            const k = row(j);
            for (let c = 0; c < d; c++) {
              kTop = Math.max(kTop, Math.abs(f(k(c) - mu[c])));
              vmax[c] = Math.max(vmax[c], Math.abs(vAt(j, c)));
            }
          }
          const record = tile * kvHeads + g;
          const sBase = kvHeads * d + record * scaleStride(d);
          const vs = Float64Array.from(vmax, (v) => f(v / QMAX));
          scales.set(vs, sBase);
          scales[sBase + d] = f(kTop / QMAX);
          if (tile === 0) scales.set(mu, g * d);
          const kInv = kTop === 0 ? 0 : f(QMAX / kTop);
          const kRec = record * recordWords(d);
          for (let j = 0; j < KV_TILE; j++) {
            const kCodes = new Int8Array(d);
            if (j < count) {
              const k = row(j);
              for (let c = 0; c < d; c++) kCodes[c] = q8(f(f(k(c) - mu[c]) * kInv));
            }
            codes.set(packInt8(kCodes, d / 4), kRec + (j * d) / 4);
          }
          for (let c = 0; c < d; c++) {
            const vInv = vs[c] === 0 ? 0 : f(1 / vs[c]);
            const vCodes = Int8Array.from(
              { length: KV_TILE },
              (_, j) => j < count ? q8(f(vAt(j, c) * vInv)) : 0,
            );
            codes.set(packInt8(vCodes, KV_TILE / 4), kRec + (KV_TILE * d) / 4 + (c * KV_TILE) / 4);
          }
        }
      }
    }
  },
};
