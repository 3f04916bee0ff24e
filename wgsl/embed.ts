// Token embedding lookup: one invocation per output element (four with vec4, which moves 16 bytes
// of f32 or 8 of f16 per load), ids beyond the vocabulary give a zero row rather than an
// out-of-bounds read. A table too large for one binding is split by rows:
// each piece gathers the ids in its range; only the first writes zeros for the others.

import { type BindingSpec, computeKernel, type KernelFamily, type StorageType } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings, storageLoader, storageRound } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, gridFor } from "./_grid.ts";

/** What an `embed` kernel is specialised on: the storage type of the table. */
export interface EmbedSpec {
  /** Storage type of the embedding table. */
  table: StorageType;
  /** Four elements per invocation as vectors (hidden must be a multiple of 4). */
  vec4?: boolean;
}

const FIELDS: ParamFields = [
  ["rows", "u32"],
  ["hidden", "u32"],
  ["vocab", "u32"],
  ["idsOffset", "u32"],
  ["vocabOffset", "u32"],
  ["zeroMissing", "u32"],
];
const WORKGROUP = 256;

function embedVec4(table: StorageType) {
  const bindings: BindingSpec[] = [
    { name: "ids", access: "read", elem: "u32" },
    { name: "table", access: "read", elem: table },
    { name: "out", access: "read_write", elem: "f32" },
  ];
  const read = table === "f32"
    ? "table[(id * params.hidden) / 4u + c]"
    : "vec4<f32>(unpack2x16float(table[(id * params.hidden) / 4u + c].x), " +
      "unpack2x16float(table[(id * params.hidden) / 4u + c].y))";
  const vectors = { table: table === "f32" ? "vec4<f32>" : "vec2<u32>", out: "vec4<f32>" };
  const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings, vectors)}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  let width = params.hidden / 4u;
  if (e >= params.rows * width) { return; }
  let r = e / width;
  let c = e - r * width;
  let id = ids[params.idsOffset + r] - params.vocabOffset;
  // Ids below the piece wrap around to large u32 values and fail the same test.
  if (id < params.vocab) {
    out[e] = ${read};
  } else if (params.zeroMissing != 0u) {
    out[e] = vec4<f32>();
  }
}
`;
  return computeKernel({ code, bindings, threads: WORKGROUP });
}

/**
 * `out[r, :] = table[ids[idsOffset + r] − vocabOffset, :]` for ids in this table piece
 * [vocabOffset, vocabOffset + vocab); other ids give zeros when `zeroMissing` (the default) and
 * leave the row alone otherwise. `idsOffset` (default 0) lets a chunk of a prompt read its slice
 * of the host's id buffer.
 */
export const embed: KernelFamily<EmbedSpec> = {
  name: "embed",
  key: (spec) => `embed_${spec.table}${spec.vec4 ? "_v4" : ""}`,
  generate(spec) {
    if (spec.vec4) return embedVec4(spec.table);
    const bindings: BindingSpec[] = [
      { name: "ids", access: "read", elem: "u32" },
      { name: "table", access: "read", elem: spec.table },
      { name: "out", access: "read_write", elem: "f32" },
    ];
    const code = `${paramsWgsl(FIELDS)}${declareBindings(bindings)}
${storageLoader("table", spec.table)}
@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let e = ${FLAT_GROUP} * ${WORKGROUP}u + lid;
  if (e >= params.rows * params.hidden) { return; }
  let r = e / params.hidden;
  let c = e - r * params.hidden;
  let id = ids[params.idsOffset + r] - params.vocabOffset;
  // Ids below the piece wrap around to large u32 values and fail the same test.
  if (id < params.vocab) {
    out[e] = load_table(id * params.hidden + c);
  } else if (params.zeroMissing != 0u) {
    out[e] = 0.0;
  }
}
`;
    return computeKernel({ code, bindings, threads: WORKGROUP });
  },
  dispatch: (spec, sizes) => gridFor((sizes.rows * sizes.hidden) / (spec.vec4 ? 4 : 1), WORKGROUP),
  params(spec, sizes) {
    if (spec.vec4 && sizes.hidden % 4 !== 0) {
      throw new Error(
        `embed: the vec4 variant needs hidden to be a multiple of 4, got ${sizes.hidden}`,
      );
    }
    return packParams("embed", FIELDS, { idsOffset: 0, vocabOffset: 0, zeroMissing: 1, ...sizes });
  },
  reference(spec, sizes, { ids, table, out }) {
    const { rows, hidden, vocab, idsOffset = 0, vocabOffset = 0, zeroMissing = 1 } = sizes;
    const stored = storageRound(spec.table);
    for (let r = 0; r < rows; r++) {
      const id = ids[idsOffset + r] - vocabOffset;
      const inPiece = id >= 0 && id < vocab;
      if (!inPiece && !zeroMissing) continue;
      for (let c = 0; c < hidden; c++) {
        out[r * hidden + c] = inPiece ? stored(table[id * hidden + c]) : 0;
      }
    }
  },
};
