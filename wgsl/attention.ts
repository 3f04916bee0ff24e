// Flash-style attention with the mask given as data: query rows against a list of KV segments,
// each with its own query range, source buffer and causal offset, so Dense, Ring, Star and APB
// masks are all one kernel. A workgroup holds a block of (query row, head) pairs of one KV head, so
// the query heads of a GQA group share each K/V tile staged in workgroup memory, and visits per
// segment only the key tiles some pair of the block may see (causal bounds skip whole tiles).
//
// Head sizes that are multiples of 4 take the register-tiled path: per key tile, S = Q·Kᵀ is a
// small GEMM (each invocation owns tq pairs × bkv/tx keys, Q and K staged in d-chunks), the online
// softmax runs in f32 on log2-scaled scores with exp2 (Q is pre-multiplied by scale·log2 e while
// staged), the tile's row maximum is combined across the tx invocations of a row in workgroup
// memory, P goes to workgroup memory, and O += P·V is a second small GEMM (each invocation owns
// tq pairs × d/tx columns). Row sums stay per invocation until the end. Other head sizes take the
// generic path: one invocation per pair, one key at a time. Loops inside a tile are unrolled here,
// in TypeScript, because drivers do not reliably unroll them.

import { computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, paramsWgsl } from "./_params.ts";
import {
  ATTENTION_FIELDS,
  attentionBindings,
  MAX_SEGMENTS,
  pairBlock,
  SEGMENT_FIELDS,
  segmentWgsl,
} from "./_segments.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, grid2d } from "./_grid.ts";
import { NEG_INF_WGSL } from "./_neg_inf.ts";
import { lines, range } from "./_lines.ts";

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
  /**
   * Tile parameters of the register-tiled path (head sizes that are multiples of 4); an executor
   * concern that plans do not record. {@linkcode defaultAttentionTile} when absent.
   */
  tile?: AttentionTile;
}

/**
 * Blocking of the register-tiled attention path. A workgroup has tx·ty invocations and holds
 * tq·ty (query row, head) pairs; invocation (tx, ty) owns pairs ty·tq … ty·tq + tq − 1, keys
 * tx + j·tx of each key tile, and head columns 4·(tx + c·tx) … + 3.
 */
export interface AttentionTile {
  /** Invocations across keys and head columns; a multiple of 4. */
  tx: number;
  /** Invocations across pairs. */
  ty: number;
  /** Pairs per invocation; a multiple of 4. */
  tq: number;
  /** Keys per K/V tile; a multiple of tx and of vk. */
  bkv: number;
  /** Head elements per staged Q/K chunk; a multiple of 4. */
  dk: number;
  /** Keys per staged V chunk; a multiple of 4. */
  vk: number;
  /**
   * Keep the workgroup's Q block in workgroup memory for the whole dispatch, stage whole K and V
   * tiles (dk and vk are then ignored) in one shared region, and prefetch the next K or V tile
   * into registers while the current one is used: four barriers per key tile and no exposed
   * global round trip, for more workgroup memory (the Q block: pairs × head size).
   */
  resident?: boolean;
  /**
   * Compute the scores as k-major outer products (Q and K chunks staged transposed, each
   * invocation owning four consecutive keys per group): per head element it reads tq/4 + tk/4
   * vec4s, with far fewer live operand registers than the dot products along d. Needs
   * bkv/tx to be a multiple of 4; not combined with `resident`.
   */
  kMajor?: boolean;
  /**
   * Software-pipelined stages (implies k-major scores): a key tile is a sequence of stages (Q and
   * K chunks of dk head elements, then V chunks of vk keys) through two stage buffers in
   * workgroup memory. Each stage's global loads are issued into registers before the previous
   * stage's arithmetic and stored after it, so one barrier per stage separates loading from
   * computing and no global round trip is exposed. The Q staging addresses are computed once,
   * loads are coalesced in 32-byte runs, and the stage loops are not unrolled (small loop
   * bodies). Not combined with `resident`.
   */
  pipelined?: boolean;
  /**
   * Row maxima and sums across the tx invocations of a row by subgroup shuffles instead of
   * workgroup memory (one barrier and a round trip less per key tile). Needs the device feature
   * `subgroups` and subgroups of at least tx invocations (tx a power of two); invocations are
   * numbered by subgroup, so any layout of subgroups in the workgroup works.
   */
  subgroups?: boolean;
}

/**
 * The tile of a spec without one: small (under 4 KiB of workgroup memory for d 128) so that it
 * compiles quickly on software adapters and fits the WebGPU default limits; `keysPerTile`, when
 * given, sets its keys per tile (rounded up to a multiple of 8). Plans record no tile: the
 * executor asks runtime/autotune.ts for the tile of each dispatch.
 */
