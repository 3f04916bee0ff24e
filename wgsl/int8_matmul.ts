// W8A8 GEMM on subgroup matrices (Dawn's chromium_experimental_subgroup_matrix: int8 tensor cores
// on NVIDIA): C = act(dequant(A·Bᵀ) + bias), with A [M, K] and B [N, K] (PyTorch Linear layout)
// both int8 packed four to an i32 word, rows `kWords` words apart (see quantize.ts), and i32
// accumulation. The epilogue dequantises with the per-row (per-token) scale of A and the per-row
// (per-output-channel) scale of B, then bias, SiLU and accumulate exactly as the f32 `matmul`
// family does, so the lowering can swap one for the other.
//
// Structure: a workgroup owns a BM×BN tile of C and runs (BM/WM)·(BN/WN) subgroups of 32, each
// owning WM×WN as a grid of result matrices (16×16 or 16×8). Per K step of BK bytes, the A and B
// slices are staged in workgroup memory (rows padded by 16 bytes so that the eight rows one matrix
// load touches fall in different banks), double buffered: the next slice is read from global into
// registers (aligned vec4 loads, zero past M, N and K) while the tensor cores work on the current
// one, then written to the other buffer; one barrier per step. The right matrix reads B's rows as
// the columns of a column-major K×N matrix, the layout the hardware wants, so weights need no
// transpose. Tiles are visited in groups of GROUP_M tile rows so that concurrent workgroups share
// B's columns in L2. The epilogue spills each subgroup's results a strip at a time through the same
// workgroup memory and writes C with coalesced f32 stores, guarded at the M and N edges.
//
// Load/store form: the templated `subgroupMatrixLoad<T, row_major|col_major>(ptr, offset, stride)`
// whose offset and stride count elements of the array (i32 words here); the deprecated form
// `(ptr, offset, colMajor, stride)` counts int8 elements and is kept behind `legacyLoads` in case a
// Dawn build lacks the new one.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";
import { silu, SILU_WGSL } from "./_silu.ts";
import { unpackInt8 } from "./quantize.ts";
import { lines } from "./_lines.ts";

/** The device feature that gives WGSL subgroup matrices (int8 tensor cores on NVIDIA, via Dawn). */
export const SUBGROUP_MATRIX_FEATURE = "chromium-experimental-subgroup-matrix" as GPUFeatureName;

/** What both int8 families need of a device. */
export const INT8_FEATURES: GPUFeatureName[] = ["subgroups", SUBGROUP_MATRIX_FEATURE];

/** A subgroup-matrix shape: left M×K, right K×N, result M×N (int8 operands, i32 result). */
export interface MatrixShape {
  /** Rows of left and result. */
  m: number;
  /** Columns of right and result. */
  n: number;
  /** Inner dimension, in int8 elements. */
  k: number;
}

/** Tiling of one specialisation. */
export interface Int8Tile {
  /** Rows of C per workgroup. */
  bm: number;
  /** Columns of C per workgroup. */
  bn: number;
  /** Int8 elements of K staged per step (a multiple of the matrix k and of 16). */
  bk: number;
  /** Rows of C per subgroup. */
  wm: number;
  /** Columns of C per subgroup. */
  wn: number;
}

/** What an `int8_matmul` kernel is specialised on. */
export interface Int8MatmulSpec {
  /** Subgroup-matrix shape; one of the adapter's i8→i32 configurations. */
  matrix: MatrixShape;
  /** Workgroup and subgroup tiles. */
  tile: Int8Tile;
  /** Subgroup size the kernel is laid out for (32 on NVIDIA). */
  subgroupSize: number;
  /** "f32": the dequantised epilogue; "i32": raw accumulators (exactness tests, benchmarks). */
  output: "f32" | "i32";
  /** Storage type of `bias` (that of the model's weights). */
  biasType: StorageType;
  /** Whether a `bias` binding of length N is added. */
  bias: boolean;
  /** Whether the result is added to `c` instead of overwriting it. */
  accumulate: boolean;
  /** Activation after the bias. */
  activation: "none" | "silu";
  /** Use the deprecated load/store form (int8-element offsets). */
  legacyLoads?: boolean;
}

