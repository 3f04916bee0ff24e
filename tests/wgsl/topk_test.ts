import { deepEqual, ok, throws } from "node:assert/strict";
import fc from "fast-check";
import { topk } from "../../wgsl/topk.ts";
import { expectMatch, floats, gpuTest, ints, rng, RUNS, share } from "./_check.ts";

const problem = fc.record({
  rows: fc.integer({ min: 1, max: 700 }),
  heads: fc.integer({ min: 1, max: 4 }),
  excludeShare: share,
  kShare: share,
  seed: fc.integer(),
}).map((p) => {
  const exclude = Math.min(p.rows - 1, Math.floor(p.excludeShare * p.rows));
  return { ...p, exclude, k: Math.round(p.kShare * (p.rows - exclude)) };
});

/** The rows of head g in `idx` after checking the selection's shape. */
function selected(idx: Float64Array, k: number, heads: number, g: number, exclude: number) {
  const rows = Array.from({ length: k }, (_, j) => idx[j * heads + g]);
  rows.forEach((r, j) => {
    ok(r >= exclude, `row ${r} is below exclude ${exclude}`);
    if (j > 0) ok(r > rows[j - 1], `rows not strictly ascending: ${rows}`);
  });
  return rows;
}

gpuTest("topk matches the reference with ties and NaN, and is a valid selection", async () => {
  await fc.assert(
    fc.asyncProperty(problem, fc.constantFrom(4, 1e6), async (p, range) => {
      const { rows, heads, k, exclude, seed } = p;
      const scores = ints(rows * heads, seed, -range, range);
      const next = rng(seed + 1);
      for (let i = 0; i < scores.length; i++) if (next() < 0.05) scores[i] = NaN;
      const { idx } = await expectMatch(topk, {}, { rows, heads, k, exclude }, {
        scores,
        idx: new Float64Array(Math.max(1, k * heads)),
      }, "exact");
      for (let g = 0; g < heads; g++) selected(idx, k, heads, g, exclude);
    }),
    RUNS,
  );
});

gpuTest("topk picks exactly the k largest on tie-free data", async () => {
  await fc.assert(
    fc.asyncProperty(problem, async ({ rows, heads, k, exclude, seed }) => {
      // Distinct values: a seeded shuffle of 0…n−1, shifted to include negatives.
      const n = rows * heads;
      const values = Array.from({ length: n }, (_, i) => i - n / 2);
      const next = rng(seed);
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [values[i], values[j]] = [values[j], values[i]];
      }
      const { idx } = await expectMatch(topk, {}, { rows, heads, k, exclude }, {
        scores: Float64Array.from(values),
        idx: new Float64Array(Math.max(1, k * heads)),
      }, "exact");
      for (let g = 0; g < heads; g++) {
        const want = Array.from({ length: rows - exclude }, (_, i) => exclude + i)
          .sort((a, b) => values[b * heads + g] - values[a * heads + g])
          .slice(0, k)
          .sort((a, b) => a - b);
        deepEqual(selected(idx, k, heads, g, exclude), want);
      }
    }),
    RUNS,
  );
});

gpuTest("topk handles 40k rows and k in the thousands", async () => {
  const [rows, heads, k, exclude] = [40000, 2, 3000, 128];
  await expectMatch(topk, {}, { rows, heads, k, exclude }, {
    scores: floats(rows * heads, 42),
    idx: new Float64Array(k * heads),
  }, "exact");
});

Deno.test("topk refuses k larger than the rows left after exclude", () => {
  const sizes = { rows: 10, heads: 1, k: 8, exclude: 3 };
  const buffers = { scores: new Float64Array(10), idx: new Float64Array(8) };
  throws(() => topk.reference({}, sizes, buffers), /k/);
  throws(() => topk.params({}, sizes), /k/);
});
