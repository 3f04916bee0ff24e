// Query-aware compressor score (the training-free fallback of APB's retaining heads): since
// mean_j k·q̄_j = k·mean_j q̄_j, each workgroup first averages the query rows and heads of its KV
// head into workgroup memory, then each invocation scores one key row with a single dot product.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";

/** What a `query_score` kernel is specialised on: the storage type of the keys. */
export interface QueryScoreSpec {
  /** Storage type of the key cache. */
  kv: StorageType;
}

const FIELDS: ParamFields = [
  ["rows", "u32"],
  ["kvHeads", "u32"],
  ["heads", "u32"],
  ["headDim", "u32"],
  ["qRows", "u32"],
  ["kOffset", "u32"],
  ["qOffset", "u32"],
];
const WORKGROUP = 256;

/**
 * `out[t, g]` = mean over `j < qRows` of `k[kOffset + t, g, :] · q̄[j, g, :]`, where `q̄` averages
 * the query heads of KV head g at query row `qOffset + j`.
 */
export const queryScore: KernelFamily<QueryScoreSpec> = {
  name: "query_score",
  key: (spec) => `query_score_${spec.kv}`,
  generate(spec) {
    const bindings: BindingSpec[] = [
      { name: "k", access: "read", elem: spec.kv },
      { name: "q", access: "read", elem: "f32" },
      { name: "out", access: "read_write", elem: "f32" },
    ];
    const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings)}${storageLoader("k", spec.kv)}
var<workgroup> qMean: array<f32, ${WORKGROUP}>;

@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let flat = ${FLAT_GROUP};
  let g = flat % params.kvHeads;
  let tile = flat / params.kvHeads;
  if (tile * ${WORKGROUP}u >= params.rows) { return; }
  let group = params.heads / params.kvHeads;
  if (lid < params.headDim) {
    var sum = 0.0;
    for (var j = 0u; j < params.qRows; j++) {
      let row = (params.qOffset + j) * params.heads + g * group;
      for (var h = 0u; h < group; h++) { sum += q[(row + h) * params.headDim + lid]; }
    }
    qMean[lid] = sum / f32(params.qRows * group);
  }
  workgroupBarrier();
  let t = tile * ${WORKGROUP}u + lid;
  if (t >= params.rows) { return; }
  let base = ((params.kOffset + t) * params.kvHeads + g) * params.headDim;
  var dot = 0.0;
  for (var d = 0u; d < params.headDim; d++) { dot += load_k(base + d) * qMean[d]; }
  out[t * params.kvHeads + g] = dot;
}
`;
    return computeKernel({ code, bindings, threads: WORKGROUP, workgroupBytes: WORKGROUP * 4 });
  },
  dispatch: (_spec, { rows, kvHeads }) => grid2d(Math.ceil(rows / WORKGROUP) * kvHeads),
  params(_spec, sizes) {
    if (sizes.headDim > WORKGROUP) {
      throw new Error(`query_score: headDim ${sizes.headDim} exceeds ${WORKGROUP}`);
    }
    if (sizes.qRows < 1 || sizes.heads % sizes.kvHeads !== 0) {
      throw new Error(`query_score: need qRows ≥ 1 and heads a multiple of kvHeads`);
    }
    return packParams("query_score", FIELDS, sizes);
  },
  reference(spec, sizes, { k, q, out }) {
    const { rows, kvHeads, heads, headDim, qRows, kOffset, qOffset } = sizes;
    const group = heads / kvHeads;
    const stored = storageRound(spec.kv);
    for (let g = 0; g < kvHeads; g++) {
      const qBar = new Float64Array(qRows * headDim);
      for (let j = 0; j < qRows; j++) {
        for (let h = g * group; h < (g + 1) * group; h++) {
          for (let d = 0; d < headDim; d++) {
            qBar[j * headDim + d] += q[((qOffset + j) * heads + h) * headDim + d] / group;
          }
        }
      }
      for (let t = 0; t < rows; t++) {
        const base = ((kOffset + t) * kvHeads + g) * headDim;
        let sum = 0;
        for (let j = 0; j < qRows; j++) {
          for (let d = 0; d < headDim; d++) sum += stored(k[base + d]) * qBar[j * headDim + d];
        }
        out[t * kvHeads + g] = sum / qRows;
      }
    }
  },
};
