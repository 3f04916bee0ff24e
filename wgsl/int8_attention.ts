// Attention with int8 QKᵀ and int8 P·V on subgroup matrices (after SageAttention, arXiv 2410.02367),
// with the same segment table, GQA sharing and tile skipping as `attention` (attention.ts), so the
// lowering swaps one family for the other without changing a binding or a size.
//
// K and V come quantised by kv_quantize (one dispatch before this one, same sizes; layout in
// _kv_tiles.ts): 64-key tiles, K after subtracting μ with one scale per tile, V with one scale per
// channel per tile. A workgroup holds 64 (query row, head) pairs of one KV head, 16 per subgroup of
// 32, and walks the key tiles that some pair of it may see, copying each tile's codes to workgroup
// memory:
// - Q: each subgroup quantises its 16 pairs with one scale (per block) and keeps them as left
//   matrices in registers for the whole kernel.
// - Softmax is invariant to q·μ, a constant per row; it is added back to the log-sum-exp at the
//   end from the f32 q, so partial results merge exactly as before.
// - S = QKᵀ runs on the tensor cores (i8×i8→i32); scores are dequantised, masked and put through
//   an online softmax in f32, two lanes per row.
// - P = exp(s − m) ∈ [0, 1] is quantised with the fixed scale 1/127, V per channel per tile, and
//   P·V runs on the tensor cores too; the row sums use the same quantised P, so the weights of
//   each row sum to one exactly. The f32 output accumulators are rescaled per row between tiles.
// Everything a subgroup matrix cannot do (per-row scaling, masking, exp) goes through a per-subgroup
// scratch area of workgroup memory.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, grid2d } from "./_grid.ts";
import { NEG_INF_WGSL } from "./_neg_inf.ts";
import { attention } from "./attention.ts";
import { ATTENTION_FIELDS, pairBlock, segmentWgsl } from "./_segments.ts";
import { PACK4_WGSL, QMAX, roundHalfEven, unpackInt8 } from "./quantize.ts";
import { INT8_FEATURES } from "./int8_matmul.ts";
import { lines } from "./_lines.ts";
import { KV_TILE, recordWords, scaleStride, segmentTiles, segTilesWgsl } from "./_kv_tiles.ts";

/** What an `int8_attention` kernel is specialised on. */
export interface Int8AttentionSpec {
  /** Head size: a multiple of 32 up to 128. */
  headDim: number;
  /** Merge into `out`/`lse` by log-sum-exp instead of overwriting (as in `attention`). */
  accumulate?: boolean;
  /** Columns of the result matrix: 16 (16×16×32) or 8 (16×8×32). */
  matrixN: number;
  /** Subgroup size (32 on NVIDIA). */
  subgroupSize: number;
}

const PAIRS = 64;
const BLOCK = 16;
const KEYS = KV_TILE;
const PAD = 16;
// Row stride of the S and P·V scratch in i32 words: 4 words (one bank quad) past a multiple of 32,
// so that the softmax's reads below spread the subgroup over all 32 banks.
const SST = KEYS + 4;
// One subgroup of 32 per 16-pair block: lane pair (2r, 2r+1) owns row r of the block.
const THREADS = (PAIRS / BLOCK) * 32;

/** Bindings: q, the codes and scales kv_quantize wrote, out and lse (as in `attention`). */
export function int8AttentionBindings(): BindingSpec[] {
  return [
    { name: "q", access: "read", elem: "f32" },
    { name: "codes", access: "read", elem: "i32" },
    { name: "scales", access: "read", elem: "f32" },
    { name: "out", access: "read_write", elem: "f32" },
    { name: "lse", access: "read_write", elem: "f32" },
  ];
}

/**
 * Whether the kernel takes this head size and subgroup-matrix shape (M×N×K = 16×N×32, N 16 or 8)
 * on subgroups of this size.
 */
export function int8AttentionAccepts(
  headDim: number,
  matrix: { m: number; n: number; k: number },
  subgroupSize: number,
): boolean {
  return headDim % 32 === 0 && headDim >= 32 && headDim <= 128 && matrix.m === BLOCK &&
    matrix.k === 32 && (matrix.n === 16 || matrix.n === 8) && subgroupSize === 32;
}

