// Strided 2-D copy of raw bits (f32 and u32 as words, f16 as halves), so a copy never changes a
// value, not even a NaN payload. f16 is written a whole u32 word at a time, which is why its
// destination offset and stride must be even: then no two invocations share a word. The vec4
// variant copies 16 bytes per invocation (four words of f32/u32, eight halves of f16) when every
// column count, stride and offset is a multiple of that.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, halfBits } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";

/** What a `copy2d` kernel is specialised on: the element type copied. */
export interface Copy2dSpec {
  /** Element type of both buffers. */
  elem: "f32" | "f16" | "u32";
  /**
   * Copy 16 bytes per invocation: cols, strides and offsets must be multiples of 4 elements (8
   * for f16).
   */
  vec4?: boolean;
}

const FIELDS: ParamFields = [
  ["rows", "u32"],
  ["cols", "u32"],
  ["srcStride", "u32"],
  ["srcOffset", "u32"],
  ["dstStride", "u32"],
  ["dstOffset", "u32"],
];
const WORKGROUP = 256;

// 16-byte chunks: `lanes` elements per vec4<u32>.
function vectorCode(lanes: number): string {
  return `
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  let width = params.cols / ${lanes}u;
  if (e >= params.rows * width) { return; }
  let r = e / width;
  let c = e - r * width;
  dst[(r * params.dstStride + params.dstOffset) / ${lanes}u + c] =
    src[(r * params.srcStride + params.srcOffset) / ${lanes}u + c];
}
`;
}

/** Elements per 16-byte chunk of the vec4 variant. */
function lanesOf(spec: Copy2dSpec): number {
  return spec.elem === "f16" ? 8 : 4;
}

function wordCode(): string {
  return `
fn copy_row_words(e: u32, wordsPerRow: u32) {
  let r = e / wordsPerRow;
  let c = (e - r * wordsPerRow) * 2u;
  let first = r * params.srcStride + params.srcOffset + c;
  let word = (r * params.dstStride + params.dstOffset + c) / 2u;
  var high = dst[word] >> 16u;
  if (c + 1u < params.cols) { high = bits_src(first + 1u); }
  dst[word] = bits_src(first) | (high << 16u);
}

@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  let wordsPerRow = (params.cols + 1u) / 2u;
  if (e >= params.rows * wordsPerRow) { return; }
  copy_row_words(e, wordsPerRow);
}
`;
}

function elementCode(): string {
  return `
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.cols) { return; }
  let r = e / params.cols;
  let c = e - r * params.cols;
  dst[r * params.dstStride + params.dstOffset + c] = src[r * params.srcStride + params.srcOffset + c];
}
`;
}

/** `dst[r·dstStride + dstOffset + c] = src[r·srcStride + srcOffset + c]`, bit for bit. */
export const copy2d: KernelFamily<Copy2dSpec> = {
  name: "copy2d",
  key: (spec) => `copy2d_${spec.elem}${spec.vec4 ? "_v4" : ""}`,
  generate(spec) {
    const bindings: BindingSpec[] = [
      { name: "src", access: "read", elem: spec.elem },
      { name: "dst", access: "read_write", elem: spec.elem },
    ];
    const words = spec.vec4 ? { src: "vec4<u32>", dst: "vec4<u32>" } : { src: "u32", dst: "u32" };
    const body = spec.vec4
      ? vectorCode(lanesOf(spec))
      : spec.elem === "f16"
      ? halfBits("src") + wordCode()
      : elementCode();
    return computeKernel({
      code: `${paramsWgsl(FIELDS)}${declareBindings(bindings, words)}${body}`,
      bindings,
      threads: WORKGROUP,
    });
  },
  dispatch(spec, sizes) {
    const perRow = spec.vec4
      ? sizes.cols / lanesOf(spec)
      : spec.elem === "f16"
      ? Math.ceil(sizes.cols / 2)
      : sizes.cols;
    return gridFor(sizes.rows * perRow, WORKGROUP);
  },
  params(spec, sizes) {
    const lanes = lanesOf(spec);
    const fields = ["cols", "srcStride", "srcOffset", "dstStride", "dstOffset"] as const;
    if (spec.vec4 && fields.some((f) => sizes[f] % lanes !== 0)) {
      throw new Error(
        `copy2d ${spec.elem}: the vec4 variant needs cols, strides and offsets to be multiples ` +
          `of ${lanes} (got ${fields.map((f) => `${f} ${sizes[f]}`).join(", ")})`,
      );
    }
    if (
      spec.elem === "f16" &&
      (sizes.dstOffset % 2 !== 0 || (sizes.rows > 1 && sizes.dstStride % 2 !== 0))
    ) {
      throw new Error(
        `copy2d f16: dstOffset (${sizes.dstOffset}) and dstStride (${sizes.dstStride}) must be ` +
          "even, because the kernel writes whole 32-bit words of two halves",
      );
    }
    return packParams("copy2d", FIELDS, sizes);
  },
  reference(spec, sizes, { src, dst }) {
    const { rows, cols, srcStride, srcOffset, dstStride, dstOffset } = sizes;
    const stored = spec.elem === "f16" ? Math.f16round : (x: number) => x;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        dst[r * dstStride + dstOffset + c] = stored(src[r * srcStride + srcOffset + c]);
      }
    }
  },
};
