import fc from "fast-check";
import { lseMerge } from "../../wgsl/lse_merge.ts";
import { attention } from "../../wgsl/attention.ts";
import { runKernel } from "../../runtime/run_kernel.ts";
import {
  assertClose,
  expectMatch,
  F32,
  floats,
  gpu,
  gpuTest,
  rng,
  RUNS,
  share,
  toF32,
} from "./_check.ts";
import { attentionSizes, type Segment } from "./_attention_cases.ts";

/** Partial results of one merge: per part, o [rows, heads, d] and lse [rows, heads]. */
interface Part {
  o: Float64Array;
  lse: Float64Array;
}

const shape = fc.record({
  rows: fc.integer({ min: 1, max: 12 }),
  heads: fc.integer({ min: 1, max: 4 }),
  headDim: fc.integer({ min: 1, max: 40 }),
  seed: fc.integer(),
});
type Shape = typeof shape extends fc.Arbitrary<infer T> ? T : never;

/** A random part; about one lse in `emptyEvery` is −∞ (its o is then garbage, even NaN). */
function randomPart(s: Shape, salt: number, centre = 0, emptyEvery = 8): Part {
  // Rounded to f32 as uploaded, so the reference sees what the kernel sees.
  const o = toF32(floats(s.rows * s.heads * s.headDim, s.seed + salt));
  const lse = toF32(floats(s.rows * s.heads, s.seed + salt + 1, centre - 5, centre + 5));
  const next = rng(s.seed + salt + 2);
  lse.forEach((_, i) => {
    if (next() * emptyEvery < 1) {
      lse[i] = -Infinity;
      o.fill(NaN, i * s.headDim, (i + 1) * s.headDim);
    }
  });
  return { o, lse };
}

/** Merges `parts` on the GPU, laid out with a part stride of rows + 1. */
async function merge(s: Shape, parts: Part[]): Promise<Part> {
  const partStride = s.rows + 1;
  const width = s.heads * s.headDim;
  const o = new Float64Array(parts.length * partStride * width);
  const lse = new Float64Array(parts.length * partStride * s.heads);
  parts.forEach((p, i) => {
    o.set(p.o, i * partStride * width);
    lse.set(p.lse, i * partStride * s.heads);
  });
  const sizes = {
    parts: parts.length,
    rows: s.rows,
    heads: s.heads,
    headDim: s.headDim,
    partStride,
  };
  const out = await expectMatch(lseMerge, {}, sizes, {
    o,
    lse,
    out: new Float64Array(s.rows * width),
    outLse: new Float64Array(s.rows * s.heads),
  }, F32);
  return { o: out.out, lse: out.outLse };
}

function assertSame(a: Part, b: Part, label: string, tol = F32) {
  assertClose(a.o, b.o, tol, `${label} o`);
  assertClose(a.lse, b.lse, tol, `${label} lse`);
}

gpuTest("lse_merge matches the reference, including rows where every part is empty", async () => {
  await fc.assert(
    fc.asyncProperty(shape, fc.integer({ min: 1, max: 5 }), async (s, n) => {
      await merge(s, Array.from({ length: n }, (_, p) => randomPart(s, 10 * p, 0, 3)));
    }),
    RUNS,
  );
});

gpuTest("lse_merge is commutative and associative", async () => {
  await fc.assert(
    fc.asyncProperty(shape, async (s) => {
      const [a, b, c] = [randomPart(s, 0), randomPart(s, 10), randomPart(s, 20)];
      const abc = await merge(s, [a, b, c]);
      assertSame(await merge(s, [c, a, b]), abc, "permuted");
      assertSame(await merge(s, [await merge(s, [a, b]), c]), abc, "(a b) c");
      assertSame(await merge(s, [a, await merge(s, [b, c])]), abc, "a (b c)");
    }),
    RUNS,
  );
});

gpuTest("lse_merge: −∞ is the identity, and a part merged with itself gains ln 2", async () => {
  await fc.assert(
    fc.asyncProperty(shape, async (s) => {
      const a = randomPart(s, 0);
      const empty = { o: a.o.map(() => NaN), lse: a.lse.map(() => -Infinity) };
      const clean = { o: a.o.map((x) => (Number.isNaN(x) ? 0 : x)), lse: a.lse };
      assertSame(await merge(s, [a, empty]), clean, "with identity", "exact");
      assertSame(
        await merge(s, [a, a]),
        { o: clean.o, lse: a.lse.map((x) => x + Math.LN2) },
        "self",
      );
    }),
    RUNS,
  );
});

gpuTest("lse_merge stays finite and accurate with lse around ±1e4", async () => {
  await fc.assert(
    fc.asyncProperty(shape, async (s) => {
      const parts = [
        randomPart(s, 0, 1e4, 1e9),
        randomPart(s, 10, 1e4, 1e9),
        randomPart(s, 20, -1e4, 1e9),
      ];
      const merged = await merge(s, parts);
      if (!merged.o.every(Number.isFinite) || !merged.lse.every(Number.isFinite)) {
        throw new Error("non-finite merge result");
      }
    }),
    RUNS,
  );
});

gpuTest(
  "attention over a partition of the keys, merged, equals attention over all keys",
  async () => {
    const device = gpu!.device;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 30 }),
        fc.integer({ min: 2, max: 50 }),
        share,
        fc.constantFrom(0 as const, 1 as const),
        fc.integer(),
        async (rows, keys, cutShare, causal, seed) => {
          const [heads, kvHeads, headDim] = [4, 2, 16];
          const cut = Math.round(cutShare * keys);
          const shape = { qRows: rows, heads, kvHeads, qOffset: 0, outOffset: 0, scale: 0.5 };
          const kv = floats(keys * kvHeads * headDim, seed + 1, -2, 2);
          const run = async (segments: Segment[]) => {
            const out = await runKernel(
              device,
              attention,
              { headDim, kv: "f32" },
              attentionSizes(shape, segments),
              {
                q: floats(rows * heads * headDim, seed),
                k0: kv,
                v0: kv.map((x) => x * 0.5 - 0.1),
                k1: kv,
                v1: kv.map((x) => x * 0.5 - 0.1),
                out: new Float64Array(rows * heads * headDim),
                lse: new Float64Array(rows * heads),
              },
            );
            return { o: out.out, lse: out.lse };
          };
          // The same causal mask (j ≤ i + keys − rows, bottom-right aligned) cut at key `cut`.
          const diag = keys - rows;
          const whole = { src: 0, kvStart: 0, qStart: 0, qEnd: rows, causal } as const;
          const all = await run([{ ...whole, kvCount: keys, diag }]);
          const first = await run([{ ...whole, kvCount: cut, diag }]);
          const second = await run([{
            ...whole,
            src: 1,
            kvStart: cut,
            kvCount: keys - cut,
            diag: diag - cut,
          }]);
          assertSame(
            await merge({ rows, heads, headDim, seed }, [first, second]),
            all,
            "partition",
          );
        },
      ),
      RUNS,
    );
  },
);