const FIELDS: ParamFields = [
  ["M", "u32"],
  ["N", "u32"],
  ["K", "u32"],
  ["kWords", "u32"],
  ["aOffset", "u32"],
  ["cStride", "u32"],
  ["cOffset", "u32"],
];
/** Tile rows visited together so that neighbouring workgroups share B in L2. */
const GROUP_M = 8;
/** Workgroup memory every subgroup-matrix adapter seen here allows (48 KiB on the H100). */
const MAX_WORKGROUP_BYTES = 49152;
/** Padding of each staged row, in words (16 bytes). */
const PAD_WORDS = 4;

/** The standard tilings, from large square tiles down to skinny ones for few rows. */
// Left out: 64x256x32/32x64, whose epilogue strip does not fit its staging memory, and
// 256x128x32/64x64, whose pipeline creation crashed once (before dawn.node's instance was kept
// alive, which may have been the cause).
export const INT8_TILES: Record<string, Int8Tile> = {
  "128x128x64/64x64": { bm: 128, bn: 128, bk: 64, wm: 64, wn: 64 },
  "128x128x64/32x64": { bm: 128, bn: 128, bk: 64, wm: 32, wn: 64 },
  "128x256x32/64x64": { bm: 128, bn: 256, bk: 32, wm: 64, wn: 64 },
  "64x128x64/32x64": { bm: 64, bn: 128, bk: 64, wm: 32, wn: 64 },
  "64x64x64/32x32": { bm: 64, bn: 64, bk: 64, wm: 32, wn: 32 },
  "16x128x64/16x32": { bm: 16, bn: 128, bk: 64, wm: 16, wn: 32 },
};

/** A default specialisation for a shape (before any tuning). */
export function defaultInt8Tile(M: number): Int8Tile {
  if (M <= 16) return INT8_TILES["16x128x64/16x32"];
  if (M <= 256) return INT8_TILES["64x128x64/32x64"];
  return INT8_TILES["128x128x64/64x64"];
}

interface Layout {
  subgroups: number;
  threads: number;
  rowWords: number;
  stageWords: number;
  aVec: number;
  bVec: number;
  tm: number;
  tn: number;
  scratchWords: number;
}

function layout(spec: Int8MatmulSpec): Layout {
  const { matrix: mx, tile: t, subgroupSize } = spec;
  const fail = (why: string): never => {
    throw new Error(`int8_matmul: tile ${JSON.stringify(t)}: ${why}`);
  };
  if (t.bm % t.wm || t.bn % t.wn) fail("the workgroup tile must be whole subgroup tiles");
  if (t.wm % mx.m || t.wn % mx.n) fail(`subgroup tiles must be whole ${mx.m}×${mx.n} matrices`);
  if (t.bk % mx.k || t.bk % 16) fail(`bk must be a multiple of ${mx.k} and of 16`);
  const subgroups = (t.bm / t.wm) * (t.bn / t.wn);
  const threads = subgroups * subgroupSize;
  const rowWords = t.bk / 4 + PAD_WORDS;
  const vecPerRow = t.bk / 16;
  // Vectors each invocation stages per step (the last round guarded when they do not divide).
  const aVec = Math.ceil((t.bm * vecPerRow) / threads);
  const bVec = Math.ceil((t.bn * vecPerRow) / threads);
  const stageWords = (t.bm + t.bn) * rowWords;
  // Epilogue: every subgroup spills one strip (mx.m rows × wn columns) at a time.
  const scratchWords = subgroups * mx.m * t.wn;
  if (scratchWords > 2 * stageWords) fail("the epilogue strip does not fit the staging memory");
  if (threads > 1024) fail(`${threads} invocations per workgroup`);
  if (2 * stageWords * 4 > MAX_WORKGROUP_BYTES) {
    fail(`${2 * stageWords * 4} bytes of workgroup memory (at most ${MAX_WORKGROUP_BYTES})`);
  }
  return {
    subgroups,
    threads,
    rowWords,
    stageWords,
    aVec,
    bVec,
    tm: t.wm / mx.m,
    tn: t.wn / mx.n,
    scratchWords,
  };
}

