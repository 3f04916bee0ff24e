import { throws } from "node:assert/strict";
import fc from "fast-check";
import { copy2d } from "../../wgsl/copy2d.ts";
import { expectMatch, floats, gpuTest, ints, RUNS, toF16, toF32 } from "./_check.ts";

const shape = fc.record({
  rows: fc.integer({ min: 1, max: 12 }),
  cols: fc.integer({ min: 1, max: 40 }),
  srcPad: fc.integer({ min: 0, max: 5 }),
  srcOffset: fc.integer({ min: 0, max: 5 }),
  dstPad: fc.integer({ min: 0, max: 5 }),
  dstOffset: fc.integer({ min: 0, max: 5 }),
  seed: fc.integer(),
});

gpuTest("copy2d copies strided rows bit for bit, leaving the rest of dst alone", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom("f32" as const, "f16" as const, "u32" as const),
      shape,
      async (elem, s) => {
        const even = (n: number) => (elem === "f16" ? n + (n % 2) : n);
        const srcStride = s.cols + s.srcPad;
        const dstStride = even(s.cols + s.dstPad);
        const dstOffset = even(s.dstOffset);
        const data = (n: number, seed: number) =>
          elem === "u32"
            ? ints(n, seed, 0, 2 ** 32 - 1)
            : elem === "f16"
            ? toF16(floats(n, seed, -1e4, 1e4))
            : toF32(floats(n, seed, -1e30, 1e30));
        const sizes = {
          rows: s.rows,
          cols: s.cols,
          srcStride,
          srcOffset: s.srcOffset,
          dstStride,
          dstOffset,
        };
        await expectMatch(copy2d, { elem }, sizes, {
          src: data(s.rows * srcStride + s.srcOffset, s.seed),
          dst: data(s.rows * dstStride + dstOffset + 3, s.seed + 1),
        }, "exact");
      },
    ),
    RUNS,
  );
});

Deno.test("copy2d f16 refuses an odd destination offset or stride", () => {
  const sizes = { rows: 2, cols: 3, srcStride: 3, srcOffset: 1, dstStride: 4, dstOffset: 1 };
  throws(() => copy2d.params({ elem: "f16" }, sizes), /even/);
  throws(() => copy2d.params({ elem: "f16" }, { ...sizes, dstOffset: 0, dstStride: 5 }), /even/);
});

gpuTest(
  "copy2d vec4 copies 16-byte chunks bit for bit, leaving the rest of dst alone",
  async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("f32" as const, "f16" as const, "u32" as const),
        shape,
        async (elem, s) => {
          // Every column count, stride and offset a multiple of the chunk's elements.
          const lanes = elem === "f16" ? 8 : 4;
          const up = (n: number) => lanes * Math.ceil(n / lanes);
          const cols = up(s.cols);
          const sizes = {
            rows: s.rows,
            cols,
            srcStride: up(cols + s.srcPad),
            srcOffset: up(s.srcOffset),
            dstStride: up(cols + s.dstPad),
            dstOffset: up(s.dstOffset),
          };
          const data = (n: number, seed: number) =>
            elem === "u32"
              ? ints(n, seed, 0, 2 ** 32 - 1)
              : elem === "f16"
              ? toF16(floats(n, seed, -1e4, 1e4))
              : toF32(floats(n, seed, -1e30, 1e30));
          await expectMatch(copy2d, { elem, vec4: true }, sizes, {
            src: data(s.rows * sizes.srcStride + sizes.srcOffset, s.seed),
            dst: data(s.rows * sizes.dstStride + sizes.dstOffset + lanes, s.seed + 1),
          }, "exact");
        },
      ),
      RUNS,
    );
  },
);

Deno.test("copy2d vec4 refuses sizes that are not whole 16-byte chunks", () => {
  const sizes = { rows: 2, cols: 8, srcStride: 8, srcOffset: 0, dstStride: 8, dstOffset: 4 };
  copy2d.params({ elem: "f32", vec4: true }, sizes);
  throws(() => copy2d.params({ elem: "f16", vec4: true }, sizes), /multiples of 8/);
  throws(() => copy2d.params({ elem: "u32", vec4: true }, { ...sizes, cols: 6 }), /multiples of 4/);
});