export function defaultAttentionTile(spec: AttentionSpec): AttentionTile {
  const tx = 8;
  const bkv = spec.keysPerTile ? Math.ceil(spec.keysPerTile / tx) * tx : 8;
  return { tx, ty: 2, tq: 4, bkv, dk: 8, vk: 4 };
}

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
  return `${paramsWgsl(ATTENTION_FIELDS)}${declareBindings(bindings, vectors)}${NEG_INF_WGSL}
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
${pairBlock(PAIRS, "first")}
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
    let keyEnd = seg_keys(seg, hi - 1u);
    let myEnd = select(0i, seg_keys(seg, i), valid);
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

// ---- Register-tiled path ---------------------------------------------------------------------

/**
 * Shape of the register-tiled path: pairs per workgroup, padded head size, row strides, keys and
 * head vec4s per invocation, and workgroup bytes (Q, K and V chunks, P, the row reductions).
 */
export function flashLayout(spec: AttentionSpec, t: AttentionTile): {
  bq: number;
  dPad: number;
  qkStride: number;
  pStride: number;
  bytes: number;
  tk: number;
  td4: number;
} {
  const bq = t.ty * t.tq;
  const dPad = Math.ceil(spec.headDim / (4 * t.tx)) * 4 * t.tx;
  // Rows padded by one vec4 so that lanes reading different rows fall on different banks.
  const qkStride = (t.resident ? dPad / 4 : t.dk / 4) + 1;
  const pStride = t.bkv / 4 + 1;
  const red = t.subgroups ? 0 : t.tx * (bq / 4);
  if (t.pipelined) {
    const stage = pipelinedStage(t, dPad);
    const bytes = 16 * (2 * stage.rows * stage.width + bq * pStride + red);
    return { bq, dPad, qkStride, pStride, bytes, tk: t.bkv / t.tx, td4: dPad / 4 / t.tx };
  }
  const v = t.resident ? 0 : t.vk * (dPad / 4);
  // k-major: dk rows of bq/4 (and bkv/4) vec4s, padded by one.
  const qk = t.kMajor
    ? t.dk * (bq / 4 + 1) + t.dk * (t.bkv / 4 + 1)
    : bq * qkStride + t.bkv * qkStride;
  const bytes = 16 * (qk + v + bq * pStride + red);
  return { bq, dPad, qkStride, pStride, bytes, tk: t.bkv / t.tx, td4: dPad / 4 / t.tx };
}

/**
 * One stage buffer of the pipelined path: `rows` rows of `width` vec4s. A Q·Kᵀ stage holds Q
 * k-major in rows 0…dk−1 (bq/4 + 1 vec4s each) and K in rows dk…2dk−1 (bkv/4 + 1); a P·V stage
 * holds each key's head row as td4 pieces of tx vec4s, `per` pieces to a row. Every operand read
 * in the inner loops is then buf[parity][constant][invariant + constant].
 */
function pipelinedStage(
  t: AttentionTile,
  dPad: number,
): { rows: number; width: number; per: number } {
  const width = Math.max(t.ty * t.tq / 4 + 1, t.bkv / 4 + 1);
  const per = Math.floor(width / t.tx);
  const pieces = t.vk * (dPad / 4 / t.tx);
  return { rows: Math.max(2 * t.dk, Math.ceil(pieces / per)), width, per };
}

function checkFlashTile(spec: AttentionSpec, t: AttentionTile): void {
  const chunks = t.resident ||
    ([t.dk, t.vk].every((v) => Number.isInteger(v) && v > 0) && t.bkv % t.vk === 0 &&
      t.dk % 4 === 0 && t.vk % 4 === 0);
  const kMajor = t.kMajor || t.pipelined;
  const ok = [t.tx, t.ty, t.tq, t.bkv].every((v) => Number.isInteger(v) && v > 0) &&
    t.tx % 4 === 0 && t.tq % 4 === 0 && t.bkv % t.tx === 0 && t.bkv % 4 === 0 && chunks &&
    t.tx * t.ty <= 1024 && (!kMajor || ((t.bkv / t.tx) % 4 === 0 && !t.resident)) &&
    (!t.subgroups || (t.tx & (t.tx - 1)) === 0);
  if (!ok) throw new Error(`attention: invalid tile ${JSON.stringify(t)} for d ${spec.headDim}`);
}

/** Entry parameters and the invocation's (tx, ty): by subgroup when the tile uses subgroups. */
function lanes(t: AttentionTile): { params: string; setup: string } {
  if (!t.subgroups) {
    return {
      params: ENTRY_BUILTINS,
      setup: `  let tx = lid % ${t.tx}u;\n  let ty = lid / ${t.tx}u;`,
    };
  }
  // Numbered subgroup by subgroup, so that the tx invocations of a row share one subgroup
  // (tx divides the subgroup size) whatever the layout of subgroups in the workgroup.
  return {
    params: `${ENTRY_BUILTINS}, @builtin(subgroup_invocation_id) sgLane: u32, ` +
      "@builtin(subgroup_size) sgSize: u32, @builtin(subgroup_id) sgId: u32",
    setup: `  let lane = sgId * sgSize + sgLane;
  let tx = lane % ${t.tx}u;
  let ty = lane / ${t.tx}u;`,
  };
}

/**
 * A register-tiled kernel's opening: its pair block (longest first), its lanes, the log2-scaled
 * softmax scale, and per row i of its tq: the query row, whether it exists, and the running max,
 * sum and output (td4 vec4s).
 */
function tiledRowsWgsl(t: AttentionTile, bq: number, td4: number): string {
  return `${pairBlock(bq, "last")}
${lanes(t).setup}
  let scale2 = params.scale * 1.4426950408889634;