function check(spec: Int8AttentionSpec): void {
  const d = spec.headDim;
  if (!(Number.isInteger(d) && d % 32 === 0 && d >= 32 && d <= 128)) {
    throw new Error(`int8_attention: headDim ${d} must be 32, 64, 96 or 128`);
  }
  if (spec.matrixN !== 16 && spec.matrixN !== 8) {
    throw new Error(`int8_attention: matrixN ${spec.matrixN} must be 16 or 8`);
  }
  if (spec.subgroupSize !== 32) {
    throw new Error(`int8_attention: laid out for subgroups of 32, not ${spec.subgroupSize}`);
  }
}

// Workgroup-memory layout, in i32 words.
function memory(spec: Int8AttentionSpec) {
  const d = spec.headDim;
  const rowWords = (d + PAD) / 4; // one key of the K tile
  const pWords = (KEYS + PAD) / 4; // one pair's row of P, one channel's row of Vᵀ
  const kTile = 0;
  const vTile = KEYS * rowWords; // V transposed: d rows of pWords
  const scratch = vTile + d * pWords; // per subgroup: BLOCK × SST i32 (S, then P·V strips)
  const scratchWords = BLOCK * SST;
  const pTile = scratch + 4 * scratchWords; // per subgroup: BLOCK × pWords
  const total = pTile + 4 * BLOCK * pWords;
  return { rowWords, pWords, kTile, vTile, scratch, scratchWords, pTile, total };
}

