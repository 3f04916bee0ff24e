// The layout of one attention dispatch's K and V quantised to int8 (kv_quantize writes it,
// int8_attention reads it), in one place so that writer, reader, references and buffer sizes agree.
//
// Tiles: each segment's visible keys (up to the diagonal of its last row) in runs of KV_TILE from
// its first key, the segments' tiles numbered one after another. Per (tile T, KV head g):
// - `codes` (i32 words, four int8 each): record (T·kvHeads + g) of 2·KV_TILE·d/4 words, the K
//   codes of the tile's keys (d/4 words a key), then the V codes transposed (KV_TILE/4 words a
//   channel, so that P·V loads V column-major like K: a row-major int8 load has to transpose
//   bytes); keys past the segment's end are 0.
// - `scales` (f32): μ, the K shift, for every KV head first (kvHeads·d); then per record d + 4
//   floats: V's scale per channel, K's scale, three unused (keeping records 16-byte aligned).

import type { Sizes } from "./kernel.ts";

/** Keys of one quantised tile (one K scale and d V scales). */
export const KV_TILE = 64;

/** Keys of segment `s` the dispatch's rows see: none without rows, up to the last row's diagonal. */
export function segmentKeys(sizes: Sizes, s: number): number {
  const qStart = sizes[`qStart${s}`];
  const qEnd = sizes[`qEnd${s}`];
  if (qEnd <= qStart) return 0;
  const count = sizes[`kvCount${s}`];
  return sizes[`causal${s}`]
    ? Math.max(0, Math.min(count, qEnd - 1 - qStart + sizes[`diag${s}`] + 1))
    : count;
}

/** Tiles of segment `s`. */
export function segmentTiles(sizes: Sizes, s: number): number {
  return Math.ceil(segmentKeys(sizes, s) / KV_TILE);
}

/** Tiles of the whole dispatch. */
export function kvTiles(sizes: Sizes): number {
  let n = 0;
  for (let s = 0; s < sizes.nseg; s++) n += segmentTiles(sizes, s);
  return n;
}

/** i32 words of one (tile, KV head) record of `codes`. */
export const recordWords = (d: number): number => (2 * KV_TILE * d) / 4;

/** f32 values of one (tile, KV head) record of `scales`. */
export const scaleStride = (d: number): number => d + 4;

/** Lengths of `codes` and `scales` for a dispatch. */
export function kvTileLengths(sizes: Sizes, d: number): { codes: number; scales: number } {
  const records = kvTiles(sizes) * sizes.kvHeads;
  return { codes: records * recordWords(d), scales: sizes.kvHeads * d + records * scaleStride(d) };
}

/** WGSL `fn seg_tiles(seg)`, the tiles of a segment (needs segmentWgsl()). */
export const segTilesWgsl = `
fn seg_tiles(seg: Segment) -> u32 {
  // seg.qEnd − 1 wraps for a segment without rows, and seg_keys then sees none.
  return (u32(max(seg_keys(seg, seg.qEnd - 1u), 0i)) + ${KV_TILE - 1}u) / ${KV_TILE}u;
}
`;