function bindingsOf(spec: Int8MatmulSpec): BindingSpec[] {
  if (spec.output === "i32") {
    return [
      { name: "a", access: "read", elem: "i32" },
      { name: "b", access: "read", elem: "i32" },
      { name: "c", access: "read_write", elem: "i32" },
    ];
  }
  return [
    { name: "a", access: "read", elem: "i32" },
    { name: "sa", access: "read", elem: "f32" },
    { name: "b", access: "read", elem: "i32" },
    { name: "sw", access: "read", elem: "f32" },
    ...(spec.bias ? [{ name: "bias", access: "read", elem: spec.biasType } as const] : []),
    { name: "c", access: "read_write", elem: "f32" },
  ];
}

function generateCode(spec: Int8MatmulSpec): string {
  const { matrix: mx, tile: t } = spec;
  const L = layout(spec);
  const S = spec.subgroupSize;
  const left = `subgroup_matrix_left<i8, ${mx.k}, ${mx.m}>`;
  const right = `subgroup_matrix_right<i8, ${mx.n}, ${mx.k}>`;
  const result = `subgroup_matrix_result<i32, ${mx.n}, ${mx.m}>`;
  const vecPerRow = t.bk / 16;
  // Offsets and strides below are in words; the legacy form counts int8 elements.
  const u = spec.legacyLoads ? 4 : 1;
  const loadLeft = (off: string) =>
    spec.legacyLoads
      ? `subgroupMatrixLoad<${left}>(&stage, (${off}) * 4u, false, ${L.rowWords * u}u)`
      : `subgroupMatrixLoad<${left}, row_major>(&stage, ${off}, ${L.rowWords}u)`;
  const loadRight = (off: string) =>
    spec.legacyLoads
      ? `subgroupMatrixLoad<${right}>(&stage, (${off}) * 4u, true, ${L.rowWords * u}u)`
      : `subgroupMatrixLoad<${right}, col_major>(&stage, ${off}, ${L.rowWords}u)`;
  const store = (off: string, v: string, stride: number) =>
    spec.legacyLoads
      ? `subgroupMatrixStore(&stage, ${off}, ${v}, false, ${stride}u)`
      : `subgroupMatrixStore<row_major>(&stage, ${off}, ${v}, ${stride}u)`;
  const acc = (i: number, j: number) => `acc${i}_${j}`;
  const stageLoads = (which: "a" | "b", count: number, rows: number) =>
    lines(count, (v) => {
      const base = which === "a" ? "m0" : "n0";
      const limit = which === "a" ? "params.M" : "params.N";
      const rowBase = which === "a" ? "(params.aOffset + row)" : "row";
      return `  {
    let e = lid + ${v * L.threads}u;
    let r = e / ${vecPerRow}u;
    let row = ${base} + r;
    let w = k0 + (e % ${vecPerRow}u) * 4u;
    var x = vec4<i32>();
    if (r < ${rows}u && row < ${limit} && w < params.kWords) { x = ${which}[(${rowBase} * params.kWords + w) / 4u]; }
    ${which}Next${v} = x;
  }`;
    }).replace(/^/, `  // ${rows} rows of ${which}\n`);
  const stageStores = (which: "a" | "b", count: number) =>
    lines(count, (v) => {
      const first = which === "a" ? "0u" : `${t.bm}u`;
      return `  {
    let e = lid + ${v * L.threads}u;
    if (e < ${(which === "a" ? t.bm : t.bn) * vecPerRow}u) {
    let at = buf + (${first} + e / ${vecPerRow}u) * ${L.rowWords}u + (e % ${vecPerRow}u) * 4u;
    stage[at] = ${which}Next${v}.x;
    stage[at + 1u] = ${which}Next${v}.y;
    stage[at + 2u] = ${which}Next${v}.z;
    stage[at + 3u] = ${which}Next${v}.w;
    }
  }`;
    });
  const mma = lines(t.bk / mx.k, (kk) => {
    const kw = (kk * mx.k) / 4;
    return `    {
${
      lines(L.tm, (i) =>
        `      let l${i} = ${loadLeft(`buf + (sm + ${i * mx.m}u) * ${L.rowWords}u + ${kw}u`)};`)
    }
${
      lines(
        L.tn,
        (j) =>
          `      let r${j} = ${
            loadRight(`buf + (${t.bm}u + sn + ${j * mx.n}u) * ${L.rowWords}u + ${kw}u`)
          };`,
      )
    }
${
      lines(
        L.tm * L.tn,
        (x) => {
          const [i, j] = [Math.floor(x / L.tn), x % L.tn];
          return `      ${acc(i, j)} = subgroupMatrixMultiplyAccumulate(l${i}, r${j}, ${
            acc(i, j)
          });`;
        },
      )
    }
    }`;
  });
  const strip = mx.m * t.wn;
  const epilogue = lines(L.tm, (i) =>
    `  workgroupBarrier();
${lines(L.tn, (j) => `  ${store(`scratch + ${j * mx.n}u`, acc(i, j), t.wn)};`)}
  workgroupBarrier();
  for (var e = lane; e < ${strip}u; e += ${S}u) {
    let r = e / ${t.wn}u;
    let cc = e % ${t.wn}u;
    finish(m0 + sm + ${i * mx.m}u + r, n0 + sn + cc, stage[scratch + e]);
  }`);
  const bindings = bindingsOf(spec);
  const vectors = { a: "vec4<i32>", b: "vec4<i32>" };
  return `enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
${paramsWgsl(FIELDS)}${declareBindings(bindings, vectors)}
${epilogueHelpers(spec)}
${finishWgsl(spec)}
var<workgroup> stage: array<i32, ${2 * L.stageWords}>;

@compute @workgroup_size(${L.threads})
fn main(${ENTRY_BUILTINS}) {
  // Tile order: GROUP_M tile rows at a time, column by column within the group.
  let tilesM = (params.M + ${t.bm - 1}u) / ${t.bm}u;
  let tilesN = (params.N + ${t.bn - 1}u) / ${t.bn}u;
  let pid = ${FLAT_GROUP};
  if (pid >= tilesM * tilesN) { return; }
  let perGroup = ${GROUP_M}u * tilesN;
  let firstM = (pid / perGroup) * ${GROUP_M}u;
  let rowsInGroup = min(tilesM - firstM, ${GROUP_M}u);
  let inGroup = pid % perGroup;
  let m0 = (firstM + inGroup % rowsInGroup) * ${t.bm}u;
  let n0 = (inGroup / rowsInGroup) * ${t.bn}u;
  let sg = lid / ${S}u;
  let lane = lid % ${S}u;
  let sm = (sg / ${t.bn / t.wn}u) * ${t.wm}u;
  let sn = (sg % ${t.bn / t.wn}u) * ${t.wn}u;
${lines(L.tm * L.tn, (x) => `  var ${acc(Math.floor(x / L.tn), x % L.tn)}: ${result};`)}
${lines(L.aVec, (v) => `  var aNext${v}: vec4<i32>;`)}
${lines(L.bVec, (v) => `  var bNext${v}: vec4<i32>;`)}
  let steps = (params.kWords + ${t.bk / 4 - 1}u) / ${t.bk / 4}u;
  var k0 = 0u;
  var buf = 0u;
${stageLoads("a", L.aVec, t.bm)}
${stageLoads("b", L.bVec, t.bn)}
${stageStores("a", L.aVec)}
${stageStores("b", L.bVec)}
  workgroupBarrier();
  for (var step = 0u; step < steps; step++) {
    let more = step + 1u < steps;
    k0 = (step + 1u) * ${t.bk / 4}u;
    if (more) {
${stageLoads("a", L.aVec, t.bm)}
${stageLoads("b", L.bVec, t.bn)}
    }
${mma}
    buf = ${L.stageWords}u - buf;
    if (more) {
${stageStores("a", L.aVec)}
${stageStores("b", L.bVec)}
    }
    workgroupBarrier();
  }
  let scratch = sg * ${strip}u;
${epilogue}
}
`;
}

