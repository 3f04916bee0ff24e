import fc from "fast-check";
import { matmul, type MatmulSpec } from "../../wgsl/matmul.ts";
import { expectMatch, F32, floats, gpuTest, ints, RUNS, toF16, type Tolerance } from "./_check.ts";

// Every pair of spec options appears together (a covering array), so five kernels test all
// interactions of two options without compiling all sixteen (slow on a cold GL llvmpipe).
const SPECS: MatmulSpec[] = [
  { weight: "f32", bias: false, accumulate: false, activation: "none" },
  { weight: "f32", bias: true, accumulate: true, activation: "silu" },
  { weight: "f16", bias: false, accumulate: true, activation: "silu" },
  { weight: "f16", bias: true, accumulate: false, activation: "silu" },
  { weight: "f16", bias: true, accumulate: true, activation: "none" },
];

const problem = (specs: MatmulSpec[]) =>
  fc.record({
    spec: fc.constantFrom(...specs),
    M: fc.integer({ min: 1, max: 80 }),
    N: fc.integer({ min: 1, max: 80 }),
    K: fc.integer({ min: 1, max: 70 }),
    aOffset: fc.integer({ min: 0, max: 3 }),
    cPad: fc.integer({ min: 0, max: 3 }),
    cOffset: fc.integer({ min: 0, max: 3 }),
    seed: fc.integer(),
  });

type Problem = ReturnType<typeof problem> extends fc.Arbitrary<infer T> ? T : never;
type Data = (n: number, seed: number) => Float64Array;

async function check(
  p: Problem,
  spec: MatmulSpec,
  data: Data,
  tol: Tolerance,
) {
  const { M, N, K, aOffset, cOffset, seed } = p;
  const cStride = N + cOffset + p.cPad;
  const buffers: Record<string, Float64Array> = {
    a: data((aOffset + M) * K, seed),
    b: toF16(data(N * K, seed + 1)),
    c: data(M * cStride + 2, seed + 2),
  };
  if (spec.bias) buffers.bias = toF16(data(N, seed + 3));
  await expectMatch(matmul, spec, { M, N, K, aOffset, cStride, cOffset }, buffers, tol);
}

gpuTest("matmul is exact on small integers (up to SiLU) over ragged shapes", async () => {
  await fc.assert(
    fc.asyncProperty(problem(SPECS), async (p) => {
      // Sums of small integers are exact in f32, so any indexing slip shows as a mismatch; only
      // SiLU's exp is inexact.
      const tol = p.spec.activation === "none" ? "exact" : F32;
      await check(p, p.spec, (n, seed) => ints(n, seed, -3, 3), tol);
    }),
    RUNS,
  );
});

gpuTest("matmul with random floats is within the f32 dot-product bound", async () => {
  await fc.assert(
    fc.asyncProperty(problem(SPECS), async (p) => {
      // |error| ≤ K·2⁻²³·Σ|a·b| ≤ K²·2⁻²³ for entries in [−1, 1].
      const atol = 1e-5 + p.K * p.K * 2 ** -23;
      await check(p, p.spec, (n, seed) => floats(n, seed), { atol, rtol: 1e-4 });
    }),
    RUNS,
  );
});
