import { equal, throws } from "node:assert/strict";
import fc from "fast-check";
import {
  DEFAULT_MATMUL_TILE,
  matmul,
  type MatmulSpec,
  type MatmulTile,
} from "../../wgsl/matmul.ts";
import { expectMatch, F32, floats, gpuTest, ints, RUNS, toF16, type Tolerance } from "./_check.ts";

// Tiles small enough to compile quickly on GL llvmpipe (whose compile time grows steeply with
// workgroup memory), chosen to cover the generator's cases: scalar and vec4 loads along K, more
// staged elements than invocations and fewer (guarded), tm ≠ tn, tm = 1, 8×8 per invocation,
// and grouped tile orders that do and do not divide the tile rows.
const TILES: MatmulTile[] = [
  { bm: 16, bn: 16, bk: 4, tm: 2, tn: 4, group: 2, vec4: false },
  { bm: 8, bn: 32, bk: 8, tm: 1, tn: 4, group: 3, vec4: true },
  { bm: 32, bn: 16, bk: 4, tm: 4, tn: 2, group: 1, vec4: true },
  DEFAULT_MATMUL_TILE,
  { bm: 64, bn: 64, bk: 4, tm: 8, tn: 8, group: 2, vec4: true },
  // k-major staging (outer products), as the GPU rules pick: vec4 and scalar loads, 8×8.
  { bm: 32, bn: 16, bk: 4, tm: 4, tn: 4, group: 3, vec4: true, kMajor: true },
  { bm: 16, bn: 32, bk: 8, tm: 4, tn: 8, group: 1, vec4: false, kMajor: true },
  { bm: 64, bn: 64, bk: 4, tm: 8, tn: 8, group: 2, vec4: true, kMajor: true },
];

// Every pair of spec options appears together (a covering array, the first five), each spec with
// its own tile, so eight kernels test all interactions of two options and every tile without
// compiling all combinations (slow on a cold GL llvmpipe).
const SPECS: MatmulSpec[] = [
  { weight: "f32", bias: false, accumulate: false, activation: "none" },
  { weight: "f32", bias: true, accumulate: true, activation: "silu" },
  { weight: "f16", bias: false, accumulate: true, activation: "silu" },
  { weight: "f16", bias: true, accumulate: false, activation: "silu" },
  { weight: "f16", bias: true, accumulate: true, activation: "none" },
  { weight: "f32", bias: true, accumulate: false, activation: "silu" },
  { weight: "f16", bias: false, accumulate: true, activation: "none" },
  { weight: "f32", bias: false, accumulate: true, activation: "none" },
].map((spec, i) => ({ ...spec, tile: TILES[i] }) as MatmulSpec);

const problem = (specs: MatmulSpec[]) =>
  fc.record({
    spec: fc.constantFrom(...specs),
    M: fc.integer({ min: 1, max: 140 }),
    N: fc.integer({ min: 1, max: 140 }),
    K: fc.integer({ min: 1, max: 70 }),
    aOffset: fc.integer({ min: 0, max: 3 }),
    cPad: fc.integer({ min: 0, max: 3 }),
    cOffset: fc.integer({ min: 0, max: 3 }),
    seed: fc.integer(),
  });

type Problem = ReturnType<typeof problem> extends fc.Arbitrary<infer T> ? T : never;
type Data = (n: number, seed: number) => Float64Array;

async function check(p: Problem, data: Data, tol: (K: number) => Tolerance) {
  const { spec, M, N, aOffset, cOffset, seed } = p;
  // vec4 tiles read K four at a time and need K to be a multiple of 4.
  const K = spec.tile?.vec4 ? 4 * Math.ceil(p.K / 4) : p.K;
  const cStride = N + cOffset + p.cPad;
  const buffers: Record<string, Float64Array> = {
    a: data((aOffset + M) * K, seed),
    b: toF16(data(N * K, seed + 1)),
    c: data(M * cStride + 2, seed + 2),
  };
  if (spec.bias) buffers.bias = toF16(data(N, seed + 3));
  await expectMatch(matmul, spec, { M, N, K, aOffset, cStride, cOffset }, buffers, tol(K));
}

gpuTest("matmul is exact on small integers (up to SiLU) over ragged shapes", async () => {
  await fc.assert(
    fc.asyncProperty(problem(SPECS), async (p) => {
      // Sums of small integers are exact in f32, so any indexing slip shows as a mismatch; only
      // SiLU's exp is inexact.
      const tol = p.spec.activation === "none" ? "exact" : F32;
      await check(p, (n, seed) => ints(n, seed, -3, 3), () => tol);
    }),
    RUNS,
  );
});

gpuTest("matmul with random floats is within the f32 dot-product bound", async () => {
  await fc.assert(
    fc.asyncProperty(problem(SPECS), async (p) => {
      // |error| ≤ K·2⁻²³·Σ|a·b| ≤ K²·2⁻²³ for entries in [−1, 1].
      await check(
        p,
        (n, seed) => floats(n, seed),
        (K) => ({ atol: 1e-5 + K * K * 2 ** -23, rtol: 1e-4 }),
      );
    }),
    RUNS,
  );
});

gpuTest("matmul with one row (decode, LM head) and a long K", async () => {
  const spec = { ...SPECS[1], tile: { ...TILES[1] } };
  const [M, N, K] = [1, 37, 1000];
  await expectMatch(matmul, spec, { M, N, K, aOffset: 2, cStride: N, cOffset: 0 }, {
    a: ints((M + 2) * K, 1, -3, 3),
    b: ints(N * K, 2, -3, 3),
    bias: ints(N, 3, -3, 3),
    c: ints(M * N, 4, -3, 3),
  }, F32);
});

Deno.test("matmul keys: a spec without a tile keeps its plan id; tiles are named", () => {
  const base = { weight: "f16", bias: true, accumulate: false, activation: "none" } as const;
  equal(matmul.key(base), "matmul_f16_bias");
  equal(matmul.key({ ...base, tile: TILES[1] }), "matmul_f16_bias_t8x32x8_1x4_g3_v4");
});

Deno.test("matmul refuses a vec4 tile when K is not a multiple of 4, and bad tiles", () => {
  const spec = { ...SPECS[0], tile: TILES[1] };
  const sizes = { M: 2, N: 2, K: 6, aOffset: 0, cStride: 2, cOffset: 0 };
  throws(() => matmul.params(spec, sizes), /multiple of 4/);
  throws(() => matmul.generate({ ...spec, tile: { ...TILES[1], bk: 6 } }), /invalid tile/);
  throws(() => matmul.generate({ ...spec, tile: { ...TILES[1], bm: 9, tm: 2 } }), /invalid tile/);
  throws(() => matmul.generate({ ...spec, tile: { ...TILES[1], kMajor: true } }), /invalid tile/);
});