function epilogueHelpers(spec: Int8MatmulSpec): string {
  if (spec.output === "i32") return "";
  return (spec.bias ? storageLoader("bias", spec.biasType) : "") +
    (spec.activation === "silu" ? SILU_WGSL : "");
}

function finishWgsl(spec: Int8MatmulSpec): string {
  if (spec.output === "i32") {
    return `fn finish(m: u32, n: u32, v: i32) {
  if (m < params.M && n < params.N) { c[m * params.cStride + params.cOffset + n] = v; }
}
`;
  }
  const biased = spec.bias ? "x + load_bias(n)" : "x";
  const value = spec.activation === "silu" ? `silu(${biased})` : biased;
  return `fn finish(m: u32, n: u32, v: i32) {
  if (m < params.M && n < params.N) {
    let x = f32(v) * sa[params.aOffset + m] * sw[n];
    c[m * params.cStride + params.cOffset + n] ${spec.accumulate ? "+=" : "="} ${value};
  }
}
`;
}

/** A stable, file-name-safe name of a tile. */
function tileKey(t: Int8Tile): string {
  return `${t.bm}x${t.bn}x${t.bk}_${t.wm}x${t.wn}`;
}

/**
 * For m < M, n < N, with `acc = Σ_k A[aOffset + m, k]·B[n, k]` over int8 codes (exact i32):
 * `v = act(acc · sa[aOffset + m] · sw[n] + bias[n])` written to `c[m·cStride + cOffset + n]` (added
 * when `accumulate`); with `output: "i32"`, `acc` itself. Rows of A and B are `kWords` words apart.
 */
