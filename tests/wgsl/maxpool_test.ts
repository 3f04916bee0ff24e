import fc from "fast-check";
import { maxpool } from "../../wgsl/maxpool.ts";
import { expectMatch, gpuTest, ints, RUNS } from "./_check.ts";

gpuTest("maxpool takes the window maximum, windows shrinking at the ends", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 60 }),
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 1, max: 9 }),
      fc.integer(),
      async (rows, cols, width, seed) => {
        await expectMatch(maxpool, {}, { rows, cols, width }, {
          x: ints(rows * cols, seed, -50, 50),
          out: new Float64Array(rows * cols),
        }, "exact");
      },
    ),
    RUNS,
  );
});
