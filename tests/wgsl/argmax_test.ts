import fc from "fast-check";
import { argmax } from "../../wgsl/argmax.ts";
import { expectMatch, gpuTest, ints, rng, RUNS, share } from "./_check.ts";

gpuTest("argmax picks the first largest value and ignores NaN", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 1, max: 700 }),
      fc.constantFrom(3, 1000),
      share,
      fc.integer(),
      async (rows, cols, range, nanShare, seed) => {
        // A small range forces ties; special values test the NaN and −∞ handling.
        const logits = ints(rows * cols, seed, -range, range);
        const next = rng(seed + 1);
        for (let i = 0; i < logits.length; i++) {
          if (next() < nanShare) logits[i] = NaN;
          else if (next() < 0.05) logits[i] = -Infinity;
        }
        await expectMatch(argmax, {}, { rows, cols }, {
          logits,
          out: new Float64Array(rows),
        }, "exact");
      },
    ),
    RUNS,
  );
});