function generateCode(spec: Int8AttentionSpec): string {
  const d = spec.headDim;
  const d4 = d / 4;
  const n = spec.matrixN;
  const mem = memory(spec);
  const S = spec.subgroupSize;
  const left = `subgroup_matrix_left<i8, 32, ${BLOCK}>`;
  const right = `subgroup_matrix_right<i8, ${n}, 32>`;
  const result = `subgroup_matrix_result<i32, ${n}, ${BLOCK}>`;
  const kc = d / 32; // 32-wide slices of the head
  const keyBlocks = KEYS / n; // result matrices across a key tile
  const chanBlocks = d / n; // result matrices across the head
  const perLane = (BLOCK * d) / S; // output accumulators per lane
  const vectors = { q: "vec4<f32>", out: "vec4<f32>" };
  // Words of K (and of V) each invocation copies per tile, and their loads.
  const words = (KEYS * d) / 4 / THREADS;
  // With the codes of a tile come its K scale and this lane's V scales.
  const loads = (indent: string, record: string) =>
    `${indent}let codeAt = (${record}) * ${recordWords(d)}u;
${
      lines(words, (u) =>
        `${indent}kNext${u} = codes[codeAt + lid + ${
          u * THREADS
        }u];\n${indent}vNext${u} = codes[codeAt + ${(KEYS * d) / 4 + u * THREADS}u + lid];`)
    }
${indent}let sAt = params.kvHeads * ${d}u + (${record}) * ${scaleStride(d)}u;
${indent}kScaleNext = scales[sAt + ${d}u];
${lines(d / 32, (k) => `${indent}vsNext${k} = scales[sAt + lane + ${32 * k}u];`)}`;
  const pvStrips = Math.ceil(chanBlocks / keyBlocks); // P·V results spilled KEYS columns at a time
  return `enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);
${paramsWgsl(ATTENTION_FIELDS)}${
    declareBindings(int8AttentionBindings(), vectors)
  }${NEG_INF_WGSL}${segmentWgsl()}${segTilesWgsl}${PACK4_WGSL}
var<workgroup> tile: array<i32, ${mem.total}>;
var<workgroup> rowCorr: array<f32, ${PAIRS}>;
var<workgroup> rowInv: array<f32, ${PAIRS}>;

@compute @workgroup_size(${THREADS})
fn main(${ENTRY_BUILTINS}) {
${pairBlock(PAIRS, "last")}
  let sg = lid / ${S}u;
  let lane = lid % ${S}u;
  // Softmax and output ownership: lane pair (2r, 2r+1) holds row r of this subgroup's block.
  let r = lane / 2u;
  let half = lane % 2u;
  let pair = firstPair + sg * ${BLOCK}u + r;
  let valid = pair < pairs;
  let i = pair / group;
  let hq = g * group + pair % group;
  let qRow = (params.qOffset + i) * params.heads + hq;

  // Q block: one scale for the subgroup's 16 pairs; quantised into the K tile area, then held as
  // left matrices for the whole kernel.
  var qmax = 0.0;
  for (var c = half; c < ${d4}u; c += 2u) {
    if (valid) {
      let v = q[qRow * ${d4}u + c];
      qmax = max(qmax, max(max(abs(v.x), abs(v.y)), max(abs(v.z), abs(v.w))));
    }
  }
  qmax = subgroupMax(qmax);
  let qInv = select(${QMAX}.0 / qmax, 0.0, qmax == 0.0);
  let qScale = qmax / ${QMAX}.0;
  let qBase = sg * ${BLOCK}u * ${mem.rowWords}u;
  for (var c = half; c < ${d4}u; c += 2u) {
    var v = vec4<f32>();
    if (valid) { v = q[qRow * ${d4}u + c]; }
    tile[qBase + r * ${mem.rowWords}u + c] = pack4(v * qInv);
  }
  workgroupBarrier();
${
    lines(kc, (c) =>
      `  let qm${c} = subgroupMatrixLoad<${left}, row_major>(&tile, qBase + ${
        c * 8
      }u, ${mem.rowWords}u);`)
  }
  workgroupBarrier();

  // Accumulators start from this never-written zero rather than from a \`var acc: T;\` declared in
  // the loop, whose re-zeroing on every iteration the GEMM never relied on.
  var zeroAcc: ${result};
${lines(perLane, (e) => `  var o${e} = 0.0;`)}
  var m = -3.0e38;
  var l = 0.0;
  var tileBase = 0u; // the first tile of segment s in kv_quantize's numbering
  for (var s = 0u; s < params.nseg; s++) {
    let seg = segment(s);
    let segTile = tileBase;
    tileBase += seg_tiles(seg);
    let lo = max(rowLo, seg.qStart);
    let hi = min(rowHi + 1u, seg.qEnd);
    if (lo >= hi) { continue; }
    // Keys [0, keyEnd) are visible to some pair of this workgroup; [0, myEnd) to this one.
    let keyEnd = seg_keys(seg, hi - 1u);
    let myEnd = select(0i, seg_keys(seg, i), valid);
    // Each tile's codes and scales are loaded into registers while the tile before it is
    // computed, the codes a word per invocation at a time: consecutive invocations store
    // consecutive words of a row, in distinct banks (vector loads would leave each store
    // instruction 4-way conflicted).
${
    lines(words, (u) =>
      `    var kNext${u} = 0;
    var vNext${u} = 0;`)
  }
    var kScaleNext = 0.0;
${lines(d / 32, (k) => `    var vsNext${k} = 0.0;`)}
    if (keyEnd > 0i) {
${loads("      ", "segTile * params.kvHeads + g")}
    }
    for (var t0 = 0i; t0 < keyEnd; t0 += ${KEYS}i) {
      let record = (segTile + u32(t0) / ${KEYS}u) * params.kvHeads + g;
      let dq = qScale * kScaleNext * params.scale;
      // This lane's output columns lane + 32k: their V scales, with P's 1/127.
${lines(d / 32, (k) => `      let vs${k} = vsNext${k} / ${QMAX}.0;`)}
      // Store the tile's codes into padded rows: K's of ${mem.rowWords} words, Vᵀ's of ${mem.pWords}.
      // (No barrier before: every read of the last tile's codes came before the barrier after
      // its last P·V products.)
${
    lines(words, (u) =>
      `      tile[((lid + ${u * THREADS}u) / ${d4}u) * ${mem.rowWords}u + (lid + ${
        u * THREADS
      }u) % ${d4}u] = kNext${u};
      tile[${mem.vTile}u + ((lid + ${u * THREADS}u) / ${KEYS / 4}u) * ${mem.pWords}u + (lid + ${
        u * THREADS
      }u) % ${KEYS / 4}u] = vNext${u};`)
  }
      workgroupBarrier();
      if (t0 + ${KEYS}i < keyEnd) {
${loads("        ", "record + params.kvHeads")}
      }
      // S = Q·Kᵀ for this subgroup's block.
      let scratch = ${mem.scratch}u + sg * ${mem.scratchWords}u;
${
    lines(keyBlocks, (j) =>
      `      {
        var acc = zeroAcc;
${
        lines(kc, (c) =>
          `        acc = subgroupMatrixMultiplyAccumulate(qm${c}, subgroupMatrixLoad<${right}, col_major>(&tile, ${mem.kTile}u + ${
            j * n
          }u * ${mem.rowWords}u + ${c * 8}u, ${mem.rowWords}u), acc);`)
      }
        subgroupMatrixStore<row_major>(&tile, scratch + ${j * n}u, acc, ${SST}u);
      }`)
  }
      workgroupBarrier();
      // Online softmax, two lanes a row (keys 32·half + 0..31); P quantised with the fixed scale
      // 1/127. Lanes visit a word's four keys in a rotated order, \`rot\`, so that the subgroup's 32
      // reads fall in 32 banks (row stride ≡ 4 words mod 32: 8 rows × 4 rotations).
      let rowEnd = myEnd - t0 - i32(half * 32u);
      let rot = (r >> 3u) | (half << 1u);
      let sRow = scratch + r * ${SST}u + half * 32u;
      // Each of the lane's 32 scores is read once, every load issued before the first use (two
      // dependent passes of reads were a third of the kernel's time). Scores are integers times
      // dq ≥ 0, so the largest code gives the largest score; codes past the row's end are masked
      // to the smallest i32.
${lines(4, (e) => `      let at${e} = (${e}u + rot) & 3u;`)}
${
    lines(32, (x) =>
      `      let c${x} = select(-2147483647i, tile[sRow + ${4 * (x >> 2)}u + at${x & 3}], i32(${
        4 * (x >> 2)
      }u + at${x & 3}) < rowEnd);`)
  }
      let topCode = ${maxTree(Array.from({ length: 32 }, (_, x) => `c${x}`))};
      var top = select(-3.0e38, f32(topCode) * dq, rowEnd > 0);
      top = max(top, subgroupShuffleXor(top, 1u));
      let mNew = max(m, top);
      let corr = exp(m - mNew);
      var sum = 0.0;
      let pRow = ${mem.pTile}u + sg * ${BLOCK * mem.pWords}u + r * ${mem.pWords}u + half * 8u;
${
    lines(8, (w) =>
      `      {
        var word = 0u;
${
        lines(4, (e) => {
          const x = 4 * w + e;
          return `        let p${x} = select(0.0, round(exp(f32(c${x}) * dq - mNew) * ${QMAX}.0), i32(${
            4 * w
          }u + at${e}) < rowEnd);
        sum += p${x};
        word |= u32(p${x}) << (8u * at${e});`;
        })
      }
        tile[pRow + ${w}u] = bitcast<i32>(word);
      }`)
  }
      sum += subgroupShuffleXor(sum, 1u);
      if (rowEnd + i32(half * 32u) > 0) {
        l = l * corr + sum / ${QMAX}.0;
        m = mNew;
        if (half == 0u) { rowCorr[sg * ${BLOCK}u + r] = corr; }
      } else if (half == 0u) {
        rowCorr[sg * ${BLOCK}u + r] = 1.0;
      }
      workgroupBarrier();
      // O = O·corr + (P·V)·vscale/127, ${keyBlocks} result columns of ${n} at a time; P's left
      // matrices loaded once for all of them.
${
    lines(KEYS / 32, (kk) =>
      `      let pm${kk} = subgroupMatrixLoad<${left}, row_major>(&tile, ${mem.pTile}u + sg * ${
        BLOCK * mem.pWords
      }u + ${kk * 8}u, ${mem.pWords}u);`)
  }
${
    lines(pvStrips, (strip) => {
      const blocks = Array.from({ length: keyBlocks }, (_, b) => strip * keyBlocks + b)
        .filter((b) => b < chanBlocks);
      return `      {
${
        blocks.map((b) =>
          `        {
          var acc = zeroAcc;
${
            lines(KEYS / 32, (kk) =>
              `          acc = subgroupMatrixMultiplyAccumulate(pm${kk}, subgroupMatrixLoad<${right}, col_major>(&tile, ${
                mem.vTile + b * n * mem.pWords + kk * 8
              }u, ${mem.pWords}u), acc);`)
          }
          subgroupMatrixStore<row_major>(&tile, scratch + ${
            (b - strip * keyBlocks) * n
          }u, acc, ${SST}u);
        }`
        ).join("\n")
      }
        workgroupBarrier();
${
        lines(perLane, (e) => {
          // Element lane + 32e of the block: row e / (d/32), column lane + 32·(e mod d/32).
          const per = d / 32;
          if (Math.floor((e % per) / 2) !== strip) return "";
          const row = Math.floor(e / per);
          return `        o${e} = o${e} * rowCorr[sg * ${BLOCK}u + ${row}u] + f32(tile[scratch + ${
            row * SST - strip * KEYS + 32 * (e % per)
          }u + lane]) * vs${e % per};`;
        }).split("\n").filter((x) => x).join("\n")
      }${
        // The next strip overwrites the scratch; after the last one, the next tile's barriers
        // keep it until this update has read it.
        strip < pvStrips - 1 ? "\n        workgroupBarrier();" : ""}
      }`;
    })
  }
    }
  }
  // The epilogue rewrites rowCorr, which the last output update read.
  workgroupBarrier();
  // Epilogue: out = O / l, lse = m + log l + scale·q·μ (the shift μ took out of every score).
  var qmu = 0.0;
  if (valid) {
    for (var c = half; c < ${d4}u; c += 2u) {
      let at = g * ${d}u + 4u * c;
      let mu = vec4<f32>(scales[at], scales[at + 1u], scales[at + 2u], scales[at + 3u]);
      qmu += dot(q[qRow * ${d4}u + c], mu);
    }
  }
  qmu += subgroupShuffleXor(qmu, 1u);
  if (half == 0u) { rowInv[sg * ${BLOCK}u + r] = select(1.0 / l, 0.0, l == 0.0); }
  workgroupBarrier();
  let fresh = m + log(l) + params.scale * qmu;
${spec.accumulate ? mergeEpilogue(d, perLane, S) : writeEpilogue(d, perLane, S)}
}
`;
}

