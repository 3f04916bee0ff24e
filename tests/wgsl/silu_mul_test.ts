import fc from "fast-check";
import { siluMul } from "../../wgsl/silu_mul.ts";
import { expectMatch, F32, floats, gpuTest, RUNS } from "./_check.ts";

gpuTest("silu_mul matches the reference and stays finite for large |a|", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 1, max: 300 }),
      fc.constantFrom(1, 10, 200),
      fc.integer(),
      async (rows, cols, range, seed) => {
        const out = await expectMatch(siluMul, {}, { rows, cols }, {
          a: floats(rows * cols, seed, -range, range),
          b: floats(rows * cols, seed + 1),
          out: new Float64Array(rows * cols),
        }, F32);
        if (!out.out.every(Number.isFinite)) {
          throw new Error("silu_mul produced a non-finite value");
        }
      },
    ),
    RUNS,
  );
});
