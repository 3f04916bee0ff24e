import fc from "fast-check";
import { embed } from "../../wgsl/embed.ts";
import { expectMatch, floats, gpuTest, ints, RUNS, toF16 } from "./_check.ts";

gpuTest("embed copies table rows, zero rows for ids past the vocabulary", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("f32" as const, "f16" as const),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 1, max: 70 }),
      fc.integer({ min: 1, max: 50 }),
      fc.integer({ min: 0, max: 5 }),
      fc.integer(),
      async (table, rows, hidden, vocab, idsOffset, seed) => {
        const sizes = { rows, hidden, vocab, idsOffset };
        await expectMatch(embed, { table }, sizes, {
          ids: ints(idsOffset + rows, seed, 0, vocab + 4),
          // Rows past the vocabulary exist, so reading one would not come back as zero.
          table: toF16(floats((vocab + 2) * hidden, seed + 1, -4, 4)),
          out: floats(rows * hidden, seed + 2),
        }, "exact");
      },
    ),
    RUNS,
  );
});

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
        fc.integer(),
        async (rows, hidden, vocab, vocabOffset, zeroMissing, seed) => {
          const sizes = {
            rows,
            hidden,
            vocab,
            idsOffset: 0,
            vocabOffset,
            zeroMissing: +zeroMissing,
          };
          await expectMatch(embed, { table: "f32" }, sizes, {
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