${lines(t.tq, (i) => `  let row${i} = (firstPair + ty * ${t.tq}u + ${i}u) / group;`)}
${lines(t.tq, (i) => `  let valid${i} = firstPair + ty * ${t.tq}u + ${i}u < pairs;`)}
${lines(t.tq, (i) => `  var m${i} = NEG_BIG;\n  var l${i} = 0.0;`)}
${lines(t.tq, (i) => lines(td4, (c) => `  var o${i}_${c} = vec4<f32>();`))}`;
}

/**
 * The head of a register-tiled kernel's segment loop: segment s, skipped when none of the
 * workgroup's rows are in it; keyEnd, the keys some pair sees; limit_i, those pair i sees.
 */
function tiledSegmentHead(tq: number): string {
  return `  for (var s = 0u; s < params.nseg; s++) {
    let seg = segment(s);
    let lo = max(rowLo, seg.qStart);
    let hi = min(rowHi + 1u, seg.qEnd);
    if (lo >= hi) { continue; }
    // Keys [0, keyEnd) are visible to some pair of this workgroup; [0, limit_i) to pair i.
    let keyEnd = seg_keys(seg, hi - 1u);
${lines(tq, (i) => `    let limit${i} = select(0i, seg_keys(seg, row${i}), valid${i});`)}`;
}

// Combines `top{q}` (vec4 of four pairs' values) over the tx invocations of each row with `op`
// ("max" or "+"), through subgroup shuffles or the workgroup array `red` (which costs barriers).
function rowReduce(t: AttentionTile, name: string, op: "max" | "+", indent: string): string {
  const rows = Array.from({ length: t.tq / 4 }, (_, q) => q);
  const combine = (a: string, b: string) => (op === "max" ? `max(${a}, ${b})` : `${a} + ${b}`);
  if (t.subgroups) {
    const steps: string[] = [];
    for (let mask = 1; mask < t.tx; mask *= 2) {
      for (const q of rows) {
        steps.push(
          `${indent}${name}${q} = ${
            combine(`${name}${q}`, `subgroupShuffleXor(${name}${q}, ${mask}u)`)
          };`,
        );
      }
    }
    return steps.join("\n");
  }
  return [
    ...rows.map((q) => `${indent}red[tx][ty * ${t.tq / 4}u + ${q}u] = ${name}${q};`),
    `${indent}workgroupBarrier();`,
    ...rows.map((q) => `${indent}${name}${q} = red[0][ty * ${t.tq / 4}u + ${q}u];`),
    `${indent}for (var x = 1u; x < ${t.tx}u; x++) {`,
    ...rows.map((q) =>
      `${indent}  ${name}${q} = ${combine(`${name}${q}`, `red[x][ty * ${t.tq / 4}u + ${q}u]`)};`
    ),
    `${indent}}`,
  ].join("\n");
}

function flashCode(spec: AttentionSpec, t: AttentionTile): string {
  const d = spec.headDim;
  const d4 = d / 4;
  const L = flashLayout(spec, t);
  const { bq, tk, td4 } = L;
  const threads = t.tx * t.ty;
  const kvVec = spec.kv === "f32" ? "vec4<f32>" : "vec2<u32>";
  const bindings = attentionBindings(spec.kv);
  const vectors = { q: "vec4<f32>", out: "vec4<f32>", k0: kvVec, v0: kvVec, k1: kvVec, v1: kvVec };
  const kvRead = (name: string) =>
    spec.kv === "f32"
      ? `${name}[row * ${d4}u + c]`
      : `vec4<f32>(unpack2x16float(${name}[row * ${d4}u + c].x), unpack2x16float(${name}[row * ${d4}u + c].y))`;
  // Staging loops: `count` items over the workgroup, unrolled; `body` sees `e` and `ok`.
  const staged = (count: number, body: string) =>
    range(Math.ceil(count / threads)).map((q) => {
      const guard = (q + 1) * threads > count ? `if (e < ${count}u) ` : "";
      return `    { let e = lid + ${q * threads}u; ${guard}{\n${body}\n    } }`;
    }).join("\n");
  const resident = !!t.resident;
  const kMajor = !!t.kMajor;
  const dq = resident ? L.dPad / 4 : t.dk / 4;
  const tg = tk / 4;
  const stageQK = resident ? "" : `
    workgroupBarrier();
${
    staged(
      bq * dq,
      `      let r = ${kMajor ? `e % ${bq}u` : `e / ${dq}u`};
      let cc = ${kMajor ? `e / ${bq}u` : `e % ${dq}u`};
      let c = dc / 4u + cc;
      let pair = firstPair + r;
      var v = vec4<f32>();
      if (pair < pairs && c < ${d4}u) {
        v = q[((params.qOffset + pair / group) * params.heads + g * group + pair % group) * ${d4}u + c] * scale2;
      }
      ${
        kMajor
          ? range(4).map((x) => `qTile[cc * 4u + ${x}u][r / 4u][r % 4u] = v[${x}];`).join(" ")
          : "qTile[r][cc] = v;"
      }`,
    )
  }
${
    staged(
      t.bkv * dq,
      `      let key = ${kMajor ? `e % ${t.bkv}u` : `e / ${dq}u`};
      let cc = ${kMajor ? `e / ${t.bkv}u` : `e % ${dq}u`};
      let c = dc / 4u + cc;
      var v = vec4<f32>();
      if (i32(t0 + key) < keyEnd && c < ${d4}u) {
        let row = (seg.kvStart + t0 + key) * params.kvHeads + g;
        if (seg.src == 0u) { v = ${kvRead("k0")}; } else { v = ${kvRead("k1")}; }
      }
      ${
        kMajor
          ? range(4).map((x) => `kTile[cc * 4u + ${x}u][key / 4u][key % 4u] = v[${x}];`).join(" ")
          : "kTile[key][cc] = v;"
      }`,
    )
  }
    workgroupBarrier();`;
  // k-major scores: per head element, tq/4 vec4s of Q (pairs ty·tq…) and tk/4 of K (keys
  // 4·(tx + g·tx)…), then tq·tk/4 vec4 FMAs into s{i}_{g}.
  const scoreKMajor = range(t.dk).map((e) =>
    [
      ...range(tg).map((gk) => `      let k${gk} = kTile[${e}][tx + ${gk * t.tx}u];`),
      ...range(t.tq / 4).map((h) => `      let q${h} = qTile[${e}][ty * ${t.tq / 4}u + ${h}u];`),
      ...range(t.tq).flatMap((i) =>
        range(tg).map((gk) =>
          `      s${i}_${gk} = fma(vec4<f32>(q${Math.floor(i / 4)}[${
            i % 4
          }]), k${gk}, s${i}_${gk});`
        )
      ),
    ].join("\n")
  ).map((block) => `      {\n${block}\n      }`).join("\n");
  const scoreChunk = kMajor ? scoreKMajor : range(dq).map((c) =>
    [
      ...range(tk).map((j) => `      let k${j} = kTile[tx + ${j * t.tx}u][${c}];`),
      ...range(t.tq).flatMap((i) => [
        `      let q${i} = qTile[ty * ${t.tq}u + ${i}u][${c}];`,
        ...range(tk).map((j) =>
          `      s${i}_${j} = fma(q${i}.w, k${j}.w, fma(q${i}.z, k${j}.z, fma(q${i}.y, k${j}.y, fma(q${i}.x, k${j}.x, s${i}_${j}))));`
        ),
      ]),
    ].join("\n")
  ).map((block) => `      {\n${block}\n      }`).join("\n");
  const vk = resident ? t.bkv : t.vk;
  const vTile = resident ? "kTile" : "vTile";
  const vChunks = range(t.bkv / vk).map((vc) => {
    const stage = resident ? "" : staged(
      t.vk * (L.dPad / 4),
      `      let key = ${vc * t.vk}u + e / ${L.dPad / 4}u;
      let c = e % ${L.dPad / 4}u;
      var v = vec4<f32>();
      if (i32(t0 + key) < keyEnd && c < ${d4}u) {
        let row = (seg.kvStart + t0 + key) * params.kvHeads + g;
        if (seg.src == 0u) { v = ${kvRead("v0")}; } else { v = ${kvRead("v1")}; }
      }
      vTile[e / ${L.dPad / 4}u][c] = v;`,
    );
    const body = range(vk / 4).map((kq) => {
      const ps = range(t.tq).map((i) =>
        `        let p${i} = pTile[ty * ${t.tq}u + ${i}u][${(vc * vk) / 4 + kq}];`
      );
      const fmas = range(4).flatMap((kk) => [
        ...range(td4).map((c) =>
          `        let v${kk}_${c} = ${vTile}[${kq * 4 + kk}][tx + ${c * t.tx}u];`
        ),
        ...range(t.tq).flatMap((i) =>
          range(td4).map((c) =>
            `        o${i}_${c} = fma(vec4<f32>(p${i}[${kk}]), v${kk}_${c}, o${i}_${c});`
          )
        ),
      ]);
      return `      {\n${[...ps, ...fmas].join("\n")}\n      }`;
    }).join("\n");
    if (resident) return body;
    return `      workgroupBarrier();\n${stage}\n      workgroupBarrier();\n${body}`;
  }).join("\n");
  // Resident mode: the Q block once, and K/V tiles through prefetch registers pf*.
  const dp4 = L.dPad / 4;
  const kvCount = t.bkv * dp4;
  const pfRegs = range(Math.ceil(kvCount / threads));
  const prefetch = (src: "k" | "v") =>
    pfRegs.map((q) =>
      `        {
          let e = lid + ${q * threads}u;
          let key = e / ${dp4}u;
          let c = e % ${dp4}u;
          var v = vec4<f32>();
          if (e < ${kvCount}u && i32(t0 + key) < keyEnd && c < ${d4}u) {
            let row = (seg.kvStart + t0 + key) * params.kvHeads + g;
            if (seg.src == 0u) { v = ${kvRead(`${src}0`)}; } else { v = ${kvRead(`${src}1`)}; }
          }
          pf${q} = v;
        }`
    ).join("\n");
  const storePf = pfRegs.map((q) =>
    `      { let e = lid + ${
      q * threads
    }u; if (e < ${kvCount}u) { kTile[e / ${dp4}u][e % ${dp4}u] = pf${q}; } }`
  ).join("\n");
  const stageQ = staged(
    bq * dp4,
    `      let r = e / ${dp4}u;
      let c = e % ${dp4}u;
      let pair = firstPair + r;
      var v = vec4<f32>();
      if (pair < pairs && c < ${d4}u) {
        v = q[((params.qOffset + pair / group) * params.heads + g * group + pair % group) * ${d4}u + c] * scale2;
      }
      qTile[r][c] = v;`,
  );
  const rowq = (f: (q: number) => string) => lines(t.tq / 4, f);
  return `${paramsWgsl(ATTENTION_FIELDS)}${
    declareBindings(bindings, vectors)
  }${NEG_INF_WGSL}${segmentWgsl()}
const NEG_BIG = -3.0e38;
${
    kMajor
      ? `var<workgroup> qTile: array<array<vec4<f32>, ${bq / 4 + 1}>, ${t.dk}>;
var<workgroup> kTile: array<array<vec4<f32>, ${t.bkv / 4 + 1}>, ${t.dk}>;`
      : `var<workgroup> qTile: array<array<vec4<f32>, ${L.qkStride}>, ${bq}>;
var<workgroup> kTile: array<array<vec4<f32>, ${L.qkStride}>, ${t.bkv}>;`
  }
${resident ? "" : `var<workgroup> vTile: array<array<vec4<f32>, ${L.dPad / 4}>, ${t.vk}>;`}
var<workgroup> pTile: array<array<vec4<f32>, ${L.pStride}>, ${bq}>;
${t.subgroups ? "" : `var<workgroup> red: array<array<vec4<f32>, ${bq / 4}>, ${t.tx}>;`}

@compute @workgroup_size(${threads})
fn main(${lanes(t).params}) {
${tiledRowsWgsl(t, bq, td4)}
${resident ? `${stageQ}\n${pfRegs.map((q) => `  var pf${q} = vec4<f32>();`).join("\n")}` : ""}
${tiledSegmentHead(t.tq)}
${
    resident
      ? `    if (keyEnd > 0) {
      let t0 = 0u;
${prefetch("k")}
    }`
      : ""
  }
    for (var tile = 0i; tile < keyEnd; tile += ${t.bkv}i) {
      let t0 = u32(tile);
${
    kMajor
      ? lines(t.tq, (i) => lines(tg, (gk) => `      var s${i}_${gk} = vec4<f32>();`))
      : lines(t.tq, (i) => lines(tk, (j) => `      var s${i}_${j} = 0.0;`))
  }
${
    resident
      ? `      // K of this tile from the prefetch registers; V's loads fly during the scores.
      workgroupBarrier();
${storePf}
      workgroupBarrier();
${prefetch("v")}
      {
${scoreChunk}
      }`
      : `      for (var dc = 0u; dc < ${L.dPad}u; dc += ${t.dk}u) {${stageQK}
${scoreChunk}
      }`
  }
      // Mask, then this tile's maximum of each pair across the tx invocations that share it.
${
    kMajor
      ? lines(t.tq, (i) =>
        lines(tg, (gk) =>
          `      let vis${i}_${gk} = vec4<i32>(tile + 4 * (i32(tx) + ${gk * t.tx})) + ` +
          `vec4<i32>(0, 1, 2, 3) < vec4<i32>(limit${i});\n` +
          `      s${i}_${gk} = select(vec4<f32>(NEG_BIG), s${i}_${gk}, vis${i}_${gk});`))
      : lines(t.tq, (i) =>
        lines(tk, (j) =>
          `      let vis${i}_${j} = tile + ${j * t.tx}i + i32(tx) < limit${i};\n` +
          `      s${i}_${j} = select(NEG_BIG, s${i}_${j}, vis${i}_${j});`))
  }
${
    rowq((q) =>
      `      ${
        t.subgroups ? "var top" + q + " =" : `red[tx][ty * ${t.tq / 4}u + ${q}u] =`
      } vec4<f32>(${
        range(4).map((r) => {
          const i = q * 4 + r;
          const parts = kMajor
            ? range(tg).map((gk) => `s${i}_${gk}`).map((v) =>
              `max(max(${v}.x, ${v}.y), max(${v}.z, ${v}.w))`
            )
            : range(tk).map((j) => `s${i}_${j}`);
          return parts.reduce((a, b) => `max(${a}, ${b})`);
        }).join(", ")
      });`
    )
  }
${
    t.subgroups ? rowReduce(t, "top", "max", "      ") : `      workgroupBarrier();
${rowq((q) => `      var top${q} = red[0][ty * ${t.tq / 4}u + ${q}u];`)}
      for (var x = 1u; x < ${t.tx}u; x++) {
${rowq((q) => `        top${q} = max(top${q}, red[x][ty * ${t.tq / 4}u + ${q}u]);`)}
      }`
  }
${
    lines(t.tq, (i) => {
      const top = `top${Math.floor(i / 4)}[${i % 4}]`;
      return `      {
        let mNew = max(m${i}, ${top});
        let alpha = exp2(m${i} - mNew);
        m${i} = mNew;
${lines(td4, (c) => `        o${i}_${c} *= alpha;`)}
${
        kMajor
          ? lines(
            tg,
            (gk) =>
              `        let p${gk} = select(vec4<f32>(), exp2(s${i}_${gk} - vec4<f32>(mNew)), vis${i}_${gk});\n` +
              `        pTile[ty * ${t.tq}u + ${i}u][tx + ${gk * t.tx}u] = p${gk};`,
          )
          : lines(
            tk,
            (j) =>
              `        let p${j} = select(0.0, exp2(s${i}_${j} - mNew), vis${i}_${j});\n` +
              `        pTile[ty * ${t.tq}u + ${i}u][(tx + ${j * t.tx}u) / 4u][tx % 4u] = p${j};`,
          )
      }
        l${i} = l${i} * alpha + ${
        kMajor
          ? range(tg).map((gk) => `dot(p${gk}, vec4<f32>(1.0))`).join(" + ")
          : range(tk).map((j) => `p${j}`).join(" + ")
      };
      }`;
    })
  }
${
    resident
      ? `      // Every invocation is past its scores (the barrier above), so V may replace K; the next
      // tile's K loads fly during P·V.
${storePf}
      if (tile + ${t.bkv}i < keyEnd) {
        let t0 = u32(tile + ${t.bkv}i);
${prefetch("k")}
      }
      workgroupBarrier();`
      : ""
  }
${vChunks}
    }
  }
  // Row sums: each invocation holds the sum over its own keys.
${
    t.subgroups
      ? `${
        rowq((q) =>
          `  var sum${q} = vec4<f32>(${range(4).map((r) => `l${q * 4 + r}`).join(", ")});`
        )
      }
${rowReduce(t, "sum", "+", "  ")}`
      : `  workgroupBarrier();
${
        rowq((q) =>
          `  red[tx][ty * ${t.tq / 4}u + ${q}u] = vec4<f32>(${
            range(4).map((r) => `l${q * 4 + r}`).join(", ")
          });`
        )
      }
  workgroupBarrier();
${rowq((q) => `  var sum${q} = vec4<f32>();`)}
  for (var x = 0u; x < ${t.tx}u; x++) {
${rowq((q) => `    sum${q} += red[x][ty * ${t.tq / 4}u + ${q}u];`)}
  }`
  }
${flashEpilogue(spec, t, td4)}
}
`;
}

// The pipelined register-tiled path (`tile.pipelined`). Per key tile: the Q·Kᵀ stages (one per dk
// head elements: Q and K chunks, k-major), the online softmax, then the P·V stages (one per vk
// keys). Every stage's global loads go into the prefetch registers pf* one stage ahead, so a
// stage is: store pf* (converted, Q scaled) into the stage buffer at `cur`, barrier, issue the
// next stage's loads, compute from `cur`, flip `cur`. One barrier per stage suffices: a buffer is
// rewritten two stages after it was read, and the barrier of the stage in between orders them.
function pipelinedCode(spec: AttentionSpec, t: AttentionTile): string {
  const d = spec.headDim;
  const d4 = d / 4;
  const L = flashLayout(spec, t);
  const { bq, tk, td4 } = L;
  const B = pipelinedStage(t, L.dPad);
  const threads = t.tx * t.ty;
  const dp4 = L.dPad / 4;
  const dq = t.dk / 4;
  const nQK = Math.ceil(L.dPad / t.dk);
  const nV = t.bkv / t.vk;
  const tg = tk / 4;
  const [nQ, nK, nVi] = [bq * dq, t.bkv * dq, t.vk * dp4];
  const [sQ, sK, sV] = [nQ, nK, nVi].map((n) => Math.ceil(n / threads));
  const rowq = (f: (q: number) => string) => lines(t.tq / 4, f);
  const kvVec = spec.kv === "f32" ? "vec4<f32>" : "vec2<u32>";
  const bindings = attentionBindings(spec.kv);
  const vectors = { q: "vec4<f32>", out: "vec4<f32>", k0: kvVec, v0: kvVec, k1: kvVec, v1: kvVec };
  // Loads go into the prefetch registers as stored (f16 pairs packed in u32s) and are converted
  // (and Q scaled) only when stored to workgroup memory: an instruction that consumes a load
  // right away would wait for it there, and the stage's arithmetic would no longer hide it.
  const kvRead = (name: string) => `${name}[row * ${d4}u + c]`;
  const kvF32 = (v: string) =>
    spec.kv === "f32" ? v : `vec4<f32>(unpack2x16float(${v}.x), unpack2x16float(${v}.y))`;
  // Item e of a Q or K chunk (R rows of dq vec4s): runs of two vec4s (32 bytes) along a row, so
  // that a subgroup's loads use whole sectors and its k-major scalar stores hit distinct banks.
  const split = (e: string, R: number) =>
    dq % 2 === 0
      ? { r: `(${e} / 2u) % ${R}u`, cc: `(${e} / ${2 * R}u) * 2u + ${e} % 2u` }
      : { r: `${e} % ${R}u`, cc: `${e} / ${R}u` };
  const guard = (e: string, n: number, q: number) => ((q + 1) * threads > n ? `${e} < ${n}u` : "");
  const both = (...c: string[]) => c.filter((x) => x).join(" && ") || "true";
  // Per-invocation constants of the Q and K items it stages (the same in every stage).
  const slots = [
    ...range(sQ).map((q) => {
      const e = `qe${q}`;
      const m = split(e, bq);
      return `  let ${e} = lid + ${q * threads}u;
  let qr${q} = ${m.r};
  let qc${q} = ${m.cc};
  let qOk${q} = ${both(guard(e, nQ, q), `firstPair + qr${q} < pairs`)};
  var qAt${q} = 0u;
  if (qOk${q}) {
    let pair = firstPair + qr${q};
    qAt${q} = ((params.qOffset + pair / group) * params.heads + g * group + pair % group) * ${d4}u + qc${q};
  }`;
    }),
    ...range(sK).map((q) => {
      const e = `ke${q}`;
      const m = split(e, t.bkv);
      return `  let ${e} = lid + ${q * threads}u;
  let kr${q} = ${m.r};
  let kc${q} = ${m.cc};`;
    }),
  ].join("\n");
  // Loads of the Q·Kᵀ stage at head element dc of the tile at key t0n.
  const prefetchQK = (t0n: string, dc: string, ind: string) =>
    [
      `${ind}{`,
      `${ind}  let c0 = ${dc} / 4u;`,
      ...range(sQ).map((q) =>
        `${ind}  pfQ${q} = vec4<f32>();\n` +
        `${ind}  if (qOk${q} && c0 + qc${q} < ${d4}u) { pfQ${q} = q[qAt${q} + c0]; }`
      ),
      ...range(sK).map((q) =>
        `${ind}  {
${ind}    let c = c0 + kc${q};
${ind}    let key = ${t0n} + kr${q};
${ind}    pfK${q} = ${kvVec}();
${ind}    if (${both(guard(`ke${q}`, nK, q), "i32(key) < keyEnd", `c < ${d4}u`)}) {
${ind}      let row = (seg.kvStart + key) * params.kvHeads + g;
${ind}      if (seg.src == 0u) { pfK${q} = ${kvRead("k0")}; } else { pfK${q} = ${kvRead("k1")}; }
${ind}    }
${ind}  }`
      ),
      `${ind}}`,
    ].join("\n");
  const prefetchV = (t0n: string, vc: string, ind: string) =>
    range(sV).map((q) =>
      `${ind}{
${ind}  let e = lid + ${q * threads}u;
${ind}  let key = ${t0n} + ${vc} * ${t.vk}u + e / ${dp4}u;
${ind}  let c = e % ${dp4}u;
${ind}  pfV${q} = ${kvVec}();
${ind}  if (${both(guard("e", nVi, q), "i32(key) < keyEnd", `c < ${d4}u`)}) {
${ind}    let row = (seg.kvStart + key) * params.kvHeads + g;
${ind}    if (seg.src == 0u) { pfV${q} = ${kvRead("v0")}; } else { pfV${q} = ${kvRead("v1")}; }
${ind}  }
${ind}}`
    ).join("\n");
  const ind = "        ";
  const storeQK = [
    ...range(sQ).map((q) => {
      const g = guard(`qe${q}`, nQ, q);
      return `${ind}${g ? `if (${g}) ` : ""}{ let x = qr${q} % 4u; let v = pfQ${q} * scale2; ${
        range(4).map((k) => `buf[cur][qc${q} * 4u + ${k}u][qr${q} / 4u][x] = v[${k}];`).join(" ")
      } }`;
    }),
    ...range(sK).map((q) => {
      const g = guard(`ke${q}`, nK, q);
      return `${ind}${g ? `if (${g}) ` : ""}{ let x = kr${q} % 4u; let v = ${kvF32(`pfK${q}`)}; ${
        range(4).map((k) => `buf[cur][kc${q} * 4u + ${t.dk + k}u][kr${q} / 4u][x] = v[${k}];`)
          .join(" ")
      } }`;
    }),
  ].join("\n");
  const storeV = range(sV).map((q) => {
    const g = guard("e", nVi, q);
    // Piece j = key·td4 + c of the stage sits at row j / per, offset (j % per)·tx.
    return `${ind}{ let e = lid + ${q * threads}u; ${g ? `if (${g}) { ` : ""}` +
      `let j = e / ${t.tx}u; buf[cur][j / ${B.per}u][(j % ${B.per}u) * ${t.tx}u + e % ${t.tx}u] = ${
        kvF32(`pfV${q}`)
      };${g ? " }" : ""} }`;
  }).join("\n");
  // k-major scores from the stage at `cur`: per head element, tq/4 vec4s of Q and tk/4 of K.
  const computeS = range(t.dk).map((e) =>
    [
      ...range(tg).map((gk) => `${ind}  let k${gk} = buf[cur][${t.dk + e}][tx + ${gk * t.tx}u];`),
      ...range(t.tq / 4).map((h) => `${ind}  let q${h} = buf[cur][${e}][qBase + ${h}u];`),
      ...range(t.tq).flatMap((i) =>
        range(tg).map((gk) =>
          `${ind}  s${i}_${gk} = fma(vec4<f32>(q${Math.floor(i / 4)}[${
            i % 4
          }]), k${gk}, s${i}_${gk});`
        )
      ),
    ].join("\n")
  ).map((block) => `${ind}{\n${block}\n${ind}}`).join("\n");
  const computePV = range(t.vk / 4).map((kq) =>
    [
      ...range(t.tq).map((i) => `${ind}  let p${i} = pTile[ty * ${t.tq}u + ${i}u][pc + ${kq}u];`),
      ...range(4).flatMap((kk) => [
        ...range(td4).map((c) => {
          const j = (kq * 4 + kk) * td4 + c;
          return `${ind}  let v${kk}_${c} = buf[cur][${Math.floor(j / B.per)}][tx + ${
            (j % B.per) * t.tx
          }u];`;
        }),
        ...range(t.tq).flatMap((i) =>
          range(td4).map((c) =>
            `${ind}  o${i}_${c} = fma(vec4<f32>(p${i}[${kk}]), v${kk}_${c}, o${i}_${c});`
          )
        ),
      ]),
    ].join("\n")
  ).map((block) => `${ind}{\n${block}\n${ind}}`).join("\n");
  const maxOf = (i: number) =>
    range(tg).map((gk) => `s${i}_${gk}`).map((v) => `max(max(${v}.x, ${v}.y), max(${v}.z, ${v}.w))`)
      .reduce((a, b) => `max(${a}, ${b})`);
  return `${paramsWgsl(ATTENTION_FIELDS)}${
    declareBindings(bindings, vectors)
  }${NEG_INF_WGSL}${segmentWgsl()}
