// Flash-style attention with the mask given as data: query rows against a list of KV segments,
// each with its own query range, source buffer and causal offset, so Dense, Ring, Star and APB
// masks are all one kernel. A workgroup holds 64 (query row, head) pairs of one KV head, so the
// query heads of a GQA group share each K/V tile staged in workgroup memory. The key tiles a
// workgroup visits are bounded per segment from its row range, so a tile that no pair of the
// workgroup may see is never loaded. Softmax is online, in f32, one key at a time; q and the
// output accumulator are unrolled vec4 registers, generated here rather than left to the driver.

import type { BindingSpec, KernelFamily, StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";
import { NEG_INF_WGSL } from "./_neg_inf.ts";

/** What an `attention` kernel is specialised on. */
export interface AttentionSpec {
  /** Size of one head; any value from 1 to 256 (32, 64, 128 are the common ones). */
  headDim: number;
  /** Storage type of the K and V caches. */
  kv: StorageType;
  /**
   * Keys per K/V tile staged in workgroup memory; by default as many as fit K and V in 16 KiB
   * (at most 64). Small tiles compile much faster on GL llvmpipe, which zero-fills workgroup
   * memory with code whose compile time grows with its size.
   */
  keysPerTile?: number;
  /**
   * Merge into the rows already in `out` and `lse` by log-sum-exp (a later part of a row's keys)
   * instead of overwriting them; a row that sees no key is then left as it was.
   */
  accumulate?: boolean;
}

/** The most KV segments one dispatch takes. */
export const MAX_SEGMENTS = 8;

const SEGMENT_FIELDS = ["src", "kvStart", "kvCount", "qStart", "qEnd", "causal", "diag"] as const;
const FIELDS: ParamFields = [
  ["qRows", "u32"],
  ["heads", "u32"],
  ["kvHeads", "u32"],
  ["qOffset", "u32"],
  ["outOffset", "u32"],
  ["scale", "f32"],
  ["nseg", "u32"],
  ...Array.from(
    { length: MAX_SEGMENTS },
    (_, s) => SEGMENT_FIELDS.map((f) => [`${f}${s}`, f === "diag" ? "i32" : "u32"] as const),
  ).flat(),
];
const PAIRS = 64;

function keysPerTile(spec: AttentionSpec): number {
  const fit = Math.floor(16384 / (32 * Math.ceil(spec.headDim / 4)));
  return spec.keysPerTile ?? Math.max(8, Math.min(64, fit));
}

// `fn <name>_chunk(row, c) -> vec4<f32>`: elements 4c…4c+3 of head row `row`, zero past headDim.
function chunkLoader(name: string, type: StorageType, headDim: number): string {
  const d4 = Math.ceil(headDim / 4);
  if (headDim % 4 === 0) {
    const body = type === "f32"
      ? `return ${name}[row * ${d4}u + c];`
      : `let w = ${name}[row * ${d4}u + c];\n  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));`;
    return `fn ${name}_chunk(row: u32, c: u32) -> vec4<f32> {\n  ${body}\n}\n`;
  }
  const lanes = [0, 1, 2, 3].map((l) =>
    `  if (4u * c + ${l}u < ${headDim}u) { v[${l}] = load_${name}(base + ${l}u); }`
  ).join("\n");
  return `${storageLoader(name, type)}fn ${name}_chunk(row: u32, c: u32) -> vec4<f32> {
  let base = row * ${headDim}u + 4u * c;
  var v = vec4<f32>();
${lanes}
  return v;
}
`;
}

function storeOut(headDim: number): string {
  if (headDim % 4 === 0) {
    return `fn store_out(row: u32, c: u32, v: vec4<f32>) {\n  out[row * ${
      headDim / 4
    }u + c] = v;\n}\n`;
  }
  const lanes = [0, 1, 2, 3].map((l) =>
    `  if (4u * c + ${l}u < ${headDim}u) { out[row * ${headDim}u + 4u * c + ${l}u] = v[${l}]; }`
  ).join("\n");
  return `fn store_out(row: u32, c: u32, v: vec4<f32>) {\n${lanes}\n}\n`;
}

function segmentWgsl(): string {
  const cases = Array.from({ length: MAX_SEGMENTS }, (_, s) => {
    const args = SEGMENT_FIELDS.map((f) => `params.${f}${s}`).join(", ");
    return `    ${s === MAX_SEGMENTS - 1 ? "default" : `case ${s}u`}: { return Segment(${args}); }`;
  }).join("\n");
  return `
struct Segment { src: u32, kvStart: u32, kvCount: u32, qStart: u32, qEnd: u32, causal: u32, diag: i32 }

fn segment(s: u32) -> Segment {
  switch s {
${cases}
  }
}
`;
}

function generateCode(spec: AttentionSpec): string {
  const d = spec.headDim;
  const d4 = Math.ceil(d / 4);
  const bk = keysPerTile(spec);
  const chunks = Array.from({ length: d4 }, (_, c) => c);
  const vectors = d % 4 === 0
    ? {
      q: "vec4<f32>",
      out: "vec4<f32>",
      ...Object.fromEntries(
        ["k0", "v0", "k1", "v1"].map((n) => [n, spec.kv === "f32" ? "vec4<f32>" : "vec2<u32>"]),
      ),
    }
    : {};
  const bindings = attentionBindings(spec.kv);
  const each = (f: (c: number) => string, sep = "\n") => chunks.map(f).join(sep);
  return `${paramsWgsl(FIELDS)}${declareBindings(bindings, vectors)}${NEG_INF_WGSL}
${chunkLoader("q", "f32", d)}${chunkLoader("k0", spec.kv, d)}${chunkLoader("v0", spec.kv, d)}
${chunkLoader("k1", spec.kv, d)}${chunkLoader("v1", spec.kv, d)}${storeOut(d)}${segmentWgsl()}
${spec.accumulate ? chunkLoader("out", "f32", d) : ""}
var<workgroup> kTile: array<vec4<f32>, ${bk * d4}>;
var<workgroup> vTile: array<vec4<f32>, ${bk * d4}>;

// Stages keys t0 … t0+count−1 of segment seg, KV head g, into kTile and vTile.
fn stage(seg: Segment, g: u32, t0: u32, count: u32, lid: u32) {
  for (var e = lid; e < count * ${d4}u; e += ${PAIRS}u) {
    let key = e / ${d4}u;
    let c = e - key * ${d4}u;
    let row = (seg.kvStart + t0 + key) * params.kvHeads + g;
    if (seg.src == 0u) {
      kTile[e] = k0_chunk(row, c);
      vTile[e] = v0_chunk(row, c);
    } else {
      kTile[e] = k1_chunk(row, c);
      vTile[e] = v1_chunk(row, c);
    }
  }
}

@compute @workgroup_size(${PAIRS})
fn main(${ENTRY_BUILTINS}) {
  let group = params.heads / params.kvHeads;
  let pairs = params.qRows * group;
  let tilesPerHead = (pairs + ${PAIRS - 1}u) / ${PAIRS}u;
  let flat = ${FLAT_GROUP};
  if (flat >= tilesPerHead * params.kvHeads) { return; }
  let g = flat / tilesPerHead;
  let firstPair = (flat - g * tilesPerHead) * ${PAIRS}u;
  let rowLo = firstPair / group;
  let rowHi = min(firstPair + ${PAIRS - 1}u, pairs - 1u) / group;
  let pair = firstPair + lid;
  let valid = pair < pairs;
  let i = pair / group;
  let hq = g * group + pair % group;
  let qRow = (params.qOffset + i) * params.heads + hq;
${each((c) => `  var q${c} = vec4<f32>();`)}
  if (valid) {
${each((c) => `    q${c} = q_chunk(qRow, ${c}u);`)}
  }
${each((c) => `  var o${c} = vec4<f32>();`)}
  var m = -3.0e38;
  var l = 0.0;
  for (var s = 0u; s < params.nseg; s++) {
    let seg = segment(s);
    let lo = max(rowLo, seg.qStart);
    let hi = min(rowHi + 1u, seg.qEnd);
    if (lo >= hi) { continue; }
    // Keys [0, keyEnd) are visible to some pair of this workgroup; [0, myEnd) to this one.
    var keyEnd = i32(seg.kvCount);
    if (seg.causal != 0u) { keyEnd = min(keyEnd, i32(hi - 1u - seg.qStart) + seg.diag + 1); }
    var myEnd = 0i;
    if (valid && i >= seg.qStart && i < seg.qEnd) {
      myEnd = i32(seg.kvCount);
      if (seg.causal != 0u) { myEnd = min(myEnd, i32(i - seg.qStart) + seg.diag + 1); }
    }
    for (var t0 = 0i; t0 < keyEnd; t0 += ${bk}i) {
      workgroupBarrier();
      stage(seg, g, u32(t0), u32(min(${bk}i, keyEnd - t0)), lid);
      workgroupBarrier();
      let n = min(${bk}i, myEnd - t0);
      for (var key = 0i; key < n; key++) {
        let kb = u32(key) * ${d4}u;
        let score = params.scale * (${each((c) => `dot(q${c}, kTile[kb + ${c}u])`, " + ")});
        if (score > m) {
          let correction = exp(m - score);
          l *= correction;
${each((c) => `          o${c} *= correction;`)}
          m = score;
        }
        let p = exp(score - m);
        l += p;
${each((c) => `        o${c} += p * vTile[kb + ${c}u];`)}
      }
    }
  }
${spec.accumulate ? mergeEpilogue(d4) : writeEpilogue(d4)}}
`;
}

function writeEpilogue(d4: number): string {
  const stores = Array.from({ length: d4 }, (_, c) => `  store_out(outRow, ${c}u, o${c} * inv);`);
  return `  if (!valid) { return; }
  let outRow = (params.outOffset + i) * params.heads + hq;
  let inv = select(1.0 / l, 0.0, l == 0.0);
${stores.join("\n")}
  lse[outRow] = select(m + log(l), bitcast<f32>(NEG_INF_BITS), l == 0.0);
`;
}

// Merges into the result already in out/lse (log-sum-exp weighted). A row that saw no key keeps
// what it had; an old −∞ row is replaced without reading its out, which may hold anything.
function mergeEpilogue(d4: number): string {
  const chunk = (f: (c: number) => string) => Array.from({ length: d4 }, (_, c) => f(c)).join("\n");
  return `  if (!valid || l == 0.0) { return; }
  let outRow = (params.outOffset + i) * params.heads + hq;
  let fresh = m + log(l);
  let old = lse[outRow];
  if (is_neg_inf(old)) {
${chunk((c) => `    store_out(outRow, ${c}u, o${c} / l);`)}
    lse[outRow] = fresh;
    return;
  }
  let top = max(old, fresh);
  let keep = exp(old - top);
  let add = exp(fresh - top);
  let sum = keep + add;
${
    chunk((c) =>
      `  store_out(outRow, ${c}u, (out_chunk(outRow, ${c}u) * keep + o${c} * (add / l)) / sum);`
    )
  }
  lse[outRow] = top + log(sum);
`;
}

function attentionBindings(kv: StorageType): BindingSpec[] {
  return [
    { name: "q", access: "read", elem: "f32" },
    { name: "k0", access: "read", elem: kv },
    { name: "v0", access: "read", elem: kv },
    { name: "k1", access: "read", elem: kv },
    { name: "v1", access: "read", elem: kv },
    { name: "out", access: "read_write", elem: "f32" },
    { name: "lse", access: "read_write", elem: "f32" },
  ];
}

/** One KV segment of an attention dispatch, as read from the sizes. */
interface Segment {
  src: number;
  kvStart: number;
  kvCount: number;
  qStart: number;
  qEnd: number;
  causal: number;
  diag: number;
}

function segments(sizes: Record<string, number>): Segment[] {
  if (!(sizes.nseg >= 0 && sizes.nseg <= MAX_SEGMENTS)) {
    throw new Error(
      `attention: nseg = ${sizes.nseg}; a dispatch takes 0 to ${MAX_SEGMENTS} segments`,
    );
  }
  return Array.from({ length: sizes.nseg }, (_, s) => {
    const seg = Object.fromEntries(SEGMENT_FIELDS.map((f) => [f, sizes[`${f}${s}`]]));
    return seg as unknown as Segment;
  });
}

/**
 * Query row i (q row `qOffset + i`) attends to key j of segment s (row `kvStart_s + j` of
 * source `src_s`: 0 → k0/v0, 1 → k1/v1) iff `qStart_s ≤ i < qEnd_s` and, when causal,
 * `j ≤ i − qStart_s + diag_s`. Writes the softmax-weighted V sum to `out[outOffset + i, hq, :]`
 * and the natural log-sum-exp of the scaled scores to `lse[outOffset + i, hq]`; a row that sees
 * no key gets zeros and −∞. With `spec.accumulate` the result is merged into those rows instead.
 */
export const attention: KernelFamily<AttentionSpec> = {
  name: "attention",
  key: (spec) =>
    `attention_d${spec.headDim}_${spec.kv}${spec.keysPerTile ? `_bk${spec.keysPerTile}` : ""}` +
    (spec.accumulate ? "_acc" : ""),
  generate(spec) {
    if (!(Number.isInteger(spec.headDim) && spec.headDim >= 1 && spec.headDim <= 256)) {
      throw new Error(`attention: headDim ${spec.headDim} is not an integer in [1, 256]`);
    }
    const bk = keysPerTile(spec);
    if (!(Number.isInteger(bk) && bk >= 1)) {
      throw new Error(`attention: keysPerTile ${bk} is not ≥ 1`);
    }
    return {
      code: generateCode(spec),
      entry: "main",
      workgroupSize: [PAIRS, 1, 1],
      bindings: attentionBindings(spec.kv),
      features: [],
      workgroupBytes: 2 * bk * Math.ceil(spec.headDim / 4) * 16,
    };
  },
  dispatch(_spec, { qRows, heads, kvHeads }) {
    return grid2d(Math.ceil((qRows * (heads / kvHeads)) / PAIRS) * kvHeads);
  },
  params(_spec, sizes) {
    if (!(sizes.kvHeads > 0 && sizes.heads % sizes.kvHeads === 0)) {
      throw new Error(
        `attention: heads ${sizes.heads} is not a multiple of kvHeads ${sizes.kvHeads}`,
      );
    }
    const values: Record<string, number> = { ...sizes };
    segments(sizes).forEach((seg, s) => {
      if (seg.src !== 0 && seg.src !== 1) throw new Error(`attention: src${s} must be 0 or 1`);
    });
    for (let s = sizes.nseg; s < MAX_SEGMENTS; s++) {
      for (const f of SEGMENT_FIELDS) values[`${f}${s}`] = 0;
    }
    return packParams("attention", FIELDS, values);
  },
  reference(spec, sizes, buffers) {
    const { qRows, heads, kvHeads, qOffset, outOffset, scale } = sizes;
    const d = spec.headDim;
    const group = heads / kvHeads;
    const stored = storageRound(spec.kv);
    const { q, out, lse } = buffers;
    const segs = segments(sizes);
    for (let i = 0; i < qRows; i++) {
      for (let hq = 0; hq < heads; hq++) {
        const g = Math.floor(hq / group);
        const qBase = ((qOffset + i) * heads + hq) * d;
        const keys: { score: number; v: Float64Array; at: number }[] = [];
        for (const seg of segs) {
          if (i < seg.qStart || i >= seg.qEnd) continue;
          const [k, v] = seg.src === 0 ? [buffers.k0, buffers.v0] : [buffers.k1, buffers.v1];
          for (let j = 0; j < seg.kvCount; j++) {
            if (seg.causal !== 0 && j > i - seg.qStart + seg.diag) continue;
            const at = ((seg.kvStart + j) * kvHeads + g) * d;
            let dot = 0;
            for (let e = 0; e < d; e++) dot += q[qBase + e] * stored(k[at + e]);
            keys.push({ score: Math.fround(scale) * dot, v, at });
          }
        }
        const row = (outOffset + i) * heads + hq;
        if (keys.length === 0) {
          if (!spec.accumulate) {
            out.fill(0, row * d, (row + 1) * d);
            lse[row] = -Infinity;
          }
          continue;
        }
        const top = keys.reduce((m, key) => Math.max(m, key.score), -Infinity);
        let sum = 0;
        const acc = new Float64Array(d);
        for (const { score, v, at } of keys) {
          const p = Math.exp(score - top);
          sum += p;
          for (let e = 0; e < d; e++) acc[e] += p * stored(v[at + e]);
        }
        const fresh = top + Math.log(sum);
        const old = spec.accumulate ? lse[row] : -Infinity;
        const merged = Math.max(old, fresh);
        const [keep, add] = old === -Infinity
          ? [0, 1]
          : [Math.exp(old - merged), Math.exp(fresh - merged)];
        for (let e = 0; e < d; e++) {
          const previous = keep === 0 ? 0 : keep * out[row * d + e];
          out[row * d + e] = (previous + (add * acc[e]) / sum) / (keep + add);
        }
        lse[row] = old === -Infinity ? fresh : merged + Math.log(keep + add);
      }
    }
  },
};