export const int8Matmul: KernelFamily<Int8MatmulSpec> = {
  name: "int8_matmul",
  key: (spec) =>
    `int8_matmul_${spec.matrix.m}x${spec.matrix.n}x${spec.matrix.k}_${tileKey(spec.tile)}` +
    `_s${spec.subgroupSize}_${spec.output}` +
    (spec.output === "f32"
      ? `${spec.bias ? `_bias_${spec.biasType}` : ""}${spec.accumulate ? "_acc" : ""}` +
        (spec.activation === "none" ? "" : `_${spec.activation}`)
      : "") +
    (spec.legacyLoads ? "_legacy" : ""),
  generate(spec) {
    const L = layout(spec);
    return computeKernel({
      code: generateCode(spec),
      bindings: bindingsOf(spec),
      threads: L.threads,
      workgroupBytes: 2 * L.stageWords * 4,
      features: INT8_FEATURES,
    });
  },
  dispatch(spec, { M, N }) {
    const tiles = Math.ceil(M / spec.tile.bm) * Math.ceil(N / spec.tile.bn);
    return grid2d(tiles);
  },
  params(_spec, sizes) {
    if (!(sizes.kWords % 4 === 0 && sizes.kWords * 4 >= sizes.K)) {
      throw new Error(
        `int8_matmul: kWords ${sizes.kWords} must be a multiple of 4 holding K = ${sizes.K}`,
      );
    }
    return packParams("int8_matmul", FIELDS, sizes);
  },
  reference(spec, sizes, buffers) {
    const { M, N, K, kWords, aOffset, cStride, cOffset } = sizes;
    const { a, b, c } = buffers;
    const rowsA = Array.from({ length: M }, (_, m) => unpackInt8(a, K, (aOffset + m) * kWords));
    const rowsB = Array.from({ length: N }, (_, n) => unpackInt8(b, K, n * kWords));
    const stored = storageRound(spec.biasType);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let dot = 0;
        const x = rowsA[m];
        const y = rowsB[n];
        for (let k = 0; k < K; k++) dot += x[k] * y[k];
        const at = m * cStride + cOffset + n;
        if (spec.output === "i32") {
          c[at] = dot;
          continue;
        }
        let v = Math.fround(Math.fround(dot * buffers.sa[aOffset + m]) * buffers.sw[n]);
        if (spec.bias) v += stored(buffers.bias[n]);
        if (spec.activation === "silu") v = silu(v);
        c[at] = spec.accumulate ? c[at] + v : v;
      }
    }
  },
};
