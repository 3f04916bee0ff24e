// C = act(A·Bᵀ + bias) with B in PyTorch Linear layout [N, K], register-tiled for CUDA-core FMA
// throughput. A workgroup computes a bm×bn tile of C; each invocation owns tm×tn outputs (rows
// ty + i·(bm/tm), columns tx + j·(bn/tn)) held in scalar f32 registers. Per step a bm×bk slice of
// A and a bn×bk slice of B are staged in workgroup memory, k innermost with one vec4 of padding
// per row, so the inner loop reads vec4s along k: every lane of a warp reads a different B row
// (the odd row stride keeps them on distinct banks) and the same few A rows (a broadcast). The
// staging is double-buffered with a register prefetch of the next slice, so global latency hides
// behind the FMAs of the current slice and one barrier per slice suffices. Everything inside a
// slice is unrolled here, in TypeScript, because drivers do not reliably unroll it. Tiles are
// visited in groups of `group` tile rows so that consecutive workgroups share B in L2. Loads past
// M, N or K read zeros and stores are guarded, so any M, N, K work.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";
import { silu, SILU_WGSL } from "./_silu.ts";

/** Tile parameters of a `matmul` kernel (an executor concern: plans record none). */
export interface MatmulTile {
  /** Rows of C per workgroup; a multiple of `tm`. */
  bm: number;
  /** Columns of C per workgroup; a multiple of `tn`. */
  bn: number;
  /** K per staged slice; a multiple of 4. */
  bk: number;
  /** Rows of C per invocation. */
  tm: number;
  /** Columns of C per invocation. */
  tn: number;
  /** Tile rows visited together so that they share B in L2 (1: plain row-major order). */
  group: number;
  /**
   * Read A and B as vec4 along K (B as two u32 words when f16). Only valid when K is a multiple
   * of 4; `params` refuses other K, so a wrongly chosen tile fails loudly instead of misreading.
   */
  vec4: boolean;
  /**
   * Stage slices k-major and accumulate outer products, one k at a time: per k an invocation
   * reads tm/4 + tn/4 vec4s and does tm·tn FMAs, so far fewer operand registers are live than
   * with k-inner dot products (tm + tn vec4s per four k), which leaves room for more
   * workgroups per multiprocessor. Needs tm and tn to be multiples of 4.
   */
  kMajor?: boolean;
}

/** What a `matmul` kernel is specialised on. */
export interface MatmulSpec {
  /** Storage type of the weight `b` (and of `bias`). */
  weight: StorageType;
  /** Whether a `bias` binding of length N is added. */
  bias: boolean;
  /** Whether the result is added to `c` instead of overwriting it. */
  accumulate: boolean;
  /** Activation applied after the bias. */
  activation: "none" | "silu";
  /** Tile parameters; {@linkcode DEFAULT_MATMUL_TILE} when absent. */
  tile?: MatmulTile;
}

/**
 * The tile a spec without one compiles to: correct for every shape (scalar loads along K), within
 * the WebGPU default limits (8 KiB of workgroup memory, 256 invocations) and quick to compile on
 * software adapters. Plans record no tile; the executor asks runtime/autotune.ts for the tile of
 * each dispatch (128×128 on a GPU), so this one serves tests, emitted WGSL files and fallbacks.
 */
export const DEFAULT_MATMUL_TILE: MatmulTile = {
  bm: 64,
  bn: 64,
  bk: 4,
  tm: 4,
  tn: 4,
  group: 8,
  vec4: false,
};

const FIELDS: ParamFields = [
  ["M", "u32"],
  ["N", "u32"],
  ["K", "u32"],
  ["aOffset", "u32"],
  ["cStride", "u32"],
  ["cOffset", "u32"],
];

/** Invocations per workgroup of a tile. */
export function matmulThreads(t: MatmulTile): number {
  return (t.bm / t.tm) * (t.bn / t.tn);
}

