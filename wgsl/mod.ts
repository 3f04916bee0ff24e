// Every kernel family, and a registry by family name so a plan can find a family from its JSON.

import type { KernelFamily } from "./kernel.ts";
import { embed } from "./embed.ts";
import { rmsnorm } from "./rmsnorm.ts";
import { matmul } from "./matmul.ts";
import { rope } from "./rope.ts";
import { attention } from "./attention.ts";
import { lseMerge } from "./lse_merge.ts";
import { siluMul } from "./silu_mul.ts";
import { add } from "./add.ts";
import { argmax } from "./argmax.ts";
import { copy2d } from "./copy2d.ts";
import { maxpool } from "./maxpool.ts";
import { topk } from "./topk.ts";
import { gather } from "./gather.ts";
import { queryScore } from "./query_score.ts";
import { randomScore } from "./random_score.ts";
import { fillRandom } from "./fill_random.ts";
import { quantize } from "./quantize.ts";
import { int8Matmul } from "./int8_matmul.ts";
import { int8Attention } from "./int8_attention.ts";
import { kvQuantize } from "./kv_quantize.ts";

export type * from "./kernel.ts";
export { embed, type EmbedSpec } from "./embed.ts";
export { rmsnorm, type RmsnormSpec } from "./rmsnorm.ts";
export { matmul, type MatmulSpec } from "./matmul.ts";
export { rope, type RopeConfig, ropeInverseFrequencies, type RopeSpec, ropeTable } from "./rope.ts";
export { attention, type AttentionSpec, MAX_SEGMENTS } from "./attention.ts";
export { lseMerge } from "./lse_merge.ts";
export { siluMul } from "./silu_mul.ts";
export { add } from "./add.ts";
export { argmax } from "./argmax.ts";
export { copy2d, type Copy2dSpec } from "./copy2d.ts";
export { maxpool } from "./maxpool.ts";
export { sortKey, topk } from "./topk.ts";
export { gather, type GatherSpec } from "./gather.ts";
export { queryScore, type QueryScoreSpec } from "./query_score.ts";
export { randomScore } from "./random_score.ts";
export { fillRandom, fillRandomHost, type FillRandomSpec, fillRandomValue } from "./fill_random.ts";
export { hash1, hash2, unitFromHash } from "./_hash.ts";
export type { NoSpec } from "./_no_spec.ts";
export { packedStride, quantize, type QuantizeSpec } from "./quantize.ts";
export { INT8_TILES, int8Matmul, type Int8MatmulSpec } from "./int8_matmul.ts";
export { int8Attention, type Int8AttentionSpec } from "./int8_attention.ts";
export { kvQuantize, type KvQuantizeSpec } from "./kv_quantize.ts";

/** Every kernel family, keyed by its `name` (the name plans use in kernel ids). */
export const kernelFamilies = {
  embed,
  rmsnorm,
  matmul,
  rope,
  attention,
  lse_merge: lseMerge,
  silu_mul: siluMul,
  add,
  argmax,
  copy2d,
  maxpool,
  topk,
  gather,
  query_score: queryScore,
  random_score: randomScore,
  fill_random: fillRandom,
  quantize,
  int8_matmul: int8Matmul,
  int8_attention: int8Attention,
  kv_quantize: kvQuantize,
} as const;

/** Name of a kernel family, as plans spell it. */
export type KernelFamilyName = keyof typeof kernelFamilies;

/** The spec type of the family named `N`. */
export type SpecOf<N extends KernelFamilyName> = (typeof kernelFamilies)[N] extends
  KernelFamily<infer S> ? S : never;

/**
 * Families that compute attention (same sizes and FLOPs; f32 products, or int8 ones on K and V that
 * kv_quantize prepared).
 */
export const ATTENTION_FAMILIES: ReadonlySet<string> = new Set(["attention", "int8_attention"]);

/** Families that compute a GEMM `C = A·Bᵀ` with sizes M, N, K and the weight bound as `b`. */
export const GEMM_FAMILIES: ReadonlySet<string> = new Set(["matmul", "int8_matmul"]);

/** Whether `name` names a kernel family. */
export function isKernelFamilyName(name: string): name is KernelFamilyName {
  return Object.hasOwn(kernelFamilies, name);
}

/** The family named `name`, with its spec unchecked (plans are JSON); throws for unknown names. */
export function kernelFamily(name: string): KernelFamily<unknown> {
  if (!isKernelFamilyName(name)) {
    throw new Error(
      `unknown kernel family "${name}"; known: ${Object.keys(kernelFamilies).join(", ")}`,
    );
  }
  return kernelFamilies[name] as KernelFamily<unknown>;
}
