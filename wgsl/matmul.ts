// C = act(A·Bᵀ + bias) with B in PyTorch Linear layout [N, K]. Each workgroup computes a 64×64
// tile of C; 256 invocations each own a 4×4 block held as four vec4 accumulators. Per step a
// 64×16 slice of A and of B is staged in workgroup memory with k outermost, so one vec4 read
// gives four rows (or columns) for the same k. Loads and stores are guarded, so any M, N, K work.

import type { BindingSpec, KernelFamily, StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { MAX_GROUPS_PER_DIM } from "./_grid.ts";
import { silu, SILU_WGSL } from "./_silu.ts";

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
}

const FIELDS: ParamFields = [
  ["M", "u32"],
  ["N", "u32"],
  ["K", "u32"],
  ["aOffset", "u32"],
  ["cStride", "u32"],
  ["cOffset", "u32"],
];
const TILE = 64;
const BK = 16;
const PER_THREAD = 4;
const WORKGROUP = (TILE / PER_THREAD) ** 2;
const LOADS = (TILE * BK) / WORKGROUP;

function stageWgsl(): string {
  const lines: string[] = [];
  for (let q = 0; q < LOADS; q++) {
    lines.push(`
    {
      let e = lid + ${q * WORKGROUP}u;
      let row = e / ${BK}u;
      let k = k0 + e % ${BK}u;
      let slot = (e % ${BK}u) * ${TILE / 4}u + row / 4u;
      var av = 0.0;
      if (m0 + row < params.M && k < params.K) {
        av = a[(params.aOffset + m0 + row) * params.K + k];
      }
      aTile[slot][row % 4u] = av;
      var bv = 0.0;
      if (n0 + row < params.N && k < params.K) { bv = load_b((n0 + row) * params.K + k); }
      bTile[slot][row % 4u] = bv;
    }`);
  }
  return lines.join("");
}

function epilogueWgsl(): string {
  const lines: string[] = [];
  for (let i = 0; i < PER_THREAD; i++) {
    for (let j = 0; j < PER_THREAD; j++) {
      lines.push(`  store(m0 + ty * 4u + ${i}u, n0 + tx * 4u + ${j}u, acc${i}[${j}]);`);
    }
  }
  return lines.join("\n");
}

function storeWgsl(spec: MatmulSpec): string {
  const biased = spec.bias ? "sum + load_bias(n)" : "sum";
  const value = spec.activation === "silu" ? `silu(${biased})` : biased;
  const op = spec.accumulate ? "+=" : "=";
  return `
fn store(m: u32, n: u32, sum: f32) {
  if (m < params.M && n < params.N) {
    c[m * params.cStride + params.cOffset + n] ${op} ${value};
  }
}
`;
}

/**
 * For m < M, n < N: `v = act(Σ_k a[aOffset + m, k]·b[n, k] + bias[n])`, written to
 * `c[m·cStride + cOffset + n]` (added when `accumulate`).
 */
export const matmul: KernelFamily<MatmulSpec> = {
  name: "matmul",
  key: (spec) =>
    `matmul_${spec.weight}${spec.bias ? "_bias" : ""}${spec.accumulate ? "_acc" : ""}` +
    `${spec.activation === "none" ? "" : `_${spec.activation}`}`,
  generate(spec) {
    const bindings: BindingSpec[] = [
      { name: "a", access: "read", elem: "f32" },
      { name: "b", access: "read", elem: spec.weight },
      ...(spec.bias ? [{ name: "bias", access: "read", elem: spec.weight } as const] : []),
      { name: "c", access: "read_write", elem: "f32" },
    ];
    const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings)}
${storageLoader("b", spec.weight)}${spec.bias ? storageLoader("bias", spec.weight) : ""}
${spec.activation === "silu" ? SILU_WGSL : ""}${storeWgsl(spec)}
var<workgroup> aTile: array<vec4<f32>, ${(BK * TILE) / 4}>;
var<workgroup> bTile: array<vec4<f32>, ${(BK * TILE) / 4}>;

@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % ${TILE / PER_THREAD}u;
  let ty = lid / ${TILE / PER_THREAD}u;
  let m0 = wid.y * ${TILE}u;
  let n0 = wid.x * ${TILE}u;
  var acc0 = vec4<f32>();
  var acc1 = vec4<f32>();
  var acc2 = vec4<f32>();
  var acc3 = vec4<f32>();
  for (var k0 = 0u; k0 < params.K; k0 += ${BK}u) {${stageWgsl()}
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk++) {
      let av = aTile[kk * ${TILE / 4}u + ty];
      let bv = bTile[kk * ${TILE / 4}u + tx];
      acc0 += av.x * bv;
      acc1 += av.y * bv;
      acc2 += av.z * bv;
      acc3 += av.w * bv;
    }
    workgroupBarrier();
  }
${epilogueWgsl()}
}
`;
    return {
      code,
      entry: "main",
      workgroupSize: [WORKGROUP, 1, 1],
      bindings,
      features: [],
      workgroupBytes: 2 * BK * TILE * 4,
    };
  },
  dispatch(_spec, { M, N }) {
    const grid: [number, number, number] = [Math.ceil(N / TILE), Math.ceil(M / TILE), 1];
    if (grid[0] > MAX_GROUPS_PER_DIM || grid[1] > MAX_GROUPS_PER_DIM) {
      throw new Error(`matmul: M=${M}, N=${N} need more than ${MAX_GROUPS_PER_DIM} tiles a side`);
    }
    return grid;
  },
  params: (_spec, sizes) => packParams("matmul", FIELDS, sizes),
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
