import { deepEqual } from "node:assert/strict";
import fc from "fast-check";
import { fillRandom, fillRandomHost } from "../../wgsl/fill_random.ts";
import { runKernel } from "../../runtime/run_kernel.ts";
import { gpuTest, RUNS, share } from "./_check.ts";

// Both typical values and the extremes and tiny values fc.double favours.
const value = fc.oneof(share.map((s) => 6 * s - 3), fc.double({ min: -3, max: 3, noNaN: true }));

gpuTest("fill_random matches fillRandomHost bit for bit", async (device) => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("f32" as const, "f16" as const),
      fc.integer({ min: 1, max: 2000 }),
      fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      value,
      value,
      fc.integer({ min: 0, max: 2 ** 32 - 1 }),
      async (elem, count, seed, scale, bias, offset) => {
        const sizes = { count, seed, scale, bias, offset };
        const out = await runKernel(device, fillRandom, { elem }, sizes, {
          out: new Float64Array(count),
        });
        const host = fillRandomHost(elem, count, seed, scale, bias, offset);
        const ref = { out: new Float64Array(count) };
        fillRandom.reference({ elem }, sizes, ref);
        deepEqual(Array.from(out.out), Array.from(host));
        deepEqual(Array.from(ref.out), Array.from(host));
      },
    ),
    RUNS,
  );
});

Deno.test("fillRandomHost: offsets continue a fill, seeds change it, values stay in range", () => {
  const whole = fillRandomHost("f32", 100, 7, 0.5, 1, 0);
  const tail = fillRandomHost("f32", 40, 7, 0.5, 1, 60);
  deepEqual(Array.from(whole.subarray(60)), Array.from(tail));
  const other = fillRandomHost("f32", 100, 8, 0.5, 1, 0);
  deepEqual(other.some((v, i) => v !== whole[i]), true);
  deepEqual(whole.every((v) => v >= 0.5 && v < 1.5), true);
});
