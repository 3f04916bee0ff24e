import fc from "fast-check";
import { add } from "../../wgsl/add.ts";
import { expectMatch, gpuTest, ints, RUNS } from "./_check.ts";

gpuTest("add adds y into x", async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 3000 }), fc.integer(), async (count, seed) => {
      await expectMatch(add, {}, { count }, {
        x: ints(count, seed, -1000, 1000),
        y: ints(count, seed + 1, -1000, 1000),
      }, "exact");
    }),
    RUNS,
  );
});
