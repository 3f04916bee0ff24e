// Per-head top-k row selection (APB's choice of passing blocks). One workgroup per head:
// a radix select, 8 bits per pass from the top, finds the k-th largest order-preserving key T and
// how many rows equal to T are still needed; an ordered compaction then writes the rows with a
// key above T and the first needed rows equal to T, in ascending row order. One prefix scan per
// 256-row chunk counts both kinds at once, packed into the two halves of a u32.

import { type BindingSpec, computeKernel, type KernelFamily } from "./kernel.ts";
import { packParams, type ParamFields, paramsWgsl } from "./_params.ts";
import { declareBindings } from "./_storage.ts";
import { ENTRY_BUILTINS, FLAT_GROUP, grid2d } from "./_grid.ts";
import type { NoSpec } from "./_no_spec.ts";

const FIELDS: ParamFields = [["rows", "u32"], ["heads", "u32"], ["k", "u32"], ["exclude", "u32"]];
const WORKGROUP = 256;
const BINDINGS: BindingSpec[] = [
  { name: "scores", access: "read", elem: "f32" },
  { name: "idx", access: "read_write", elem: "u32" },
];

/** An unsigned key that orders like the float, with NaN below everything (−0 just below +0). */
export function sortKey(v: number): number {
  if (Number.isNaN(v)) return 0;
  const bits = new Uint32Array(new Float32Array([v]).buffer)[0];
  return (bits & 0x80000000 ? ~bits : bits | 0x80000000) >>> 0;
}

const CODE = `${paramsWgsl(FIELDS)}${declareBindings(BINDINGS)}
var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> counts: array<u32, ${WORKGROUP}>;
// The key prefix found so far, its mask, and the rank still sought among keys with that prefix.
var<workgroup> found: array<u32, 3>;

fn sort_key(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn key_of(r: u32, g: u32) -> u32 {
  return sort_key(scores[r * params.heads + g]);
}

// Narrows found[] by the 8-bit digit at shift: the digit whose bucket holds the sought rank.
fn radix_pass(g: u32, lid: u32, shift: u32) {
  atomicStore(&histogram[lid], 0u);
  workgroupBarrier();
  let prefix = found[0];
  let mask = found[1];
  for (var r = params.exclude + lid; r < params.rows; r += ${WORKGROUP}u) {
    let key = key_of(r, g);
    if ((key & mask) == prefix) { atomicAdd(&histogram[(key >> shift) & 255u], 1u); }
  }
  workgroupBarrier();
  if (lid == 0u) {
    var above = 0u;
    var digit = 0u;
    for (var b = 255i; b >= 0i; b--) {
      let n = atomicLoad(&histogram[b]);
      if (above + n >= found[2]) {
        digit = u32(b);
        break;
      }
      above += n;
    }
    found[0] = prefix | (digit << shift);
    found[1] = mask | (255u << shift);
    found[2] -= above;
  }
  workgroupBarrier();
}

@compute @workgroup_size(${WORKGROUP})
fn main(${ENTRY_BUILTINS}) {
  let g = ${FLAT_GROUP};
  if (g >= params.heads || params.k == 0u) { return; }
  if (lid == 0u) {
    found[0] = 0u;
    found[1] = 0u;
    found[2] = params.k;
  }
  workgroupBarrier();
  for (var shift = 24i; shift >= 0i; shift -= 8i) { radix_pass(g, lid, u32(shift)); }
  let threshold = found[0];
  let needEqual = found[2];
  var aboveCarry = 0u;
  var equalCarry = 0u;
  for (var base = params.exclude; base < params.rows; base += ${WORKGROUP}u) {
    let r = base + lid;
    var key = 0u;
    if (r < params.rows) { key = key_of(r, g); }
    let above = r < params.rows && key > threshold;
    let equal = r < params.rows && key == threshold;
    let mine = select(0u, 1u, above) | select(0u, 1u << 16u, equal);
    counts[lid] = mine;
    for (var step = 1u; step < ${WORKGROUP}u; step <<= 1u) {
      workgroupBarrier();
      let add = select(0u, counts[lid - step], lid >= step);
      workgroupBarrier();
      counts[lid] += add;
    }
    workgroupBarrier();
    let before = counts[lid] - mine;
    let aboveBefore = aboveCarry + (before & 0xffffu);
    let equalBefore = equalCarry + (before >> 16u);
    if (above) {
      idx[(aboveBefore + min(equalBefore, needEqual)) * params.heads + g] = r;
    } else if (equal && equalBefore < needEqual) {
      idx[(aboveBefore + equalBefore) * params.heads + g] = r;
    }
    let total = counts[${WORKGROUP - 1}];
    aboveCarry += total & 0xffffu;
    equalCarry += total >> 16u;
    workgroupBarrier();
  }
}
`;

/**
 * For each head g, the k rows `r ≥ exclude` with the largest `scores[r, g]` (ties to the lower
 * row, NaN smallest), written in ascending row order to `idx[j, g]`. Needs `rows − exclude ≥ k`.
 */
export const topk: KernelFamily<NoSpec> = {
  name: "topk",
  key: () => "topk",
  generate: () =>
    computeKernel({
      code: CODE,
      bindings: BINDINGS,
      threads: WORKGROUP,
      workgroupBytes: 256 * 4 + WORKGROUP * 4 + 12,
    }),
  dispatch: (_spec, sizes) => grid2d(sizes.heads),
  params(_spec, sizes) {
    if (sizes.rows - sizes.exclude < sizes.k) {
      throw new Error(`topk: rows − exclude (${sizes.rows} − ${sizes.exclude}) < k (${sizes.k})`);
    }
    return packParams("topk", FIELDS, sizes);
  },
  reference(_spec, { rows, heads, k, exclude }, { scores, idx }) {
    if (rows - exclude < k) {
      throw new Error(`topk: rows − exclude (${rows} − ${exclude}) < k (${k})`);
    }
    for (let g = 0; g < heads; g++) {
      const candidates = Array.from({ length: rows - exclude }, (_, i) => exclude + i);
      const key = (r: number) => sortKey(scores[r * heads + g]);
      candidates.sort((a, b) => key(b) - key(a) || a - b);
      candidates.slice(0, k).sort((a, b) => a - b).forEach((r, j) => idx[j * heads + g] = r);
    }
  },
};