const NEG_BIG = -3.0e38;
var<workgroup> buf: array<array<array<vec4<f32>, ${B.width}>, ${B.rows}>, 2>;
var<workgroup> pTile: array<array<vec4<f32>, ${L.pStride}>, ${bq}>;
${t.subgroups ? "" : `var<workgroup> red: array<array<vec4<f32>, ${bq / 4}>, ${t.tx}>;`}

@compute @workgroup_size(${threads})
fn main(${lanes(t).params}) {
${tiledRowsWgsl(t, bq, td4)}
  let qBase = ty * ${t.tq / 4}u;
${slots}
${lines(sQ, (q) => `  var pfQ${q} = vec4<f32>();`)}
${lines(sK, (q) => `  var pfK${q} = ${kvVec}();`)}
${lines(sV, (q) => `  var pfV${q} = ${kvVec}();`)}
  var cur = 0u;
${tiledSegmentHead(t.tq)}
    let allSee = ${range(t.tq).map((i) => `limit${i}`).reduce((a, b) => `min(${a}, ${b})`)};
    if (keyEnd > 0) {
${prefetchQK("0u", "0u", "      ")}
    }
    for (var tile = 0i; tile < keyEnd; tile += ${t.bkv}i) {
      let t0 = u32(tile);
${lines(t.tq, (i) => lines(tg, (gk) => `      var s${i}_${gk} = vec4<f32>();`))}
      for (var st = 0u; st < ${nQK}u; st++) {
${storeQK}
        workgroupBarrier();
        if (st + 1u < ${nQK}u) {
${prefetchQK("t0", `(st + 1u) * ${t.dk}u`, "          ")}
        } else {
${prefetchV("t0", "0u", "          ")}
        }
${computeS}
        cur = 1u - cur;
      }
      // Mask (unless every key of the tile is visible to all of this invocation's pairs), then
      // the tile's maximum of each pair across the tx invocations that share it.
      if (tile + ${t.bkv}i > allSee) {
${
    lines(t.tq, (i) =>
      lines(tg, (gk) =>
        `        s${i}_${gk} = select(vec4<f32>(NEG_BIG), s${i}_${gk}, vec4<i32>(tile + 4 * (i32(tx) + ${
          gk * t.tx
        })) + vec4<i32>(0, 1, 2, 3) < vec4<i32>(limit${i}));`))
  }
      }
${
    rowq((q) =>
      `      var top${q} = vec4<f32>(${range(4).map((r) => maxOf(q * 4 + r)).join(", ")});`
    )
  }
${rowReduce(t, "top", "max", "      ")}
${
    lines(t.tq, (i) =>
      `      {
        let mNew = max(m${i}, top${Math.floor(i / 4)}[${i % 4}]);
        let alpha = exp2(m${i} - mNew);
        // Masked scores are NEG_BIG: exp2 makes them 0, also while the row has seen no key.
        let mUse = select(mNew, 0.0, mNew == NEG_BIG);
        m${i} = mNew;
${lines(td4, (c) => `        o${i}_${c} *= alpha;`)}
${
        lines(tg, (gk) =>
          `        let p${gk} = exp2(s${i}_${gk} - vec4<f32>(mUse));\n` +
          `        pTile[ty * ${t.tq}u + ${i}u][tx + ${gk * t.tx}u] = p${gk};`)
      }
        l${i} = l${i} * alpha + ${range(tg).map((gk) => `dot(p${gk}, vec4<f32>(1.0))`).join(" + ")};
      }`)
  }
      for (var vc = 0u; vc < ${nV}u; vc++) {
${storeV}
        workgroupBarrier();
        if (vc + 1u < ${nV}u) {
${prefetchV("t0", "(vc + 1u)", "          ")}
        } else if (tile + ${t.bkv}i < keyEnd) {
${prefetchQK(`(t0 + ${t.bkv}u)`, "0u", "          ")}
        }
        let pc = vc * ${t.vk / 4}u;
${computePV}
        cur = 1u - cur;
      }
    }
  }
  // Row sums: each invocation holds the sum over its own keys.
