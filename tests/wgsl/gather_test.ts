import fc from "fast-check";
import { gather } from "../../wgsl/gather.ts";
import { expectMatch, floats, gpuTest, ints, RUNS, toF16 } from "./_check.ts";

gpuTest("gather copies the selected rows of each head", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("f32" as const, "f16" as const),
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 37 }),
      fc.integer({ min: 0, max: 6 }),
      fc.integer({ min: 1, max: 50 }),
      fc.integer(),
      async (elem, k, heads, headDim, srcRowOffset, srcRows, seed) => {
        const src = toF16(floats((srcRowOffset + srcRows) * heads * headDim, seed, -100, 100));
        await expectMatch(gather, { elem }, { k, heads, headDim, srcRowOffset }, {
          idx: ints(k * heads, seed + 1, 0, srcRows - 1),
          src,
          out: toF16(floats(k * heads * headDim, seed + 2)),
        }, "exact");
      },
    ),
    RUNS,
  );
});