// Output element e of a lane is (row, col) = ((lane + 32e) / d, (lane + 32e) % d) of the block.
function writeEpilogue(d: number, perLane: number, S: number): string {
  return `${
    lines(perLane, (e) =>
      `  {
    let el = lane + ${e * S}u;
    let row = el / ${d}u;
    let p = firstPair + sg * ${BLOCK}u + row;
    if (p < pairs) {
      let o = (params.outOffset + p / group) * params.heads + g * group + p % group;
      out[o * ${d / 4}u + (el % ${d}u) / 4u][el % 4u] = o${e} * rowInv[sg * ${BLOCK}u + row];
    }
  }`)
  }
  if (valid && half == 0u) {
    let outRow = (params.outOffset + i) * params.heads + hq;
    // A runtime bit pattern: Tint rejects an infinite constant.
    var negInf = NEG_INF_BITS;
    lse[outRow] = select(fresh, bitcast<f32>(negInf), l == 0.0);
  }`;
}

// As attention's merge: a row that saw no key keeps what it had; an old −∞ row is replaced.
function mergeEpilogue(d: number, perLane: number, S: number): string {
  return `  if (half == 0u) {
    var keep = 0.0;
    var add = 1.0;
    var merged = fresh;
    if (valid && l != 0.0) {
      let old = lse[(params.outOffset + i) * params.heads + hq];
      if (!is_neg_inf(old)) {
        merged = max(old, fresh);
        keep = exp(old - merged);
        add = exp(fresh - merged);
      }
    }
    // rowCorr now carries the old output's weight, rowInv the new one's (0 for untouched rows).
    let sum = keep + add;
    rowCorr[sg * ${BLOCK}u + r] = keep / sum;
    rowInv[sg * ${BLOCK}u + r] = select(add / sum / l, 0.0, l == 0.0);
    if (valid && l != 0.0) {
      lse[(params.outOffset + i) * params.heads + hq] = merged + log(sum);
    }
  }
  workgroupBarrier();
${
    lines(perLane, (e) =>
      `  {
    let el = lane + ${e * S}u;
    let row = el / ${d}u;
    let p = firstPair + sg * ${BLOCK}u + row;
    if (p < pairs && rowInv[sg * ${BLOCK}u + row] != 0.0) {
      let o = (params.outOffset + p / group) * params.heads + g * group + p % group;
      let at = o * ${d / 4}u + (el % ${d}u) / 4u;
      let w = rowCorr[sg * ${BLOCK}u + row];
      let old = select(out[at][el % 4u] * w, 0.0, w == 0.0);
      out[at][el % 4u] = old + o${e} * rowInv[sg * ${BLOCK}u + row];
    }
  }`)
  }`;
}

