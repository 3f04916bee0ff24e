// RMSNorm: one workgroup per row, a strided sum of squares then a tree reduction in workgroup
// memory; rows are independent, so the grid is just the row count spread over 2D. The vec4
// variant moves 16 bytes per load and keeps the row in registers (up to 16384 columns), so HBM
// sees one read and one write even when the rows in flight overflow L2.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";

/** What an `rmsnorm` kernel is specialised on: the storage type of the weight. */
export interface RmsnormSpec {
  /** Storage type of the per-column weight. */
  weight: StorageType;
  /** Four columns per load as vectors (cols must be a multiple of 4). */
  vec4?: boolean;
}

const FIELDS: ParamFields = [["rows", "u32"], ["cols", "u32"], ["eps", "f32"]];
const WORKGROUP = 256;

// vec4s of a row each invocation keeps in registers: rows up to 4·256·16 = 16384 columns are read
// from memory once; wider ones re-read the rest in the second pass.
const HELD = 16;

function rmsnormVec4(weight: StorageType) {
  const bindings: BindingSpec[] = [
    { name: "x", access: "read", elem: "f32" },
    { name: "weight", access: "read", elem: weight },
    { name: "out", access: "read_write", elem: "f32" },
  ];
  const vectors = {
    x: "vec4<f32>",
    out: "vec4<f32>",
    weight: weight === "f32" ? "vec4<f32>" : "vec2<u32>",
  };
  const w = (c: string) =>
    weight === "f32"
      ? `weight[${c}]`
      : `vec4<f32>(unpack2x16float(weight[${c}].x), unpack2x16float(weight[${c}].y))`;
  const held = Array.from({ length: HELD }, (_, u) => u);
  const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings, vectors)}
var<workgroup> partial: array<f32, ${WORKGROUP}>;

@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let r = ${FLAT_GROUP};
  if (r >= params.rows) { return; }
  let width = params.cols / 4u;
  let base = r * width;
  var sum = 0.0;
${
    held.map((u) =>
      `  var v${u} = vec4<f32>();
  if (lid + ${u * WORKGROUP}u < width) { v${u} = x[base + lid + ${u * WORKGROUP}u]; }
  sum += dot(v${u}, v${u});`
    ).join("\n")
  }
  for (var c = lid + ${HELD * WORKGROUP}u; c < width; c += ${WORKGROUP}u) {
    let v = x[base + c];
    sum += dot(v, v);
  }
  partial[lid] = sum;
  for (var stride = ${WORKGROUP / 2}u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
  }
  workgroupBarrier();
  let scale = 1.0 / sqrt(partial[0] / f32(params.cols) + params.eps);
${
    held.map((u) =>
      `  if (lid + ${u * WORKGROUP}u < width) {
    out[base + lid + ${u * WORKGROUP}u] = v${u} * scale * ${w(`lid + ${u * WORKGROUP}u`)};
  }`
    ).join("\n")
  }
  for (var c = lid + ${HELD * WORKGROUP}u; c < width; c += ${WORKGROUP}u) {
    out[base + c] = x[base + c] * scale * ${w("c")};
  }
}
`;
  return computeKernel({ code, bindings, threads: WORKGROUP, workgroupBytes: WORKGROUP * 4 });
}

/** `out[r, c] = x[r, c] / sqrt(mean_c(x[r, :]²) + eps) · weight[c]`. */
export const rmsnorm: KernelFamily<RmsnormSpec> = {
  name: "rmsnorm",
  key: (spec) => `rmsnorm_${spec.weight}${spec.vec4 ? "_v4" : ""}`,
  generate(spec) {
    if (spec.vec4) return rmsnormVec4(spec.weight);
    const bindings: BindingSpec[] = [
      { name: "x", access: "read", elem: "f32" },
      { name: "weight", access: "read", elem: spec.weight },
      { name: "out", access: "read_write", elem: "f32" },
    ];
    const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings)}
${storageLoader("weight", spec.weight)}
var<workgroup> partial: array<f32, ${WORKGROUP}>;

@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let r = ${FLAT_GROUP};
  if (r >= params.rows) { return; }
  let base = r * params.cols;
  var sum = 0.0;
  for (var c = lid; c < params.cols; c += ${WORKGROUP}u) {
    let v = x[base + c];
    sum += v * v;
  }
  partial[lid] = sum;
  for (var stride = ${WORKGROUP / 2}u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
  }
  workgroupBarrier();
  let scale = 1.0 / sqrt(partial[0] / f32(params.cols) + params.eps);
  for (var c = lid; c < params.cols; c += ${WORKGROUP}u) {
    out[base + c] = x[base + c] * scale * load_weight(c);
  }
}
`;
    return computeKernel({ code, bindings, threads: WORKGROUP, workgroupBytes: WORKGROUP * 4 });
  },
  dispatch: (_spec, sizes) => grid2d(sizes.rows),
  params(spec, sizes) {
    if (spec.vec4 && sizes.cols % 4 !== 0) {
      throw new Error(
        `rmsnorm: the vec4 variant needs cols to be a multiple of 4, got ${sizes.cols}`,
      );
    }
    return packParams("rmsnorm", FIELDS, sizes);
  },
  reference(spec, sizes, { x, weight, out }) {
    const { rows, cols, eps } = sizes;
    const stored = storageRound(spec.weight);
    for (let r = 0; r < rows; r++) {
      let sum = 0;
      for (let c = 0; c < cols; c++) sum += x[r * cols + c] ** 2;
      const scale = 1 / Math.sqrt(sum / cols + Math.fround(eps));
      for (let c = 0; c < cols; c++) {
        out[r * cols + c] = x[r * cols + c] * scale * stored(weight[c]);
      }
    }
  },
};
