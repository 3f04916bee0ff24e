import fc from "fast-check";
import { queryScore } from "../../wgsl/query_score.ts";
import { expectMatch, F32, floats, gpuTest, RUNS, toF16 } from "./_check.ts";

gpuTest("query_score averages q over rows and the GQA group, then dots with k", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("f32" as const, "f16" as const),
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 3 }),
      fc.constantFrom(1, 2, 4),
      fc.integer({ min: 1, max: 64 }),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 0, max: 4 }),
      fc.integer({ min: 0, max: 4 }),
      fc.integer(),
      async (kv, rows, kvHeads, group, headDim, qRows, kOffset, qOffset, seed) => {
        const heads = kvHeads * group;
        const sizes = { rows, kvHeads, heads, headDim, qRows, kOffset, qOffset };
        await expectMatch(queryScore, { kv }, sizes, {
          k: toF16(floats((kOffset + rows) * kvHeads * headDim, seed)),
          q: floats((qOffset + qRows) * heads * headDim, seed + 1),
          out: new Float64Array(rows * kvHeads),
        }, F32);
      },
    ),
    RUNS,
  );
});
