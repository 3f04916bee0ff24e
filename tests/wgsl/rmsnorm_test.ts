import { throws } from "node:assert/strict";
import fc from "fast-check";
import { rmsnorm } from "../../wgsl/rmsnorm.ts";
import { expectMatch, F32, floats, gpuTest, RUNS, toF16 } from "./_check.ts";

gpuTest("rmsnorm matches the float64 reference (scalar and vec4)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("f32" as const, "f16" as const),
      fc.boolean(),
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 700 }),
      fc.constantFrom(1e-6, 1e-5, 0.1),
      fc.integer(),
      async (weight, vec4, rows, c, eps, seed) => {
        const cols = vec4 ? 4 * Math.ceil(c / 4) : c;
        const w = floats(cols, seed + 1, -2, 2);
        await expectMatch(rmsnorm, { weight, vec4 }, { rows, cols, eps }, {
          x: floats(rows * cols, seed, -3, 3),
          weight: weight === "f16" ? toF16(w) : w,
          out: new Float64Array(rows * cols),
        }, F32);
      },
    ),
    RUNS,
  );
});

Deno.test("rmsnorm vec4 refuses cols that are not a multiple of 4", () => {
  throws(() => rmsnorm.params({ weight: "f32", vec4: true }, { rows: 1, cols: 6, eps: 0 }), /4/);
});

gpuTest(
  "rmsnorm vec4 rows wider than the registers hold (re-read past 16384 columns)",
  async () => {
    const cols = 16384 + 1024 + 12;
    await expectMatch(rmsnorm, { weight: "f16", vec4: true }, { rows: 2, cols, eps: 1e-5 }, {
      x: floats(2 * cols, 3, -3, 3),
      weight: toF16(floats(cols, 4, -2, 2)),
      out: new Float64Array(2 * cols),
    }, F32);
  },
);
