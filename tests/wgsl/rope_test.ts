import { ok } from "node:assert/strict";
import fc from "fast-check";
import { rope, type RopeConfig, ropeInverseFrequencies, ropeTable } from "../../wgsl/rope.ts";
import { expectMatch, F32, floats, gpuTest, ints, RUNS } from "./_check.ts";

const LLAMA31: RopeConfig = {
  theta: 500000,
  scaling: {
    type: "llama3",
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositions: 8192,
  },
};

gpuTest("rope rotates (or copies) into the cache layout", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        rotate: fc.boolean(),
        out: fc.constantFrom("f32" as const, "f16" as const),
        vec4: fc.boolean(),
      }),
      fc.integer({ min: 1, max: 12 }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 20 }).map((h) => 2 * h),
      fc.integer({ min: 0, max: 7 }),
      fc.integer({ min: 0, max: 5 }),
      fc.integer({ min: 0, max: 3 }),
      fc.integer({ min: 0, max: 3 }),
      fc.constantFrom<RopeConfig>({ theta: 10000 }, LLAMA31),
      fc.integer(),
      async (
        spec,
        rows,
        heads,
        headDim,
        inPad,
        inOffset,
        outRowOffset,
        posOffset,
        config,
        seed,
      ) => {
        // The vec4 variant needs headDim % 8, inStride % 4 and inOffset % 4 to be 0.
        if (spec.vec4) {
          headDim = 8 * Math.ceil(headDim / 8);
          inOffset = 4 * Math.ceil(inOffset / 4);
          inPad = 4 * Math.ceil(inPad / 4);
        }
        const inStride = heads * headDim + inOffset + inPad;
        const maxPositions = 64;
        const sizes = { rows, heads, headDim, inStride, inOffset, outRowOffset, posOffset };
        const outLength = (outRowOffset + rows + 1) * heads * headDim;
        // Untouched cache rows must keep their value; 7 is exact in f16.
        const buffers: Record<string, Float64Array> = {
          x: floats(rows * inStride, seed, -2, 2),
          out: new Float64Array(outLength).fill(7),
        };
        if (spec.rotate) {
          buffers.positions = ints(posOffset + rows, seed + 1, 0, maxPositions - 1);
          buffers.table = Float64Array.from(ropeTable(config, headDim, maxPositions));
        }
        const tol = spec.out === "f16" ? { atol: 1e-3, rtol: 1e-3 } : F32;
        await expectMatch(rope, spec, sizes, buffers, tol);
      },
    ),
    RUNS,
  );
});

Deno.test("ropeInverseFrequencies without scaling is theta^(−2i/d)", () => {
  const inv = ropeInverseFrequencies({ theta: 10000 }, 8);
  [1, 0.1, 0.01, 0.001].forEach((want, i) => ok(Math.abs(inv[i] - want) < 1e-15));
});

Deno.test("ropeInverseFrequencies llama3 scaling keeps high, divides low, blends between", () => {
  const plain = ropeInverseFrequencies({ theta: 500000 }, 128);
  const scaled = ropeInverseFrequencies(LLAMA31, 128);
  const s = LLAMA31.scaling!;
  let blended = 0;
  plain.forEach((f, i) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < s.originalMaxPositions / s.highFreqFactor) ok(scaled[i] === f);
    else if (wavelen > s.originalMaxPositions / s.lowFreqFactor) ok(scaled[i] === f / s.factor);
    else {
      blended++;
      ok(scaled[i] < f && scaled[i] > f / s.factor);
    }
  });
  ok(blended > 0);
  // The highest frequency of Llama-3.1-8B is untouched, the lowest divided by the factor.
  ok(scaled[0] === 1);
  ok(Math.abs(scaled[63] - 500000 ** (-126 / 128) / 8) < 1e-20);
});

Deno.test("ropeTable holds (cos, sin) of position × frequency", () => {
  const table = ropeTable({ theta: 10000 }, 4, 3);
  ok(table.length === 3 * 2 * 2);
  ok(table[0] === 1 && table[1] === 0);
  ok(Math.abs(table[(2 * 2 + 1) * 2] - Math.cos(2 * 0.01)) < 1e-7);
  ok(Math.abs(table[(2 * 2 + 1) * 2 + 1] - Math.sin(2 * 0.01)) < 1e-7);
});
