import { throws } from "node:assert/strict";
import fc from "fast-check";
import { embed } from "../../wgsl/embed.ts";
import { expectMatch, floats, gpuTest, ints, RUNS, toF16 } from "./_check.ts";

gpuTest(
  "embed copies table rows, zero rows for ids past the vocabulary (scalar and vec4)",
  async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("f32" as const, "f16" as const),
        fc.boolean(),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 0, max: 5 }),
        fc.integer(),
        async (table, vec4, rows, h, vocab, idsOffset, seed) => {
          const hidden = vec4 ? 4 * Math.ceil(h / 4) : h;
          const sizes = { rows, hidden, vocab, idsOffset };
          await expectMatch(embed, { table, vec4 }, sizes, {
            ids: ints(idsOffset + rows, seed, 0, vocab + 4),
            // Rows past the vocabulary exist, so reading one would not come back as zero.
            table: toF16(floats((vocab + 2) * hidden, seed + 1, -4, 4)),
            out: floats(rows * hidden, seed + 2),
          }, "exact");
        },
      ),
      RUNS,
    );
  },
);

gpuTest(
  "embed pieces of a split table: each gathers its range, only the first writes zeros",
  async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 30 }),
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 0, max: 30 }),
        fc.boolean(),
        fc.boolean(),
        fc.integer(),
        async (rows, h, vocab, vocabOffset, zeroMissing, vec4, seed) => {
          const hidden = vec4 ? 4 * Math.ceil(h / 4) : h;
          const sizes = {
            rows,
            hidden,
            vocab,
            idsOffset: 0,
            vocabOffset,
            zeroMissing: +zeroMissing,
          };
          await expectMatch(embed, { table: "f32", vec4 }, sizes, {
            ids: ints(rows, seed, 0, vocabOffset + vocab + 4),
            table: floats((vocab + 2) * hidden, seed + 1, -4, 4).map(Math.fround),
            // What is already there must survive where a piece does not write.
            out: floats(rows * hidden, seed + 2, -1, 1).map(Math.fround),
          }, "exact");
        },
      ),
      RUNS,
    );
  },
);

Deno.test("embed vec4 refuses a hidden size that is not a multiple of 4", () => {
  const sizes = { rows: 1, hidden: 6, vocab: 2, idsOffset: 0 };
  throws(() => embed.params({ table: "f16", vec4: true }, sizes), /multiple of 4/);
});
