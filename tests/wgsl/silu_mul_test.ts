import { throws } from "node:assert/strict";
import fc from "fast-check";
import { siluMul } from "../../wgsl/silu_mul.ts";
import { expectMatch, F32, floats, gpuTest, RUNS } from "./_check.ts";

gpuTest(
  "silu_mul matches the reference and stays finite for large |a| (scalar and vec4)",
  async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 300 }),
        fc.constantFrom(1, 10, 200),
        fc.integer(),
        async (vec4, rows, c, range, seed) => {
          const cols = vec4 ? 4 * Math.ceil(c / 4) : c;
          const out = await expectMatch(siluMul, { vec4 }, { rows, cols }, {
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
  },
);

Deno.test("silu_mul vec4 refuses rows·cols that is not a multiple of 4", () => {
  throws(() => siluMul.params({ vec4: true }, { rows: 3, cols: 5 }), /multiple of 4/);
});
