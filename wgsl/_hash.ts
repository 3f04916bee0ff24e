// One integer hash, murmur3_32 over u32 words, written twice (WGSL and JS with Math.imul) so that
// seeded values made on the GPU and on the host agree bit for bit.

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function mixWord(h: number, k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number, words: number): number {
  h ^= words * 4;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** murmur3_32 of the one-word message `a` under `seed`, as an unsigned 32-bit integer. */
export function hash1(seed: number, a: number): number {
  return finish(mixWord(seed | 0, a | 0), 1);
}

/** murmur3_32 of the two-word message `a, b` under `seed`, as an unsigned 32-bit integer. */
export function hash2(seed: number, a: number, b: number): number {
  return finish(mixWord(mixWord(seed | 0, a | 0), b | 0), 2);
}

/** A uniform value in [0, 1) from a hash: the top 24 bits times 2^-24, exact in f32. */
export function unitFromHash(h: number): number {
  return (h >>> 8) * 2 ** -24;
}

/** WGSL of `hash1`, `hash2` and `unit_from_hash`, matching the JS functions of this file. */
export const HASH_WGSL = `
fn murmur_mix(h: u32, word: u32) -> u32 {
  var k = word * ${C1}u;
  k = (k << 15u) | (k >> 17u);
  k = k * ${C2}u;
  var g = h ^ k;
  g = (g << 13u) | (g >> 19u);
  return g * 5u + 0xe6546b64u;
}
fn murmur_finish(h0: u32, words: u32) -> u32 {
  var h = h0 ^ (words * 4u);
  h = h ^ (h >> 16u);
  h = h * 0x85ebca6bu;
  h = h ^ (h >> 13u);
  h = h * 0xc2b2ae35u;
  return h ^ (h >> 16u);
}
fn hash1(seed: u32, a: u32) -> u32 {
  return murmur_finish(murmur_mix(seed, a), 1u);
}
fn hash2(seed: u32, a: u32, b: u32) -> u32 {
  return murmur_finish(murmur_mix(murmur_mix(seed, a), b), 2u);
}
fn unit_from_hash(h: u32) -> f32 {
  return ldexp(f32(h >> 8u), -24);
}
`;