/** Bytes of workgroup memory a tile stages (two buffers of A and B slices, rows padded). */
export function matmulWorkgroupBytes(t: MatmulTile): number {
  if (t.kMajor) return 2 * t.bk * (t.bm / 4 + 1 + t.bn / 4 + 1) * 16;
  return 2 * (t.bm + t.bn) * (t.bk / 4 + 1) * 16;
}

function checkTile(t: MatmulTile): void {
  const whole = [t.bm, t.bn, t.bk, t.tm, t.tn, t.group].every((v) => Number.isInteger(v) && v > 0);
  const threads = matmulThreads(t);
  if (
    !whole || t.bm % t.tm || t.bn % t.tn || t.bk % 4 || threads > 1024 || threads < 1 ||
    ((t.bm + t.bn) * t.bk) % 4 || (t.kMajor && (t.tm % 4 || t.tn % 4))
  ) {
    throw new Error(`matmul: invalid tile ${JSON.stringify(t)}`);
  }
}

// Staging of one bk slice into registers (`regs`) and from them into workgroup buffer `buf`. With
// vec4 each register is a vec4 along k; otherwise each is one scalar, k fastest across lanes so
// that a warp's loads stay coalesced.
function staging(t: MatmulTile) {
  const threads = matmulThreads(t);
  const k4 = t.bk / 4;
  const stride = k4 + 1;
  const regs: string[] = [];
  const loads: string[] = [];
  const stores: string[] = [];
  const side = (name: "a" | "b", rows: number, limit: string, base: string, read: string) => {
    const per = t.vec4 ? rows * k4 : rows * t.bk;
    const tile = name === "a" ? "aTile" : "bTile";
    for (let q = 0; q * threads < per; q++) {
      const r = `${name}r${q}`;
      const guardAll = (q + 1) * threads > per;
      regs.push(`  var ${r} = ${t.vec4 ? "vec4<f32>()" : "0.0"};`);
      const e = `lid + ${q * threads}u`;
      if (t.vec4) {
        loads.push(`    {
      let e = ${e};
      let row = e / ${k4}u;
      let k = k0 + (e % ${k4}u) * 4u;
      let ok = ${guardAll ? `e < ${per}u && ` : ""}${base} + row < ${limit} && k < params.K;
      ${r} = select(vec4<f32>(), ${read}_vec(${base} + row, k), ok);
    }`);
        // k-major: the four k of the vec4 go to four rows of the slice (a transpose in the
        // store; rows are padded by a vec4 so lanes of one k fall on different banks).
        const store = t.kMajor
          ? [0, 1, 2, 3].map((c) =>
            `${tile}[buf][(e % ${k4}u) * 4u + ${c}u][row / 4u][row % 4u] = ${r}[${c}];`
          ).join(" ")
          : `${tile}[buf][row][e % ${k4}u] = ${r};`;
        stores.push(`    {
      let e = ${e};
      let row = e / ${k4}u;
      ${guardAll ? `if (e < ${per}u) {` : "{"} ${store} }
    }`);
      } else {
        loads.push(`    {
      let e = ${e};
      let row = e / ${t.bk}u;
      let k = k0 + e % ${t.bk}u;
      let ok = ${guardAll ? `e < ${per}u && ` : ""}${base} + row < ${limit} && k < params.K;
      ${r} = select(0.0, ${read}_scalar(${base} + row, k), ok);
    }`);
        const store = t.kMajor
          ? `${tile}[buf][kk][row / 4u][row % 4u] = ${r};`
          : `${tile}[buf][row][kk / 4u][kk % 4u] = ${r};`;
        const open = guardAll ? `if (e < ${per}u) {` : "{";
        stores.push(`    {
      let e = ${e};
      let kk = e % ${t.bk}u;
      let row = e / ${t.bk}u;
      ${open} ${store} }
    }`);
      }
    }
  };
  side("a", t.bm, "params.M", "m0", "a");
  side("b", t.bn, "params.N", "n0", "b");

  return {
    regs: regs.join("\n"),
    load: loads.join("\n"),
    store: stores.join("\n"),
    decl: t.kMajor
      ? `var<workgroup> aTile: array<array<array<vec4<f32>, ${t.bm / 4 + 1}>, ${t.bk}>, 2>;
var<workgroup> bTile: array<array<array<vec4<f32>, ${t.bn / 4 + 1}>, ${t.bk}>, 2>;`
      : `var<workgroup> aTile: array<array<array<vec4<f32>, ${stride}>, ${t.bm}>, 2>;
var<workgroup> bTile: array<array<array<vec4<f32>, ${stride}>, ${t.bn}>, 2>;`,
  };
}

// Readers of one element (scalar path) or four along k (vec4 path) of a row of A or B.
function readers(spec: MatmulSpec, t: MatmulTile): string {
  if (t.vec4) {
    const b = spec.weight === "f32"
      ? "return b[(n * params.K + k) / 4u];"
      : "let w = b[(n * params.K + k) / 4u];\n  return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));";
    return `fn a_vec(m: u32, k: u32) -> vec4<f32> {
  return a[((params.aOffset + m) * params.K + k) / 4u];
}
fn b_vec(n: u32, k: u32) -> vec4<f32> {
  ${b}
}
`;
  }
  return `${storageLoader("b", spec.weight)}fn a_scalar(m: u32, k: u32) -> f32 {
  return a[(params.aOffset + m) * params.K + k];
}
fn b_scalar(n: u32, k: u32) -> f32 {
  return load_b(n * params.K + k);
}
`;
}

// The FMAs of one staged slice from buffer `buf`: per vec4 of k, the tn B vectors first, then
// each A vector against all of them.
function computeSlice(t: MatmulTile): string {
  const ty = t.bm / t.tm;
  const tx = t.bn / t.tn;
  const lines: string[] = [];
  for (let c = 0; c < t.bk / 4; c++) {
    for (let j = 0; j < t.tn; j++) {
      lines.push(`    let b${j}_${c} = bTile[buf][tx + ${j * tx}u][${c}];`);
    }
    for (let i = 0; i < t.tm; i++) {
      lines.push(`    let a${i}_${c} = aTile[buf][ty + ${i * ty}u][${c}];`);
      for (let j = 0; j < t.tn; j++) {
        const acc = `c${i}_${j}`;
        const [a, b] = [`a${i}_${c}`, `b${j}_${c}`];
        lines.push(
          `    ${acc} = fma(${a}.w, ${b}.w, fma(${a}.z, ${b}.z, fma(${a}.y, ${b}.y, fma(${a}.x, ${b}.x, ${acc}))));`,
        );
      }
    }
  }
  return lines.join("\n");
}

// k-major: per k, tm/4 vec4s of A (rows 4·(g·ty + ty)…) and tn/4 of B, then tm·tn/4 vec4 FMAs
// into accumulators c{i}_{g} (row i, columns 4·(g·tx + tx)…).
function computeSliceKMajor(t: MatmulTile): string {
  const ty = t.bm / t.tm;
  const tx = t.bn / t.tn;
  const lines: string[] = [];
  for (let k = 0; k < t.bk; k++) {
    for (let g = 0; g < t.tn / 4; g++) {
      lines.push(`    let b${g}_${k} = bTile[buf][${k}][tx + ${g * tx}u];`);
    }
    for (let g = 0; g < t.tm / 4; g++) {
      lines.push(`    let a${g}_${k} = aTile[buf][${k}][ty + ${g * ty}u];`);
    }
    for (let i = 0; i < t.tm; i++) {
      for (let g = 0; g < t.tn / 4; g++) {
        const a = `a${Math.floor(i / 4)}_${k}[${i % 4}]`;
        lines.push(`    c${i}_${g} = fma(vec4<f32>(${a}), b${g}_${k}, c${i}_${g});`);
      }
    }
  }
  return lines.join("\n");
}

function epilogueKMajor(spec: MatmulSpec, t: MatmulTile): string {
  const ty = t.bm / t.tm;
  const tx = t.bn / t.tn;
  const op = spec.accumulate ? "+=" : "=";
  const lines: string[] = [];
  for (let g = 0; g < t.tn / 4; g++) {
    for (let c = 0; c < 4; c++) {
      lines.push(`  let col${g}_${c} = n0 + (tx + ${g * tx}u) * 4u + ${c}u;`);
      if (spec.bias) {
        lines.push(`  let bias${g}_${c} = load_bias(min(col${g}_${c}, params.N - 1u));`);
      }
    }
  }
  for (let i = 0; i < t.tm; i++) {
    const row = `m0 + (ty + ${Math.floor(i / 4) * ty}u) * 4u + ${i % 4}u`;
    lines.push(`  {
    let m = ${row};
    if (m < params.M) {
      let row = m * params.cStride + params.cOffset;`);
    for (let g = 0; g < t.tn / 4; g++) {
      for (let c = 0; c < 4; c++) {
        const sum = `c${i}_${g}[${c}]`;
        const biased = spec.bias ? `${sum} + bias${g}_${c}` : sum;
        const value = spec.activation === "silu" ? `silu(${biased})` : biased;
        lines.push(`      if (col${g}_${c} < params.N) { c[row + col${g}_${c}] ${op} ${value}; }`);
      }
    }
    lines.push(`    }\n  }`);
  }
  return lines.join("\n");
}

function epilogue(spec: MatmulSpec, t: MatmulTile): string {
  const ty = t.bm / t.tm;
  const tx = t.bn / t.tn;
  const op = spec.accumulate ? "+=" : "=";
  const lines: string[] = [];
  for (let j = 0; j < t.tn; j++) {
    lines.push(`  let col${j} = n0 + tx + ${j * tx}u;`);
    if (spec.bias) lines.push(`  let bias${j} = load_bias(min(col${j}, params.N - 1u));`);
  }
  for (let i = 0; i < t.tm; i++) {
    lines.push(`  {
    let m = m0 + ty + ${i * ty}u;
    if (m < params.M) {
      let row = m * params.cStride + params.cOffset;`);
    for (let j = 0; j < t.tn; j++) {
      const biased = spec.bias ? `c${i}_${j} + bias${j}` : `c${i}_${j}`;
      const value = spec.activation === "silu" ? `silu(${biased})` : biased;
      lines.push(`      if (col${j} < params.N) { c[row + col${j}] ${op} ${value}; }`);
    }
    lines.push(`    }\n  }`);
  }
  return lines.join("\n");
}

function matmulBindings(spec: MatmulSpec): BindingSpec[] {
  return [
    { name: "a", access: "read", elem: "f32" },
    { name: "b", access: "read", elem: spec.weight },
    ...(spec.bias ? [{ name: "bias", access: "read", elem: spec.weight } as const] : []),
    { name: "c", access: "read_write", elem: "f32" },
  ];
}

function tileKey(t: MatmulTile): string {
  return `_t${t.bm}x${t.bn}x${t.bk}_${t.tm}x${t.tn}_g${t.group}${t.vec4 ? "_v4" : ""}` +
    (t.kMajor ? "_km" : "");
}

function tileOf(spec: MatmulSpec): MatmulTile {
  return spec.tile ?? DEFAULT_MATMUL_TILE;
}

/**
 * For m < M, n < N: `v = act(Σ_k a[aOffset + m, k]·b[n, k] + bias[n])`, written to
 * `c[m·cStride + cOffset + n]` (added when `accumulate`). `spec.tile` changes speed only.
 */
export const matmul: KernelFamily<MatmulSpec> = {
  name: "matmul",
  key: (spec) =>
    `matmul_${spec.weight}${spec.bias ? "_bias" : ""}${spec.accumulate ? "_acc" : ""}` +
    `${spec.activation === "none" ? "" : `_${spec.activation}`}` +
    (spec.tile ? tileKey(spec.tile) : ""),
  generate(spec) {
    const t = tileOf(spec);
    checkTile(t);
    const bindings = matmulBindings(spec);
    const vectors: Record<string, string> = t.vec4
      ? { a: "vec4<f32>", b: spec.weight === "f32" ? "vec4<f32>" : "vec2<u32>" }
      : {};
    const threads = matmulThreads(t);
    const st = staging(t);
    const accs: string[] = [];
    for (let i = 0; i < t.tm; i++) {
      if (t.kMajor) {
        for (let g = 0; g < t.tn / 4; g++) accs.push(`  var c${i}_${g} = vec4<f32>();`);
      } else {
        for (let j = 0; j < t.tn; j++) accs.push(`  var c${i}_${j} = 0.0;`);
      }
    }
    const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings, vectors)}
${readers(spec, t)}${spec.bias ? storageLoader("bias", spec.weight) : ""}
${spec.activation === "silu" ? SILU_WGSL : ""}
${st.decl}

@compute @workgroup_size(${threads})
fn main(${ENTRY_BUILTINS}) {
  // Grouped tile order: ${t.group} tile rows share each run of tile columns (B stays in L2).
  let tilesM = (params.M + ${t.bm - 1}u) / ${t.bm}u;
  let tilesN = (params.N + ${t.bn - 1}u) / ${t.bn}u;
  let pid = ${FLAT_GROUP};
  if (pid >= tilesM * tilesN) { return; }
  let perGroup = ${t.group}u * tilesN;
  let firstM = (pid / perGroup) * ${t.group}u;
  let groupRows = min(tilesM - firstM, ${t.group}u);
  let inGroup = pid % perGroup;
  let m0 = (firstM + inGroup % groupRows) * ${t.bm}u;
  let n0 = (inGroup / groupRows) * ${t.bn}u;
  let tx = lid % ${t.bn / t.tn}u;
  let ty = lid / ${t.bn / t.tn}u;
${accs.join("\n")}
${st.regs}
  let slices = (params.K + ${t.bk - 1}u) / ${t.bk}u;
  {
    let k0 = 0u;
    let buf = 0u;
${st.load}
${st.store}
  }
  workgroupBarrier();
  for (var s = 0u; s < slices; s++) {
    let buf = s & 1u;
    let next = s + 1u < slices;
    if (next) {
      let k0 = (s + 1u) * ${t.bk}u;
${st.load}
    }
${t.kMajor ? computeSliceKMajor(t) : computeSlice(t)}
    if (next) {
      let buf = (s + 1u) & 1u;
${st.store}
    }
    workgroupBarrier();
  }
${t.kMajor ? epilogueKMajor(spec, t) : epilogue(spec, t)}
}
`;
    return computeKernel({
      code,
      bindings,
      threads: threads,
      workgroupBytes: matmulWorkgroupBytes(t),
    });
  },
  dispatch(spec, { M, N }) {
    const t = tileOf(spec);
    return grid2d(Math.ceil(M / t.bm) * Math.ceil(N / t.bn));
  },
  params(spec, sizes) {
    if (tileOf(spec).vec4 && sizes.K % 4 !== 0) {
      throw new Error(`matmul: a vec4 tile needs K to be a multiple of 4, got K = ${sizes.K}`);
    }
    return packParams("matmul", FIELDS, sizes);
  },
  reference(spec, sizes, { a, b, bias, c }) {
    const { M, N, K, aOffset, cStride, cOffset } = sizes;
    const stored = storageRound(spec.weight);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let v = spec.bias ? stored(bias[n]) : 0;
        for (let k = 0; k < K; k++) v += a[(aOffset + m) * K + k] * stored(b[n * K + k]);
        if (spec.activation === "silu") v = silu(v);
        if (spec.accumulate) c[m * cStride + cOffset + n] += v;
        else c[m * cStride + cOffset + n] = v;
      }
    }
  },
};
