import { throws } from "node:assert/strict";
import fc from "fast-check";
import { add } from "../../wgsl/add.ts";
import { expectMatch, gpuTest, ints, RUNS } from "./_check.ts";

gpuTest("add adds y into x (scalar and vec4)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.boolean(),
      fc.integer({ min: 1, max: 3000 }),
      fc.integer(),
      async (vec4, n, seed) => {
        const count = vec4 ? 4 * Math.ceil(n / 4) : n;
        await expectMatch(add, { vec4 }, { count }, {
          x: ints(count, seed, -1000, 1000),
          y: ints(count, seed + 1, -1000, 1000),
        }, "exact");
      },
    ),
    RUNS,
  );
});

Deno.test("add vec4 refuses a count that is not a multiple of 4", () => {
  throws(() => add.params({ vec4: true }, { count: 6 }), /multiple of 4/);
});