${rowq((q) => `  var sum${q} = vec4<f32>(${range(4).map((r) => `l${q * 4 + r}`).join(", ")});`)}
${t.subgroups ? "" : "  workgroupBarrier();"}
${rowReduce(t, "sum", "+", "  ")}
${flashEpilogue(spec, t, td4)}
}
`;
}

// Writes (or merges) the pairs of this invocation: its columns of out, and lse from tx 0.
function flashEpilogue(spec: AttentionSpec, t: AttentionTile, td4: number): string {
  const d4 = spec.headDim / 4;
  const cols = (f: (c: number, col: string) => string) =>
    range(td4).map((c) => {
      const col = `tx + ${c * t.tx}u`;
      return `    if (${col} < ${d4}u) { ${f(c, col)} }`;
    }).join("\n");
  const rows = range(t.tq).map((i) =>
    `  let outRow${i} = (params.outOffset + row${i}) * params.heads + g * group + ` +
    `(firstPair + ty * ${t.tq}u + ${i}u) % group;\n` +
    `  let total${i} = sum${Math.floor(i / 4)}[${i % 4}];`
  ).join("\n");
  if (!spec.accumulate) {
    return rows + "\n" + range(t.tq).map((i) =>
      `  if (valid${i}) {
    let inv = select(1.0 / total${i}, 0.0, total${i} == 0.0);
${cols((c, col) => `out[outRow${i} * ${d4}u + ${col}] = o${i}_${c} * inv;`)}
    if (tx == 0u) {
      lse[outRow${i}] = select((m${i} + log2(total${i})) * 0.6931471805599453, bitcast<f32>(NEG_INF_BITS), total${i} == 0.0);
    }
  }`
    ).join("\n");
  }
  // Merge by log-sum-exp. Every invocation of a row reads the old lse before tx 0 rewrites it
  // (hence the barrier); a row that saw no key keeps what it had, and an old −∞ row is replaced
  // without reading its out, which may hold anything.
  const reads = range(t.tq).map((i) =>
    `  var old${i} = 0.0;\n  if (valid${i}) { old${i} = lse[outRow${i}]; }`
  ).join("\n");
  return `${rows}\n${reads}\n  workgroupBarrier();\n` +
    range(t.tq).map((i) =>
      `  if (valid${i} && total${i} > 0.0) {
    let fresh = (m${i} + log2(total${i})) * 0.6931471805599453;
    var keep = 0.0;
    var add = 1.0;
    var merged = fresh;
    if (!is_neg_inf(old${i})) {
      merged = max(old${i}, fresh);
      keep = exp(old${i} - merged);
      add = exp(fresh - merged);
    }
    let weight = add / (total${i} * (keep + add));
    let oldWeight = keep / (keep + add);
${
        cols(
          (c, col) =>
            `let at = outRow${i} * ${d4}u + ${col}; var prev = vec4<f32>(); if (keep > 0.0) { prev = out[at] * oldWeight; } out[at] = prev + o${i}_${c} * weight;`,
        )
      }
    if (tx == 0u) { lse[outRow${i}] = merged + log(keep + add); }
  }`
    ).join("\n");
}

function tileKey(t: AttentionTile): string {
  const chunks = t.resident ? "_res" : `_d${t.dk}_v${t.vk}`;
  return `_t${t.tx}x${t.ty}x${t.tq}_k${t.bkv}${chunks}${t.kMajor ? "_km" : ""}` +
    `${t.pipelined ? "_pl" : ""}${t.subgroups ? "_sg" : ""}`;
}

/**
 * Whether `device` runs the subgroup operations of `tile`: it has the `subgroups` feature and its
 * subgroups are at least tx invocations wide (tiles without `subgroups` run anywhere).
 */
export function subgroupsAllow(device: GPUDevice, tile: AttentionTile): boolean {
  if (!tile.subgroups) return true;
  const min = (device.adapterInfo as GPUAdapterInfo & { subgroupMinSize?: number })
    .subgroupMinSize ?? 0;
  return device.features.has("subgroups") && min >= tile.tx;
}

/** Whether `spec` takes the register-tiled path (head sizes that are multiples of 4). */
function tiled(spec: AttentionSpec): boolean {
  return spec.headDim % 4 === 0;
}

function tileOf(spec: AttentionSpec): AttentionTile {
  return spec.tile ?? defaultAttentionTile(spec);
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
    (spec.accumulate ? "_acc" : "") +
    (spec.tile ? tileKey(spec.tile) : ""),
  generate(spec) {
    if (!(Number.isInteger(spec.headDim) && spec.headDim >= 1 && spec.headDim <= 256)) {
      throw new Error(`attention: headDim ${spec.headDim} is not an integer in [1, 256]`);
    }
    if (tiled(spec)) {
      const t = tileOf(spec);
      checkFlashTile(spec, t);
      return computeKernel({
        code: t.pipelined ? pipelinedCode(spec, t) : flashCode(spec, t),
        bindings: attentionBindings(spec.kv),
        threads: t.tx * t.ty,
        workgroupBytes: flashLayout(spec, t).bytes,
        features: t.subgroups ? ["subgroups" as GPUFeatureName] : [],
      });
    }
    const bk = keysPerTile(spec);
    if (!(Number.isInteger(bk) && bk >= 1)) {
      throw new Error(`attention: keysPerTile ${bk} is not ≥ 1`);
    }
    return computeKernel({
      code: generateCode(spec),
      bindings: attentionBindings(spec.kv),
      threads: PAIRS,
      workgroupBytes: 2 * bk * Math.ceil(spec.headDim / 4) * 16,
    });
  },
  dispatch(spec, { qRows, heads, kvHeads }) {
    const block = tiled(spec) ? tileOf(spec).ty * tileOf(spec).tq : PAIRS;
    return grid2d(Math.ceil((qRows * (heads / kvHeads)) / block) * kvHeads);
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
    return packParams("attention", ATTENTION_FIELDS, values);
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

export { MAX_SEGMENTS };