/** WGSL `max` of the expressions, as a balanced tree (short dependency chains). */
function maxTree(xs: string[]): string {
  if (xs.length === 1) return xs[0];
  const h = xs.length >> 1;
  return `max(${maxTree(xs.slice(0, h))}, ${maxTree(xs.slice(h))})`;
}

/**
 * The `attention` contract (segment table, GQA, log-sum-exp, optional merge) computed with int8
 * tensor-core products, reading K and V as kv_quantize wrote them for the same sizes. The reference
 * reproduces Q's quantisation block by block (the workgroup's 64 pairs, 16-pair Q blocks), so GPU
 * and reference agree to rounding ties; the error against exact attention is what int8 costs.
 */
export const int8Attention: KernelFamily<Int8AttentionSpec> = {
  name: "int8_attention",
  key: (spec) =>
    `int8_attention_d${spec.headDim}_n${spec.matrixN}_s${spec.subgroupSize}` +
    (spec.accumulate ? "_acc" : ""),
  generate(spec) {
    check(spec);
    return computeKernel({
      code: generateCode(spec),
      bindings: int8AttentionBindings(),
      threads: THREADS,
      features: INT8_FEATURES,
      workgroupBytes: 4 * (memory(spec).total + 2 * PAIRS),
    });
  },
  dispatch(_spec, { qRows, heads, kvHeads }) {
    return grid2d(Math.ceil((qRows * (heads / kvHeads)) / PAIRS) * kvHeads);
  },
  params(spec, sizes) {
    // Same checks and packing as attention; the struct is the same.
    return attention.params({ headDim: spec.headDim, kv: "f32" }, sizes);
  },
  reference(spec, sizes, buffers) {
    int8AttentionReference(spec, sizes, buffers);
  },
};

