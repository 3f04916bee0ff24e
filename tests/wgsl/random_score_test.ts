import fc from "fast-check";
import { randomScore } from "../../wgsl/random_score.ts";
import { expectMatch, gpuTest, RUNS } from "./_check.ts";

gpuTest("random_score equals the host hash, uniform in [0, 1)", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 300 }),
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      async (rows, heads, seed) => {
        const { out } = await expectMatch(randomScore, {}, { rows, heads, seed }, {
          out: new Float64Array(rows * heads),
        }, "exact");
        if (!out.every((v) => v >= 0 && v < 1)) throw new Error("random_score left [0, 1)");
      },
    ),
    RUNS,
  );
});

gpuTest("random_score looks uniform and depends on the seed", async () => {
  const sizes = { rows: 4096, heads: 4 };
  const one = await expectMatch(randomScore, {}, { ...sizes, seed: 1 }, {
    out: new Float64Array(4096 * 4),
  }, "exact");
  const two = await expectMatch(randomScore, {}, { ...sizes, seed: 2 }, {
    out: new Float64Array(4096 * 4),
  }, "exact");
  const mean = one.out.reduce((a, b) => a + b, 0) / one.out.length;
  if (Math.abs(mean - 0.5) > 0.01) throw new Error(`mean ${mean} is far from 0.5`);
  const same = one.out.filter((v, i) => v === two.out[i]).length;
  if (same > 5) throw new Error(`${same} scores did not change with the seed`);
});
