// The segment table every attention family reads (mask as data): its uniform fields, the WGSL
// accessor, and the bindings, in one place so the families stay interchangeable per step.

import type { BindingSpec, StorageType } from "./kernel.ts";
import type { ParamFields } from "./_params.ts";
import { FLAT_GROUP } from "./_grid.ts";

/** The most KV segments one dispatch takes. */
export const MAX_SEGMENTS = 8;

/** Fields of one segment, in the order of the WGSL struct. */
export const SEGMENT_FIELDS = [
  "src",
  "kvStart",
  "kvCount",
  "qStart",
  "qEnd",
  "causal",
  "diag",
] as const;

/** The uniform struct of attention kernels: the dispatch's sizes, then the segment table. */
export const ATTENTION_FIELDS: ParamFields = [
  ["qRows", "u32"],
  ["heads", "u32"],
  ["kvHeads", "u32"],
  ["qOffset", "u32"],
  ["outOffset", "u32"],
  ["scale", "f32"],
  ["nseg", "u32"],
  ...Array.from(
    { length: MAX_SEGMENTS },
    (_, s) => SEGMENT_FIELDS.map((f) => [`${f}${s}`, f === "diag" ? "i32" : "u32"] as const),
  ).flat(),
];

/** WGSL `struct Segment` and `fn segment(s)`, reading segment s from the uniform params. */
export function segmentWgsl(): string {
  const cases = Array.from({ length: MAX_SEGMENTS }, (_, s) => {
    const args = SEGMENT_FIELDS.map((f) => `params.${f}${s}`).join(", ");
    return `    ${s === MAX_SEGMENTS - 1 ? "default" : `case ${s}u`}: { return Segment(${args}); }`;
  }).join("\n");
  return `
struct Segment { src: u32, kvStart: u32, kvCount: u32, qStart: u32, qEnd: u32, causal: u32, diag: i32 }

fn segment(s: u32) -> Segment {
  switch s {
${cases}
  }
}

// Keys [0, n) of the segment that query row \`row\` sees: none outside its rows, up to its
// diagonal when causal.
fn seg_keys(seg: Segment, row: u32) -> i32 {
  if (row < seg.qStart || row >= seg.qEnd) { return 0i; }
  var n = i32(seg.kvCount);
  if (seg.causal != 0u) { n = min(n, i32(row - seg.qStart) + seg.diag + 1); }
  return n;
}
`;
}

/** Storage bindings of every attention family (q, two K/V sources, out, lse). */
export function attentionBindings(kv: StorageType): BindingSpec[] {
  return [
    { name: "q", access: "read", elem: "f32" },
    { name: "k0", access: "read", elem: kv },
    { name: "v0", access: "read", elem: kv },
    { name: "k1", access: "read", elem: kv },
    { name: "v1", access: "read", elem: kv },
    { name: "out", access: "read_write", elem: "f32" },
    { name: "lse", access: "read_write", elem: "f32" },
  ];
}

/**
 * WGSL opening an attention workgroup: which KV head \`g\` and which block of \`bq\` (query row, head)
 * pairs it computes, and the query rows it spans. Register-tiled kernels take the blocks "last"
 * first: under a causal mask they see the most keys, so the tail of the dispatch is made of short
 * workgroups.
 */
export function pairBlock(bq: number, order: "first" | "last"): string {
  const block = order === "last"
    ? `  // Last pair blocks first: under a causal mask they see the most keys, so the tail of the
  // dispatch is made of short workgroups.
  let firstPair = (tilesPerHead - 1u - (flat - g * tilesPerHead)) * ${bq}u;`
    : `  let firstPair = (flat - g * tilesPerHead) * ${bq}u;`;
  return `  let group = params.heads / params.kvHeads;
  let pairs = params.qRows * group;
  let tilesPerHead = (pairs + ${bq - 1}u) / ${bq}u;
  let flat = ${FLAT_GROUP};
  if (flat >= tilesPerHead * params.kvHeads) { return; }
  let g = flat / tilesPerHead;
${block}
  let rowLo = firstPair / group;
  let rowHi = min(firstPair + ${bq - 1}u, pairs - 1u) / group;`;
}