/** Reads a segment table from sizes. */
function segmentsOf(sizes: Record<string, number>) {
  return Array.from({ length: sizes.nseg }, (_, s) => ({
    src: sizes[`src${s}`],
    kvStart: sizes[`kvStart${s}`],
    kvCount: sizes[`kvCount${s}`],
    qStart: sizes[`qStart${s}`],
    qEnd: sizes[`qEnd${s}`],
    causal: sizes[`causal${s}`],
    diag: sizes[`diag${s}`],
  }));
}

const f = Math.fround;
const q8 = (v: number) => Math.max(-QMAX, Math.min(QMAX, roundHalfEven(v)));

/** The kernel's arithmetic in float64 (f32 where rounding decides a code), block by block. */
function int8AttentionReference(
  spec: Int8AttentionSpec,
  sizes: Record<string, number>,
  buffers: Record<string, Float64Array>,
): void {
  const { qRows, heads, kvHeads, qOffset, outOffset } = sizes;
  const scale = f(sizes.scale);
  const d = spec.headDim;
  const group = heads / kvHeads;
  const pairs = qRows * group;
  const { q, codes, scales, out, lse } = buffers;
  const segs = segmentsOf(sizes);
  const firstTile: number[] = [];
  segs.reduce((n, _, s) => (firstTile.push(n), n + segmentTiles(sizes, s)), 0);
  const tilesPerHead = Math.ceil(pairs / PAIRS);
  for (let g = 0; g < kvHeads; g++) {
    const mu = scales.subarray(g * d, (g + 1) * d);
    for (let t = 0; t < tilesPerHead; t++) {
      const firstPair = t * PAIRS;
      const rowLo = Math.floor(firstPair / group);
      const rowHi = Math.floor(Math.min(firstPair + PAIRS - 1, pairs - 1) / group);
      // Per pair: row, head, quantised q and its block scale.
      const info = Array.from({ length: PAIRS }, (_, x) => {
        const pair = firstPair + x;
        const valid = pair < pairs;
        const i = Math.floor(pair / group);
        const hq = g * group + (pair % group);
        return { pair, valid, i, hq, qRow: (qOffset + i) * heads + hq };
      });
      const qCodes: Int8Array[] = [];
      const qScales: number[] = [];
      for (let b = 0; b < PAIRS / BLOCK; b++) {
        let qmax = 0;
        for (let r = 0; r < BLOCK; r++) {
          const p = info[b * BLOCK + r];
          if (!p.valid) continue;
          for (let c = 0; c < d; c++) qmax = Math.max(qmax, Math.abs(q[p.qRow * d + c]));
        }
        const inv = qmax === 0 ? 0 : f(QMAX / qmax);
        for (let r = 0; r < BLOCK; r++) {
          const p = info[b * BLOCK + r];
          qCodes.push(
            Int8Array.from({ length: d }, (_, c) => p.valid ? q8(f(q[p.qRow * d + c] * inv)) : 0),
          );
          qScales.push(f(qmax / QMAX));
        }
      }
      const m = new Float64Array(PAIRS).fill(-3.0e38);
      const l = new Float64Array(PAIRS);
      const o = Array.from({ length: PAIRS }, () => new Float64Array(d));
      segs.forEach((seg, s) => {
        const lo = Math.max(rowLo, seg.qStart);
        const hi = Math.min(rowHi + 1, seg.qEnd);
        if (lo >= hi) return;
        let keyEnd = seg.kvCount;
        if (seg.causal) keyEnd = Math.min(keyEnd, hi - 1 - seg.qStart + seg.diag + 1);
        for (let t0 = 0; t0 < keyEnd; t0 += KEYS) {
          const count = Math.min(KEYS, keyEnd - t0);
          const record = (firstTile[s] + t0 / KEYS) * kvHeads + g;
          const at = record * recordWords(d);
          const kq = Array.from(
            { length: count },
            (_, j) => unpackInt8(codes, d, at + (j * d) / 4),
          );
          // V is stored transposed: a row of KEYS codes per channel.
          const vt = Array.from(
            { length: d },
            (_, c) => unpackInt8(codes, count, at + (KEYS * d) / 4 + (c * KEYS) / 4),
          );
          const sBase = kvHeads * d + record * scaleStride(d);
          const vs = scales.subarray(sBase, sBase + d);
          const kScale = scales[sBase + d];
          for (let x = 0; x < PAIRS; x++) {
            const p = info[x];
            let myEnd = 0;
            if (p.valid && p.i >= seg.qStart && p.i < seg.qEnd) {
              myEnd = seg.kvCount;
              if (seg.causal) myEnd = Math.min(myEnd, p.i - seg.qStart + seg.diag + 1);
            }
            const rowEnd = Math.min(myEnd - t0, count);
            if (rowEnd <= 0) continue;
            const dq = f(f(qScales[x] * kScale) * scale);
            const scores = Array.from({ length: rowEnd }, (_, j) => {
              let dot = 0;
              for (let c = 0; c < d; c++) dot += qCodes[x][c] * kq[j][c];
              return f(dot * dq);
            });
            const mNew = Math.max(m[x], ...scores);
            const corr = Math.exp(m[x] - mNew);
            const pq = scores.map((s) => roundHalfEven(Math.exp(s - mNew) * QMAX));
            l[x] = l[x] * corr + pq.reduce((a, b) => a + b, 0) / QMAX;
            m[x] = mNew;
            for (let c = 0; c < d; c++) {
              let pv = 0;
              for (let j = 0; j < rowEnd; j++) pv += pq[j] * vt[c][j];
              o[x][c] = o[x][c] * corr + (pv * vs[c]) / QMAX;
            }
          }
        }
      });
      for (let x = 0; x < PAIRS; x++) {
        const p = info[x];
        if (!p.valid) continue;
        let qmu = 0;
        for (let c = 0; c < d; c++) qmu += q[p.qRow * d + c] * mu[c];
        const row = (outOffset + p.i) * heads + p.hq;
        const fresh = m[x] + Math.log(l[x]) + scale * qmu;
        if (!spec.accumulate) {
          for (let c = 0; c < d; c++) out[row * d + c] = l[x] === 0 ? 0 : o[x][c] / l[x];
          lse[row] = l[x] === 0 ? -Infinity : fresh;
          continue;
        }
        if (l[x] === 0) continue;
        const old = lse[row];
        const merged = old === -Infinity ? fresh : Math.max(old, fresh);
        const [keep, add] = old === -Infinity
          ? [0, 1]
          : [Math.exp(old - merged), Math.exp(fresh - merged)];
        for (let c = 0; c < d; c++) {
          const previous = keep === 0 ? 0 : keep * out[row * d + c];
          out[row * d + c] = (previous + (add * o[x][c]) / l[x]) / (keep + add);
        }
        lse[row] = old === -Infinity ? fresh : merged + Math.log(keep + add);
      }
    }
  }
}
