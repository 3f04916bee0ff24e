import { ok } from "node:assert/strict";
import fc from "fast-check";
import { packedStride, quantize, type QuantizeSpec, unpackInt8 } from "../../wgsl/quantize.ts";
import { assertClose, floats, gpuTest, runBoth, RUNS, toF16, toF32 } from "./_check.ts";

gpuTest("quantize writes its reference's codes and scales: f32, f16, smoothing", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom<QuantizeSpec>(
        { input: "f32", smooth: "none" },
        { input: "f32", smooth: "divide" },
        { input: "f16", smooth: "multiply" },
      ),
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 700 }),
      fc.integer({ min: 0, max: 3 }),
      fc.integer(),
      async (spec, rows, cols, xOffset, seed) => {
        const qStride = packedStride(cols);
        const x = floats((xOffset + rows) * cols, seed, -3, 3);
        // A row of zeros among them: scale 0, codes 0.
        x.fill(0, xOffset * cols, (xOffset + 1) * cols);
        const sizes = { rows, cols, xOffset, qStride };
        const { gpu, ref } = await runBoth(quantize, spec, sizes, {
          x: spec.input === "f16" ? toF16(x) : toF32(x),
          ...(spec.smooth === "none" ? {} : { smoothing: toF32(floats(cols, seed + 1, 0.5, 2)) }),
          q: new Float64Array(rows * qStride),
          scale: new Float64Array(rows),
        });
        assertClose(gpu.scale, ref.scale, { atol: 0, rtol: 1e-6 }, "scale");
        // A code may differ by one where the GPU's division rounds a value across a tie.
        for (let w = 0; w < rows * qStride; w++) {
          const a = unpackInt8(gpu.q, 4, w);
          const b = unpackInt8(ref.q, 4, w);
          for (let e = 0; e < 4; e++) ok(Math.abs(a[e] - b[e]) <= 1, `code ${4 * w + e}`);
        }
      },
    ),
    RUNS,
  );
});
